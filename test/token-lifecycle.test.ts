import t from 'tap'
import type { Test } from 'tap'
import { createHash } from 'node:crypto'
import { STATUS_CODES } from 'node:http'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { request } from 'undici'
import { MemoryStore } from '../lib/index.js'
import type { GatehouseOptions, GatehouseStore } from '../lib/index.js'
import { bearer, buildApp, listen } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'

/*
 * Refresh tokens and logout: rotation, reuse detection, the concurrent
 * double refresh, expiry, and revocation of sessions and access tokens, all
 * against a real upstream behind the gateway.
 */

interface Setup { app: FastifyInstance, upstream: Upstream }

async function setup (t: Test, auth: Partial<GatehouseOptions['auth']> = {}): Promise<Setup> {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { refresh: true, ...auth } })
  return { app, upstream }
}

interface Tokens { token: string, refreshToken: string }

async function login (app: FastifyInstance, username = 'alice'): Promise<Tokens> {
  const res = await app.inject({ method: 'POST', url: '/login', payload: { username, password: `${username}-pw` } })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res.json() as Tokens
}

function refresh (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/token/refresh', payload: { refreshToken } })
}

function logout (app: FastifyInstance, token: string, body?: Record<string, unknown>): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/logout', headers: bearer(token), ...(body === undefined ? {} : { payload: body }) })
}

function assertError (t: Test, res: LightMyRequestResponse, status: number, code: string): void {
  t.equal(res.statusCode, status, 'status')
  const body = res.json() as Record<string, unknown>
  t.strictSame(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], 'the standard error shape')
  t.equal(body.code, code)
  t.equal(body.error, STATUS_CODES[status])
}

function payload (token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString('utf8')) as Record<string, unknown>
}

/** A store that records every write, to check what is (and is not) kept. */
function recordingStore (): { store: GatehouseStore, writes: Array<[string, string]> } {
  const inner = new MemoryStore()
  const writes: Array<[string, string]> = []
  return {
    writes,
    store: {
      get: (key) => inner.get(key),
      set: (key, value, ttl) => { writes.push([key, value]); return inner.set(key, value, ttl) },
      add: (key, value, ttl) => { writes.push([key, value]); return inner.add(key, value, ttl) },
      increment: (key, delta, ttl) => inner.increment(key, delta, ttl),
      delete: (key) => inner.delete(key)
    }
  }
}

t.test('login also returns an opaque refresh token, stored only as its SHA-256', async (t) => {
  const { store, writes } = recordingStore()
  const { app, upstream } = await setup(t, { store })
  const res = await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'alice-pw' } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  const body = res.json()
  t.strictSame(Object.keys(body).sort(), ['claims', 'expiresIn', 'refreshExpiresIn', 'refreshToken', 'token', 'tokenType'])
  t.match(body.refreshToken, /^[A-Za-z0-9_-]{43}$/, '32 random bytes in base64url')
  t.equal(body.refreshExpiresIn, 14 * 86400)
  t.strictSame(body.claims, { sub: 'alice', role: 'admin' })
  const hash = createHash('sha256').update(body.refreshToken).digest('base64url')
  t.ok(writes.some(([key]) => key === `gatehouse:refresh:${hash}`), 'kept under its hash')
  t.notOk(writes.some(([key, value]) => key.includes(body.refreshToken) || value.includes(body.refreshToken)), 'the token itself is stored nowhere')
  const record = writes.find(([key]) => key === `gatehouse:refresh:${hash}`)
  const sid = payload(body.token).sid
  t.match(sid, /^[\w-]{16,}$/, 'the access token names its session')
  t.equal((JSON.parse(record?.[1] ?? '{}') as { family?: unknown }).family, sid, 'the session is the stored refresh family')
  t.equal(payload(body.token).jti, undefined, 'no jti unless access tokens can be revoked')
  t.equal(upstream.seen.length, 0)
})

