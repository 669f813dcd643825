import t from 'tap'
import { request as httpRequest } from 'node:http'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'
import { rawUpstream } from './helpers/faulty-upstream.js'
import { signal, waitFor, within } from './helpers/wait.js'
import { DEFAULT_BUFFER_RESPONSES } from '../lib/transport/options.js'

// A declared length the gateway streams rather than reads whole.
const STREAMED_LENGTH = DEFAULT_BUFFER_RESPONSES + 1

interface Outcome { status: number, body: string, complete: boolean, error?: string }

/**
 * A real client request that reports whether the transfer completed or was
 * cut; `onHead` runs once the response head has reached the client.
 */
function fetchRaw (url: string, headers: Record<string, string>, onHead: () => void = () => {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { headers, agent: false }, (res) => {
      onHead()
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete }))
      res.on('error', (err) => resolve({ status: res.statusCode ?? 0, body, complete: false, error: err.message }))
      res.on('aborted', () => resolve({ status: res.statusCode ?? 0, body, complete: false, error: 'aborted' }))
    })
    req.on('error', (err) => resolve({ status: 0, body: '', complete: false, error: err.message }))
    req.end()
  })
}

t.test('hangs before headers: 504 after the response timeout, one attempt, upstream connection closed', async (t) => {
  const upstream = await rawUpstream(t, () => {})
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, timeouts: { response: 200 } }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 504)
  t.equal(res.json().code, 'FST_GATEHOUSE_UPSTREAM_TIMEOUT')
  t.equal(upstream.connections(), 1)
  // The upstream request is cancelled: its socket is closed by the gateway.
  await waitFor(() => upstream.open() === 0, { message: 'the gateway closed the upstream socket' })
  t.equal(upstream.open(), 0, 'upstream socket closed')
})

for (const framing of ['content-length', 'chunked'] as const) {
  t.test(`stalls mid-body (${framing}): the client transfer is cut, not completed short`, async (t) => {
    const upstream = await rawUpstream(t, (socket) => {
      const head = framing === 'chunked'
        ? 'HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n'
        : `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${STREAMED_LENGTH}\r\n\r\nhello`
      socket.write(head)
    })
    const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, timeouts: { idle: 200 } }], compress: false })
    const base = await listen(app)
    const started = Date.now()
    const out = await fetchRaw(`${base}/api/x`, bearer(tokenFor(app)))
    t.equal(out.status, 200, 'headers were already sent')
    t.equal(out.complete, false, `transfer cut (${out.error ?? 'no error'})`)
    t.ok(Date.now() - started >= 150, 'after the idle timeout')
    t.equal(out.body, 'hello')
    await waitFor(() => upstream.open() === 0, { message: 'the gateway closed the stalled upstream socket' })
    t.equal(upstream.open(), 0, 'upstream request cancelled')
  })

  t.test(`resets mid-body (${framing}): the client transfer is cut`, async (t) => {
    // The reset goes once the client has the head, so it is mid-body however slow the machine.
    const clientHasHead = signal()
    const upstream = await rawUpstream(t, (socket) => {
      const head = framing === 'chunked'
        ? 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n'
        : `HTTP/1.1 200 OK\r\ncontent-length: ${STREAMED_LENGTH}\r\n\r\nhello`
      socket.write(head)
      void clientHasHead.promise.then(() => socket.resetAndDestroy())
    })
    const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], compress: false })
    const base = await listen(app)
    const out = await within(fetchRaw(`${base}/api/x`, bearer(tokenFor(app)), clientHasHead.resolve), { message: 'the client transfer ended after the upstream reset' })
    t.equal(out.status, 200)
    t.equal(out.complete, false, `transfer cut (${out.error ?? 'no error'})`)
    t.equal(upstream.connections(), 1, 'no retry once the response started')
  })
}

