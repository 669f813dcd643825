import t from 'tap'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'

// A middleware's bug: a header value undici refuses (InvalidArgumentError) before anything is sent.
const badHeader = async (ctx: { request: { headers: Record<string, unknown>, path: string } }, next: () => Promise<void>): Promise<void> => {
  if (ctx.request.path.endsWith('/bad')) ctx.request.headers['x-broken'] = 'a\r\nx-injected: 1'
  await next()
}

t.test('an invalid header set by a middleware is a 500 INTERNAL, not held against the upstream or the breaker', async (t) => {
  const upstream = await startUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [badHeader],
      transport: { circuitBreaker: { minRequests: 2, failureRate: 0.5, coolDown: 60_000 } }
    }]
  })
  const headers = bearer(tokenFor(app))
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: '/api/bad', headers })
    t.equal(res.statusCode, 500)
    t.equal(res.json().code, 'FST_GATEHOUSE_INTERNAL')
    t.notMatch(res.body, /UND_ERR|invalid|x-broken/i, 'nothing of the library error')
  }
  t.equal(upstream.seen.length, 0, 'nothing reached the upstream')
  const ok = await app.inject({ url: '/api/good', headers })
  t.equal(ok.statusCode, 200, 'the breaker stayed closed')
  t.equal(upstream.seen.length, 1)
})

t.test('nor against passive health: the upstream is not ejected', async (t) => {
  const one = await startUpstream()
  const two = await startUpstream()
  t.teardown(one.close)
  t.teardown(two.close)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: [one.url, two.url],
      middleware: [badHeader],
      transport: { passiveHealth: { failures: 1, coolDown: 60_000 } }
    }]
  })
  const headers = bearer(tokenFor(app))
  for (let i = 0; i < 2; i++) t.equal((await app.inject({ url: '/api/bad', headers })).statusCode, 500)
  for (let i = 0; i < 4; i++) t.equal((await app.inject({ url: '/api/good', headers })).statusCode, 200)
  t.equal(one.seen.length, 2, 'round robin still uses both upstreams')
  t.equal(two.seen.length, 2)
})

t.test('an onUpstreamError hook is not asked about a gateway fault', async (t) => {
  const upstream = await startUpstream()
  t.teardown(upstream.close)
  let asked = 0
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [badHeader],
      onUpstreamError: () => { asked++; return { status: 503, body: { message: 'maintenance' } } }
    }]
  })
  const res = await app.inject({ url: '/api/bad', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_GATEHOUSE_INTERNAL')
  t.equal(asked, 0)
})
