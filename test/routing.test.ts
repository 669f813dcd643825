import t from 'tap'
import Fastify from 'fastify'
import type { HTTPMethods } from 'fastify'
import gatehouse from '../lib/index.js'
import { buildApp, bearer, SECRET, testUsers, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'

t.test('a prefix matches itself', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/api', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/api')
})

t.test('a prefix matches itself with a trailing slash', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/api/', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/api/')
})

t.test('a prefix matches every path below it', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/api/items/42/notes', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/api/items/42/notes')
})

t.test('a prefix does not match a sibling path that merely starts with it', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/apix/items', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 404)
  t.equal(upstream.seen.length, 0)
})

t.test('params in the prefix match one segment and reach the middleware', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/shops/:shopId/transactions',
      upstream: upstream.url,
      middleware: [async (ctx, next) => {
        await next()
        if (ctx.response !== undefined) ctx.response.headers['x-shop'] = ctx.params.shopId
      }]
    }]
  })
  const res = await app.inject({ url: '/shops/WAL001/transactions/7', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-shop'], 'WAL001')
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/shops/WAL001/transactions/7')
})

t.test('overlapping prefixes route to the most specific target', async (t) => {
  const general = await upstreamFor(t)
  const special = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [
      { prefix: '/api', upstream: general.url },
      { prefix: '/api/special', upstream: special.url }
    ]
  })
  const headers = bearer(tokenFor(app))
  const a = await app.inject({ url: '/api/special/x', headers })
  const b = await app.inject({ url: '/api/special', headers })
  const c = await app.inject({ url: '/api/specialty/x', headers })
  const d = await app.inject({ url: '/api/other', headers })
  t.same([a.statusCode, b.statusCode, c.statusCode, d.statusCode], [200, 200, 200, 200])
  t.same(special.seen.map((r) => r.url), ['/api/special/x', '/api/special'])
  t.same(general.seen.map((r) => r.url), ['/api/specialty/x', '/api/other'])
})

t.test('rewritePrefix replaces only the leading prefix, not a later occurrence', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, rewritePrefix: '/v2' }] })
  const res = await app.inject({ url: '/api/items/api/x?q=/api', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/v2/items/api/x?q=/api')
})

t.test('rewritePrefix applies to the prefix itself', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, rewritePrefix: '/v2' }] })
  const res = await app.inject({ url: '/api', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.url, '/v2')
})

t.test('rewritePrefix "/" strips the prefix', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, rewritePrefix: '/' }] })
  const res = await app.inject({ url: '/api/items', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.url, '/items')
})

t.test('rewritePrefix may use the params of the prefix', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/shops/:shopId/transactions', upstream: upstream.url, rewritePrefix: '/api/v2/:shopId/tx' }]
  })
  const res = await app.inject({ url: '/shops/WAL001/transactions/7?full=1', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/api/v2/WAL001/tx/7?full=1')
})

t.test('the upstream base path is prepended', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `${upstream.url}/base/v1/` }] })
  const res = await app.inject({ url: '/api/items?a=1', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/base/v1/api/items?a=1')
})

t.test('the upstream base path is prepended to a rewritten prefix', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `${upstream.url}/base`, rewritePrefix: '/v2' }] })
  const res = await app.inject({ url: '/api/items', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.url, '/base/v2/items')
})

t.test('the query string reaches the upstream byte for byte', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const query = 'a=1&a=2&b=x+y&c=%20z&d=&e&f=%2Fslash&g=%7e~&h=%C3%A9&a=3'
  const res = await app.inject({ url: `/api/search?${query}`, headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, `/api/search?${query}`)
})

t.test('an empty query string is not invented', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/api/search', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.url, '/api/search')
})

t.test("a host app's own routes keep working beside the targets", async (t) => {
  const upstream = await upstreamFor(t)
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  app.get('/health', async () => ({ ok: true }))
  app.options('/cors-preflight', async (_request, reply) => reply.code(204).header('access-control-allow-origin', '*').send())
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: { verify: await testUsers() } },
    targets: [{ prefix: '/api', upstream: upstream.url }]
  })
  app.get('/after', async () => 'registered after the gatehouse')
  await app.ready()

  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 200)
  t.same(health.json(), { ok: true })
  const preflight = await app.inject({ method: 'OPTIONS', url: '/cors-preflight' })
  t.equal(preflight.statusCode, 204)
  t.equal(preflight.headers['access-control-allow-origin'], '*')
  const after = await app.inject({ url: '/after' })
  t.equal(after.statusCode, 200)
  t.equal(after.body, 'registered after the gatehouse')
  t.equal(upstream.seen.length, 0, 'host routes never reach the upstream')

  const proxied = await app.inject({ url: '/api/x', headers: bearer(app.gatehouse.signToken({ sub: 'alice' })) })
  t.equal(proxied.statusCode, 200)
  t.equal(upstream.seen.length, 1)
})

const PROXIED_METHODS: HTTPMethods[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD']
for (const method of PROXIED_METHODS) {
  t.test(`${method} is proxied with its method`, async (t) => {
    const upstream = await upstreamFor(t)
    const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
    const res = await app.inject({ method, url: '/api/thing', headers: bearer(tokenFor(app)) })
    t.equal(res.statusCode, 200)
    t.equal(upstream.seen.length, 1)
    t.equal(upstream.seen[0]?.method, method)
    t.equal(upstream.seen[0]?.url, '/api/thing')
    if (method === 'HEAD') {
      t.equal(res.body, '', 'HEAD carries no body')
    } else {
      t.equal(res.json().method, method)
    }
  })
}

t.test('TRACE is not proxied', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ method: 'TRACE', url: '/api/thing', headers: bearer(tokenFor(app)) })
  t.ok(res.statusCode === 404 || res.statusCode === 405, `refused (${res.statusCode})`)
  t.equal(upstream.seen.length, 0)
})

for (const status of [301, 302, 307, 308]) {
  t.test(`a ${status} redirect passes through unchanged with its Location`, async (t) => {
    const location = `http://127.0.0.1:1/elsewhere/${status}?from=%2Fapi&x=1`
    const upstream = await upstreamFor(t, (_req, res) => {
      res.writeHead(status, { location, 'content-length': 0 })
      res.end()
    })
    const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
    const res = await app.inject({ method: 'POST', url: '/api/move', payload: 'x', headers: { ...bearer(tokenFor(app)), 'content-type': 'text/plain' } })
    t.equal(res.statusCode, status)
    t.equal(res.headers.location, location)
    t.equal(upstream.seen.length, 1, 'the gateway does not follow the redirect')
  })
}

t.test('a relative Location is not rewritten', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(302, { location: '/api/login?next=%2Fapi%2Fx' })
    res.end()
  })
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, rewritePrefix: '/v2' }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 302)
  t.equal(res.headers.location, '/api/login?next=%2Fapi%2Fx')
  t.equal(upstream.seen[0]?.url, '/v2/x')
})
