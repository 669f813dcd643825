import t from 'tap'
import { VerifiedTokens } from '../lib/auth/verified.js'
import type { GatehouseClaims } from '../lib/index.js'
import { bearer, buildApp, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'

/*
 * The verification cache: keyed by the whole token, never past `exp`,
 * bounded, and handing out claims nobody can change for the next request.
 */

const NOW = 1_700_000_000_000

function claims (expSeconds: number, extra: Record<string, unknown> = {}): GatehouseClaims {
  return { sub: 'alice', exp: expSeconds, ...extra }
}

t.test('a verified token is served from the cache until its exp, then dropped', async (t) => {
  const cache = new VerifiedTokens(10)
  const exp = NOW / 1000 + 60
  const stored = cache.add('a.b.c', claims(exp), NOW)
  t.equal(cache.get('a.b.c', NOW), stored, 'a hit returns the stored claims')
  t.equal(cache.get('a.b.c', exp * 1000 - 1), stored, 'still served 1 ms before exp')
  t.equal(cache.get('a.b.c', exp * 1000), undefined, 'not served at exp')
  t.equal(cache.size, 0, 'and forgotten')
  t.equal(cache.get('a.b.x', NOW), undefined, 'another token text is another key')
})

t.test('claims already past exp (accepted by clock tolerance) are not cached', async (t) => {
  const cache = new VerifiedTokens(10)
  cache.add('late', claims(NOW / 1000 - 5), NOW)
  t.equal(cache.size, 0)
  t.equal(cache.get('late', NOW), undefined)
})

t.test('the cache is bounded: the oldest entry goes first', async (t) => {
  const cache = new VerifiedTokens(3)
  const exp = NOW / 1000 + 60
  for (const token of ['t1', 't2', 't3', 't4']) cache.add(token, claims(exp, { token }), NOW)
  t.equal(cache.size, 3)
  t.equal(cache.get('t1', NOW), undefined, 't1 was evicted')
  t.same(['t2', 't3', 't4'].map((token) => cache.get(token, NOW)?.token), ['t2', 't3', 't4'])
  const none = new VerifiedTokens(0)
  t.equal(none.add('t', claims(exp), NOW).sub, 'alice', 'size 0 still returns the claims')
  t.equal(none.size, 0, 'but keeps nothing')
})

t.test('cached claims are frozen, nested values included', async (t) => {
  const cache = new VerifiedTokens(10)
  const stored = cache.add('tok', claims(NOW / 1000 + 60, { roles: ['clerk'], org: { id: 'WAL' } }), NOW)
  t.ok(Object.isFrozen(stored))
  t.ok(Object.isFrozen(stored.roles))
  t.ok(Object.isFrozen(stored.org))
  t.throws(() => { (stored.roles as string[]).push('admin') }, TypeError)
})

t.test('through the gateway: a cached token is refused once it expires', async (t) => {
  const upstream = await upstreamFor(t)
  // A minute to make the first two requests however loaded the machine; the
  // clock is then moved past exp instead of sleeping until it.
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { expiresIn: 60 } })
  const token = tokenFor(app)
  const first = await app.inject({ url: '/api/orders', headers: bearer(token) })
  t.equal(first.statusCode, 200, 'accepted (and now cached)')
  const again = await app.inject({ url: '/api/orders', headers: bearer(token) })
  t.equal(again.statusCode, 200, 'accepted again')
  const { iat, exp } = JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()) as { iat: number, exp: number }
  t.equal(exp - iat, 60, 'the token lives expiresIn seconds')
  const realNow = Date.now
  Date.now = () => exp * 1000 + 50
  let late
  try {
    late = await app.inject({ url: '/api/orders', headers: bearer(token) })
  } finally {
    Date.now = realNow
  }
  t.equal(late.statusCode, 401, 'refused after exp, although it was cached')
  t.equal(late.json().code, 'FST_GATEHOUSE_TOKEN_EXPIRED')
  t.equal(upstream.seen.length, 2, 'the upstream saw only the two accepted requests')
})

t.test('through the gateway: a middleware cannot change the claims the next request sees', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (ctx, next) => {
        ctx.request.headers['x-role-seen'] = String(ctx.user?.role)
        try {
          (ctx.user as Record<string, unknown>).role = 'admin'
        } catch {
          ctx.request.headers['x-claims-frozen'] = 'yes'
        }
        await next()
      }]
    }]
  })
  const token = tokenFor(app, { sub: 'bob', role: 'clerk' })
  for (let i = 0; i < 2; i++) {
    const res = await app.inject({ url: '/api/orders', headers: bearer(token) })
    t.equal(res.statusCode, 200)
  }
  t.same(upstream.seen.map((seen) => seen.headers['x-role-seen']), ['clerk', 'clerk'], 'both requests saw the signed role')
  t.same(upstream.seen.map((seen) => seen.headers['x-claims-frozen']), ['yes', 'yes'])
})
