import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import { request } from 'undici'
import gatehouse, { gatehouseFrameworkErrors } from '../lib/index.js'
import type { CorsOptions, GatehouseOptions, TargetOptions } from '../lib/index.js'
import { bearer, SECRET, testUsers } from './helpers/app.js'
import { closedPort, startUpstream } from './helpers/upstream.js'
import type { Upstream, UpstreamHandler } from './helpers/upstream.js'

/*
 * CORS over real sockets: preflights answered by the gateway without a token
 * and never forwarded, real OPTIONS still authenticated and forwarded, the
 * gateway's own errors readable by an allowed origin, nothing for another
 * origin, and the host's own routes as they were.
 */

const SHOP = 'https://shop.example'
const EVIL = 'https://evil.example'

interface Gateway { app: FastifyInstance, url: string, upstream: Upstream }

async function start (t: Test, opts: {
  cors?: CorsOptions
  targets?: (upstream: Upstream) => Array<TargetOptions<any>>
  auth?: Partial<GatehouseOptions['auth']>
  handler?: UpstreamHandler
  host?: (app: FastifyInstance) => void
} = {}): Promise<Gateway> {
  const upstream = await startUpstream(opts.handler)
  t.teardown(upstream.close)
  const app = Fastify({ logger: false, frameworkErrors: gatehouseFrameworkErrors })
  t.teardown(() => app.close())
  opts.host?.(app)
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: { verify: await testUsers() }, refresh: true, logout: true, ...opts.auth },
    targets: opts.targets?.(upstream) ?? [{ prefix: '/api', upstream: upstream.url }],
    cors: opts.cors ?? { origin: [SHOP], maxAge: 600 }
  })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, url, upstream }
}

async function call (url: string, opts: { method?: string, headers?: Record<string, string>, body?: string } = {}) {
  const res = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers, body: opts.body })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, text }
}

const preflight = (origin: string, method = 'POST', headers = 'authorization, content-type') => ({
  method: 'OPTIONS',
  headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers }
})

function assertNoCors (t: Test, headers: Record<string, unknown>, what: string): void {
  t.same(Object.keys(headers).filter((name) => name.startsWith('access-control-')), [], `${what}: no CORS headers`)
}

t.test('preflights on login, refresh, logout and a target are answered without a token and never go upstream', async (t) => {
  const gw = await start(t)
  for (const path of ['/login', '/token/refresh', '/logout', '/api/orders/1?x=1']) {
    const res = await call(gw.url + path, preflight(SHOP, path.startsWith('/api') ? 'DELETE' : 'POST'))
    t.equal(res.status, 204, `${path}: 204`)
    t.equal(res.headers['access-control-allow-origin'], SHOP, path)
    t.equal(res.headers['access-control-allow-headers'], 'authorization, content-type', `${path}: the asked headers are allowed`)
    t.equal(res.headers['access-control-max-age'], '600')
    t.match(res.headers.vary, /Origin/)
    t.equal(res.headers['access-control-allow-credentials'], undefined, 'credentials off by default')
    t.equal(res.text, '')
  }
  const target = await call(`${gw.url}/api/x`, preflight(SHOP, 'PUT'))
  t.equal(target.headers['access-control-allow-methods'], 'DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT')
  const login = await call(`${gw.url}/login`, preflight(SHOP))
  t.equal(login.headers['access-control-allow-methods'], 'POST')
  t.same(gw.upstream.seen, [], 'the upstream saw nothing')
})

