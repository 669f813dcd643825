import type { Test } from 'tap'
import { createServer } from 'node:http'
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

/** One request as the upstream saw it. */
export interface SeenRequest {
  method: string
  url: string
  headers: IncomingHttpHeaders
  body: Buffer
}

export interface Upstream {
  /** `http://127.0.0.1:PORT` */
  url: string
  port: number
  server: Server
  /** Every request received, in order, with its full body. */
  seen: SeenRequest[]
  close: () => Promise<void>
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, seen: SeenRequest) => void

/** The default handler: answers JSON describing the request it got. */
export const echo: UpstreamHandler = (req, res, seen) => {
  const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: seen.body.toString('utf8') })
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

/**
 * Starts a real HTTP upstream on 127.0.0.1:0. The handler runs once the body
 * has been read in full, unless `raw` is set (then it runs at once and
 * `seen.body` is filled as data arrives).
 */
export async function startUpstream (handler: UpstreamHandler = echo, opts: { raw?: boolean } = {}): Promise<Upstream> {
  const seen: SeenRequest[] = []
  const sockets = new Set<import('node:net').Socket>()
  const server = createServer((req, res) => {
    const entry: SeenRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.alloc(0) }
    seen.push(entry)
    if (opts.raw === true) {
      req.on('data', (chunk: Buffer) => { entry.body = Buffer.concat([entry.body, chunk]) })
      handler(req, res, entry)
      return
    }
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      entry.body = Buffer.concat(chunks)
      handler(req, res, entry)
    })
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    seen,
    close: () => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resolve())
    })
  }
}

/** A real HTTP upstream (see startUpstream), closed on the test's teardown. */
export async function upstreamFor (t: Test, handler?: UpstreamHandler): Promise<Upstream> {
  const upstream = await startUpstream(handler)
  t.teardown(upstream.close)
  return upstream
}

/** A port on 127.0.0.1 where nothing listens (bound, then released). */
export async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
