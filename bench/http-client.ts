import { request } from 'node:http'
import type { IncomingHttpHeaders } from 'node:http'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

export interface RawResponse {
  status: number
  headers: IncomingHttpHeaders
  /** Exactly the bytes on the wire (never decompressed). */
  body: Buffer
}

// Checks are small requests; anything slower than this is a failure.
const CHECK_TIMEOUT_MS = 10_000

/** One request on a fresh connection, body read in full, nothing decoded. */
export async function fetchRaw (url: string, opts: { method?: string, headers?: Record<string, string>, body?: Buffer } = {}): Promise<RawResponse> {
  return new Promise<RawResponse>((resolve, reject) => {
    const req = request(url, {
      method: opts.method ?? 'GET',
      headers: opts.headers ?? {},
      agent: false,
      signal: AbortSignal.timeout(CHECK_TIMEOUT_MS)
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** `bytes` bytes made of one reused chunk, for uploads that allocate nothing per chunk. */
export function byteSource (bytes: number, chunkBytes = 256 * 1024): Readable {
  const chunk = Buffer.alloc(chunkBytes, 'upload ')
  let left = bytes
  return new Readable({
    read () {
      if (left === 0) {
        this.push(null)
        return
      }
      const piece = left >= chunk.length ? chunk : chunk.subarray(0, left)
      left -= piece.length
      this.push(piece)
    }
  })
}

export interface Transfer {
  status: number
  /** Body bytes the client sent (upload) or received (download). */
  bytes: number
  ms: number
  /** The response body when it is small (the upload sink's answer). */
  answer: string
}

/** Streams `bytes` up as one POST body and waits for the answer. */
export async function uploadStream (url: string, headers: Record<string, string>, bytes: number, timeoutMs: number): Promise<Transfer> {
  const started = performance.now()
  const req = request(url, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(bytes) },
    agent: false,
    signal: AbortSignal.timeout(timeoutMs)
  })
  const answered = new Promise<{ status: number, answer: string }>((resolve, reject) => {
    req.on('response', (res) => {
      let answer = ''
      res.setEncoding('utf8').on('data', (text: string) => { answer += text })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, answer }))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
  // Observed below; this keeps an early failure from being "unhandled" meanwhile.
  answered.catch(() => {})
  await pipeline(byteSource(bytes), req)
  const { status, answer } = await answered
  return { status, bytes, ms: performance.now() - started, answer }
}

/** Downloads a body, counting and dropping its bytes. */
export async function downloadStream (url: string, headers: Record<string, string>, timeoutMs: number): Promise<Transfer> {
  const started = performance.now()
  return new Promise<Transfer>((resolve, reject) => {
    const req = request(url, { headers, agent: false, signal: AbortSignal.timeout(timeoutMs) }, (res) => {
      let bytes = 0
      res.on('data', (chunk: Buffer) => { bytes += chunk.length })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, ms: performance.now() - started, answer: '' }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}
