import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import { generateKeyPairSync } from 'node:crypto'
import gatehouse from '../lib/index.js'
import type { GatehouseOptions, TargetOptions } from '../lib/index.js'
import { SECRET } from './helpers/app.js'

/*
 * Options are validated once, at register: every invalid one fails there with
 * a coded error whose message names the option, before anything listens.
 */

const INVALID_OPTION = 'FST_GATEHOUSE_INVALID_OPTION'
const INVALID_MIDDLEWARE = 'FST_GATEHOUSE_INVALID_MIDDLEWARE'

// Nothing listens here; registering a target never connects to it.
const UPSTREAM = 'http://127.0.0.1:9'

const rsa = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  publicKeyEncoding: { type: 'spki', format: 'pem' },
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' }
})

function validOptions (): GatehouseOptions {
  return {
    auth: { secret: SECRET, login: { verify: async () => null } },
    targets: [{ prefix: '/api', upstream: UPSTREAM }]
  }
}

function withAuth (auth: Record<string, unknown>): unknown {
  const opts = validOptions()
  return { ...opts, auth: { ...opts.auth, ...auth } }
}

function withTarget (target: Record<string, unknown>): unknown {
  return { ...validOptions(), targets: [{ prefix: '/api', upstream: UPSTREAM, ...target }] }
}

async function register (t: Test, options: unknown): Promise<unknown> {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close().catch(() => {}))
  try {
    await app.register(gatehouse, options as GatehouseOptions)
    await app.ready()
  } catch (err) {
    return err
  }
  return undefined
}

/** Asserts that registering `options` fails with `code` and a message naming `option`. */
async function rejects (t: Test, options: unknown, option: string, code = INVALID_OPTION): Promise<Error & { code?: string }> {
  const err = await register(t, options) as (Error & { code?: string }) | undefined
  t.ok(err instanceof Error, 'register rejects')
  t.equal(err?.code, code)
  t.match(err?.message ?? '', `"${option}"`, `the message names ${option}`)
  return err as Error & { code?: string }
}

t.test('valid options register (the control case for every rejection below)', async (t) => {
  t.equal(await register(t, validOptions()), undefined)
})

t.test('missing auth fails', async (t) => {
  await rejects(t, { targets: [] }, 'auth')
})

t.test('auth that is not an object fails', async (t) => {
  await rejects(t, { auth: 'secret', targets: [] }, 'auth')
})

t.test('missing options object fails', async (t) => {
  await rejects(t, undefined, 'auth')
})

t.test('an HS256 secret shorter than 32 bytes fails', async (t) => {
  await rejects(t, withAuth({ secret: 'x'.repeat(31) }), 'auth.secret')
})

t.test('a Buffer secret shorter than 32 bytes fails', async (t) => {
  await rejects(t, withAuth({ secret: Buffer.alloc(31, 1) }), 'auth.secret')
})

t.test('a missing HS256 secret fails', async (t) => {
  await rejects(t, withAuth({ secret: undefined }), 'auth.secret')
})

t.test('a secret of exactly 32 bytes is accepted', async (t) => {
  t.equal(await register(t, withAuth({ secret: 'x'.repeat(32) })), undefined)
})

t.test('an unknown algorithm fails', async (t) => {
  await rejects(t, withAuth({ algorithm: 'HS1024' }), 'auth.algorithm')
})

t.test('algorithm "none" fails', async (t) => {
  await rejects(t, withAuth({ algorithm: 'none' }), 'auth.algorithm')
})

t.test('RS256 without a publicKey fails', async (t) => {
  await rejects(t, withAuth({ algorithm: 'RS256', secret: undefined, privateKey: rsa.privateKey }), 'auth.publicKey')
})

t.test('login with an asymmetric algorithm but no privateKey fails', async (t) => {
  await rejects(t, withAuth({ algorithm: 'RS256', secret: undefined, publicKey: rsa.publicKey }), 'auth.privateKey')
})

t.test('verify-only RS256 with only a publicKey is accepted', async (t) => {
  t.equal(await register(t, withAuth({ algorithm: 'RS256', secret: undefined, publicKey: rsa.publicKey, login: false })), undefined)
})

t.test('login without a verify function fails', async (t) => {
  await rejects(t, withAuth({ login: { path: '/login' } }), 'auth.login')
})

t.test('a missing login option fails', async (t) => {
  await rejects(t, withAuth({ login: undefined }), 'auth.login')
})

