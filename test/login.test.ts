import t from 'tap'
import type { Test } from 'tap'
import { STATUS_CODES } from 'node:http'
import type { FastifyInstance, FastifyRequest, LightMyRequestResponse } from 'fastify'
import { hashPassword, staticUsers } from '../lib/index.js'
import * as errors from '../lib/errors.js'
import type { GatehouseOptions, LoginCredentials } from '../lib/index.js'
import { bearer, buildApp } from './helpers/app.js'
import { hashCost, recordScryptCosts } from './helpers/scrypt-costs.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'

/*
 * The login route: JSON credentials in, a bearer token out; every refusal in
 * the one error shape, and nothing reaches an upstream on the way.
 */

interface Setup { app: FastifyInstance, upstream: Upstream }

async function setup (t: Test, auth?: Partial<GatehouseOptions['auth']>): Promise<Setup> {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], ...(auth === undefined ? {} : { auth }) })
  return { app, upstream }
}

let shared: Promise<Setup> | undefined

/** The default app, shared by the tests that need nothing else; each starts with an empty upstream log. */
async function defaultSetup (): Promise<Setup> {
  shared ??= setup(t)
  const s = await shared
  s.upstream.seen.length = 0
  return s
}

function login (app: FastifyInstance, body: unknown, path = '/login'): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: path, payload: body as Record<string, unknown> })
}

/** The fixed client message of each error code (codes with a per-case message are left out). */
const MESSAGES = new Map<string, string>()
for (const E of Object.values(errors) as Array<new () => Error & { code: string }>) {
  if (typeof E !== 'function') continue
  const err = new E()
  if (!err.message.includes('%')) MESSAGES.set(err.code, err.message)
}

/** Asserts the one error body shape `{ statusCode, code, error, message }`. */
function assertError (t: Test, res: LightMyRequestResponse, status: number, code: string): Record<string, unknown> {
  t.equal(res.statusCode, status, 'status')
  t.match(res.headers['content-type'], /^application\/json/, 'JSON body')
  const body = res.json() as Record<string, unknown>
  t.strictSame(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], 'exactly the standard keys')
  t.equal(body.statusCode, status)
  t.equal(body.code, code)
  t.equal(body.error, STATUS_CODES[status])
  const message = MESSAGES.get(code)
  if (message === undefined) t.match(body.message, /^\S.*\S$/, 'a non-empty message of its own')
  else t.equal(body.message, message, 'the message of its code')
  return body
}

function decodePart (token: string, index: 0 | 1): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[index] as string, 'base64url').toString('utf8')) as Record<string, unknown>
}

