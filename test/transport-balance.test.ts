import t from 'tap'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { closedPort, upstreamFor } from './helpers/upstream.js'

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
  const slow = await upstreamFor(t, (_req, res) => { setTimeout(() => res.writeHead(200, { 'content-length': 4 }).end('slow'), 300) })
  const fast = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: [slow.url, fast.url], transport: { balance: 'least-in-flight' } }] })
  const headers = bearer(tokenFor(app))
  // Two concurrent slow-ish requests occupy one each; the next ones go to the free (fast) one.
  const pending = [app.inject({ url: '/api/a', headers }), app.inject({ url: '/api/b', headers })]
  await new Promise((resolve) => setTimeout(resolve, 50))
  for (let i = 0; i < 4; i++) t.equal((await app.inject({ url: `/api/n${i}`, headers })).statusCode, 200)
  await Promise.all(pending)
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
  const a = await closedPort()
  const b = await closedPort()
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: [`http://127.0.0.1:${a}`, `http://127.0.0.1:${b}`], transport: { passiveHealth: { failures: 1, coolDown: 30_000 } } }]
  })
  const headers = bearer(tokenFor(app))
  t.equal((await app.inject({ url: '/api/1', headers })).statusCode, 502)
  t.equal((await app.inject({ url: '/api/2', headers })).statusCode, 502)
  const started = Date.now()
  const res = await app.inject({ url: '/api/3', headers })
  t.equal(res.statusCode, 503)
  t.equal(res.json().code, 'FST_GATEHOUSE_NO_HEALTHY_UPSTREAM')
  t.ok(Number(res.headers['retry-after']) >= 29 && Number(res.headers['retry-after']) <= 30, `retry-after ${res.headers['retry-after']}`)
  t.ok(Date.now() - started < 100, 'fast')
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
  for (let i = 0; i < 100 && probes() < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  for (let i = 0; i < 4; i++) await app.inject({ url: `/api/${i}`, headers })
  t.equal(flappy.seen.filter((r) => r.url !== '/healthz').length, 0, 'down upstream gets no traffic')
  t.equal(flappy.seen[0]?.headers['user-agent'], 'fastify-gatehouse-health')
  healthy = true
  const before = probes()
  for (let i = 0; i < 100 && probes() < before + 2; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  for (let i = 0; i < 4; i++) await app.inject({ url: `/api/b${i}`, headers })
  t.ok(flappy.seen.filter((r) => r.url !== '/healthz').length >= 1, 'back in rotation')
  await app.close()
  const after = probes()
  await new Promise((resolve) => setTimeout(resolve, 120))
  t.equal(probes(), after, 'no probe after close')
})