t.test('a relative login path fails', async (t) => {
  await rejects(t, withAuth({ login: { path: 'login', verify: async () => null } }), 'auth.login.path')
})

for (const expiresIn of [0, -60, 1.5, Number.NaN, '', '10 years', '15', '0m', 'forever', null, {}]) {
  t.test(`expiresIn ${JSON.stringify(expiresIn) ?? String(expiresIn)} fails`, async (t) => {
    await rejects(t, withAuth({ expiresIn }), 'auth.expiresIn')
  })
}

t.test('a negative clockTolerance fails', async (t) => {
  await rejects(t, withAuth({ clockTolerance: -1 }), 'auth.clockTolerance')
})

t.test('a non-numeric clockTolerance fails', async (t) => {
  await rejects(t, withAuth({ clockTolerance: '10' }), 'auth.clockTolerance')
})

t.test('an empty issuer fails', async (t) => {
  await rejects(t, withAuth({ issuer: '' }), 'auth.issuer')
})

t.test('targets that is not an array fails', async (t) => {
  await rejects(t, { ...validOptions(), targets: { prefix: '/api', upstream: UPSTREAM } }, 'targets')
})

t.test('missing targets fails', async (t) => {
  await rejects(t, { auth: validOptions().auth }, 'targets')
})

t.test('a target that is not an object fails', async (t) => {
  await rejects(t, { ...validOptions(), targets: ['/api'] }, 'targets[0]')
})

const badPrefixes: Array<[string, unknown]> = [
  ['relative', 'api'],
  ['with ..', '/api/../admin'],
  ['with a trailing ..', '/api/..'],
  ['with .', '/api/./x'],
  ['with a query', '/api?x=1'],
  ['with a fragment', '/api#x'],
  ['with a backslash', '/api\\x'],
  ['with a space', '/api x'],
  ['with an empty segment', '/api//x'],
  ['not a string', 42]
]
for (const [what, prefix] of badPrefixes) {
  t.test(`a prefix ${what} fails`, async (t) => {
    await rejects(t, withTarget({ prefix }), 'targets[0].prefix')
  })
}

const badUpstreams: Array<[string, unknown]> = [
  ['ftp:', 'ftp://127.0.0.1/files'],
  ['file:', 'file:///etc/passwd'],
  ['with credentials', 'http://user:pw@127.0.0.1:8080'],
  ['with a user only', 'http://user@127.0.0.1:8080'],
  ['not a URL', 'not a url'],
  ['relative', '/api'],
  ['with a query', 'http://127.0.0.1:8080/?key=1'],
  ['missing', undefined]
]
for (const [what, upstream] of badUpstreams) {
  t.test(`an upstream ${what} fails`, async (t) => {
    await rejects(t, withTarget({ upstream }), 'targets[0].upstream')
  })
}

t.test('two targets with the same prefix fail', async (t) => {
  await rejects(t, { ...validOptions(), targets: [{ prefix: '/api', upstream: UPSTREAM }, { prefix: '/api', upstream: UPSTREAM }] }, 'targets[1].prefix')
})

t.test('the same prefix with and without a trailing slash fails', async (t) => {
  await rejects(t, { ...validOptions(), targets: [{ prefix: '/api', upstream: UPSTREAM }, { prefix: '/api/', upstream: UPSTREAM }] }, 'targets[1].prefix')
})

t.test('prefixes of the same shape with different param names fail', async (t) => {
  const targets = [
    { prefix: '/shops/:shopId/transactions', upstream: UPSTREAM },
    { prefix: '/shops/:id/transactions', upstream: UPSTREAM }
  ]
  await rejects(t, { ...validOptions(), targets }, 'targets[1].prefix')
})

t.test('prefixes that only share a beginning are accepted', async (t) => {
  const targets = [
    { prefix: '/shops/:shopId/transactions', upstream: UPSTREAM },
    { prefix: '/shops/:shopId/inventory', upstream: UPSTREAM }
  ]
  t.equal(await register(t, { ...validOptions(), targets }), undefined)
})

t.test('a target prefix equal to the login path fails', async (t) => {
  await rejects(t, withTarget({ prefix: '/login' }), 'targets[0].prefix')
})

t.test('a credentials header name with a space fails', async (t) => {
  await rejects(t, withTarget({ credentials: { header: 'x api key', value: 'k' } }), 'targets[0].credentials.header')
})

