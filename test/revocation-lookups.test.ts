import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { request } from 'undici'
import { MemoryStore } from '../lib/index.js'
import type { GatehouseOptions, GatehouseStore } from '../lib/index.js'
import { bearer, buildApp, listen } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'

/*
 * Issue 14 item 9, over real sockets: with `revokeAccessToken` an ended
 * session (logout or refresh token reuse) refuses every access token of it,
 * and each proxied request costs exactly one store lookup, not one for the
 * token and one for its session.
 */

interface Tokens { token: string, refreshToken: string }

interface Gateway { app: FastifyInstance, url: string, upstream: Upstream, gets: string[], sets: string[] }

/** A memory store that records the keys read and written. */
function recordingStore (): { store: GatehouseStore, gets: string[], sets: string[] } {
  const inner = new MemoryStore()
  const gets: string[] = []
  const sets: string[] = []
  return {
    gets,
    sets,
    store: {
      get: async (key) => { gets.push(key); return await inner.get(key) },
      set: async (key, value, ttl) => { sets.push(key); await inner.set(key, value, ttl) },
      add: (key, value, ttl) => inner.add(key, value, ttl),
      increment: (key, delta, ttl) => inner.increment(key, delta, ttl),
      delete: (key) => inner.delete(key)
    }
  }
}

async function gateway (t: Test, auth: Partial<GatehouseOptions['auth']> = {}): Promise<Gateway> {
  const upstream = await upstreamFor(t)
  const { store, gets, sets } = recordingStore()
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: { refresh: { reuseInterval: 0 }, logout: { revokeAccessToken: true }, store, ...auth }
  })
  return { app, url: await listen(app), upstream, gets, sets }
}

async function post (url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  const text = await res.body.text()
  return { status: res.statusCode, body: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
}

async function get (url: string, token: string): Promise<{ status: number, code: unknown }> {
  const res = await request(url, { headers: bearer(token) })
  return { status: res.statusCode, code: (await res.body.json() as Record<string, unknown>).code }
}

async function login (url: string): Promise<Tokens> {
  const res = await post(`${url}/login`, { username: 'alice', password: 'alice-pw' })
  if (res.status !== 200) throw new Error(`login failed: ${res.status}`)
  return res.body as unknown as Tokens
}

/** The store reads one proxied request makes. */
async function lookupsOf (gw: Gateway, path: string, token: string): Promise<{ status: number, code: unknown, lookups: string[] }> {
  const before = gw.gets.length
  const answer = await get(`${gw.url}${path}`, token)
  return { ...answer, lookups: gw.gets.slice(before) }
}

t.test('a live session token costs one store lookup per request: its session', async (t) => {
  const gw = await gateway(t)
  const { token } = await login(gw.url)
  const ok = await lookupsOf(gw, '/api/a', token)
  t.equal(ok.status, 200)
  t.same(ok.lookups.map((key) => key.split(':')[1]), ['family'], 'one lookup, of the session')
  t.equal(gw.upstream.seen.length, 1)
})

t.test('after logout, every token of the session is refused with one lookup, and no jti entry is written', async (t) => {
  const gw = await gateway(t)
  const tab = await login(gw.url)
  const other = (await post(`${gw.url}/token/refresh`, { refreshToken: tab.refreshToken })).body as unknown as Tokens
  t.equal((await post(`${gw.url}/logout`, {}, bearer(tab.token))).status, 204)
  t.same(gw.sets.filter((key) => key.startsWith('gatehouse:jti:')), [], 'the session covers the token')

  for (const token of [tab.token, other.token]) {
    const refused = await lookupsOf(gw, '/api/after', token)
    t.equal(refused.status, 401)
    t.equal(refused.code, 'FST_GATEHOUSE_TOKEN_REVOKED')
    t.equal(refused.lookups.length, 1, 'one lookup per request')
  }
  await t.rejects(gw.app.gatehouse.verifyToken(other.token), { code: 'FST_GATEHOUSE_TOKEN_REVOKED' })
  t.equal(gw.upstream.seen.length, 0, 'nothing of the ended session reached the upstream')
})

t.test('refresh token reuse (theft) refuses the access tokens of the session at once', async (t) => {
  const gw = await gateway(t)
  const victim = await login(gw.url)
  const rotated = (await post(`${gw.url}/token/refresh`, { refreshToken: victim.refreshToken })).body as unknown as Tokens
  t.equal((await get(`${gw.url}/api/before`, rotated.token)).status, 200)
  const reuse = await post(`${gw.url}/token/refresh`, { refreshToken: victim.refreshToken })
  t.equal(reuse.body.code, 'FST_GATEHOUSE_REFRESH_TOKEN_REUSED')
  for (const token of [victim.token, rotated.token]) {
    const refused = await lookupsOf(gw, '/api/after', token)
    t.equal(refused.code, 'FST_GATEHOUSE_TOKEN_REVOKED')
    t.equal(refused.lookups.length, 1)
  }
  t.equal(gw.upstream.seen.length, 1)
})

t.test('a token without a session (signToken, or refresh off) is revoked by its jti, one lookup', async (t) => {
  for (const auth of [{}, { refresh: false, logout: { revokeAccessToken: true } }] as Array<Partial<GatehouseOptions['auth']>>) {
    const gw = await gateway(t, auth)
    const token = gw.app.gatehouse.signToken({ sub: 'alice', role: 'admin' })
    const ok = await lookupsOf(gw, '/api/a', token)
    t.equal(ok.status, 200)
    t.same(ok.lookups.map((key) => key.split(':')[1]), ['jti'])
    t.equal((await post(`${gw.url}/logout`, {}, bearer(token))).status, 204)
    const refused = await lookupsOf(gw, '/api/b', token)
    t.equal(refused.code, 'FST_GATEHOUSE_TOKEN_REVOKED')
    t.equal(refused.lookups.length, 1)
  }
})
