import t from 'tap'
import type { Test } from 'tap'
import { createHash, createHmac } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { request } from 'undici'
import { MemoryStore } from '../lib/index.js'
import type { GatehouseOptions, GatehouseStore } from '../lib/index.js'
import { bearer, buildApp, listen, SECRET } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { nextMessage, openClient, refusedUpgrade, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'

/*
 * Revocation everywhere, over real sockets: `verifyToken` agrees with the
 * proxied routes, a logout refuses new WebSocket upgrades, and concurrent
 * refreshes with one token within `reuseInterval` keep the session alive
 * while reuse after it still revokes the session.
 */

interface Tokens { token: string, refreshToken: string }
interface Answer { status: number, body: Record<string, unknown> }

interface Gateway { app: FastifyInstance, url: string, upstream: Upstream }

async function gateway (t: Test, auth: Partial<GatehouseOptions['auth']> = {}): Promise<Gateway> {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { refresh: true, ...auth } })
  return { app, url: await listen(app), upstream }
}

async function post (url: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(url, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body)
  })
  const text = await res.body.text()
  return { status: res.statusCode, body: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
}

async function get (url: string, token: string): Promise<Answer> {
  const res = await request(url, { headers: bearer(token) })
  return { status: res.statusCode, body: await res.body.json() as Record<string, unknown> }
}

async function login (url: string, username = 'alice'): Promise<Tokens> {
  const res = await post(`${url}/login`, { username, password: `${username}-pw` })
  if (res.status !== 200) throw new Error(`login failed: ${res.status}`)
  return res.body as unknown as Tokens
}

function refresh (url: string, refreshToken: string): Promise<Answer> {
  return post(`${url}/token/refresh`, { refreshToken })
}

function sid (token: string): unknown {
  return (JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString('utf8')) as Record<string, unknown>).sid
}

/**
 * A store whose first `count` adds of a refresh-used mark wait for each other,
 * so all have passed every check before any marks the token. Later adds pass.
 */
function rendezvousStore (count: number): { store: GatehouseStore, held: () => number } {
  const inner = new MemoryStore()
  const waiting: Array<() => void> = []
  return {
    held: () => waiting.length,
    store: {
      get: (key) => inner.get(key),
      set: (key, value, ttl) => inner.set(key, value, ttl),
      increment: (key, delta, ttl) => inner.increment(key, delta, ttl),
      delete: (key) => inner.delete(key),
      add: async (key, value, ttl) => {
        if (key.startsWith('gatehouse:refresh-used:') && waiting.length < count) {
          await new Promise<void>((resolve) => {
            waiting.push(resolve)
            if (waiting.length === count) for (const release of waiting) release()
          })
        }
        return inner.add(key, value, ttl)
      }
    }
  }
}

t.test('verifyToken refuses a token revoked by logout, as the proxied routes do', async (t) => {
  const { app, url, upstream } = await gateway(t, { logout: { revokeAccessToken: true } })
  const { token } = await login(url)
  t.equal((await app.gatehouse.verifyToken(token)).sub, 'alice', 'valid before logout')
  t.equal((await post(`${url}/logout`, {}, bearer(token))).status, 204)

  t.equal((await get(`${url}/api/after`, token)).body.code, 'FST_GATEHOUSE_TOKEN_REVOKED', 'the proxied route refuses it')
  await t.rejects(app.gatehouse.verifyToken(token), { code: 'FST_GATEHOUSE_TOKEN_REVOKED', statusCode: 401 }, 'so does verifyToken')
  await t.rejects(app.gatehouse.verifyToken('x.y.z'), { code: 'FST_GATEHOUSE_TOKEN_INVALID', statusCode: 401 }, 'a bad token rejects as before')
  t.equal(upstream.seen.length, 0)
})