for (const header of ['Host', 'host', 'Connection', 'Content-Length', 'Transfer-Encoding']) {
  t.test(`the reserved header ${header} as credentials fails`, async (t) => {
    await rejects(t, withTarget({ credentials: { header, value: 'k' } }), 'targets[0].credentials.header')
  })
}

for (const [what, value] of [['CR/LF', 'k\r\nX-Injected: 1'], ['LF', 'k\nx'], ['CR', 'k\rx'], ['NUL', 'k\u0000x'], ['empty', '']]) {
  t.test(`a credentials value with ${what} fails`, async (t) => {
    await rejects(t, withTarget({ credentials: { header: 'x-api-key', value } }), 'targets[0].credentials.value')
  })
}

t.test('a bearer credential with CR/LF fails', async (t) => {
  await rejects(t, withTarget({ credentials: { bearer: 'tok\r\nX-Injected: 1' } }), 'targets[0].credentials.bearer')
})

t.test('a basic credential user name with ":" fails', async (t) => {
  await rejects(t, withTarget({ credentials: { basic: { username: 'a:b', password: 'pw' } } }), 'targets[0].credentials.basic.username')
})

t.test('a basic credential without a password fails', async (t) => {
  await rejects(t, withTarget({ credentials: { basic: { username: 'svc' } } }), 'targets[0].credentials.basic.password')
})

t.test('credentials of an unknown shape fail', async (t) => {
  await rejects(t, withTarget({ credentials: { apiKey: 'k' } }), 'targets[0].credentials')
})

t.test('credentials that are a string fail', async (t) => {
  await rejects(t, withTarget({ credentials: 'k' }), 'targets[0].credentials')
})

t.test('a middleware that is not a function fails with FST_GATEHOUSE_INVALID_MIDDLEWARE', async (t) => {
  const err = await rejects(t, withTarget({ middleware: ['log'] }), 'targets[0].middleware[0]', INVALID_MIDDLEWARE)
  t.ok(err instanceof TypeError, 'a TypeError')
})

t.test('a middleware entry without a handler fails with its index', async (t) => {
  const middleware = [async () => {}, { phase: 'proxy' }]
  await rejects(t, withTarget({ middleware }), 'targets[0].middleware[1]', INVALID_MIDDLEWARE)
})

t.test('a middleware entry whose handler is not a function fails', async (t) => {
  await rejects(t, withTarget({ middleware: [{ phase: 'proxy', handler: 'log' }] }), 'targets[0].middleware[0]', INVALID_MIDDLEWARE)
})

t.test('middleware that is not an array fails', async (t) => {
  await rejects(t, withTarget({ middleware: async () => {} }), 'targets[0].middleware')
})

for (const phase of ['early', 'PROXY', Number.NaN, Number.POSITIVE_INFINITY, '500', null, {}]) {
  t.test(`middleware phase ${String(phase)} fails`, async (t) => {
    await rejects(t, withTarget({ middleware: [{ phase, handler: async () => {} }] }), 'targets[0].middleware[0].phase')
  })
}

t.test('named and numeric phases are accepted', async (t) => {
  const handler = async (): Promise<void> => {}
  const middleware = [{ phase: 'clientEdge', handler }, { phase: 'targetEdge', handler }, { phase: 750, handler }, handler]
  t.equal(await register(t, withTarget({ middleware })), undefined)
})

t.test('timeouts that are not an object fail', async (t) => {
  await rejects(t, withTarget({ timeouts: 5000 }), 'targets[0].timeouts')
})

for (const [key, value] of [['connect', -1], ['connect', 0], ['response', 1.5], ['idle', '100'], ['response', Number.POSITIVE_INFINITY]] as const) {
  t.test(`timeouts.${key} = ${String(value)} fails`, async (t) => {
    await rejects(t, withTarget({ timeouts: { [key]: value } }), `targets[0].timeouts.${key}`)
  })
}

t.test('an authorize that is not a function fails', async (t) => {
  await rejects(t, withTarget({ authorize: true }), 'targets[0].authorize')
})

t.test('a public flag that is not a boolean fails', async (t) => {
  await rejects(t, withTarget({ public: 'yes' }), 'targets[0].public')
})

t.test('compress that is neither false nor an object fails', async (t) => {
  await rejects(t, { ...validOptions(), compress: true }, 'compress')
})

/** A deep copy that keeps functions (and Buffers) as they are. */
function snapshot<T> (value: T): T {
  if (Buffer.isBuffer(value)) return Buffer.from(value) as T
  if (Array.isArray(value)) return value.map(snapshot) as T
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, snapshot(v)])) as T
  }
  return value
}

