import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { TargetOptions } from '../lib/index.js'
import { bearer, buildApp, listen, tokenFor } from './helpers/app.js'
import { rawGet } from './helpers/raw-request.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { refusedUpgrade, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'

/*
 * Declarative rules (`allow`, `tenant`): a token that does not satisfy them
 * gets 403 FST_GATEHOUSE_FORBIDDEN before any middleware, `authorize` or
 * upstream contact.
 */

const FORBIDDEN = {
  statusCode: 403,
  code: 'FST_GATEHOUSE_FORBIDDEN',
  error: 'Forbidden',
  message: 'Access to this resource is forbidden'
}

interface Setup { app: FastifyInstance, upstream: Upstream, base: string }

async function setup (t: Test, target: Partial<TargetOptions<any, any>>, prefix = '/api'): Promise<Setup> {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix, upstream: upstream.url, ...target }] })
  const base = await listen(app)
  return { app, upstream, base }
}

async function get (s: Setup, url: string, claims: Record<string, unknown>) {
  return s.app.inject({ url, headers: bearer(tokenFor(s.app, claims)) })
}

// Roles

t.test('anyRole lets a token with one of the roles through', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['admin', 'clerk'] } })
  const res = await get(s, '/api/x', { sub: 'bob', role: 'clerk' })
  t.equal(res.statusCode, 200)
  t.equal(s.upstream.seen.length, 1)
})

t.test('anyRole refuses a token with none of the roles, with zero upstream hits', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['admin'] } })
  const res = await get(s, '/api/x', { sub: 'bob', role: 'clerk' })
  t.equal(res.statusCode, 403)
  t.same(res.json(), FORBIDDEN)
  t.equal(s.upstream.seen.length, 0)
})

t.test('roles compare case-sensitively', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['admin'] } })
  t.equal((await get(s, '/api/x', { sub: 'a', role: 'Admin' })).statusCode, 403)
  t.equal((await get(s, '/api/x', { sub: 'a', role: 'admin ' })).statusCode, 403)
  t.equal(s.upstream.seen.length, 0)
})

t.test('a `roles` array claim is read too', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['auditor'] } })
  t.equal((await get(s, '/api/x', { sub: 'a', roles: ['clerk', 'auditor'] })).statusCode, 200)
  t.equal((await get(s, '/api/x', { sub: 'a', roles: ['clerk'] })).statusCode, 403)
  t.equal(s.upstream.seen.length, 1)
})

t.test('a role string is one role: it is never split on spaces', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['admin'] } })
  const res = await get(s, '/api/x', { sub: 'a', role: 'clerk admin' })
  t.equal(res.statusCode, 403)
  t.equal(s.upstream.seen.length, 0)
})

t.test('a token without any role claim is refused', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['admin'] } })
  t.equal((await get(s, '/api/x', { sub: 'a' })).statusCode, 403)
  t.equal((await get(s, '/api/x', { sub: 'a', role: ['admin'] as unknown as string, roles: 'x' })).statusCode, 200, 'a role array under `role` counts')
  t.equal((await get(s, '/api/x', { sub: 'a', role: 1, roles: [{ name: 'admin' }] })).statusCode, 403, 'non-strings never match')
  t.equal(s.upstream.seen.length, 1)
})

t.test('roleClaims replaces the claims roles are read from', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['admin'], roleClaims: ['https://example.com/roles'] } })
  t.equal((await get(s, '/api/x', { sub: 'a', 'https://example.com/roles': ['admin'] })).statusCode, 200)
  t.equal((await get(s, '/api/x', { sub: 'a', role: 'admin' })).statusCode, 403, 'the default claims are no longer read')
  t.equal(s.upstream.seen.length, 1)
})

t.test('a role claim inherited from Object.prototype never counts', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['function'], roleClaims: ['constructor', 'toString'] } })
  t.equal((await get(s, '/api/x', { sub: 'a' })).statusCode, 403)
  t.equal(s.upstream.seen.length, 0)
})

// Scopes

