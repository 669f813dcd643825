import Fastify from 'fastify'
import type { FastifyServerOptions } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import gatehouse, { gatehouseFrameworkErrors } from '../lib/index.js'
import type { GatehouseOptions, TargetOptions } from '../lib/index.js'
import { bearer, SECRET } from './helpers/app.js'
import { rawGet } from './helpers/raw-request.js'
import type { RawResponse } from './helpers/raw-request.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { refusedUpgrade, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'

/*
 * A protected prefix under a broader one, on one upstream: no spelling of the
 * protected path that an upstream (nginx merge_slashes, Tomcat/Jetty `;`
 * parameters, Windows trailing dots, case-insensitive or Unicode-folding
 * routers, a second decode) reads as the protected path may reach the broader
 * target. Requests go out on raw sockets, exactly as written.
 */

interface Gateway { base: string, upstream: Upstream, token: (claims: Record<string, unknown>) => string }

async function gateway (t: Test, targets: Array<Omit<TargetOptions<any>, 'upstream'>>, paths?: GatehouseOptions['paths'], server: FastifyServerOptions = {}): Promise<Gateway> {
  const upstream = await upstreamFor(t)
  const app = Fastify({ logger: false, frameworkErrors: gatehouseFrameworkErrors, ...server })
  t.teardown(() => app.close())
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: false },
    targets: targets.map((target) => ({ ...target, upstream: upstream.url })),
    ...(paths === undefined ? {} : { paths })
  })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  return { base, upstream, token: (claims) => app.gatehouse.signToken(claims) }
}

const ADMIN_UNDER_API = [
  { prefix: '/api/admin', allow: { anyRole: ['admin'] } },
  { prefix: '/api' }
]
const SHOP = { sub: 'WAL001', role: 'shop' }

function assertRefused (t: Test, res: RawResponse, upstream: Upstream): void {
  t.equal(res.status, 400, 'refused with 400')
  t.match(JSON.parse(res.body), { statusCode: 400, code: 'FST_GATEHOUSE_PATH_NOT_ALLOWED', message: 'The request path is not allowed' })
  t.equal(upstream.seen.length, 0, 'the upstream was never contacted')
}

t.test('the protected path itself is refused for a shop token, a sibling passes', async (t) => {
  const { base, upstream, token } = await gateway(t, ADMIN_UNDER_API)
  const auth = bearer(token(SHOP))
  t.equal((await rawGet(base, '/api/admin/users', auth)).status, 403)
  const res = await rawGet(base, '/api/orders/7', auth)
  t.equal(res.status, 200)
  t.same(upstream.seen.map((seen) => seen.url), ['/api/orders/7'])
})

const VARIANTS: Array<[string, string]> = [
  ['an empty segment', '/api//admin/users'],
  ['an empty segment at the end', '/api/admin//'],
  ['several empty segments', '/api///admin/users'],
  ['a path parameter', '/api/admin;x/users'],
  ['a path parameter on its own', '/api/admin;/users'],
  ['an encoded semicolon', '/api/admin%3bx/users'],
  ['an encoded semicolon, upper case', '/api/admin%3Bx/users'],
  ['a double-encoded semicolon', '/api/admin%253Bx/users'],
  ['a trailing dot', '/api/admin./users'],
  ['a trailing dot at the end', '/api/admin.'],
  ['an encoded trailing dot', '/api/admin%2e/users'],
  ['a double-encoded trailing dot', '/api/admin%252e/users'],
  ['upper case', '/api/ADMIN/users'],
  ['mixed case', '/api/Admin/users'],
  ['an encoded upper-case letter', '/api/%41dmin/users'],
  ['a double-encoded letter', '/api/%2561dmin/users'],
  ['a triple-encoded letter', '/api/%252561dmin/users'],
  ['full-width letters', '/api/%EF%BD%81%EF%BD%84%EF%BD%8D%EF%BD%89%EF%BD%8E/users'],
  ['a dotless i', '/api/adm%C4%B1n/users'],
  ['a Kelvin sign', '/api/%E2%84%AAey/x'],
  ['a full-width dot pair', '/api/x/%EF%BC%8E%EF%BC%8E/admin/users'],
  ['a two-dot leader', '/api/x/%E2%80%A5/admin/users'],
  ['a one-dot leader', '/api/x/%E2%80%A4%E2%80%A4/admin'],
  ['a small full stop', '/api/x/%EF%B9%92%EF%B9%92/admin'],
  ['an ideographic full stop', '/api/admin%E3%80%82/users'],
  ['a halfwidth ideographic full stop', '/api/admin%EF%BD%A1/users'],
  ['a full-width slash', '/api/x%EF%BC%8Fadmin/users'],
  ['a full-width semicolon', '/api/admin%EF%BC%9Bx/users'],
  ['a full-width percent sign', '/api/%EF%BC%8561dmin/users']
]

