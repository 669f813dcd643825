import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { MemoryStore } from '../lib/index.js'
import type { GatehouseOptions, LoginThrottleOptions } from '../lib/index.js'
import { addressKey } from '../lib/auth/throttle.js'
import { buildApp, testUsers } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import { request } from 'undici'

/*
 * Login throttling: failures per user name and per client address slow down,
 * then get 429 with Retry-After; a success resets the user name; nobody
 * learns whether a user exists.
 */

interface Setup { app: FastifyInstance, calls: () => number }

async function setup (t: Test, throttle: LoginThrottleOptions, extra: Partial<GatehouseOptions['auth']> = {}): Promise<Setup> {
  const upstream = await upstreamFor(t)
  const users = await testUsers()
  let calls = 0
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: {
      login: { verify: (credentials, request) => { calls++; return users(credentials, request) }, throttle: { delayMs: 0, ...throttle } },
      ...extra
    }
  })
  return { app, calls: () => calls }
}

function login (app: FastifyInstance, username: string, password: string, remoteAddress = '203.0.113.7'): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/login', payload: { username, password }, remoteAddress })
}

function assertThrottled (t: Test, res: LightMyRequestResponse, windowSeconds = 900): void {
  t.equal(res.statusCode, 429)
  t.strictSame(res.json(), {
    statusCode: 429, code: 'FST_GATEHOUSE_TOO_MANY_ATTEMPTS', error: 'Too Many Requests', message: 'Too many failed login attempts; try again later'
  })
  const retryAfter = Number(res.headers['retry-after'])
  t.ok(retryAfter > windowSeconds - 5 && retryAfter <= windowSeconds, `Retry-After ${retryAfter} covers the lockout`)
  t.equal(res.headers['cache-control'], 'no-store')
}

t.test('failures for one user name end in 429 with Retry-After, even with the right password', async (t) => {
  const { app, calls } = await setup(t, { user: { max: 3 } })
  for (let i = 0; i < 3; i++) t.equal((await login(app, 'alice', `wrong-${i}`)).statusCode, 401)
  assertThrottled(t, await login(app, 'alice', 'wrong-3'))
  assertThrottled(t, await login(app, 'alice', 'alice-pw'))
  t.equal(calls(), 3, 'no password is checked while locked out')
  t.equal((await login(app, 'ALICE', 'alice-pw')).statusCode, 429, 'case variants share the counter')
  t.equal((await login(app, 'bob', 'bob-pw')).statusCode, 200, 'other users are not affected')
})

t.test('unknown and known user names are throttled the same way', async (t) => {
  const { app } = await setup(t, { user: { max: 2 } })
  const known: number[] = []
  const unknown: number[] = []
  const knownRes: LightMyRequestResponse[] = []
  const unknownRes: LightMyRequestResponse[] = []
  for (let i = 0; i < 4; i++) {
    knownRes.push(await login(app, 'alice', `wrong-${i}`))
    unknownRes.push(await login(app, 'mallory', `wrong-${i}`))
  }
  for (const res of knownRes) known.push(res.statusCode)
  for (const res of unknownRes) unknown.push(res.statusCode)
  t.strictSame(known, [401, 401, 429, 429])
  t.strictSame(unknown, known)
  t.equal(knownRes[3]?.body, unknownRes[3]?.body, 'byte-identical 429 bodies')
  t.equal(knownRes[3]?.headers['retry-after'], unknownRes[3]?.headers['retry-after'])
})

t.test('a successful login resets the user name counter', async (t) => {
  const { app } = await setup(t, { user: { max: 3 } })
  for (let i = 0; i < 2; i++) t.equal((await login(app, 'alice', `wrong-${i}`)).statusCode, 401)
  t.equal((await login(app, 'alice', 'alice-pw')).statusCode, 200)
  for (let i = 0; i < 3; i++) t.equal((await login(app, 'alice', `again-${i}`)).statusCode, 401, `failure ${i + 1} after the reset`)
  assertThrottled(t, await login(app, 'alice', 'again-3'))
})

t.test('failures from one address across user names end in 429; other addresses pass', async (t) => {
  const { app } = await setup(t, { user: { max: 100 }, address: { max: 3 } })
  for (let i = 0; i < 3; i++) t.equal((await login(app, `user-${i}`, 'guess')).statusCode, 401)
  assertThrottled(t, await login(app, 'alice', 'alice-pw'))
  t.equal((await login(app, 'alice', 'alice-pw', '198.51.100.9')).statusCode, 200, 'another address logs in')
})

t.test('successes do not use up an address budget', async (t) => {
  const { app } = await setup(t, { address: { max: 2 } })
  for (let i = 0; i < 5; i++) t.equal((await login(app, 'alice', 'alice-pw')).statusCode, 200)
})

t.test('attempts past delayAfter are slowed down, the delay doubling', async (t) => {
  const { app } = await setup(t, { user: { max: 10, delayAfter: 1 }, delayMs: 150, maxDelayMs: 1000 })
  const timed = async (): Promise<number> => {
    const start = performance.now()
    t.equal((await login(app, 'alice', 'wrong')).statusCode, 401)
    return performance.now() - start
  }
  const first = await timed()
  const second = await timed()
  const third = await timed()
  t.ok(first < 150, `the first failure is not delayed (${first.toFixed(0)} ms)`)
  t.ok(second >= 145, `the second waits about delayMs (${second.toFixed(0)} ms)`)
  t.ok(third >= 295, `the third waits twice as long (${third.toFixed(0)} ms)`)
})

t.test('a parallel burst cannot get more than max guesses checked', async (t) => {
  const { app, calls } = await setup(t, { user: { max: 3 } })
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => login(app, 'alice', `burst-${i}`)))
  t.equal(results.filter((r) => r.statusCode === 401).length, 3)
  t.equal(results.filter((r) => r.statusCode === 429).length, 9)
  t.equal(calls(), 3, 'verify ran three times')
})

t.test('the lockout ends with the window', async (t) => {
  let now = Date.now()
  const store = new MemoryStore({ now: () => now })
  const { app } = await setup(t, { user: { max: 1 }, window: '1m' }, { store })
  t.equal((await login(app, 'alice', 'wrong')).statusCode, 401)
  assertThrottled(t, await login(app, 'alice', 'alice-pw'), 60)
  now += 60_000
  t.equal((await login(app, 'alice', 'alice-pw')).statusCode, 200)
})

t.test('throttling is on by default: 30 wrong passwords end in 429 over real sockets; throttle: false turns it off', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  // In parallel, so the default delays (250 ms doubling) overlap instead of adding up.
  const statuses = await Promise.all(Array.from({ length: 30 }, async (_, i) => {
    const res = await request(`${url}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: `wrong-${i}` }) })
    await res.body.dump()
    return res.statusCode
  }))
  t.equal(statuses.filter((s) => s === 401).length, 10, 'the default user max: 10 guesses checked')
  t.equal(statuses.filter((s) => s === 429).length, 20, 'the rest refused')

  const off = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { login: { verify: await testUsers(), throttle: false } } })
  for (let i = 0; i < 15; i++) t.equal((await login(off, 'alice', `wrong-${i}`)).statusCode, 401)
})

t.test('client addresses are counted per IPv4 address and per IPv6 /64', async (t) => {
  t.equal(addressKey('203.0.113.7'), '203.0.113.7')
  t.equal(addressKey('::ffff:203.0.113.7'), '203.0.113.7')
  t.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64')
  t.equal(addressKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64')
  t.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64')
  t.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64')
  t.equal(addressKey(undefined), 'unknown')
})