t.test('allScopes needs every scope of a space-separated `scope` claim', async (t) => {
  const s = await setup(t, { allow: { allScopes: ['orders:read', 'orders:write'] } })
  t.equal((await get(s, '/api/x', { sub: 'a', scope: 'profile orders:write orders:read' })).statusCode, 200)
  t.equal((await get(s, '/api/x', { sub: 'a', scope: 'orders:read' })).statusCode, 403, 'one of two is not enough')
  t.equal((await get(s, '/api/x', { sub: 'a', scope: 'orders:read  orders:write' })).statusCode, 200, 'extra spaces are tolerated')
  t.equal((await get(s, '/api/x', { sub: 'a', scope: 'ORDERS:READ ORDERS:WRITE' })).statusCode, 403, 'case-sensitive')
  t.equal((await get(s, '/api/x', { sub: 'a', scope: 'orders:read,orders:write' })).statusCode, 403, 'only spaces separate')
  t.equal(s.upstream.seen.length, 2)
})

t.test('an `scp` array claim is read too', async (t) => {
  const s = await setup(t, { allow: { allScopes: ['a', 'b'] } })
  t.equal((await get(s, '/api/x', { sub: 'x', scp: ['b', 'a'] })).statusCode, 200)
  t.equal((await get(s, '/api/x', { sub: 'x', scp: 'a b' })).statusCode, 200, 'a space-separated `scp` (Azure AD) works too')
  t.equal((await get(s, '/api/x', { sub: 'x', scp: ['a b'] })).statusCode, 403, 'an array item is one scope')
  t.equal(s.upstream.seen.length, 2)
})

t.test('scopeClaims replaces the claims scopes are read from', async (t) => {
  const s = await setup(t, { allow: { allScopes: ['read'], scopeClaims: ['permissions'] } })
  t.equal((await get(s, '/api/x', { sub: 'x', permissions: ['read'] })).statusCode, 200)
  t.equal((await get(s, '/api/x', { sub: 'x', scope: 'read' })).statusCode, 403)
  t.equal(s.upstream.seen.length, 1)
})

t.test('anyRole and allScopes together need both', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['clerk'], allScopes: ['read'] } })
  t.equal((await get(s, '/api/x', { sub: 'x', role: 'clerk', scope: 'read' })).statusCode, 200)
  t.equal((await get(s, '/api/x', { sub: 'x', role: 'clerk' })).statusCode, 403)
  t.equal((await get(s, '/api/x', { sub: 'x', scope: 'read' })).statusCode, 403)
  t.equal(s.upstream.seen.length, 1)
})

// Tenant binding

const SHOP = '/shops/:shopId/tx'

t.test('tenant: the token of WAL001 reaches /shops/WAL001', async (t) => {
  const s = await setup(t, { tenant: { param: 'shopId', claim: 'sub' } }, SHOP)
  const res = await get(s, '/shops/WAL001/tx/7', { sub: 'WAL001' })
  t.equal(res.statusCode, 200)
  t.same(s.upstream.seen.map((r) => r.url), ['/shops/WAL001/tx/7'])
})

t.test('tenant: another shop, zero upstream hits', async (t) => {
  const s = await setup(t, { tenant: { param: 'shopId' } }, SHOP)
  const res = await get(s, '/shops/BBY001/tx', { sub: 'WAL001' })
  t.equal(res.statusCode, 403)
  t.same(res.json(), FORBIDDEN)
  t.equal(s.upstream.seen.length, 0)
})

t.test('tenant: the comparison is case-sensitive (wal001 is not WAL001)', async (t) => {
  const s = await setup(t, { tenant: { param: 'shopId', claim: 'sub' } }, SHOP)
  const auth = { Authorization: `Bearer ${tokenFor(s.app, { sub: 'WAL001' })}` }
  t.equal((await rawGet(s.base, '/shops/wal001/tx', auth)).status, 403)
  t.equal((await rawGet(s.base, '/shops/Wal001/tx', auth)).status, 403)
  const lower = { Authorization: `Bearer ${tokenFor(s.app, { sub: 'wal001' })}` }
  t.equal((await rawGet(s.base, '/shops/WAL001/tx', lower)).status, 403)
  t.equal(s.upstream.seen.length, 0)
})

