import t from 'tap'
import type { Test } from 'tap'
import { request } from 'undici'
import { staticUsers } from '../lib/index.js'
import type { GatehouseClaims, GatehouseOptions, LoginCredentials } from '../lib/index.js'
import { buildApp, listen, testHash } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'

/*
 * Issue 14 item 11, over real sockets: credential checks (where scrypt runs)
 * are bounded (`auth.login.concurrency`, default 2), a few wait
 * (`auth.login.queue`, default 8), the rest get 503 with Retry-After at once.
 * The verifier blocks on a promise the test controls, so nothing is timed.
 */

interface Blocking {
  verify: (credentials: LoginCredentials) => Promise<GatehouseClaims | null>
  /** Resolves when `count` checks are running at once. */
  running: (count: number) => Promise<void>
  release: () => void
  maxInFlight: () => number
  calls: () => number
}

function blockingVerifier (): Blocking {
  let inFlight = 0
  let max = 0
  let calls = 0
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  const watchers: Array<{ count: number, resolve: () => void }> = []
  return {
    async verify ({ username }) {
      calls++
      max = Math.max(max, ++inFlight)
      for (const w of watchers.filter((w) => inFlight >= w.count)) w.resolve()
      await gate
      inFlight--
      return { sub: username }
    },
    running: async (count) => {
      if (inFlight >= count) return
      await new Promise<void>((resolve) => { watchers.push({ count, resolve }) })
    },
    release: () => release(),
    maxInFlight: () => max,
    calls: () => calls
  }
}

async function gateway (t: Test, blocking: Blocking, login: Partial<Exclude<GatehouseOptions['auth']['login'], false>> = {}): Promise<string> {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { login: { verify: blocking.verify, ...login } } })
  return await listen(app)
}

function login (url: string, username: string) {
  return request(`${url}/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: 'pw' })
  }).then(async (res) => ({ status: res.statusCode, retryAfter: res.headers['retry-after'], body: await res.body.json() as Record<string, unknown> }))
}

t.test('by default two checks run, eight wait, the next login gets 503 with Retry-After', async (t) => {
  const blocking = blockingVerifier()
  const url = await gateway(t, blocking)
  const first = [login(url, 'u0'), login(url, 'u1')]
  await blocking.running(2)
  // Nine more: eight take the queue, whichever arrives last is refused at
  // once, while all the others are still held by the verifier.
  const more = Array.from({ length: 9 }, (_, i) => login(url, `q${i}`))
  const refused = await Promise.race(more)
  t.equal(refused.status, 503)
  t.equal(refused.body.code, 'FST_GATEHOUSE_LOGIN_BUSY')
  t.equal(refused.retryAfter, '1')
  t.same(Object.keys(refused.body).sort(), ['code', 'error', 'message', 'statusCode'])
  blocking.release()
  const answers = await Promise.all([...first, ...more])
  t.same(answers.map((a) => a.status).sort(), [...Array(10).fill(200), 503], 'the running and the queued logins all succeed')
  t.equal(answers.filter((a) => a.retryAfter !== undefined).length, 1, 'Retry-After only on the refusal')
  t.equal(blocking.maxInFlight(), 2, 'never more than two checks at once')
  t.equal(blocking.calls(), 10, 'the refused login never reached verify')
})

t.test('concurrency 1 and queue 0: a second login while one runs gets 503', async (t) => {
  const blocking = blockingVerifier()
  const url = await gateway(t, blocking, { concurrency: 1, queue: 0 })
  const first = login(url, 'a')
  await blocking.running(1)
  const second = await login(url, 'b')
  t.equal(second.status, 503)
  t.equal(second.retryAfter, '1')
  blocking.release()
  t.equal((await first).status, 200)
  t.equal((await login(url, 'c')).status, 200, 'the slot is free again')
  t.equal(blocking.maxInFlight(), 1)
})

t.test('a verify that throws frees its slot', async (t) => {
  let calls = 0
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: { login: { verify: () => { calls++; throw new Error('boom') }, concurrency: 1, queue: 0 } }
  })
  const url = await listen(app)
  for (let i = 0; i < 3; i++) t.equal((await login(url, `x${i}`)).status, 500)
  t.equal(calls, 3)
})

t.test('login.concurrency and login.queue are validated at register', async (t) => {
  const upstream = await upstreamFor(t)
  for (const [login, option] of [[{ concurrency: 0 }, 'auth.login.concurrency'], [{ queue: -1 }, 'auth.login.queue'], [{ concurrency: 1.5 }, 'auth.login.concurrency']] as const) {
    await t.rejects(buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { login: { verify: () => null, ...login } } }),
      { code: 'FST_GATEHOUSE_INVALID_OPTION', message: new RegExp(option.replace('.', '\\.')) })
  }
})

t.test('staticUsers refuses a table with mixed scrypt costs (timing would tell the names apart)', async (t) => {
  const cheap = await testHash('a')
  t.throws(() => staticUsers({ alice: { passwordHash: cheap }, bob: { passwordHash: cheap.replace(/^scrypt\$1024\$/, 'scrypt$2048$') } }),
    { name: 'TypeError', message: /bob.*N=2048.*same cost/ })
  t.doesNotThrow(() => staticUsers({ alice: { passwordHash: cheap }, bob: { passwordHash: cheap } }))
})