t.test('login and a proxied call from an allowed origin carry the CORS headers; the upstream sees its Origin', async (t) => {
  const gw = await start(t, { cors: { origin: [SHOP], credentials: true, exposedHeaders: ['X-Total-Count'] } })
  const login = await call(`${gw.url}/login`, {
    method: 'POST', headers: { origin: SHOP, 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'alice-pw' })
  })
  t.equal(login.status, 200)
  t.equal(login.headers['access-control-allow-origin'], SHOP)
  t.equal(login.headers['access-control-allow-credentials'], 'true')
  t.equal(login.headers['access-control-expose-headers'], 'www-authenticate, retry-after, x-request-id, x-total-count')
  const token = (JSON.parse(login.text) as { token: string }).token

  const res = await call(`${gw.url}/api/orders`, { headers: { origin: SHOP, ...bearer(token) } })
  t.equal(res.status, 200)
  t.equal(res.headers['access-control-allow-origin'], SHOP)
  t.equal(res.headers['access-control-allow-methods'], undefined, 'preflight headers only on preflights')
  t.equal(gw.upstream.seen.length, 1)
  t.equal(gw.upstream.seen[0]?.headers.origin, SHOP)
})

t.test('a real OPTIONS (no Access-Control-Request-Method) still needs a token and goes upstream', async (t) => {
  const gw = await start(t)
  const anonymous = await call(`${gw.url}/api/things`, { method: 'OPTIONS', headers: { origin: SHOP } })
  t.equal(anonymous.status, 401)
  t.equal(anonymous.headers['access-control-allow-origin'], SHOP, 'the page can read the 401')
  t.same(gw.upstream.seen, [])

  const token = gw.app.gatehouse.signToken({ sub: 'alice' })
  const authed = await call(`${gw.url}/api/things`, { method: 'OPTIONS', headers: { origin: SHOP, ...bearer(token) } })
  t.equal(authed.status, 200)
  t.equal(authed.headers['access-control-allow-origin'], SHOP)
  t.equal(gw.upstream.seen.length, 1)
  t.equal(gw.upstream.seen[0]?.method, 'OPTIONS')

  const noOrigin = await call(`${gw.url}/api/things`, { method: 'OPTIONS', headers: bearer(token) })
  t.equal(noOrigin.status, 200, 'an OPTIONS without Origin is not a preflight either')
  assertNoCors(t, noOrigin.headers, 'no Origin')
  t.equal(gw.upstream.seen.length, 2)
})

t.test('a disallowed origin gets no CORS headers and no preflight approval', async (t) => {
  const gw = await start(t, { handler: (_req, res) => { res.writeHead(200, { 'access-control-allow-origin': '*', 'content-type': 'text/plain' }).end('ok') } })
  const target = await call(`${gw.url}/api/x`, preflight(EVIL))
  t.equal(target.status, 401, 'an ordinary OPTIONS to the gateway: no token, 401')
  assertNoCors(t, target.headers, 'target preflight')
  const login = await call(`${gw.url}/login`, preflight(EVIL))
  t.equal(login.status, 404, 'no preflight route for it, as without cors')
  assertNoCors(t, login.headers, 'login preflight')
  t.same(gw.upstream.seen, [])

  const token = gw.app.gatehouse.signToken({ sub: 'alice' })
  const read = await call(`${gw.url}/api/x`, { headers: { origin: EVIL, ...bearer(token) } })
  t.equal(read.status, 200, 'the request itself is served (CORS is enforced by the browser)')
  assertNoCors(t, read.headers, 'with the upstream\'s own Access-Control-Allow-Origin: *')
  t.match(read.headers.vary, /Origin/)
  const allowed = await call(`${gw.url}/api/x`, { headers: { origin: SHOP, ...bearer(token) } })
  t.equal(allowed.headers['access-control-allow-origin'], SHOP, 'the gateway\'s value replaces the upstream\'s')
})