// Bodies of up to transport.bufferResponses bytes with a known length are read whole
// before the response starts, so a stall or reset there is a clean gateway error.
t.test('a small body that stalls mid-way gives 504 before anything was sent', async (t) => {
  const upstream = await rawUpstream(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"a":')
  })
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, timeouts: { idle: 200 } }], compress: false })
  const base = await listen(app)
  const out = await fetchRaw(`${base}/api/x`, bearer(tokenFor(app)))
  t.equal(out.status, 504)
  t.equal(out.complete, true)
  t.match(JSON.parse(out.body), { statusCode: 504, code: 'FST_GATEHOUSE_UPSTREAM_TIMEOUT' })
})

t.test('bufferResponses sets the largest body read whole: 0 streams a small body, a larger limit buffers a large one', async (t) => {
  // The same 100-byte body that stalls after 5 bytes: streamed, the client
  // gets 200 and a cut transfer; read whole (the default), a clean 504.
  const small = await rawUpstream(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"a":')
  })
  const streaming = await buildApp(t, { targets: [{ prefix: '/api', upstream: small.url, timeouts: { idle: 200 }, transport: { bufferResponses: 0 } }], compress: false })
  const streamed = await fetchRaw(`${await listen(streaming)}/api/x`, bearer(tokenFor(streaming)))
  t.equal(streamed.status, 200, 'headers went before the body')
  t.equal(streamed.complete, false, `transfer cut (${streamed.error ?? 'no error'})`)
  t.equal(streamed.body, '{"a":')

  // A body over the default limit, read whole under a limit raised above it.
  const large = await rawUpstream(t, (socket) => {
    socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${STREAMED_LENGTH}\r\n\r\nhello`)
  })
  const buffering = await buildApp(t, { targets: [{ prefix: '/api', upstream: large.url, timeouts: { idle: 200 }, transport: { bufferResponses: STREAMED_LENGTH } }], compress: false })
  const buffered = await fetchRaw(`${await listen(buffering)}/api/x`, bearer(tokenFor(buffering)))
  t.equal(buffered.status, 504, 'nothing was sent before the body failed')
  t.match(JSON.parse(buffered.body), { code: 'FST_GATEHOUSE_UPSTREAM_TIMEOUT' })
})

t.test('a small body reset mid-way gives 502 before anything was sent', async (t) => {
  const upstream = await rawUpstream(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello', () => setTimeout(() => socket.resetAndDestroy(), 50))
  })
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], compress: false })
  const base = await listen(app)
  const out = await fetchRaw(`${base}/api/x`, bearer(tokenFor(app)))
  t.equal(out.status, 502)
  t.match(JSON.parse(out.body), { statusCode: 502, code: 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE' })
})

t.test('a slow but steady body within the idle timeout completes', async (t) => {
  // Ten chunks 100 ms apart: the whole body takes twice the idle timeout, and
  // a gap needs a 400 ms stall of this process to reach it.
  const upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    let n = 0
    const timer = setInterval(() => {
      res.write(`chunk${n}\n`)
      if (++n === 10) {
        clearInterval(timer)
        res.end()
      }
    }, 100)
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, timeouts: { idle: 500 } }], compress: false })
  const base = await listen(app)
  const started = Date.now()
  const out = await fetchRaw(`${base}/api/x`, bearer(tokenFor(app)))
  t.ok(Date.now() - started >= 1000, 'the body took longer than the idle timeout')
  t.equal(out.complete, true)
  t.equal(out.body, Array.from({ length: 10 }, (_, i) => `chunk${i}\n`).join(''))
})

t.test('a client that stops reading for longer than the idle timeout still gets the whole body', async (t) => {
  // 16 MiB: far more than the socket buffers hold, so the upstream has to
  // wait on the client (back-pressure), which the idle timer must not count.
  const size = 16 * 1024 * 1024
  const piece = Buffer.alloc(64 * 1024, 'x')
  const upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size })
    let left = size
    const pump = (): void => {
      while (left > 0) {
        left -= piece.length
        if (!res.write(piece)) {
          res.once('drain', pump)
          return
        }
      }
      res.end()
    }
    pump()
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, timeouts: { idle: 150 } }], compress: false })
  const base = await listen(app)
  const out = await new Promise<{ bytes: number, complete: boolean, error?: string }>((resolve) => {
    const req = httpRequest(`${base}/api/big`, { headers: bearer(tokenFor(app)), agent: false }, (res) => {
      let bytes = 0
      res.once('data', (chunk: Buffer) => {
        bytes += chunk.length
        res.pause()
        // Four idle timeouts without reading.
        setTimeout(() => {
          res.on('data', (more: Buffer) => { bytes += more.length })
          res.resume()
        }, 600)
      })
      res.on('end', () => resolve({ bytes, complete: res.complete }))
      res.on('error', (err) => resolve({ bytes, complete: false, error: err.message }))
      res.on('aborted', () => resolve({ bytes, complete: false, error: 'aborted' }))
    })
    req.end()
  })
  t.equal(out.complete, true, `complete (${out.error ?? 'no error'})`)
  t.equal(out.bytes, size)
})

t.test('pool.connections bounds the upstream connections', async (t) => {
  let concurrent = 0
  let peak = 0
  // Answers are held until two requests are in flight at once (or a deadline
  // passed), so both pooled connections are open whatever the scheduling.
  const twoInFlight = signal()
  const released = within(twoInFlight.promise, { message: 'two requests in flight upstream' }).catch(() => {})
  const upstream = await startUpstream((_req, res) => {
    concurrent++
    peak = Math.max(peak, concurrent)
    if (concurrent === 2) twoInFlight.resolve()
    void released.then(() => {
      concurrent--
      res.writeHead(200, { 'content-length': 2 }).end('ok')
    })
  })
  t.teardown(upstream.close)
  let connections = 0
  upstream.server.on('connection', () => { connections++ })
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url, transport: { pool: { connections: 2, keepAliveTimeout: 10_000 } } }]
  })
  const headers = bearer(tokenFor(app))
  const results = await Promise.all(Array.from({ length: 8 }, (_, i) => app.inject({ url: `/api/${i}`, headers })))
  t.same(results.map((r) => r.statusCode), Array(8).fill(200))
  t.equal(peak, 2, 'never more than 2 requests at once upstream')
  t.equal(connections, 2, 'connections are kept alive and reused')
})

t.test('invalid transport options fail at register', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ pool: { connections: 0 } }, /transport\.pool\.connections/],
    [{ retry: { methods: ['POST'] } }, /transport\.retry\.methods/],
    [{ balance: 'random' }, /transport\.balance/],
    [{ tls: { cert: 'x' } }, /transport\.tls\.key/],
    [{ circuitBreaker: { failureRate: 2 } }, /circuitBreaker\.failureRate/],
    [{ rewrite: { publicOrigin: 'https://x.example/path' } }, /rewrite\.publicOrigin/],
    [{ activeHealth: { path: 'health' } }, /activeHealth\.path/],
    [{ bufferResponses: -1 }, /transport\.bufferResponses/],
    [{ bufferResponses: 1.5 }, /transport\.bufferResponses/],
    [{ bufferResponses: '64k' }, /transport\.bufferResponses/]
  ]
  for (const [transport, message] of cases) {
    await t.rejects(buildApp(t, { targets: [{ prefix: '/api', upstream: 'http://127.0.0.1:1', transport: transport as never }] }), { code: 'FST_GATEHOUSE_INVALID_OPTION', message })
  }
  await t.rejects(buildApp(t, { targets: [{ prefix: '/api', upstream: ['http://127.0.0.1:1/a', 'http://127.0.0.1:2/b'] }] }), { message: /upstream\[1\]/ })
  await t.rejects(buildApp(t, { targets: [{ prefix: '/api', upstream: [] }] }), { code: 'FST_GATEHOUSE_INVALID_OPTION' })
})
