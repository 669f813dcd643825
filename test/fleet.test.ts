import t from 'tap'
import type { Test } from 'tap'
import type { GatehouseOptions } from '../lib/index.js'
import { bearer, testUsers } from './helpers/app.js'
import { get, instance, login, post } from './helpers/fleet.js'
import type { Tokens } from './helpers/fleet.js'
import { redisSkip, startRedis } from './helpers/redis.js'
import type { RedisServer } from './helpers/redis.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'

/*
 * Two gateway instances, one Redis: what one instance decides (rotation,
 * reuse detection, logout, login throttling) holds on the other at once.
 * Each case is its own fleet on its own key prefix of one redis-server.
 */

interface Fleet { a: string, b: string, upstream: Upstream, prefix: string }

let redis: RedisServer
let fleets = 0

async function fleet (t: Test, auth: Partial<GatehouseOptions['auth']>): Promise<Fleet> {
  const upstream = await upstreamFor(t)
  const prefix = `fleet${++fleets}:`
  const a = await instance(t, upstream, redis.client(), auth, prefix)
  const b = await instance(t, upstream, redis.client(), auth, prefix)
  return { a: a.url, b: b.url, upstream, prefix }
}

const SESSIONS = { refresh: { reuseInterval: 0 }, logout: { revokeAccessToken: true } } as const

t.test('fleet', { skip: redisSkip }, async (t) => {
  redis = await startRedis(t)

  t.test('login on A, refresh on B; reuse of the old refresh token on A revokes the session on both', async (t) => {
    const { a, b, upstream } = await fleet(t, SESSIONS)
    const first = await login(a)
    const rotated = await post(`${b}/token/refresh`, { refreshToken: first.refreshToken })
    t.equal(rotated.status, 200, 'B knows the session A started')
    const second = rotated.body as unknown as Tokens
    t.equal((await get(`${a}/api/before`, second.token)).status, 200, 'A accepts the token B issued')

    const reused = await post(`${a}/token/refresh`, { refreshToken: first.refreshToken })
    t.equal(reused.status, 401)
    t.equal(reused.body.code, 'FST_GATEHOUSE_REFRESH_TOKEN_REUSED', 'A sees the rotation B made')

    const successor = await post(`${b}/token/refresh`, { refreshToken: second.refreshToken })
    t.equal(successor.body.code, 'FST_GATEHOUSE_REFRESH_TOKEN_INVALID', 'the session is over on B')
    for (const [base, token] of [[a, first.token], [b, first.token], [a, second.token], [b, second.token]] as const) {
      const res = await get(`${base}/api/after`, token)
      t.equal(res.body.code, 'FST_GATEHOUSE_TOKEN_REVOKED', 'every access token of the session, on both')
    }
    t.strictSame(upstream.seen.map((r) => r.url), ['/api/before'], 'nothing after the revocation reached the upstream')
  })

  t.test('logout on A: the access token is refused on B at its next request', async (t) => {
    for (const auth of [SESSIONS, { refresh: false, logout: { revokeAccessToken: true } }] as const) {
      const { a, b, upstream } = await fleet(t, auth)
      const { token } = await login(a)
      t.equal((await get(`${b}/api/before`, token)).status, 200, 'B accepts it (and has it in its verification cache)')
      t.equal((await post(`${a}/logout`, undefined, bearer(token))).status, 204)
      const refused = await get(`${b}/api/after`, token)
      t.equal(refused.status, 401, `refused on B (refresh ${auth.refresh === false ? 'off: by jti' : 'on: by session'})`)
      t.equal(refused.body.code, 'FST_GATEHOUSE_TOKEN_REVOKED')
      t.strictSame(upstream.seen.map((r) => r.url), ['/api/before'])
    }
  })

  t.test('failed logins spread across A and B add up to one 429, which holds on both', async (t) => {
    const { a, b } = await fleet(t, { login: { verify: await testUsers(), throttle: { user: { max: 4, delayAfter: 4 }, delayMs: 0 } } })
    for (const base of [a, b, a, b]) {
      t.equal((await post(`${base}/login`, { username: 'alice', password: 'wrong' })).status, 401)
    }
    const locked = await post(`${b}/login`, { username: 'alice', password: 'wrong' })
    t.equal(locked.status, 429, 'the fifth failure, on B, is over the shared limit of 4')
    t.equal(locked.body.code, 'FST_GATEHOUSE_TOO_MANY_ATTEMPTS')
    t.ok(Number(locked.headers['retry-after']) > 0, 'with Retry-After')
    const right = await post(`${a}/login`, { username: 'alice', password: 'alice-pw' })
    t.equal(right.status, 429, 'the lockout holds on A, even with the right password')
  })

  t.test('50 concurrent refreshes of one token across A and B: exactly one succeeds', async (t) => {
    const { a, b, upstream, prefix } = await fleet(t, SESSIONS)
    const { refreshToken } = await login(a)
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => post(`${i % 2 === 0 ? a : b}/token/refresh`, { refreshToken })))
    const ok = answers.filter((res) => res.status === 200)
    t.equal(ok.length, 1, 'one winner')
    const codes = new Set(answers.filter((res) => res.status !== 200).map((res) => `${res.status} ${String(res.body.code)}`))
    // A loser that checks after another loser revoked the session finds it gone.
    t.ok(codes.has('401 FST_GATEHOUSE_REFRESH_TOKEN_REUSED'), 'the others are reuse...')
    t.strictSame([...codes].filter((code) => !/^401 FST_GATEHOUSE_REFRESH_TOKEN_(REUSED|INVALID)$/.test(code)), [], '...or find the session already revoked')
    const records = await redis.client().keys(`${prefix}gatehouse:refresh:*`)
    t.equal(records.length, 2, 'one refresh token issued in the whole fleet: the login\'s and the winner\'s')
    // With reuseInterval 0 the losers revoke the session: the winner's pair dies too.
    const winner = ok[0]?.body as unknown as Tokens
    t.equal((await get(`${b}/api/x`, winner.token)).body.code, 'FST_GATEHOUSE_TOKEN_REVOKED')
    t.equal(upstream.seen.length, 0)
  })
})