for (const [name, path] of VARIANTS) {
  t.test(`${name} (${path}) never reaches the broader target`, async (t) => {
    const { base, upstream, token } = await gateway(t, [...ADMIN_UNDER_API, { prefix: '/api/key' }])
    assertRefused(t, await rawGet(base, path, bearer(token(SHOP))), upstream)
  })
}

t.test('a variant is refused before the token check when the broader target is public', async (t) => {
  const { base, upstream } = await gateway(t, [ADMIN_UNDER_API[0] as TargetOptions, { prefix: '/api', public: true }])
  t.equal((await rawGet(base, '/api/admin/users')).status, 401)
  for (const path of ['/api//admin/users', '/api/admin;x/users', '/api/ADMIN/users', '/api/admin./users']) {
    assertRefused(t, await rawGet(base, path), upstream)
  }
  t.equal((await rawGet(base, '/api/docs')).status, 200, 'the public target still answers')
})

t.test('a variant of a tenant-bound prefix never reaches the broader target', async (t) => {
  const { base, upstream, token } = await gateway(t, [
    { prefix: '/shops/:shopId/orders', tenant: { param: 'shopId', claim: 'sub' } },
    { prefix: '/shops' }
  ])
  const auth = bearer(token(SHOP))
  t.equal((await rawGet(base, '/shops/BBY001/orders/1', auth)).status, 403)
  for (const path of ['/shops//BBY001/orders/1', '/shops/BBY001//orders/1', '/shops/BBY001/orders;x/1', '/shops/BBY001/ORDERS/1', '/shops/BBY001/%4Frders/1', '/shops/BBY001/orders./1']) {
    assertRefused(t, await rawGet(base, path, auth), upstream)
  }
  const res = await rawGet(base, '/shops/WAL001/orders/1', auth)
  t.equal(res.status, 200, 'the own tenant passes')
  t.same(upstream.seen.map((seen) => seen.url), ['/shops/WAL001/orders/1'])
})

t.test('a case variant of a static prefix beside a param prefix is refused', async (t) => {
  // find-my-way prefers the static segment: `/api/admin` wins over `/api/:section`.
  const { base, upstream, token } = await gateway(t, [ADMIN_UNDER_API[0] as TargetOptions, { prefix: '/api/:section' }])
  const auth = bearer(token(SHOP))
  t.equal((await rawGet(base, '/api/reports/x', auth)).status, 200)
  assertRefused(t, await rawGet(base, '/api/ADMIN/users', auth), { ...upstream, seen: upstream.seen.slice(1) })
})

t.test('paths: { caseInsensitive: false } forwards case variants unchanged', async (t) => {
  const { base, upstream, token } = await gateway(t, ADMIN_UNDER_API, { caseInsensitive: false })
  const auth = bearer(token(SHOP))
  for (const path of ['/api/ADMIN/users', '/api/%41dmin/users', '/api/adm%C4%B1n/users']) {
    t.equal((await rawGet(base, path, auth)).status, 200, path)
  }
  t.same(upstream.seen.map((seen) => seen.url), ['/api/ADMIN/users', '/api/%41dmin/users', '/api/adm%C4%B1n/users'])
  // Unicode compatibility forms still fold: no case involved.
  assertRefused(t, await rawGet(base, '/api/%EF%BD%81dmin/users', auth), { ...upstream, seen: [] })
})

t.test('an encoded letter of the protected prefix routes to the protected target', async (t) => {
  // find-my-way decodes unreserved characters before matching static segments.
  const { base, upstream, token } = await gateway(t, ADMIN_UNDER_API)
  t.equal((await rawGet(base, '/api/%61dmin/users', bearer(token(SHOP)))).status, 403)
  const res = await rawGet(base, '/api/%61dmin/users', bearer(token({ sub: 'root', role: 'admin' })))
  t.equal(res.status, 200)
  t.same(upstream.seen.map((seen) => seen.url), ['/api/%61dmin/users'])
})