t.test('the gateway\'s own 401, 403, 413, 429, 502, 503 and 504 carry CORS headers for an allowed origin only', async (t) => {
  const hang = await startUpstream(() => {})
  t.teardown(hang.close)
  const dead = `http://127.0.0.1:${await closedPort()}`
  const gw = await start(t, {
    auth: { login: { verify: await testUsers(), throttle: { user: { max: 1, delayAfter: 0 }, delayMs: 0 } } },
    targets: (upstream) => [
      { prefix: '/api', upstream: upstream.url, authorize: (ctx) => ctx.user?.sub !== 'mallory' },
      { prefix: '/down', upstream: dead, transport: { circuitBreaker: { window: 10_000, minRequests: 1, failureRate: 0.5, coolDown: 60_000 } } },
      { prefix: '/slow', upstream: hang.url, timeouts: { response: 200 } }
    ]
  })
  const token = gw.app.gatehouse.signToken({ sub: 'alice' })
  const json = { 'content-type': 'application/json' }
  const cases: Array<[number, string, Parameters<typeof call>[1]]> = [
    [401, '/api/x', {}],
    [403, '/api/x', { headers: bearer(gw.app.gatehouse.signToken({ sub: 'mallory' })) }],
    [413, '/login', { method: 'POST', headers: json, body: JSON.stringify({ username: 'alice', password: 'x'.repeat(9000) }) }],
    [401, '/login', { method: 'POST', headers: json, body: JSON.stringify({ username: 'bob', password: 'wrong' }) }],
    [429, '/login', { method: 'POST', headers: json, body: JSON.stringify({ username: 'bob', password: 'wrong' }) }],
    [502, '/down/x', { headers: bearer(token) }],
    [503, '/down/x', { headers: bearer(token) }],
    [504, '/slow/x', { headers: bearer(token) }]
  ]
  for (const [status, path, opts] of cases) {
    const res = await call(gw.url + path, { ...opts, headers: { ...opts?.headers, origin: SHOP } })
    t.equal(res.status, status, `${path}: ${status}`)
    t.equal(res.headers['access-control-allow-origin'], SHOP, `${status}: readable by the page`)
    t.equal(res.headers['access-control-expose-headers'], 'www-authenticate, retry-after, x-request-id')
    t.match(JSON.parse(res.text), { statusCode: status })
  }
  const evil = await call(`${gw.url}/api/x`, { headers: { origin: EVIL } })
  t.equal(evil.status, 401)
  assertNoCors(t, evil.headers, 'a disallowed origin\'s 401')
  t.same(gw.upstream.seen.map((seen) => seen.url), [], 'no refused request reached the upstream')
})

t.test('the host\'s own routes are untouched', async (t) => {
  const gw = await start(t, {
    host (app) {
      app.get('/health', async () => ({ ok: true }))
      app.options('/own-options', async (_request, reply) => reply.code(200).header('x-host', 'yes').send('host'))
    }
  })
  const health = await call(`${gw.url}/health`, { headers: { origin: SHOP } })
  t.equal(health.status, 200)
  assertNoCors(t, health.headers, 'host GET')
  t.equal(health.headers.vary, undefined)
  const pre = await call(`${gw.url}/health`, preflight(SHOP, 'GET'))
  t.equal(pre.status, 404, 'no preflight approval for a host route')
  assertNoCors(t, pre.headers, 'host preflight')
  const own = await call(`${gw.url}/own-options`, preflight(SHOP))
  t.equal(own.status, 200)
  t.equal(own.text, 'host')
  assertNoCors(t, own.headers, 'host OPTIONS route')
})

t.test('a host that registers @fastify/cors around the gatehouse gets an option error, not a Fastify one', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register((await import('@fastify/cors')).default, { origin: SHOP })
  await t.rejects(async () => { await app.register(gatehouse, { auth: { secret: SECRET, login: false }, targets: [], cors: { origin: [SHOP] } }) }, {
    code: 'FST_GATEHOUSE_INVALID_OPTION', message: /"cors"/
  })
})

t.test('per target: cors false turns it off, an object overrides the top-level fields', async (t) => {
  const ADMIN = 'https://admin.example'
  const gw = await start(t, {
    targets: (upstream) => [
      { prefix: '/api', upstream: upstream.url },
      { prefix: '/internal', upstream: upstream.url, cors: false },
      { prefix: '/admin', upstream: upstream.url, cors: { origin: [ADMIN], credentials: true } }
    ]
  })
  const off = await call(`${gw.url}/internal/x`, preflight(SHOP))
  t.equal(off.status, 401)
  assertNoCors(t, off.headers, 'cors: false')
  const admin = await call(`${gw.url}/admin/x`, preflight(ADMIN))
  t.equal(admin.status, 204)
  t.equal(admin.headers['access-control-allow-origin'], ADMIN)
  t.equal(admin.headers['access-control-allow-credentials'], 'true')
  t.equal(admin.headers['access-control-max-age'], '600', 'maxAge comes from the top level')
  const shopOnAdmin = await call(`${gw.url}/admin/x`, preflight(SHOP))
  assertNoCors(t, shopOnAdmin.headers, 'the top-level origin on /admin')
  const adminOnApi = await call(`${gw.url}/api/x`, preflight(ADMIN))
  assertNoCors(t, adminOnApi.headers, 'the /admin origin on /api')
  t.same(gw.upstream.seen, [])
})