t.test('with revokeAccessToken, logout also refuses the other access tokens of its session', async (t) => {
  const { app, url, upstream } = await gateway(t, { logout: { revokeAccessToken: true } })
  const tab = await login(url)
  // A second tab refreshed earlier: a different access token of the same session.
  const other = (await refresh(url, tab.refreshToken)).body as unknown as Tokens
  t.equal(sid(other.token), sid(tab.token))
  const elsewhere = await login(url)
  t.equal((await post(`${url}/logout`, {}, bearer(tab.token))).status, 204)

  const refused = await get(`${url}/api/other-tab`, other.token)
  t.equal(refused.status, 401)
  t.equal(refused.body.code, 'FST_GATEHOUSE_TOKEN_REVOKED')
  await t.rejects(app.gatehouse.verifyToken(other.token), { code: 'FST_GATEHOUSE_TOKEN_REVOKED' })
  t.equal(upstream.seen.length, 0, 'nothing of the ended session reached the upstream')
  t.equal((await get(`${url}/api/elsewhere`, elsewhere.token)).status, 200, 'another session is untouched')
  t.equal(upstream.seen.length, 1)
})

t.test('without revokeAccessToken, verifyToken and HTTP accept the token until exp, alike', async (t) => {
  const { app, url } = await gateway(t)
  const { token } = await login(url)
  t.equal((await post(`${url}/logout`, {}, bearer(token))).status, 204)
  t.equal((await get(`${url}/api/x`, token)).status, 200)
  t.equal((await app.gatehouse.verifyToken(token)).sub, 'alice')
})

t.test('logout without revokeAccessToken refuses new WebSocket upgrades with the same access token', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, websocket: true }], auth: { refresh: true } })
  const base = await listen(app)
  const { token } = await login(base)
  const other = await login(base)

  const open = await openClient(wsUrl(base, '/live'), [], { headers: bearer(token) })
  t.teardown(() => open.terminate())
  t.equal((await post(`${base}/logout`, {}, bearer(token))).status, 204)
  t.equal(upstream.handshakes.length, 1)

  const header = await refusedUpgrade(wsUrl(base, '/live'), [], { headers: bearer(token) })
  t.equal(header.statusCode, 401)
  t.equal(header.body.code, 'FST_GATEHOUSE_TOKEN_REVOKED')
  const protocol = await refusedUpgrade(wsUrl(base, '/live'), ['feed.v1', `bearer.${token}`])
  t.equal(protocol.statusCode, 401)
  t.equal(protocol.body.code, 'FST_GATEHOUSE_TOKEN_REVOKED')
  t.equal(upstream.handshakes.length, 1, 'the upstream never heard of the refused upgrades')

  open.send('still here')
  t.equal((await nextMessage(open)).data.toString(), 'still here', 'a tunnel opened before the logout stays open')
  const fresh = await openClient(wsUrl(base, '/live'), [], { headers: bearer(other.token) })
  t.teardown(() => fresh.terminate())
  t.equal(upstream.handshakes.length, 2, 'another session still opens tunnels')
  t.equal((await get(`${base}/live/plain`, token)).status, 200, 'a plain GET on the same route is HTTP: the token lives until exp')
})

t.test('two parallel refreshes with one token within reuseInterval: both get a working pair of the same session', async (t) => {
  const { store, held } = rendezvousStore(2)
  const { url, upstream } = await gateway(t, { store })
  const first = await login(url)
  const [a, b] = await Promise.all([refresh(url, first.refreshToken), refresh(url, first.refreshToken)])
  t.equal(held(), 2, 'both reached the atomic step')
  t.equal(a.status, 200)
  t.equal(b.status, 200)
  const one = a.body as unknown as Tokens
  const two = b.body as unknown as Tokens
  t.not(one.refreshToken, two.refreshToken, 'a fresh pair, not a copy of the winner\'s')
  t.equal(sid(one.token), sid(first.token), 'same session')
  t.equal(sid(two.token), sid(first.token), 'same session')

  for (const pair of [one, two]) {
    t.equal((await get(`${url}/api/x`, pair.token)).status, 200, 'the access token works')
    t.equal((await refresh(url, pair.refreshToken)).status, 200, 'the refresh token works: the session was not revoked')
  }
  t.equal(upstream.seen.length, 2)
})