t.test('valid options are not mutated', async (t) => {
  const verify = async (): Promise<null> => null
  const late = async (): Promise<void> => {}
  const early = async (): Promise<void> => {}
  const computed = async (): Promise<Record<string, string>> => ({ 'x-api-key': 'k' })
  const targets: TargetOptions<any>[] = [
    {
      prefix: '/shops/:shopId/transactions/',
      upstream: 'http://127.0.0.1:9/base/',
      rewritePrefix: '/v2/:shopId/',
      credentials: { header: 'X-API-Key', value: 'k1' },
      middleware: [{ phase: 'targetEdge', handler: late }, { phase: 'clientEdge', handler: early }, late],
      state: { counter: 0, nested: { a: 1 } },
      timeouts: { connect: 1000 }
    },
    { prefix: '/inventory', upstream: UPSTREAM, credentials: { basic: { username: 'svc', password: 'pw' } } },
    { prefix: '/computed', upstream: UPSTREAM, credentials: computed, public: true },
    { prefix: '/bearer', upstream: UPSTREAM, credentials: { bearer: 'tok' } }
  ]
  const options: GatehouseOptions = {
    auth: { secret: Buffer.from(SECRET), expiresIn: '15m', issuer: 'gh', audience: 'api', clockTolerance: 5, login: { path: '/auth/login/', verify } },
    targets,
    compress: { threshold: 2048 }
  }
  const before = snapshot(options)
  t.equal(await register(t, options), undefined)
  t.strictSame(options, before, 'deep-equal before and after register')
  t.notOk(Object.isFrozen(options.targets[0]?.state), 'the user\'s state is not frozen')
})

/*
 * Unknown keys: a typo in a JavaScript config would otherwise be ignored
 * (`auth.expiresin` gives 1-hour tokens without a word). Each option object
 * refuses keys it does not know, naming the key's path and the close one.
 */
const UNKNOWN_KEYS: Array<[string, unknown, string, string | undefined]> = [
  ['top level', { ...validOptions(), target: [] }, 'target', 'targets'],
  ['auth', withAuth({ expiresin: '15m' }), 'auth.expiresin', 'expiresIn'],
  ['auth.login', withAuth({ login: { verify: async () => null, paht: '/in' } }), 'auth.login.paht', 'path'],
  ['auth.login.throttle', withAuth({ login: { verify: async () => null, throttle: { windows: '5m' } } }), 'auth.login.throttle.windows', 'window'],
  ['auth.login.throttle.user', withAuth({ login: { verify: async () => null, throttle: { user: { mx: 3 } } } }), 'auth.login.throttle.user.mx', 'max'],
  ['auth.refresh', withAuth({ refresh: { expiresIn: '1d', maxage: '7d' } }), 'auth.refresh.maxage', 'maxAge'],
  ['auth.logout', withAuth({ logout: { revokeAccessTokens: true } }), 'auth.logout.revokeAccessTokens', 'revokeAccessToken'],
  ['a target', withTarget({ prefx: '/x' }), 'targets[0].prefx', 'prefix'],
  ['timeouts', withTarget({ timeouts: { conect: 100 } }), 'targets[0].timeouts.conect', 'connect'],
  ['credentials { header, value }', withTarget({ credentials: { header: 'x-api-key', vlaue: 'k' } }), 'targets[0].credentials.vlaue', 'value'],
  ['credentials.basic', withTarget({ credentials: { basic: { username: 'u', pasword: 'p' } } }), 'targets[0].credentials.basic.pasword', 'password'],
  ['a middleware entry', withTarget({ middleware: [{ phse: 'clientEdge', handler: async () => {} }] }), 'targets[0].middleware[0].phse', 'phase'],
  ['transport', withTarget({ transport: { retyr: { retries: 1 } } }), 'targets[0].transport.retyr', 'retry'],
  ['transport.pool', withTarget({ transport: { pool: { Connections: 4 } } }), 'targets[0].transport.pool.Connections', 'connections'],
  ['transport.tls', withTarget({ transport: { tls: { serverName: 'a.example' } } }), 'targets[0].transport.tls.serverName', 'servername'],
  ['transport.retry', withTarget({ transport: { retry: { retires: 2 } } }), 'targets[0].transport.retry.retires', 'retries'],
  ['transport.passiveHealth', withTarget({ transport: { passiveHealth: { cooldown: 10 } } }), 'targets[0].transport.passiveHealth.cooldown', 'coolDown'],
  ['transport.activeHealth', withTarget({ transport: { activeHealth: { path: '/h', intervall: 100 } } }), 'targets[0].transport.activeHealth.intervall', 'interval'],
  ['transport.circuitBreaker', withTarget({ transport: { circuitBreaker: { failurerate: 0.5 } } }), 'targets[0].transport.circuitBreaker.failurerate', 'failureRate'],
  ['transport.rewrite', withTarget({ transport: { rewrite: { cookie: false } } }), 'targets[0].transport.rewrite.cookie', 'cookies'],
  ['websocket', withTarget({ websocket: { maxPayLoad: 10 } }), 'targets[0].websocket.maxPayLoad', 'maxPayload'],
  ['websocket.token', withTarget({ websocket: { token: { queryParam: 't' } } }), 'targets[0].websocket.token.queryParam', undefined],
  ['allow', withTarget({ allow: { anyRoles: ['a'] } }), 'targets[0].allow.anyRoles', 'anyRole'],
  ['tenant', { ...validOptions(), targets: [{ prefix: '/s/:id', upstream: UPSTREAM, tenant: { param: 'id', claims: 'sub' } }] }, 'targets[0].tenant.claims', 'claim'],
  ['shutdown', { ...validOptions(), shutdown: { drainTimout: 10 } }, 'shutdown.drainTimout', 'drainTimeout'],
  ['paths', { ...validOptions(), paths: { caseinsensitive: true } }, 'paths.caseinsensitive', 'caseInsensitive'],
  ['cors', { ...validOptions(), cors: { origin: ['https://a.example'], maxage: 60 } }, 'cors.maxage', 'maxAge']
]
for (const [group, options, option, hint] of UNKNOWN_KEYS) {
  t.test(`an unknown key in ${group} fails with its path${hint === undefined ? ' and the known keys' : ' and a hint'}`, async (t) => {
    const err = await rejects(t, options, option)
    if (hint === undefined) t.match(err.message, /a known option \(one of [a-zA-Z, ]+\)/)
    else t.match(err.message, `expected a known option; did you mean "${hint}"?`)
  })
}

