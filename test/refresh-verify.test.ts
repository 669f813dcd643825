import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { GatehouseClaims, RefreshVerifier } from '../lib/index.js'
import { bearer, buildApp } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'

/*
 * `auth.refresh.verify`: every refresh asks it again, so a changed role takes
 * effect on the next access token and a deleted or locked user's session ends.
 */

const users = new Map<string, { role: string } | null>()
const asked: GatehouseClaims[] = []
const verify: RefreshVerifier = async (claims) => {
  asked.push(claims)
  const user = users.get(claims.sub as string)
  if (user === undefined) throw new Error('directory down')
  return user === null ? null : { sub: claims.sub, role: user.role }
}

async function setup (t: Test): Promise<{ app: FastifyInstance, upstream: Upstream }> {
  users.clear()
  asked.length = 0
  users.set('alice', { role: 'admin' })
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { refresh: { verify } } })
  return { app, upstream }
}

async function login (app: FastifyInstance): Promise<{ token: string, refreshToken: string }> {
  return (await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'alice-pw' } })).json()
}

function refresh (app: FastifyInstance, refreshToken: string) {
  return app.inject({ method: 'POST', url: '/token/refresh', payload: { refreshToken } })
}

t.test('a changed role takes effect on the next access token', async (t) => {
  const { app, upstream } = await setup(t)
  const first = await login(app)
  users.set('alice', { role: 'clerk' })
  const res = await refresh(app, first.refreshToken)
  t.equal(res.statusCode, 200)
  const next = res.json() as { token: string, refreshToken: string, claims: GatehouseClaims }
  t.match(asked[0], { sub: 'alice', role: 'admin' }, 'asked with the session claims')
  t.equal(next.claims.role, 'clerk')
  const seen = await app.inject({ url: '/api/x', headers: bearer(next.token) })
  t.equal(seen.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  // The session keeps the fresh claims: the next refresh is asked with them.
  users.set('alice', { role: 'auditor' })
  t.equal((await refresh(app, next.refreshToken)).json().claims.role, 'auditor')
  t.match(asked[1], { role: 'clerk' })
})

t.test('null ends the whole session with 401', async (t) => {
  const { app } = await setup(t)
  const first = await login(app)
  users.set('alice', null)
  const res = await refresh(app, first.refreshToken)
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'FST_GATEHOUSE_SESSION_ENDED')
  // The family is gone: reinstating the user does not revive it.
  users.set('alice', { role: 'admin' })
  const again = await refresh(app, first.refreshToken)
  t.equal(again.statusCode, 401)
  t.equal(again.json().code, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
})

t.test('a failing verifier does not spend the refresh token', async (t) => {
  const { app } = await setup(t)
  const first = await login(app)
  users.delete('alice')
  const res = await refresh(app, first.refreshToken)
  t.equal(res.statusCode, 500)
  t.notMatch(res.body, /directory down/, 'the cause stays in the log')
  users.set('alice', { role: 'admin' })
  t.equal((await refresh(app, first.refreshToken)).statusCode, 200, 'the retry works')
})

t.test('auth.refresh.verify must be a function', async (t) => {
  await t.rejects(buildApp(t, { targets: [], auth: { refresh: { verify: 'yes' as unknown as RefreshVerifier } } }), { code: 'FST_GATEHOUSE_INVALID_OPTION', message: /auth\.refresh\.verify/ })
})
