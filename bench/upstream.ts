import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer } from 'ws'
import { requireEnv, serveRunner } from './ipc.js'
import { API_KEY_HEADER, catalogue, LARGE_BYTES, ROUTES, SMALL_BYTES } from './shared.js'
import type { LastSeen } from './shared.js'

// Download chunks: large enough to keep syscalls cheap, small enough to stream.
const CHUNK_BYTES = 64 * 1024
// Nobody asks a benchmark upstream for more than this in one download.
const MAX_DOWNLOAD_BYTES = 16 * 1024 ** 3

/**
 * The benchmark upstream: plain node:http, an API key check, deterministic
 * JSON (about 2 KB and 200 KB), an upload sink that answers the byte count
 * and a download of any length. It remembers the last request's headers so
 * the runner can check what a gateway really sent.
 */
function createUpstream (apiKey: string): Server {
  const small = catalogue(SMALL_BYTES)
  const large = catalogue(LARGE_BYTES)
  const chunk = Buffer.alloc(CHUNK_BYTES, 'gatehouse-bench ')
  const last: LastSeen = { count: 0, method: null, url: null, headers: {}, connections: 0, ws: { accepted: 0, refused: 0, open: 0 } }

  function json (res: ServerResponse, status: number, body: Buffer | string): void {
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }

  function download (req: IncomingMessage, res: ServerResponse): void {
    const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '')
    const total = Number(query.get('bytes') ?? CHUNK_BYTES)
    if (!Number.isSafeInteger(total) || total < 0 || total > MAX_DOWNLOAD_BYTES) {
      json(res, 400, '{"error":"bytes must be an integer between 0 and 16 GiB"}')
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total })
    let left = total
    const pump = (): void => {
      while (left > 0) {
        const piece = left >= CHUNK_BYTES ? chunk : chunk.subarray(0, left)
        left -= piece.length
        if (!res.write(piece)) {
          res.once('drain', pump)
          return
        }
      }
      res.end()
    }
    res.on('close', () => { left = 0 })
    pump()
  }

  function upload (req: IncomingMessage, res: ServerResponse): void {
    let bytes = 0
    req.on('data', (data: Buffer) => { bytes += data.length })
    req.on('end', () => json(res, 200, JSON.stringify({ bytes })))
  }

  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0]
    if (path === ROUTES.debug) {
      json(res, 200, JSON.stringify(last))
      return
    }
    last.count++
    last.method = req.method ?? null
    last.url = req.url ?? null
    last.headers = req.headers
    if (req.headers[API_KEY_HEADER] !== apiKey) {
      req.resume()
      json(res, 401, '{"error":"missing or wrong API key"}')
      return
    }
    if (req.method === 'GET' && path === ROUTES.small) json(res, 200, small)
    else if (req.method === 'GET' && path === ROUTES.large) json(res, 200, large)
    else if (req.method === 'GET' && path === ROUTES.download) download(req, res)
    else if (req.method === 'POST' && path === ROUTES.upload) upload(req, res)
    else {
      req.resume()
      json(res, 404, '{"error":"not found"}')
    }
  })
  server.on('connection', () => { last.connections++ })
  // The tunnels' far end: echoes every message. An upgrade counts as
  // accepted only with the key and without the caller's Authorization, so
  // the scale checks see that every tunnel went through the gateway's auth.
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false })
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0]
    if (path !== ROUTES.ws || req.headers[API_KEY_HEADER] !== apiKey || req.headers.authorization !== undefined) {
      last.ws.refused++
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      last.ws.accepted++
      last.ws.open++
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
      ws.on('close', () => { last.ws.open-- })
      ws.on('error', () => {})
    })
  })
  return server
}

async function main (): Promise<void> {
  const server = createUpstream(requireEnv('BENCH_API_KEY'))
  // Long enough that pooled gateway connections are not recycled mid-run.
  server.keepAliveTimeout = 60_000
  const sockets = new Set<Socket>()
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  serveRunner(`http://127.0.0.1:${port}`, () => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
}

await main()
