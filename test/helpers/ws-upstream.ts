import { createServer } from 'node:http'
import type { IncomingHttpHeaders, IncomingMessage, Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocket, WebSocketServer } from 'ws'
import type { ClientOptions, RawData } from 'ws'
import { nextEvent, within } from './wait.js'

/** One upgrade request as the upstream saw it. */
export interface SeenHandshake {
  url: string
  headers: IncomingHttpHeaders
}

export interface WsUpstream {
  /** `http://127.0.0.1:PORT`, what a target's `upstream` takes. */
  url: string
  /** Upgrade requests received, in order. */
  handshakes: SeenHandshake[]
  /** TCP connections accepted (0 proves the gateway never called). */
  connections: () => number
  /** Server-side sockets, in order of connection. */
  sockets: WebSocket[]
  /** The next server-side socket (or the first one already there that was not taken); fails after a deadline. */
  nextSocket: () => Promise<WebSocket>
  close: () => Promise<void>
}

export interface WsUpstreamOptions {
  /** Runs for each connection; the default echoes every message back as it came. */
  onConnection?: (socket: WebSocket, request: IncomingMessage) => void
  /** Subprotocol choice; default: the first offered (ws's own default). */
  handleProtocols?: (protocols: Set<string>) => string | false
  /** Answer upgrades with this HTTP status instead of 101. */
  refuseWith?: number
  /** Answer pings (ws default true). */
  autoPong?: boolean
}

/** Echoes each message back with the same type. */
export function echoMessages (socket: WebSocket): void {
  socket.on('message', (data: RawData, binary: boolean) => socket.send(data as Buffer, { binary }))
}

/**
 * A real WebSocket upstream on 127.0.0.1:0 that records handshakes. Plain
 * HTTP requests get a JSON echo `{ method, url }`.
 */
export async function startWsUpstream (opts: WsUpstreamOptions = {}): Promise<WsUpstream> {
  const handshakes: SeenHandshake[] = []
  const sockets: WebSocket[] = []
  const waiting: Array<(socket: WebSocket) => void> = []
  let taken = 0
  let connections = 0
  const tcp = new Set<Socket>()
  const server: Server = createServer((req, res) => {
    const body = JSON.stringify({ method: req.method, url: req.url })
    res.writeHead(200, { 'content-type': 'application/json' }).end(body)
  })
  const wss = new WebSocketServer({
    noServer: true,
    autoPong: opts.autoPong ?? true,
    ...(opts.handleProtocols === undefined ? {} : { handleProtocols: opts.handleProtocols })
  })
  server.on('connection', (socket) => {
    connections++
    tcp.add(socket)
    socket.on('close', () => tcp.delete(socket))
  })
  server.on('upgrade', (req, socket, head) => {
    handshakes.push({ url: req.url ?? '', headers: req.headers })
    if (opts.refuseWith !== undefined) {
      socket.end(`HTTP/1.1 ${opts.refuseWith} Refused\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.push(ws)
      ws.on('error', () => {})
      if (opts.onConnection === undefined) echoMessages(ws)
      else opts.onConnection(ws, req)
      const next = waiting.shift()
      if (next !== undefined) {
        taken++
        next(ws)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    handshakes,
    connections: () => connections,
    sockets,
    nextSocket: () => within(new Promise<WebSocket>((resolve) => {
      const ready = sockets[taken]
      if (ready !== undefined) {
        taken++
        resolve(ready)
      } else {
        waiting.push(resolve)
      }
    }), { message: 'a WebSocket connection at the upstream' }),
    close: () => new Promise<void>((resolve) => {
      for (const ws of sockets) ws.terminate()
      for (const socket of tcp) socket.destroy()
      wss.close()
      server.close(() => resolve())
    })
  }
}

/** `ws://` URL of a path on an app listening at `base` (`http://...`). */
export function wsUrl (base: string, path: string): string {
  return base.replace(/^http/, 'ws') + path
}

/** Opens a client; resolves on open, rejects with the HTTP status of a refused handshake, or after a deadline. */
export function openClient (url: string, protocols: string[] = [], options: ClientOptions = {}): Promise<WebSocket> {
  return within(new Promise<WebSocket>((resolve, reject) => {
    const client = new WebSocket(url, protocols, options)
    client.once('open', () => resolve(client))
    client.once('unexpected-response', (_req, res) => {
      reject(Object.assign(new Error(`refused with ${res.statusCode ?? 0}`), { statusCode: res.statusCode }))
      res.resume()
      client.terminate()
    })
    client.on('error', reject)
  }), { message: `the WebSocket handshake with ${url} to finish` })
}

export interface Refusal {
  statusCode: number
  headers: IncomingHttpHeaders
  body: { statusCode?: number, code?: string, message?: string }
}

/** Expects the handshake to be refused; resolves with the HTTP answer (or fails after a deadline). */
export function refusedUpgrade (url: string, protocols: string[] = [], options: ClientOptions = {}): Promise<Refusal> {
  return within(new Promise<Refusal>((resolve, reject) => {
    const client = new WebSocket(url, protocols, options)
    client.once('open', () => {
      client.terminate()
      reject(new Error('the upgrade was accepted'))
    })
    client.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let body: Refusal['body'] = {}
        try {
          body = JSON.parse(text) as Refusal['body']
        } catch {}
        resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body })
        client.terminate()
      })
    })
    // After a refusal, terminate() emits an error too; the promise has settled by then.
    client.on('error', reject)
  }), { message: `the refusal of the WebSocket handshake with ${url}` })
}

/** The next message on a socket, with its type; fails after a deadline. */
export async function nextMessage (socket: WebSocket): Promise<{ data: Buffer, binary: boolean }> {
  const [data, binary] = await nextEvent(socket, 'message', { message: 'the next WebSocket message' })
  return { data: data as Buffer, binary: binary as boolean }
}

/** Resolves when the socket has closed, with the code and reason it got; fails after a deadline. */
export async function closed (socket: WebSocket): Promise<{ code: number, reason: string }> {
  if (socket.readyState === WebSocket.CLOSED) throw new Error('already closed')
  const [code, reason] = await nextEvent(socket, 'close', { message: 'the WebSocket close' })
  return { code: code as number, reason: (reason as Buffer).toString('utf8') }
}