t.test('tenant: a percent-encoded param is compared decoded (%57AL001 is WAL001) and forwarded as sent', async (t) => {
  // RFC 3986 §2.3/§6.2.2.2: an encoded unreserved character is the same URI,
  // so the upstream decodes it to the same shop the gateway checked.
  const s = await setup(t, { tenant: { param: 'shopId', claim: 'sub' } }, SHOP)
  const auth = { Authorization: `Bearer ${tokenFor(s.app, { sub: 'WAL001' })}` }
  const res = await rawGet(s.base, '/shops/%57AL001/tx/1', auth)
  t.equal(res.status, 200)
  t.same(s.upstream.seen.map((r) => r.url), ['/shops/%57AL001/tx/1'])
  const other = { Authorization: `Bearer ${tokenFor(s.app, { sub: 'BBY001' })}` }
  t.equal((await rawGet(s.base, '/shops/%57AL001/tx/1', other)).status, 403, 'and it is still WAL001 for another shop')
  t.equal((await rawGet(s.base, '/shops/%77al001/tx/1', auth)).status, 403, 'encoded lower case is still lower case')
  t.equal(s.upstream.seen.length, 1)
})

t.test('tenant: a double-encoded param is decoded once only and refused', async (t) => {
  const s = await setup(t, { tenant: { param: 'shopId', claim: 'sub' } }, SHOP)
  const auth = { Authorization: `Bearer ${tokenFor(s.app, { sub: 'WAL001' })}` }
  const res = await rawGet(s.base, '/shops/%2557AL001/tx', auth)
  t.equal(res.status, 403, 'its decoded value is "%57AL001", not "WAL001"')
  t.equal(s.upstream.seen.length, 0)
})

t.test('tenant: a param hiding a path separator or dot segment is refused by the path guard', async (t) => {
  const s = await setup(t, { tenant: { param: 'shopId', claim: 'sub' } }, SHOP)
  for (const sub of ['WAL001/../BBY001', 'WAL001', '..']) {
    const auth = { Authorization: `Bearer ${tokenFor(s.app, { sub })}` }
    for (const path of ['/shops/WAL001%2F..%2FBBY001/tx', '/shops/WAL001%252F..%252FBBY001/tx', '/shops/%2e%2e/tx', '/shops/WAL001%5c..%5cBBY001/tx']) {
      const res = await rawGet(s.base, path, auth)
      t.equal(res.status, 400, `${path} for sub ${sub}`)
      t.equal(JSON.parse(res.body).code, 'FST_GATEHOUSE_PATH_NOT_ALLOWED')
    }
  }
  t.equal(s.upstream.seen.length, 0)
})

t.test('tenant: a missing, empty or non-scalar claim is refused', async (t) => {
  const s = await setup(t, { tenant: { param: 'shopId', claim: 'shop' } }, SHOP)
  for (const claims of [{ sub: 'WAL001' }, { shop: '' }, { shop: ['WAL001'] }, { shop: { id: 'WAL001' } }, { shop: null }, { shop: true }]) {
    t.equal((await get(s, '/shops/WAL001/tx', claims)).statusCode, 403, JSON.stringify(claims))
  }
  t.equal(s.upstream.seen.length, 0)
  t.equal((await get(s, '/shops/WAL001/tx', { shop: 'WAL001' })).statusCode, 200)
})

t.test('tenant: an integer claim matches its decimal form exactly', async (t) => {
  const s = await setup(t, { tenant: { param: 'orgId', claim: 'org' } }, '/orgs/:orgId')
  t.equal((await get(s, '/orgs/42/x', { sub: 'a', org: 42 })).statusCode, 200)
  t.equal((await get(s, '/orgs/042/x', { sub: 'a', org: 42 })).statusCode, 403)
  t.equal((await get(s, '/orgs/42.0/x', { sub: 'a', org: 42 })).statusCode, 403)
  t.equal((await get(s, '/orgs/4.2/x', { sub: 'a', org: 4.2 })).statusCode, 403, 'non-integers never match')
  t.equal(s.upstream.seen.length, 1)
})

t.test('tenant and allow together', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['shop'] }, tenant: { param: 'shopId', claim: 'sub' } }, SHOP)
  t.equal((await get(s, '/shops/WAL001/tx', { sub: 'WAL001', role: 'shop' })).statusCode, 200)
  t.equal((await get(s, '/shops/WAL001/tx', { sub: 'WAL001', role: 'admin' })).statusCode, 403)
  t.equal((await get(s, '/shops/WAL001/tx', { sub: 'BBY001', role: 'shop' })).statusCode, 403)
  t.equal(s.upstream.seen.length, 1)
})