t.test('a burst of refreshes with one token over real sockets all succeed within reuseInterval', async (t) => {
  const { url } = await gateway(t, { refresh: { reuseInterval: '5s' } })
  const { refreshToken } = await login(url)
  const results = await Promise.all(Array.from({ length: 8 }, () => refresh(url, refreshToken)))
  t.strictSame(results.map((r) => r.status), Array(8).fill(200))
  const next = results.map((r) => (r.body as unknown as Tokens).refreshToken)
  t.equal(new Set(next).size, 8, 'each got its own refresh token')
  t.equal((await refresh(url, next[7] as string)).status, 200, 'the session lives on')
})

t.test('reuse after reuseInterval still revokes the session and, with revokeAccessToken, its access tokens', async (t) => {
  const store = new MemoryStore()
  const { url, upstream } = await gateway(t, { store, logout: { revokeAccessToken: true } })
  const stolen = await login(url)
  const next = (await refresh(url, stolen.refreshToken)).body as unknown as Tokens
  // The rotation happened 3 s ago, past the default 2 s window (the mark is the rotation time).
  const mark = `gatehouse:refresh-used:${createHash('sha256').update(stolen.refreshToken).digest('base64url')}`
  t.type(Number(await store.get(mark)), 'number')
  await store.set(mark, String(Date.now() - 3000), 60_000)

  const reuse = await refresh(url, stolen.refreshToken)
  t.equal(reuse.status, 401)
  t.equal(reuse.body.code, 'FST_GATEHOUSE_REFRESH_TOKEN_REUSED')
  t.equal((await refresh(url, next.refreshToken)).body.code, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID', 'the session is revoked')
  t.equal((await get(`${url}/api/x`, next.token)).body.code, 'FST_GATEHOUSE_TOKEN_REVOKED', 'and its access tokens with it')
  t.equal(upstream.seen.length, 0)
})

t.test('reuseInterval 0 turns the window off: the second of two parallel refreshes revokes the session', async (t) => {
  const { store } = rendezvousStore(2)
  const { url } = await gateway(t, { store, refresh: { reuseInterval: 0 } })
  const { refreshToken } = await login(url)
  const results = await Promise.all([refresh(url, refreshToken), refresh(url, refreshToken)])
  t.strictSame(results.map((r) => r.status).sort(), [200, 401])
  const winner = results.find((r) => r.status === 200)?.body as unknown as Tokens
  t.equal(results.find((r) => r.status === 401)?.body.code, 'FST_GATEHOUSE_REFRESH_TOKEN_REUSED')
  t.equal((await refresh(url, winner.refreshToken)).body.code, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID')
})

t.test('a rotation mark without a time (written before the window existed) counts as reuse', async (t) => {
  const store = new MemoryStore()
  const { url } = await gateway(t, { store })
  const { refreshToken } = await login(url)
  const mark = `gatehouse:refresh-used:${createHash('sha256').update(refreshToken).digest('base64url')}`
  await store.set(mark, '1', 60_000)
  t.equal((await refresh(url, refreshToken)).body.code, 'FST_GATEHOUSE_REFRESH_TOKEN_REUSED')
})

t.test('a token whose sid was never issued by the gateway is refused where sessions are checked', async (t) => {
  const { url, upstream } = await gateway(t, { logout: { revokeAccessToken: true } })
  const now = Math.floor(Date.now() / 1000)
  const part = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const forged = (claims: object): string => {
    const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: 'mallory', iat: now, exp: now + 60, ...claims })}`
    return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`
  }
  // Signed with the gateway's key elsewhere: a sid that cannot be a session id, or an unknown one.
  for (const sid of [42, '', 'x'.repeat(200), 'no-such-session']) {
    t.equal((await get(`${url}/api/x`, forged({ sid }))).body.code, 'FST_GATEHOUSE_TOKEN_REVOKED', JSON.stringify(sid).slice(0, 20))
  }
  t.equal((await get(`${url}/api/x`, forged({}))).status, 200, 'no sid: no session to end')
  t.equal(upstream.seen.length, 1)
})
