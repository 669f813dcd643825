import t from 'tap'
import { once } from 'node:events'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import { MemoryStore, storeKeys } from '../lib/index.js'
import type { GatehouseOptions, GatehouseStore } from '../lib/index.js'
import { userKey } from '../lib/auth/throttle.js'
import { bearer, buildApp, testUsers, tokenFor } from './helpers/app.js'
import { get, instance, login, post } from './helpers/fleet.js'
import type { Reply, Tokens } from './helpers/fleet.js'
import { ready, redisSkip, silentServer, startRedis } from './helpers/redis.js'
import { upstreamFor } from './helpers/upstream.js'
import { within } from './helpers/wait.js'

/*
 * The outage policy against real faults: the test's own redis-server killed
 * and restarted, and a server that accepts connections but never answers.
 * Store-backed decisions fail closed with a bounded 503 and Retry-After,
 * requests that need no lookup keep working, nothing crashes, and the fleet
 * recovers once Redis is back, without a restart.
 */

const TIMEOUT = 250
// Slack for a loaded machine on top of the command timeout.
const SLACK = 1000
const SESSIONS = { refresh: true, logout: { revokeAccessToken: true } } as const

/** Fails the test on any unhandled rejection or uncaught exception while it runs. */
function noStrayErrors (t: Test): void {
  const fail = (err: unknown): void => { t.fail(`stray error: ${String(err)}`) }
  process.on('unhandledRejection', fail)
  process.on('uncaughtException', fail)
  t.teardown(() => {
    process.off('unhandledRejection', fail)
    process.off('uncaughtException', fail)
  })
}

async function timed (call: () => Promise<Reply>): Promise<Reply & { ms: number }> {
  const start = Date.now()
  const res = await call()
  return { ...res, ms: Date.now() - start }
}

function unavailable (t: Test, res: Reply & { ms: number }, what: string): void {
  t.equal(res.status, 503, `${what}: 503`)
  t.equal(res.body.code, 'FST_GATEHOUSE_STORE_UNAVAILABLE', `${what}: store unavailable`)
  t.equal(res.headers['retry-after'], '1', `${what}: Retry-After`)
  t.ok(res.ms < TIMEOUT + SLACK, `${what}: bounded (${res.ms} ms)`)
  t.notMatch(JSON.stringify(res.body), /redis|127\.0\.0\.1|ECONNREFUSED|timed out|no answer/i, `${what}: no internal detail`)
}

t.test('Redis killed mid-run, then restarted', { skip: redisSkip }, async (t) => {
  noStrayErrors(t)
  const redis = await startRedis(t)
  const upstream = await upstreamFor(t)
  const clients = [redis.client(), redis.client(), redis.client()] as const
  const a = await instance(t, upstream, clients[0], SESSIONS, 'fleet:', TIMEOUT)
  const b = await instance(t, upstream, clients[1], SESSIONS, 'fleet:', TIMEOUT)
  // An instance whose proxied requests need no store lookup (no revokeAccessToken).
  const plain = await instance(t, upstream, clients[2], { refresh: true }, 'plain:', TIMEOUT)
  const session = await login(a.url)
  const plainSession = await login(plain.url)

  await redis.kill()
  unavailable(t, await timed(() => get(`${a.url}/api/a`, session.token)), 'proxied request on A')
  unavailable(t, await timed(() => get(`${b.url}/api/b`, session.token)), 'proxied request on B')
  unavailable(t, await timed(() => post(`${b.url}/token/refresh`, { refreshToken: session.refreshToken })), 'refresh')
  unavailable(t, await timed(() => post(`${a.url}/logout`, undefined, bearer(session.token))), 'logout')
  unavailable(t, await timed(() => post(`${a.url}/login`, { username: 'bob', password: 'bob-pw' })), 'login (throttle closed)')
  await t.rejects(a.app.gatehouse.verifyToken(session.token), { code: 'FST_GATEHOUSE_STORE_UNAVAILABLE' }, 'verifyToken too')
  t.equal((await get(`${plain.url}/api/plain`, plainSession.token)).status, 200, 'a request that needs no lookup still works')
  t.strictSame(upstream.seen.map((r) => r.url), ['/api/plain'], 'nothing unchecked reached the upstream')

  await redis.restart()
  await Promise.all(clients.map(ready))
  // The restarted server has no persistence: every session is gone, so its tokens fail closed.
  t.equal((await get(`${a.url}/api/old`, session.token)).body.code, 'FST_GATEHOUSE_TOKEN_REVOKED', 'a lost session is refused')
  const fresh = await login(a.url, 'bob')
  const rotated = await post(`${b.url}/token/refresh`, { refreshToken: fresh.refreshToken })
  t.equal(rotated.status, 200, 'refresh works again, across instances')
  t.equal((await get(`${a.url}/api/new`, (rotated.body as unknown as Tokens).token)).status, 200, 'proxying works again')
  t.equal(upstream.seen.at(-1)?.url, '/api/new')
})