// Order

t.test('rules run before authorize and the middleware, which then still run', async (t) => {
  const calls: string[] = []
  const s = await setup(t, {
    allow: { anyRole: ['admin'] },
    authorize: (ctx) => { calls.push(`authorize ${String(ctx.user?.sub)}`); return ctx.user?.sub !== 'mallory' },
    middleware: [async (ctx, next) => { calls.push(`middleware ${String(ctx.user?.sub)}`); await next() }]
  })
  t.equal((await get(s, '/api/x', { sub: 'bob', role: 'clerk' })).statusCode, 403)
  t.same(calls, [], 'a refused rule calls neither authorize nor the middleware')
  t.equal((await get(s, '/api/x', { sub: 'alice', role: 'admin' })).statusCode, 200)
  t.equal((await get(s, '/api/x', { sub: 'mallory', role: 'admin' })).statusCode, 403, 'authorize still refuses')
  t.same(calls, ['authorize alice', 'middleware alice', 'authorize mallory'])
  t.equal(s.upstream.seen.length, 1)
})

t.test('a token is still required first: 401 without one', async (t) => {
  const s = await setup(t, { allow: { anyRole: ['admin'] } })
  const res = await s.app.inject({ url: '/api/x' })
  t.equal(res.statusCode, 401)
  t.equal(s.upstream.seen.length, 0)
})

t.test('a WebSocket upgrade is refused by the rules before the 101, with no upstream handshake', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [{ prefix: SHOP, upstream: upstream.url, websocket: true, tenant: { param: 'shopId', claim: 'sub' } }]
  })
  const base = await listen(app)
  const token = tokenFor(app, { sub: 'WAL001' })
  const refusal = await refusedUpgrade(wsUrl(base, '/shops/BBY001/tx/live'), [], { headers: bearer(token) })
  t.equal(refusal.statusCode, 403)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_FORBIDDEN')
  t.equal(upstream.handshakes.length, 0)
  t.equal(upstream.connections(), 0)
})

// Register-time validation

const INVALID: Array<[string, string, Partial<TargetOptions<any, any>>]> = [
  ['a tenant param that is not in the prefix', '/shops/:shopId/tx', { tenant: { param: 'shop' } }],
  ['a tenant param on a prefix without params', '/api', { tenant: { param: 'shopId' } }],
  ['an empty tenant claim', '/shops/:shopId', { tenant: { param: 'shopId', claim: '' } }],
  ['an unknown tenant key', '/shops/:shopId', { tenant: { param: 'shopId', claims: 'sub' } as never }],
  ['`roles` (any or all?)', '/api', { allow: { roles: ['admin'] } as never }],
  ['`scopes` (any or all?)', '/api', { allow: { scopes: ['read'] } as never }],
  ['an empty anyRole', '/api', { allow: { anyRole: [] } }],
  ['a non-string role', '/api', { allow: { anyRole: [1] as never } }],
  ['a scope with a space', '/api', { allow: { allScopes: ['a b'] } }],
  ['allow without roles or scopes', '/api', { allow: { roleClaims: ['r'] } }],
  ['an empty roleClaims', '/api', { allow: { anyRole: ['a'], roleClaims: [] } }],
  ['allow that is not an object', '/api', { allow: ['admin'] as never }],
  ['rules on a public target', '/shops/:shopId', { public: true, tenant: { param: 'shopId' } }]
]

for (const [name, prefix, target] of INVALID) {
  t.test(`register fails on ${name}`, async (t) => {
    await t.rejects(buildApp(t, { targets: [{ prefix, upstream: 'http://127.0.0.1:9', ...target }] }), { code: 'FST_GATEHOUSE_INVALID_OPTION' })
  })
}

t.test('the register error names the option and the prefix params', async (t) => {
  await t.rejects(
    buildApp(t, { targets: [{ prefix: '/shops/:shopId/tx', upstream: 'http://127.0.0.1:9', tenant: { param: 'shop' } }] }),
    { message: /targets\[0\]\.tenant\.param.*shopId/ }
  )
})
