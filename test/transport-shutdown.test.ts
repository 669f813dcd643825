import t from 'tap'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'

t.test('close() lets in-flight requests finish, refuses new connections, then closes', async (t) => {
  const upstream = await startUpstream((req, res) => {
    const wait = req.url?.includes('slow') === true ? 300 : 0
    setTimeout(() => res.writeHead(200, { 'content-length': 4 }).end('done'), wait)
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    server: { return503OnClosing: false }
  })
  const base = await listen(app)
  const headers = bearer(tokenFor(app))
  const inFlight = fetch(`${base}/api/slow`, { headers })
  await new Promise((resolve) => setTimeout(resolve, 50))
  const closing = app.close()
  await new Promise((resolve) => setTimeout(resolve, 30))
  // Not accepting any more: the listener is closed during the drain.
  await t.rejects(fetch(`${base}/api/late`, { headers }), 'new connections are refused')
  const res = await inFlight
  t.equal(res.status, 200)
  t.equal(await res.text(), 'done', 'the in-flight request completed')
  await closing
  t.equal(upstream.seen.length, 1, 'the late request never reached the upstream')
})

t.test('the drain deadline cuts a long stream', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: hi\n\n')
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  // buildApp registered with defaults; a second app with a short deadline:
  const { default: Fastify } = await import('fastify')
  const { default: gatehouse } = await import('../lib/index.js')
  const short = Fastify()
  await short.register(gatehouse, { auth: { secret: 'test-secret-that-is-at-least-32-bytes-long!', login: false }, targets: [{ prefix: '/api', upstream: upstream.url }], shutdown: { drainTimeout: 200 } })
  const base = await listen(short)
  const res = await fetch(`${base}/api/events`, { headers: bearer(tokenFor(app)) })
  const reader = res.body?.getReader()
  await reader?.read()
  const started = Date.now()
  await short.close()
  const elapsed = Date.now() - started
  t.ok(elapsed >= 150 && elapsed < 3000, `closed after the deadline (${elapsed} ms)`)
  await t.rejects(reader?.read() ?? Promise.reject(new Error('no body')), 'the stream was cut')
})