t.test('login throttling with onStoreError', { skip: redisSkip }, async (t) => {
  noStrayErrors(t)
  const redis = await startRedis(t)
  const upstream = await upstreamFor(t)
  const throttled = async (onStoreError: 'open' | 'closed'): Promise<string> => {
    const auth: Partial<GatehouseOptions['auth']> = { login: { verify: await testUsers(), throttle: { onStoreError } } }
    return (await instance(t, upstream, redis.client(), auth, `${onStoreError}:`, TIMEOUT)).url
  }
  const open = await throttled('open')
  const closed = await throttled('closed')
  await redis.kill()
  const right = await timed(() => post(`${open.toString()}/login`, { username: 'alice', password: 'alice-pw' }))
  t.equal(right.status, 200, 'open: the password is checked, uncounted')
  t.ok(right.ms < TIMEOUT + SLACK, `open: bounded (${right.ms} ms)`)
  t.equal((await post(`${open}/login`, { username: 'alice', password: 'wrong' })).body.code, 'FST_GATEHOUSE_BAD_CREDENTIALS', 'open: a wrong password is still refused')
  unavailable(t, await timed(() => post(`${closed}/login`, { username: 'alice', password: 'alice-pw' })), 'closed: login')
})

t.test('closing the gateway with Redis gone does not hang and leaves the client open', { skip: redisSkip }, async (t) => {
  noStrayErrors(t)
  const redis = await startRedis(t)
  const upstream = await upstreamFor(t)
  const client = redis.client()
  const gw = await instance(t, upstream, client, SESSIONS, 'close:', TIMEOUT)
  const session = await login(gw.url)
  await redis.kill()
  const arrived = once(gw.app.server, 'request')
  const inFlight = get(`${gw.url}/api/x`, session.token)
  await arrived
  await within(gw.app.close(), { message: 'the gateway closed', timeout: 5000 })
  t.equal((await inFlight).status, 503, 'the request in flight got its answer')
  t.not(client.status, 'end', 'the gateway did not close the client it was given')
})

t.test('a Redis that accepts connections and never answers: bounded 503s', async (t) => {
  noStrayErrors(t)
  const silent = await silentServer(t)
  const upstream = await upstreamFor(t)
  for (const enableReadyCheck of [true, false]) {
    const client = new Redis({ port: silent.port, host: '127.0.0.1', enableReadyCheck })
    client.on('error', () => {})
    t.teardown(() => client.disconnect())
    const gw = await instance(t, upstream, client, SESSIONS, 'silent:', TIMEOUT)
    const token = tokenFor(gw.app)
    const answers = await Promise.all([
      ...Array.from({ length: 10 }, (_, i) => timed(() => get(`${gw.url}/api/${i}`, token))),
      timed(() => post(`${gw.url}/login`, { username: 'alice', password: 'alice-pw' })),
      timed(() => post(`${gw.url}/token/refresh`, { refreshToken: 'a'.repeat(43) }))
    ])
    for (const res of answers) unavailable(t, res, `ready check ${String(enableReadyCheck)}`)
    await within(gw.app.close(), { message: 'the gateway closed', timeout: 5000 })
  }
  t.equal(upstream.seen.length, 0)
  t.ok(silent.connections() > 0, 'the clients did reach the silent server')
})

t.test('a login whose counter reset fails still succeeds, the counter left as it was', async (t) => {
  noStrayErrors(t)
  const inner = new MemoryStore()
  const store: GatehouseStore = {
    get: (key) => inner.get(key),
    set: (key, value, ttl) => inner.set(key, value, ttl),
    add: (key, value, ttl) => inner.add(key, value, ttl),
    // Only the reset after a success fails: the counting before the check works.
    increment: (key, delta, ttl) => delta < 0 ? Promise.reject(new Error('store down')) : inner.increment(key, delta, ttl),
    delete: () => Promise.reject(new Error('store down'))
  }
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { store } })
  const res = await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'alice-pw' } })
  t.equal(res.statusCode, 200)
  t.equal(await inner.get(storeKeys.attempts('user', userKey('alice'))), '1', 'the attempt stays counted: the strict side')
})
