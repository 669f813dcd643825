import { connect } from 'node:net'
import { within } from './wait.js'

/** A response read off a raw socket. */
export interface RawResponse { status: number, headers: Record<string, string>, body: string }

function decodeChunked (raw: Buffer): Buffer {
  const out: Buffer[] = []
  let at = 0
  for (;;) {
    const eol = raw.indexOf('\r\n', at)
    if (eol === -1) throw new Error('truncated chunked body')
    const size = parseInt(raw.subarray(at, eol).toString('latin1'), 16)
    // A bad size line would otherwise send the search back to the start, forever.
    if (Number.isNaN(size) || size < 0) throw new Error('bad chunk size line')
    if (size === 0) return Buffer.concat(out)
    out.push(raw.subarray(eol + 2, eol + 2 + size))
    at = eol + 2 + size + 2
  }
}

/**
 * Sends `GET <path> HTTP/1.1` exactly as written (clients and app.inject
 * normalise URLs; an attacker does not) and reads the whole response, or
 * fails if the server has not closed the connection by the deadline.
 */
export function rawGet (base: string, path: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  const head = [`GET ${path} HTTP/1.1`, `Host: 127.0.0.1:${new URL(base).port}`, 'Connection: close']
  for (const [name, value] of Object.entries(headers)) head.push(`${name}: ${value}`)
  return rawRequest(base, head)
}

/** Reads one response off a socket's bytes: status, headers and body (de-chunked). */
export function parseResponse (raw: Buffer): RawResponse {
  const split = raw.indexOf('\r\n\r\n')
  const head = raw.subarray(0, split).toString('latin1').split('\r\n')
  const parsed: Record<string, string> = {}
  for (const line of head.slice(1)) {
    const colon = line.indexOf(':')
    parsed[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  const rest = raw.subarray(split + 4)
  const body = parsed['transfer-encoding'] === 'chunked' ? decodeChunked(rest) : rest
  return { status: Number(head[0]?.split(' ')[1]), headers: parsed, body: body.toString('utf8') }
}

/**
 * Sends `head` (request line and header lines, no blank line) and `body`
 * exactly as given on a fresh connection and reads the whole response, or
 * fails if the server has not closed the connection by the deadline. Send
 * `Connection: close` in `head` (or in a token list) for the server to close.
 */
export function rawRequest (base: string, head: string[], body: string | Buffer = ''): Promise<RawResponse> {
  const port = Number(new URL(base).port)
  let socket: ReturnType<typeof connect> | undefined
  return within(new Promise<RawResponse>((resolve, reject) => {
    socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('end', () => resolve(parseResponse(Buffer.concat(chunks))))
    socket.write(head.join('\r\n') + '\r\n\r\n', 'latin1')
    socket.write(body)
  }), { message: `the response to ${head[0] ?? ''}` }).finally(() => socket?.destroy())
}
