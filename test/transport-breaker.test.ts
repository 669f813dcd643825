import t from 'tap'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'

t.test('the circuit opens on a failure rate, fails fast, then closes after a good half-open probe', async (t) => {
  let failing = true
  const upstream = await startUpstream((_req, res) => {
    res.writeHead(failing ? 502 : 200, { 'content-length': 2 }).end(failing ? 'no' : 'ok')
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url, transport: { circuitBreaker: { window: 10_000, minRequests: 4, failureRate: 0.5, coolDown: 200 } } }]
  })
  const headers = bearer(tokenFor(app))
  for (let i = 0; i < 4; i++) t.equal((await app.inject({ url: `/api/${i}`, headers })).statusCode, 502)
  const open = await app.inject({ url: '/api/open', headers })
  t.equal(open.statusCode, 503)
  t.equal(open.json().code, 'FST_GATEHOUSE_CIRCUIT_OPEN')
  t.equal(open.headers['retry-after'], '1')
  t.equal(upstream.seen.length, 4, 'the upstream was not contacted while open')

  await new Promise((resolve) => setTimeout(resolve, 250))
  // Half-open: one probe fails, the circuit opens again.
  t.equal((await app.inject({ url: '/api/probe1', headers })).statusCode, 502)
  t.equal((await app.inject({ url: '/api/after1', headers })).statusCode, 503)
  t.equal(upstream.seen.length, 5)

  failing = false
  await new Promise((resolve) => setTimeout(resolve, 250))
  t.equal((await app.inject({ url: '/api/probe2', headers })).statusCode, 200, 'probe succeeds')
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: `/api/ok${i}`, headers })).statusCode, 200, 'closed again')
  t.equal(upstream.seen.length, 9)
})
