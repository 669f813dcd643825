import t from 'tap'
import { request } from 'undici'
import { MemoryStore, storeKeys } from '../lib/index.js'
import { userKey } from '../lib/auth/throttle.js'
import { bearer, buildApp, listen, testUsers } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'

/*
 * Issue 14 item 10: a flood of failed logins with distinct user names (no
 * authentication needed) must not evict revocations, lockouts or sessions
 * from the in-memory store; login counters go first, revocations never early.
 */

const HOUR = 3_600_000

t.test('200k distinct user names evict only login counters, never security state', async (t) => {
  const store = new MemoryStore()
  await store.set(storeKeys.revokedJti('logged-out'), '1', HOUR)
  await store.set(storeKeys.family('session'), '1', HOUR)
  await store.set(storeKeys.refresh('hash'), '{}', HOUR)
  await store.set(storeKeys.lock('user', userKey('victim')), String(Date.now() + HOUR), HOUR)
  // What the login throttle writes for each attempt with a new name (as
  // lib/auth/throttle.ts does): a per-name counter for the throttle window.
  const started = performance.now()
  for (let i = 0; i < 200_000; i++) await store.increment(storeKeys.attempts('user', userKey(`flood-${i}`)), 1, 900_000)
  t.comment(`200k attempts in ${Math.round(performance.now() - started)} ms`)

  t.ok(store.size <= 100_000, `bounded (${store.size} entries)`)
  t.equal(await store.get(storeKeys.revokedJti('logged-out')), '1', 'the revocation stays')
  t.equal(await store.get(storeKeys.family('session')), '1', 'the session stays')
  t.equal(await store.get(storeKeys.refresh('hash')), '{}', 'the refresh record stays')
  t.ok(await store.get(storeKeys.lock('user', userKey('victim'))), 'the lockout stays')
  t.equal(await store.get(storeKeys.attempts('user', userKey('flood-199999'))), '1', 'the newest counters are kept')
  t.equal(await store.get(storeKeys.attempts('user', userKey('flood-0'))), undefined, 'the oldest counters went')
})

t.test('full of security state: new counters and sessions are refused, revocations are still stored', async (t) => {
  let now = 1_000_000
  const store = new MemoryStore({ maxEntries: 3, now: () => now })
  await store.set(storeKeys.family('a'), '1', HOUR)
  await store.set(storeKeys.family('b'), '1', HOUR)
  await store.set(storeKeys.lock('user', 'x'), '1', HOUR)
  await t.rejects(store.increment(storeKeys.attempts('user', 'y'), 1, HOUR), /full/, 'a counter is refused')
  await t.rejects(store.set(storeKeys.family('c'), '1', HOUR), /full/, 'a new session is refused')
  await store.set(storeKeys.revokedJti('j'), '1', HOUR)
  t.equal(await store.get(storeKeys.revokedJti('j')), '1', 'a revocation is stored over the cap')
  t.equal(await store.get(storeKeys.family('a')), '1', 'nothing was evicted')
  t.equal(store.size, 4)
  await store.set(storeKeys.family('a'), '2', HOUR)
  t.equal(await store.get(storeKeys.family('a')), '2', 'replacing a key needs no room')
  now += 2 * HOUR
  await store.set(storeKeys.family('c'), '1', HOUR)
  t.equal(await store.get(storeKeys.family('c')), '1', 'expired security state makes room')
  t.ok(store.size <= 3, 'back within the cap')
})

t.test('over real sockets: a login flood keeps a session alive and a revoked token revoked', async (t) => {
  const upstream = await upstreamFor(t)
  const store = new MemoryStore({ maxEntries: 40 })
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: {
      store,
      refresh: true,
      logout: { revokeAccessToken: true },
      login: {
        verify: await testUsers(),
        throttle: { address: { max: 100_000, delayAfter: 100_000 } }
      }
    }
  })
  const url = await listen(app)
  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const res = await request(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    const text = await res.body.text()
    return { status: res.statusCode, body: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
  }
  const alice = (await post('/login', { username: 'alice', password: 'alice-pw' })).body
  const revoked = app.gatehouse.signToken({ sub: 'bob', role: 'clerk' })
  t.equal((await post('/logout', {}, bearer(revoked))).status, 204)

  for (let i = 0; i < 120; i++) {
    const res = await post('/login', { username: `flood-${i}`, password: 'guess' })
    if (res.status !== 401) t.fail(`flood login ${i} answered ${res.status}`)
  }
  const stillRevoked = await request(`${url}/api/x`, { headers: bearer(revoked) })
  t.equal(stillRevoked.statusCode, 401, 'the logged-out token is still refused')
  t.equal((await stillRevoked.body.json() as { code: string }).code, 'FST_GATEHOUSE_TOKEN_REVOKED')
  const refreshed = await post('/token/refresh', { refreshToken: alice.refreshToken })
  t.equal(refreshed.status, 200, 'the live session survived the flood')
  t.equal(upstream.seen.length, 0)
})