t.test('a target may have cors when the top level has none; login then has none', async (t) => {
  const upstream = await startUpstream()
  t.teardown(upstream.close)
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: { verify: await testUsers() } },
    targets: [{ prefix: '/api', upstream: upstream.url, cors: { origin: [SHOP], allowedHeaders: ['authorization'] } }]
  })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  const api = await call(`${url}/api/x`, preflight(SHOP))
  t.equal(api.status, 204)
  t.equal(api.headers['access-control-allow-headers'], 'authorization')
  const login = await call(`${url}/login`, preflight(SHOP))
  t.equal(login.status, 404)
})

t.test('an origin function decides per request, sync or async; a throwing one is a 500 without CORS', async (t) => {
  const gw = await start(t, {
    cors: {
      origin: (origin, request) => {
        if (request.url.includes('boom')) throw new Error('origin check failed')
        return request.url.includes('async') ? Promise.resolve(origin.endsWith('.shop.example')) : origin === SHOP
      }
    }
  })
  t.equal((await call(`${gw.url}/api/sync`, preflight(SHOP))).headers['access-control-allow-origin'], SHOP)
  t.equal((await call(`${gw.url}/api/async`, preflight('https://eu.shop.example'))).headers['access-control-allow-origin'], 'https://eu.shop.example')
  assertNoCors(t, (await call(`${gw.url}/api/async`, preflight(EVIL))).headers, 'async refusal')
  const boom = await call(`${gw.url}/api/boom`, preflight(SHOP))
  t.equal(boom.status, 500)
  t.match(JSON.parse(boom.text), { code: 'FST_GATEHOUSE_INTERNAL' })
})

t.test('invalid cors options fail at register', async (t) => {
  const bad: Array<[unknown, RegExp, unknown?]> = [
    ['yes', /"cors"/],
    [{}, /"cors\.origin"/],
    [{ origin: [] }, /"cors\.origin"/],
    [{ origin: ['*'] }, /"cors\.origin\[0\]"/],
    [{ origin: ['https://shop.example/'] }, /"cors\.origin\[0\]"/],
    [{ origin: ['null'] }, /"cors\.origin\[0\]"/],
    [{ origin: [SHOP], maxAge: -1 }, /"cors\.maxAge"/],
    [{ origin: [SHOP], credentials: 'true' }, /"cors\.credentials"/],
    [{ origin: [SHOP], exposedHeaders: ['bad header'] }, /"cors\.exposedHeaders"/],
    [{ origin: [SHOP], allowedHeaders: 'authorization' }, /"cors\.allowedHeaders"/],
    [{ origin: [SHOP], origins: [SHOP] }, /"cors\.origins"/],
    [undefined, /"targets\[0\]\.cors\.origin"/, { maxAge: 60 }],
    [undefined, /"targets\[0\]\.cors"/, true]
  ]
  for (const [cors, message, targetCors] of bad) {
    const app = Fastify({ logger: false })
    await t.rejects(async () => {
      await app.register(gatehouse, {
        auth: { secret: SECRET, login: false },
        targets: [{ prefix: '/api', upstream: 'http://127.0.0.1:1', ...(targetCors === undefined ? {} : { cors: targetCors as false }) }],
        ...(cors === undefined ? {} : { cors: cors as CorsOptions })
      })
    }, { code: 'FST_GATEHOUSE_INVALID_OPTION', message }, String(message))
    await app.close()
  }
})
