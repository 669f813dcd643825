import t from 'tap'
import type { Test } from 'tap'
import { Writable } from 'node:stream'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { closedPort, startUpstream } from './helpers/upstream.js'
import { rawUpstream } from './helpers/faulty-upstream.js'

const FAST = { minDelay: 1, maxDelay: 5 }

async function flaky (t: Test, failures: number, retryAfter?: string) {
  let calls = 0
  const upstream = await startUpstream((_req, res) => {
    if (calls++ < failures) {
      res.writeHead(503, { 'content-length': 4, ...(retryAfter === undefined ? {} : { 'retry-after': retryAfter }) }).end('busy')
      return
    }
    res.writeHead(200, { 'content-length': 2 }).end('ok')
  })
  t.teardown(upstream.close)
  return upstream
}

t.test('503 then 200: a GET is retried and succeeds', async (t) => {
  const upstream = await flaky(t, 1, '0')
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, transport: { retry: { retries: 2, ...FAST } } }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'ok')
  t.equal(upstream.seen.length, 2, 'two attempts')
})

t.test('retries are bounded: the last 503 reaches the client', async (t) => {
  const upstream = await flaky(t, 10)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, transport: { retry: { retries: 2, ...FAST } } }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 503)
  t.equal(res.body, 'busy')
  t.equal(upstream.seen.length, 3, 'first attempt + 2 retries')
})

t.test('Retry-After is honoured up to the cap; beyond it the 503 passes through', async (t) => {
  const honoured = await flaky(t, 1, '1')
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: honoured.url, transport: { retry: { retries: 1, ...FAST, maxRetryAfter: 2000 } } }] })
  const started = Date.now()
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.ok(Date.now() - started >= 950, 'waited the announced second')

  const tooLong = await flaky(t, 1, '120')
  const capped = await buildApp(t, { targets: [{ prefix: '/api', upstream: tooLong.url, transport: { retry: { retries: 1, ...FAST, maxRetryAfter: 2000 } } }] })
  const passed = await capped.inject({ url: '/api/x', headers: bearer(tokenFor(capped)) })
  t.equal(passed.statusCode, 503)
  t.equal(passed.headers['retry-after'], '120')
  t.equal(tooLong.seen.length, 1)
})

t.test('a POST is never retried', async (t) => {
  const upstream = await flaky(t, 1, '0')
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, transport: { retry: { retries: 3, ...FAST } } }] })
  const res = await app.inject({ method: 'POST', url: '/api/x', headers: { ...bearer(tokenFor(app)), 'content-type': 'application/json' }, payload: '{"a":1}' })
  t.equal(res.statusCode, 503)
  t.equal(upstream.seen.length, 1)
})

t.test('a PUT whose body was streamed is not retried after a reset', async (t) => {
  const resetting = await rawUpstream(t, (socket) => socket.resetAndDestroy())
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: resetting.url, transport: { retry: { retries: 3, ...FAST } } }] })
  const res = await app.inject({ method: 'PUT', url: '/api/x', headers: { ...bearer(tokenFor(app)), 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(64 * 1024, 1) })
  t.equal(res.statusCode, 502)
  t.equal(resetting.connections(), 1, 'one attempt only')
})

t.test('a reset GET is retried on another connection', async (t) => {
  let first = true
  const upstream = await rawUpstream(t, (socket) => {
    if (first) {
      first = false
      socket.resetAndDestroy()
      return
    }
    socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok')
  })
  const logs: Array<{ msg: string, attempt?: number, code?: string }> = []
  const stream = new Writable({ write (chunk: Buffer, _enc, done) { logs.push(JSON.parse(chunk.toString())); done() } })
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url, transport: { retry: { retries: 1, ...FAST } } }],
    server: { logger: { level: 'warn', stream } }
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.connections(), 2)
  const retries = logs.filter((entry) => entry.msg.startsWith('retrying upstream request'))
  t.equal(retries.length, 1, 'the retry is logged')
  t.equal(retries[0]?.attempt, 1)
})

t.test('connection refused on one upstream: the retry goes to the other', async (t) => {
  const port = await closedPort()
  const good = await startUpstream()
  t.teardown(good.close)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: [`http://127.0.0.1:${port}`, good.url], transport: { retry: { retries: 1, ...FAST }, passiveHealth: false } }]
  })
  const headers = bearer(tokenFor(app))
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: `/api/${i}`, headers })
    t.equal(res.statusCode, 200, `request ${i}`)
  }
  t.equal(good.seen.length, 4)
})