t.test('refresh rotates: a new pair in the login shape, the new access token works, the old refresh token is dead', async (t) => {
  const { app, upstream } = await setup(t, { refresh: { reuseInterval: 0 } })
  const first = await login(app)
  const res = await refresh(app, first.refreshToken)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  const next = res.json()
  t.strictSame(Object.keys(next).sort(), ['claims', 'expiresIn', 'refreshExpiresIn', 'refreshToken', 'token', 'tokenType'])
  t.strictSame(next.claims, { sub: 'alice', role: 'admin' })
  t.not(next.refreshToken, first.refreshToken)
  t.equal(payload(next.token).sid, payload(first.token).sid, 'same session')
  t.equal(payload(next.token).role, 'admin', 'claims carried over')

  const proxied = await app.inject({ url: '/api/orders', headers: bearer(next.token) })
  t.equal(proxied.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.notOk(upstream.seen[0]?.headers.authorization, 'no token goes upstream')

  assertError(t, await refresh(app, first.refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_REUSED')
})

t.test('reusing a rotated refresh token revokes the whole family: the newest one fails too', async (t) => {
  const { app } = await setup(t, { refresh: { reuseInterval: 0 } })
  const first = await login(app)
  const second = (await refresh(app, first.refreshToken)).json() as Tokens
  const third = (await refresh(app, second.refreshToken)).json() as Tokens
  t.ok(third.refreshToken)

  assertError(t, await refresh(app, first.refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_REUSED')
  assertError(t, await refresh(app, third.refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
  assertError(t, await refresh(app, second.refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')

  const other = await login(app, 'bob')
  t.equal((await refresh(app, other.refreshToken)).statusCode, 200, 'other sessions are untouched')
})

t.test('without a reuse interval, two concurrent refreshes with one token: exactly one wins, the other revokes the family', async (t) => {
  // Holds every `add` until two are waiting, so both requests have passed every check before either marks the token.
  const inner = new MemoryStore()
  const held: Array<() => void> = []
  const store: GatehouseStore = {
    get: (key) => inner.get(key),
    set: (key, value, ttl) => inner.set(key, value, ttl),
    increment: (key, delta, ttl) => inner.increment(key, delta, ttl),
    delete: (key) => inner.delete(key),
    add: async (key, value, ttl) => {
      if (key.startsWith('gatehouse:refresh-used:')) {
        await new Promise<void>((resolve) => {
          held.push(resolve)
          if (held.length === 2) for (const release of held) release()
        })
      }
      return inner.add(key, value, ttl)
    }
  }
  const { app } = await setup(t, { store, refresh: { reuseInterval: 0 } })
  const { refreshToken } = await login(app)
  const [a, b] = await Promise.all([refresh(app, refreshToken), refresh(app, refreshToken)])
  t.equal(held.length, 2, 'both reached the atomic step')
  const statuses = [a.statusCode, b.statusCode].sort()
  t.strictSame(statuses, [200, 401], 'one winner')
  const winner = (a.statusCode === 200 ? a : b).json() as Tokens
  assertError(t, a.statusCode === 200 ? b : a, 401, 'FST_GATEHOUSE_REFRESH_TOKEN_REUSED')
  assertError(t, await refresh(app, winner.refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
})

t.test('without a reuse interval, over a real socket, a burst of refreshes with one token has exactly one winner', async (t) => {
  const { app, upstream } = await setup(t, { refresh: { reuseInterval: 0 } })
  const url = await listen(app)
  const { refreshToken } = await login(app)
  const results = await Promise.all(Array.from({ length: 8 }, async () => {
    const res = await request(`${url}/token/refresh`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken })
    })
    return { status: res.statusCode, body: await res.body.json() as Record<string, unknown> }
  }))
  const winners = results.filter((r) => r.status === 200)
  t.equal(winners.length, 1, 'one 200')
  const losers = results.filter((r) => r.status !== 200)
  t.equal(losers.length, 7)
  // The first loser revokes the family; later ones find it gone.
  t.ok(losers.every((r) => r.status === 401 && /^FST_GATEHOUSE_REFRESH_TOKEN_(REUSED|INVALID)$/.test(String(r.body.code))), 'the rest are refused')
  t.ok(losers.some((r) => r.body.code === 'FST_GATEHOUSE_REFRESH_TOKEN_REUSED'), 'reuse was detected')
  const next = winners[0]?.body as unknown as Tokens
  const again = await request(`${url}/token/refresh`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: next.refreshToken })
  })
  t.equal(again.statusCode, 401, 'the family is gone')
  await again.body.dump()
  const proxied = await request(`${url}/api/x`, { headers: bearer(next.token) })
  t.equal(proxied.statusCode, 200, 'access tokens live on until exp unless revokeAccessToken')
  await proxied.body.dump()
  t.equal(upstream.seen.length, 1)
})

t.test('an expired refresh token gives 401', async (t) => {
  let now = Date.now()
  const store = new MemoryStore({ now: () => now })
  const { app } = await setup(t, { store, refresh: { expiresIn: '1h' } })
  const { refreshToken } = await login(app)
  now += 3600 * 1000 + 1
  assertError(t, await refresh(app, refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
})

t.test('a refresh token lives refresh.expiresIn, capped by the session maxAge', async (t) => {
  const { app } = await setup(t, { refresh: { expiresIn: '2h', maxAge: '3h' } })
  const first = await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'alice-pw' } })
  t.equal(first.json().refreshExpiresIn, 7200)
})

t.test('unknown, malformed or wrongly shaped refresh bodies are refused', async (t) => {
  const { app, upstream } = await setup(t)
  assertError(t, await refresh(app, 'A'.repeat(43)), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
  assertError(t, await refresh(app, 'not a token'), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
  assertError(t, await app.inject({ method: 'POST', url: '/token/refresh', payload: { refreshToken: 42 } }), 400, 'FST_GATEHOUSE_BAD_REQUEST')
  assertError(t, await app.inject({ method: 'POST', url: '/token/refresh', payload: { refreshToken: 'x', sub: 'bob' } }), 400, 'FST_GATEHOUSE_BAD_REQUEST')
  assertError(t, await app.inject({ method: 'POST', url: '/token/refresh' }), 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.seen.length, 0)
})

t.test('an access token cannot be used as a refresh token', async (t) => {
  const { app } = await setup(t)
  const { token } = await login(app)
  assertError(t, await app.inject({ method: 'POST', url: '/token/refresh', payload: { refreshToken: token } }), 400, 'FST_GATEHOUSE_BAD_REQUEST')
})

t.test('logout revokes the session; with revokeAccessToken the access token fails on a proxied route', async (t) => {
  const { app, upstream } = await setup(t, { logout: { revokeAccessToken: true } })
  const { token, refreshToken } = await login(app)
  const jti = payload(token).jti
  t.match(jti, /^[\w-]{22}$/, 'tokens carry a jti of 16 random bytes')
  t.not(payload((await login(app)).token).jti, jti, 'each token its own jti')
  t.equal((await app.inject({ url: '/api/before', headers: bearer(token) })).statusCode, 200)
  t.equal(upstream.seen.length, 1)

  const out = await logout(app, token)
  t.equal(out.statusCode, 204)
  t.equal(out.body, '')

  assertError(t, await app.inject({ url: '/api/after', headers: bearer(token) }), 401, 'FST_GATEHOUSE_TOKEN_REVOKED')
  t.equal(upstream.seen.length, 1, 'the revoked token never reached the upstream')
  assertError(t, await refresh(app, refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
  assertError(t, await logout(app, token), 401, 'FST_GATEHOUSE_TOKEN_REVOKED')

  const fresh = await login(app)
  t.equal((await app.inject({ url: '/api/again', headers: bearer(fresh.token) })).statusCode, 200, 'a new login works')
})

t.test('logout without revokeAccessToken ends the session but the access token lives until exp', async (t) => {
  const { app } = await setup(t)
  const { token, refreshToken } = await login(app)
  t.equal((await logout(app, token)).statusCode, 204)
  assertError(t, await refresh(app, refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
  t.equal((await app.inject({ url: '/api/x', headers: bearer(token) })).statusCode, 200)
})

t.test('logout also revokes the family of a refresh token in the body', async (t) => {
  const { app } = await setup(t)
  const phone = await login(app)
  const laptop = await login(app)
  t.equal((await logout(app, laptop.token, { refreshToken: phone.refreshToken })).statusCode, 204)
  assertError(t, await refresh(app, phone.refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
  assertError(t, await refresh(app, laptop.refreshToken), 401, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
})

t.test('logout needs a valid access token and a well-formed body', async (t) => {
  const { app } = await setup(t)
  const { token, refreshToken } = await login(app)
  assertError(t, await app.inject({ method: 'POST', url: '/logout' }), 401, 'FST_GATEHOUSE_TOKEN_MISSING')
  assertError(t, await app.inject({ method: 'POST', url: '/logout', headers: bearer('x.y.z') }), 401, 'FST_GATEHOUSE_TOKEN_INVALID')
  assertError(t, await logout(app, token, { refreshToken, extra: 1 }), 400, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal((await refresh(app, refreshToken)).statusCode, 200, 'nothing was revoked by the refused calls')
})

t.test('claims from verify cannot set the jti or sid the gateway relies on', async (t) => {
  const { app } = await setup(t, {
    logout: { revokeAccessToken: true },
    login: { verify: async ({ username }) => ({ sub: username, jti: 'fixed', sid: 'someone-elses-session' }) }
  })
  const { token } = await login(app, 'dora')
  t.not(payload(token).jti, 'fixed')
  t.not(payload(token).sid, 'someone-elses-session')
})

t.test('a failing store fails closed with 503 and the upstream is not contacted', async (t) => {
  let broken = false
  const inner = new MemoryStore()
  const guard = <T>(call: () => Promise<T>): Promise<T> => broken ? Promise.reject(new Error('redis at 10.0.0.7:6379 down')) : call()
  const store: GatehouseStore = {
    get: (key) => guard(() => inner.get(key)),
    set: (key, value, ttl) => guard(() => inner.set(key, value, ttl)),
    add: (key, value, ttl) => guard(() => inner.add(key, value, ttl)),
    increment: (key, delta, ttl) => guard(() => inner.increment(key, delta, ttl)),
    delete: (key) => guard(() => inner.delete(key))
  }
  const { app, upstream } = await setup(t, { store, logout: { revokeAccessToken: true } })
  const { token, refreshToken } = await login(app)
  broken = true
  const res = await app.inject({ url: '/api/x', headers: bearer(token) })
  assertError(t, res, 503, 'FST_GATEHOUSE_STORE_UNAVAILABLE')
  t.notMatch(res.body, /10\.0\.0\.7|redis/, 'no internal detail')
  assertError(t, await refresh(app, refreshToken), 503, 'FST_GATEHOUSE_STORE_UNAVAILABLE')
  t.equal(upstream.seen.length, 0)
})

t.test('lifecycle options are checked at register time', async (t) => {
  const upstream = await upstreamFor(t)
  const cases: Array<[string, Partial<GatehouseOptions['auth']>, GatehouseOptions['targets']?]> = [
    ['refresh without login', { login: false, refresh: true }],
    ['logout with nothing to revoke', { logout: true }],
    ['a bad refresh.expiresIn', { refresh: { expiresIn: '2 weeks' } }],
    ['maxAge shorter than expiresIn', { refresh: { expiresIn: '7d', maxAge: '1d' } }],
    ['a negative reuseInterval', { refresh: { reuseInterval: -1 } }],
    ['a reuseInterval over 60 s', { refresh: { reuseInterval: '2m' } }],
    ['a reuseInterval that is no duration', { refresh: { reuseInterval: 'soon' } }],
    ['refresh on the login path', { refresh: { path: '/login' } }],
    ['a store without add', { refresh: true, store: { get: async () => undefined } as unknown as GatehouseStore }],
    ['a bad throttle', { login: { verify: async () => null, throttle: { user: { max: 0 } } } }],
    ['a bad throttle onStoreError', { login: { verify: async () => null, throttle: { onStoreError: 'skip' as 'open' } } }],
    ['a target on the refresh path', { refresh: true }, [{ prefix: '/token/refresh', upstream: upstream.url }]]
  ]
  for (const [name, auth, targets] of cases) {
    await t.rejects(buildApp(t, { targets: targets ?? [{ prefix: '/api', upstream: upstream.url }], auth }),
      { code: 'FST_GATEHOUSE_INVALID_OPTION' }, name)
  }
})

t.test('without refresh, login answers as before and tokens carry neither sid nor jti', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'alice-pw' } })
  t.strictSame(Object.keys(res.json()).sort(), ['claims', 'expiresIn', 'token', 'tokenType'])
  t.equal(payload(res.json().token).sid, undefined)
  t.equal(payload(res.json().token).jti, undefined)
  t.equal((await refresh(app, 'A'.repeat(43))).statusCode, 404, 'no refresh route')
  t.equal((await app.inject({ method: 'POST', url: '/logout' })).statusCode, 404, 'no logout route')
})