t.test('POST /login with good credentials answers a bearer token, its lifetime and the public claims', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await login(app, { username: 'alice', password: 'alice-pw' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  t.equal(res.headers['cache-control'], 'no-store')
  const body = res.json()
  t.strictSame(Object.keys(body).sort(), ['claims', 'expiresIn', 'token', 'tokenType'])
  t.equal(body.tokenType, 'Bearer')
  t.equal(body.expiresIn, 3600)
  t.strictSame(body.claims, { sub: 'alice', role: 'admin' })
  t.match(body.token, /^[\w-]+\.[\w-]+\.[\w-]+$/)
  t.equal(upstream.seen.length, 0, 'login never touches an upstream')
})

t.test('the issued token verifies with its claims and lasts expiresIn seconds', async (t) => {
  const { app, upstream } = await defaultSetup()
  const before = Math.floor(Date.now() / 1000)
  const { token } = (await login(app, { username: 'bob', password: 'bob-pw' })).json()
  const after = Math.floor(Date.now() / 1000)
  const claims = await app.gatehouse.verifyToken(token)
  t.equal(claims.sub, 'bob')
  t.equal(claims.role, 'clerk')
  t.ok(Number.isInteger(claims.iat) && (claims.iat as number) >= before && (claims.iat as number) <= after, `iat ${String(claims.iat)} is the second of the login (${before}..${after})`)
  t.equal((claims.exp as number) - (claims.iat as number), 3600)
  t.equal(decodePart(token, 0).alg, 'HS256')
  t.equal(upstream.seen.length, 0)
})

t.test('the issued token is accepted by a target', async (t) => {
  const { app, upstream } = await defaultSetup()
  const { token } = (await login(app, { username: 'alice', password: 'alice-pw' })).json()
  const res = await app.inject({ url: '/api/me', headers: bearer(token) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/api/me')
  t.notOk(upstream.seen[0]?.headers.authorization, 'the caller token stays at the gateway')
})

t.test('no body gives 400', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await app.inject({ method: 'POST', url: '/login' })
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('an empty JSON body gives 400', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await app.inject({ method: 'POST', url: '/login', headers: { 'content-type': 'application/json' }, payload: '' })
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('a body that is not JSON gives 400', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await app.inject({ method: 'POST', url: '/login', headers: { 'content-type': 'application/json' }, payload: '{"username": "alice", ' })
  const body = assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.notMatch(body.message, /Unexpected|position|JSON\.parse/, 'no parser detail')
  t.equal(upstream.seen.length, 0)
})

t.test('a JSON array body gives 400', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await login(app, ['alice', 'alice-pw'])
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('a missing password gives 400', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await login(app, { username: 'alice' })
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('an empty password gives 400', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await login(app, { username: 'alice', password: '' })
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('an extra property gives 400, even with good credentials', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await login(app, { username: 'alice', password: 'alice-pw', role: 'superuser' })
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('a number as username gives 400 and never reaches verify', async (t) => {
  let called = false
  const { app, upstream } = await setupVerifier(t, () => { called = true })
  const res = await login(app, { username: 12345, password: 'pw' })
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.notOk(called, 'verify is not called')
  t.equal(upstream.seen.length, 0)
})

t.test('an array as username gives 400, even with good credentials', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await login(app, { username: ['alice'], password: 'alice-pw' })
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('an object as password gives 400', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await login(app, { username: 'alice', password: { $ne: '' } })
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('a too long username gives 400', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await login(app, { username: 'a'.repeat(257), password: 'alice-pw' })
  assertError(t, res, 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('a text/plain body gives 415', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await app.inject({
    method: 'POST', url: '/login', headers: { 'content-type': 'text/plain' }, payload: '{"username":"alice","password":"alice-pw"}'
  })
  assertError(t, res, 415, 'FST_GATEHOUSE_UNSUPPORTED_MEDIA_TYPE')
  t.equal(upstream.seen.length, 0)
})

t.test('a form body gives 415', async (t) => {
  const { app, upstream } = await defaultSetup()
  const res = await app.inject({
    method: 'POST', url: '/login', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'username=alice&password=alice-pw'
  })
  assertError(t, res, 415, 'FST_GATEHOUSE_UNSUPPORTED_MEDIA_TYPE')
  t.equal(upstream.seen.length, 0)
})

t.test('unknown user and wrong password give the same 401 body', async (t) => {
  const { app, upstream } = await defaultSetup()
  const unknown = await login(app, { username: 'mallory', password: 'alice-pw' })
  const wrong = await login(app, { username: 'alice', password: 'not-alice-pw' })
  assertError(t, unknown, 401, 'FST_GATEHOUSE_BAD_CREDENTIALS')
  assertError(t, wrong, 401, 'FST_GATEHOUSE_BAD_CREDENTIALS')
  t.equal(unknown.body, wrong.body, 'byte-identical bodies')
  t.match(unknown.headers['www-authenticate'], /^Bearer/)
  t.equal(unknown.headers['www-authenticate'], wrong.headers['www-authenticate'])
  t.equal(unknown.headers['content-length'], wrong.headers['content-length'])
  t.equal(upstream.seen.length, 0)
})

t.test('unknown user and wrong password do the same scrypt work at the real cost', async (t) => {
  const upstream = await upstreamFor(t)
  // The default hashPassword cost: the one production tables use.
  const carol = await hashPassword('carol-pw')
  const verify = staticUsers({ carol: { passwordHash: carol, claims: { sub: 'carol' } } })
  // Throttling off: this test sends many bad logins.
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { login: { verify, throttle: false } } })
  // Counted, not timed: equal work is what makes the two answers take equal time.
  const costs = recordScryptCosts(t)
  for (let i = 0; i < 3; i++) {
    t.equal((await login(app, { username: `nobody-${i}`, password: 'carol-pw' })).statusCode, 401)
    t.equal((await login(app, { username: 'carol', password: `wrong-${i}` })).statusCode, 401)
  }
  t.same(costs, Array(6).fill(hashCost(carol)), 'one scrypt per login at the table\'s (default) cost, known name or not')
  t.equal(upstream.seen.length, 0)
})

t.test('a custom login path serves the login route there and not at /login', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: { login: { path: '/auth/token', verify: async ({ username }) => ({ sub: username }) } }
  })
  const res = await login(app, { username: 'dora', password: 'pw' }, '/auth/token')
  t.equal(res.statusCode, 200)
  t.equal((await app.gatehouse.verifyToken(res.json().token)).sub, 'dora')
  const old = await login(app, { username: 'dora', password: 'pw' })
  t.equal(old.statusCode, 404)
  t.equal(upstream.seen.length, 0)
})

t.test('login: false has no login route, and tokens minted elsewhere with the same secret work', async (t) => {
  const upstream = await upstreamFor(t)
  const verifyOnly = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { login: false } })
  const issuer = await buildApp(t, { targets: [] })

  const noRoute = await login(verifyOnly, { username: 'alice', password: 'alice-pw' })
  t.equal(noRoute.statusCode, 404)

  const minted = await login(issuer, { username: 'alice', password: 'alice-pw' })
  t.equal(minted.statusCode, 200)
  const res = await verifyOnly.inject({ url: '/api/orders', headers: bearer(minted.json().token) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1, 'only the proxied request reached the upstream')
  t.equal(upstream.seen[0]?.url, '/api/orders')
})

/** An app whose verifier calls `spy` and accepts everyone. */
async function setupVerifier (t: Test, spy: (credentials: LoginCredentials, request: FastifyRequest) => void): Promise<Setup> {
  return setup(t, {
    login: {
      verify: async (credentials, request) => {
        spy(credentials, request)
        return { sub: credentials.username }
      }
    }
  })
}

t.test('the verify function receives the credentials and the request', async (t) => {
  let seen: { credentials: LoginCredentials, request: FastifyRequest } | undefined
  const { app, upstream } = await setupVerifier(t, (credentials, request) => { seen = { credentials, request } })
  const res = await app.inject({
    method: 'POST', url: '/login', headers: { 'x-request-tag': 'tag-1' }, payload: { username: 'erin', password: 'erin-pw' }
  })
  t.equal(res.statusCode, 200)
  t.strictSame(seen?.credentials, { username: 'erin', password: 'erin-pw' })
  t.equal(seen?.request.headers['x-request-tag'], 'tag-1')
  t.equal(seen?.request.method, 'POST')
  t.equal(seen?.request.url, '/login')
  t.equal(upstream.seen.length, 0)
})

t.test('a verify that throws gives 500 FST_GATEHOUSE_INTERNAL without leaking its message', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: {
      login: {
        verify: async () => {
          throw new Error('users db at db-internal.corp:5432 refused password hunter2')
        }
      }
    }
  })
  const res = await login(app, { username: 'alice', password: 'alice-pw' })
  assertError(t, res, 500, 'FST_GATEHOUSE_INTERNAL')
  t.notMatch(res.body, /hunter2|db-internal|5432|refused/, 'the thrown message stays in the logs')
  t.notMatch(res.body, /at .*\.ts:\d+/, 'no stack')
  t.equal(upstream.seen.length, 0)
})

t.test('a verify that returns a non-object gives 401', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: { login: { verify: async () => null } }
  })
  const res = await login(app, { username: 'alice', password: 'alice-pw' })
  assertError(t, res, 401, 'FST_GATEHOUSE_BAD_CREDENTIALS')
  t.equal(upstream.seen.length, 0)
})

t.test('time claims from verify are ignored: the gateway sets iat and exp', async (t) => {
  const upstream = await upstreamFor(t)
  const far = Math.floor(Date.now() / 1000) + 10 * 365 * 86400
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: { login: { verify: async ({ username }) => ({ sub: username, exp: far, iat: 1, nbf: far }) } }
  })
  const res = await login(app, { username: 'frank', password: 'pw' })
  t.equal(res.statusCode, 200)
  t.strictSame(res.json().claims, { sub: 'frank' })
  const claims = await app.gatehouse.verifyToken(res.json().token)
  t.equal((claims.exp as number) - (claims.iat as number), 3600)
  t.equal(claims.nbf, undefined)
  t.equal(upstream.seen.length, 0)
})

t.test('expiresIn "15m" gives expiresIn 900', async (t) => {
  const { app, upstream } = await setup(t, { expiresIn: '15m' })
  const res = await login(app, { username: 'alice', password: 'alice-pw' })
  t.equal(res.statusCode, 200)
  t.equal(res.json().expiresIn, 900)
  const claims = await app.gatehouse.verifyToken(res.json().token)
  t.equal((claims.exp as number) - (claims.iat as number), 900)
  t.equal(upstream.seen.length, 0)
})
