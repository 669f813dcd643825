import t from 'tap'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { closedPort, upstreamFor } from './helpers/upstream.js'
import { rawUpstream } from './helpers/faulty-upstream.js'
import { signal, waitFor, within } from './helpers/wait.js'

t.test('round-robin across upstreams, each with its own Host', async (t) => {
  const a = await upstreamFor(t)
  const b = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: [a.url, b.url] }] })
  const headers = bearer(tokenFor(app))
  for (let i = 0; i < 6; i++) t.equal((await app.inject({ url: `/api/${i}`, headers })).statusCode, 200)
  t.equal(a.seen.length, 3)
  t.equal(b.seen.length, 3)
  t.equal(a.seen[0]?.headers.host, `127.0.0.1:${a.port}`)
  t.equal(b.seen[0]?.headers.host, `127.0.0.1:${b.port}`)
})

t.test('least-in-flight avoids the busy upstream', async (t) => {
  // The slow upstream holds every answer until the test releases it, so it stays busy however loaded the machine is.
  const reached = signal()
  const release = signal()
  const slow = await upstreamFor(t, (_req, res) => {
    reached.resolve()
    void release.promise.then(() => res.writeHead(200, { 'content-length': 4 }).end('slow'))
  })
  t.teardown(() => release.resolve())
  const fast = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: [slow.url, fast.url], transport: { balance: 'least-in-flight' } }] })
  const headers = bearer(tokenFor(app))
  // Two concurrent requests occupy one each; the next ones go to the free (fast) one.
  const pending = [app.inject({ url: '/api/a', headers }), app.inject({ url: '/api/b', headers })]
  await within(reached.promise, { message: 'one of the first two requests reached the slow upstream' })
  await within(Promise.race(pending), { message: 'the other one was answered by the fast upstream' })
  for (let i = 0; i < 4; i++) t.equal((await app.inject({ url: `/api/n${i}`, headers })).statusCode, 200)
  release.resolve()
  t.same((await Promise.all(pending)).map((res) => res.statusCode), [200, 200])
  t.equal(slow.seen.length, 1, 'the slow upstream got only its first request')
  t.equal(fast.seen.length, 5)
})

t.test('passive health ejects a failing upstream for the cool-down', async (t) => {
  const port = await closedPort()
  const good = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: [`http://127.0.0.1:${port}`, good.url], transport: { passiveHealth: { failures: 2, coolDown: 60_000 } } }]
  })
  const headers = bearer(tokenFor(app))
  const statuses: number[] = []
  for (let i = 0; i < 10; i++) statuses.push((await app.inject({ url: `/api/${i}`, headers })).statusCode)
  t.equal(statuses.filter((s) => s === 502).length, 2, 'two failures, then ejected')
  t.equal(good.seen.length, 8)
})

t.test('no healthy upstream: fast 503 with Retry-After', async (t) => {
  // Upstreams that accept and reset every connection: they count attempts, which a closed port cannot.
  const a = await rawUpstream(t, (socket) => socket.destroy())
  const b = await rawUpstream(t, (socket) => socket.destroy())
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: [a.url, b.url], transport: { passiveHealth: { failures: 1, coolDown: 30_000 } } }]
  })
  const headers = bearer(tokenFor(app))
  t.equal((await app.inject({ url: '/api/1', headers })).statusCode, 502)
  t.equal((await app.inject({ url: '/api/2', headers })).statusCode, 502)
  t.same([a.connections(), b.connections()], [1, 1], 'each upstream failed once')
  const res = await app.inject({ url: '/api/3', headers })
  t.equal(res.statusCode, 503)
  t.equal(res.json().code, 'FST_GATEHOUSE_NO_HEALTHY_UPSTREAM')
  t.ok(Number(res.headers['retry-after']) >= 29 && Number(res.headers['retry-after']) <= 30, `retry-after ${res.headers['retry-after']}`)
  t.same([a.connections(), b.connections()], [1, 1], 'fast: no upstream was tried')
  t.notOk(res.body.includes('127.0.0.1'))
})

t.test('active health checks mark an upstream down and up again; timers stop on close', async (t) => {
  let healthy = false
  const flappy = await upstreamFor(t, (req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(healthy ? 200 : 500, { 'content-length': 0 }).end()
      return
    }
    res.writeHead(200, { 'content-length': 6 }).end('flappy')
  })
  const steady = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: [flappy.url, steady.url], transport: { activeHealth: { path: '/healthz', interval: 30, healthyThreshold: 1, unhealthyThreshold: 1 } } }]
  })
  const headers = bearer(tokenFor(app))
  const probes = (): number => flappy.seen.filter((r) => r.url === '/healthz').length
  await waitFor(() => probes() >= 2, { message: 'two health probes reached the failing upstream' })
  for (let i = 0; i < 4; i++) await app.inject({ url: `/api/${i}`, headers })
  t.equal(flappy.seen.filter((r) => r.url !== '/healthz').length, 0, 'down upstream gets no traffic')
  t.equal(flappy.seen[0]?.headers['user-agent'], 'fastify-gatehouse-health')
  healthy = true
  const before = probes()
  await waitFor(() => probes() >= before + 2, { message: 'two health probes reached the recovered upstream' })
  for (let i = 0; i < 4; i++) await app.inject({ url: `/api/b${i}`, headers })
  t.ok(flappy.seen.filter((r) => r.url !== '/healthz').length >= 1, 'back in rotation')
  await app.close()
  const after = probes()
  // An absence can only be watched for: four probe intervals.
  await new Promise((resolve) => setTimeout(resolve, 120))
  t.equal(probes(), after, 'no probe after close')
})