t.test('the guard does not depend on the host\'s router options', async (t) => {
  // The host owns the Fastify instance; whatever it sets, the upstream reads the raw path.
  const { base, upstream, token } = await gateway(t, ADMIN_UNDER_API, undefined, {
    // Fastify's types omit useSemicolonDelimiter from routerOptions; find-my-way takes it.
    routerOptions: { ignoreDuplicateSlashes: true, caseSensitive: false, useSemicolonDelimiter: true } as FastifyServerOptions['routerOptions']
  })
  const auth = bearer(token(SHOP))
  for (const path of ['/api//admin/users', '/api/admin;x/users', '/api/ADMIN/users', '/api/admin./users']) {
    const res = await rawGet(base, path, auth)
    t.ok(res.status === 400 || res.status === 403, `${path} refused (${res.status})`)
  }
  t.equal((await rawGet(base, '/api/ADMIN/users', auth)).status, 403, 'routed to the protected target')
  const admin = await rawGet(base, '/api/ADMIN/users', bearer(token({ sub: 'root', role: 'admin' })))
  t.equal(admin.status, 200)
  t.same(upstream.seen.map((seen) => seen.url), ['/api/ADMIN/users'])
})

const LEGIT: Array<[string, string]> = [
  ['a trailing slash', '/api/orders/'],
  ['the prefix itself with a slash', '/api/'],
  ['dots inside names', '/api/a.b/c..d/.hidden'],
  ['a name that only contains the prefix', '/api/administrators/x'],
  ['case that matches no other prefix', '/api/Orders/X'],
  ['non-ASCII letters', '/api/caf%C3%A9/%C4%B0stanbul/%E6%9D%B1%E4%BA%AC'],
  ['full-width digits', '/api/search/%EF%BC%91%EF%BC%92'],
  ['a semicolon in the query', '/api/x?a=1;b=2&c=admin./'],
  ['a double-encoded space', '/api/a%2520b']
]

for (const [name, path] of LEGIT) {
  t.test(`a legit path with ${name} passes unchanged`, async (t) => {
    const { base, upstream, token } = await gateway(t, ADMIN_UNDER_API)
    const res = await rawGet(base, path, bearer(token(SHOP)))
    t.equal(res.status, 200)
    t.same(upstream.seen.map((seen) => seen.url), [path])
  })
}

t.test('a WebSocket upgrade through a variant is refused before any 101', async (t) => {
  const ws = await startWsUpstream()
  t.teardown(ws.close)
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: false },
    targets: [
      { prefix: '/api/admin', upstream: ws.url, websocket: true, allow: { anyRole: ['admin'] } },
      { prefix: '/api', upstream: ws.url, websocket: true }
    ]
  })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  const auth = { headers: bearer(app.gatehouse.signToken(SHOP)) }
  t.equal((await refusedUpgrade(wsUrl(base, '/api/admin/feed'), [], auth)).statusCode, 403)
  for (const path of ['/api//admin/feed', '/api/admin;x/feed', '/api/ADMIN/feed', '/api/admin./feed']) {
    const refusal = await refusedUpgrade(wsUrl(base, path), [], auth)
    t.equal(refusal.statusCode, 400, path)
    t.equal(refusal.body.code, 'FST_GATEHOUSE_PATH_NOT_ALLOWED')
  }
  t.equal(ws.connections(), 0, 'the upstream was never contacted')
})

t.test('paths is validated at register', async (t) => {
  for (const paths of [null, 'yes', { caseInsensitive: 'no' }, { caseSensitive: true }]) {
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    void app.register(gatehouse, {
      auth: { secret: SECRET, login: false },
      targets: [{ prefix: '/api', upstream: 'http://127.0.0.1:1' }],
      paths: paths as GatehouseOptions['paths']
    })
    await t.rejects(async () => await app.ready(), { code: 'FST_GATEHOUSE_INVALID_OPTION', message: /"paths(\.caseSensitive)?": expected (\{ caseInsensitive\?: boolean \}|a known option; did you mean "caseInsensitive"\?)/ })
  }
})

t.test('a prefix that the guard would refuse in a request fails at register', async (t) => {
  for (const prefix of ['/api;x', '/files.', '/a./b']) {
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    void app.register(gatehouse, { auth: { secret: SECRET, login: false }, targets: [{ prefix, upstream: 'http://127.0.0.1:1' }] })
    await t.rejects(async () => await app.ready(), { code: 'FST_GATEHOUSE_INVALID_OPTION', message: /targets\[0\]\.prefix/ }, prefix)
  }
})