t.test('a key far from every known one gets the list of known keys', async (t) => {
  const err = await rejects(t, withTarget({ timeouts: { wholeRequest: 1 } }), 'targets[0].timeouts.wholeRequest')
  t.match(err.message, 'a known option (one of connect, response, idle, total, queue)')
})

t.test('@fastify/compress options are its own: their keys pass through unchecked', async (t) => {
  t.equal(await register(t, { ...validOptions(), compress: { threshold: 1024, encodings: ['gzip'] } }), undefined)
})

// Node fires a timer of more than 2^31-1 ms after 1 ms: every timer option is capped.
for (const [what, options, option] of [
  ['timeouts.connect', withTarget({ timeouts: { connect: 2 ** 31 } }), 'targets[0].timeouts.connect'],
  ['timeouts.response', withTarget({ timeouts: { response: 2 ** 31 } }), 'targets[0].timeouts.response'],
  ['timeouts.idle', withTarget({ timeouts: { idle: 2 ** 31 } }), 'targets[0].timeouts.idle'],
  ['throttle delayMs', withAuth({ login: { verify: async () => null, throttle: { delayMs: 2 ** 31 } } }), 'auth.login.throttle.delayMs'],
  ['throttle maxDelayMs', withAuth({ login: { verify: async () => null, throttle: { maxDelayMs: 2 ** 31 } } }), 'auth.login.throttle.maxDelayMs'],
  ['transport.retry.maxDelay', withTarget({ transport: { retry: { maxDelay: 2 ** 31 } } }), 'targets[0].transport.retry.maxDelay'],
  ['websocket.pingInterval', withTarget({ websocket: { pingInterval: 2 ** 31 } }), 'targets[0].websocket.pingInterval']
] as const) {
  t.test(`${what} above 2^31-1 ms fails`, async (t) => {
    const err = await rejects(t, options, option)
    t.match(err.message, String(2 ** 31 - 1))
  })
}

t.test('timers of exactly 2^31-1 ms are accepted', async (t) => {
  t.equal(await register(t, withTarget({ timeouts: { connect: 2 ** 31 - 1, response: 2 ** 31 - 1, idle: 2 ** 31 - 1 } })), undefined)
})
