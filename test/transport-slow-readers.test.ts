import t from 'tap'
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import type { Test } from 'tap'
import type { ServerResponse } from 'node:http'
import { buildApp, listen, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'
import { signal, within } from './helpers/wait.js'
import type { TargetOptions } from '../lib/index.js'

// Far more than socket buffers hold on loopback: a slow reader keeps its upstream connection busy.
const LARGE = 256 * 1024 * 1024
const CHUNK = Buffer.alloc(64 * 1024, 'x')

/** Writes `LARGE` bytes as fast as the reader takes them, and no faster. */
function writeLarge (res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': LARGE })
  let sent = 0
  const pump = (): void => {
    while (sent < LARGE) {
      sent += CHUNK.length
      if (!res.write(CHUNK)) {
        res.once('drain', pump)
        return
      }
    }
    res.end()
  }
  res.on('close', () => { sent = LARGE })
  pump()
}

/** A client that reads one byte a second of the large body. */
function slowReader (t: Test, port: number, token: string): Socket {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  socket.pause()
  socket.write(`GET /api/large HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\n\r\n`)
  const timer = setInterval(() => socket.read(1), 1000)
  t.teardown(() => {
    clearInterval(timer)
    socket.destroy()
  })
  return socket
}

async function setup (t: Test, timeouts: TargetOptions['timeouts']) {
  const started = signal()
  const cut: Array<Promise<void>> = []
  let large = 0
  const upstream = await startUpstream((req, res) => {
    if (req.url === '/api/large') {
      const closed = signal()
      cut.push(closed.promise)
      res.on('close', () => { if (!res.writableFinished) closed.resolve() })
      writeLarge(res)
      if (++large === 2) started.resolve()
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('small')
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url, timeouts, transport: { pool: { connections: 2 } } }],
    compress: false
  })
  const base = await listen(app)
  const port = Number(new URL(base).port)
  const token = tokenFor(app)
  slowReader(t, port, token)
  slowReader(t, port, token)
  await within(started.promise, { message: 'both slow readers hold an upstream connection' })
  return { base, token, upstream, cut }
}

t.test('connections=2, two slow readers: a third client is refused 503 BUSY within timeouts.queue, never stuck', async (t) => {
  const { base, token, upstream } = await setup(t, { queue: 300 })
  const began = Date.now()
  const res = await within(fetch(`${base}/api/small`, { headers: { authorization: `Bearer ${token}` } }), { message: 'the third client was answered', timeout: 5000 })
  const waited = Date.now() - began
  t.equal(res.status, 503)
  t.equal(res.headers.get('retry-after'), '1')
  const body = await res.json() as { code: string }
  t.equal(body.code, 'FST_GATEHOUSE_UPSTREAM_BUSY')
  t.ok(waited >= 250, `waited for a connection first (${waited} ms)`)
  t.ok(waited < 3000, `answered within the queue limit (${waited} ms)`)
  t.equal(upstream.seen.filter((seen) => seen.url === '/api/small').length, 0, 'never reached the upstream')
})

t.test('connections=2, two slow readers: timeouts.total cuts them and the third client is served', async (t) => {
  const { base, token, upstream, cut } = await setup(t, { total: 500, queue: 0 })
  const res = await within(fetch(`${base}/api/small`, { headers: { authorization: `Bearer ${token}` } }), { message: 'the third client was served', timeout: 5000 })
  t.equal(res.status, 200)
  t.equal(await res.text(), 'small')
  t.equal(upstream.seen.filter((seen) => seen.url === '/api/small').length, 1)
  // The slow readers' exchanges were cut: their upstream responses ended unfinished.
  await within(Promise.all(cut), { message: 'both slow exchanges were aborted upstream' })
  t.equal(cut.length, 2)
})

t.test('timeouts.total before the headers: 504', async (t) => {
  const upstream = await startUpstream(() => {})
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, timeouts: { total: 200 } }] })
  const res = await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${tokenFor(app)}` } })
  t.equal(res.statusCode, 504)
  t.equal(res.json().code, 'FST_GATEHOUSE_UPSTREAM_TIMEOUT')
})
