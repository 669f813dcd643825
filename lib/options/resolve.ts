import { InvalidMiddlewareError } from '../errors.js'
import { Phase } from '../proxy/phase.js'
import { DEFAULT_MAX_BUFFERED_BODY } from '../proxy/body.js'
import { resolveWebSocket } from '../ws/options.js'
import { lifecycleRoutes, resolveLifecycle } from '../auth/lifecycle-options.js'
import { resolveKeys } from '../auth/keys-options.js'
import { resolveRules } from '../auth/rules-options.js'
import { resolveRewrite } from '../proxy/rewrite-options.js'
import { resolveHeaderPolicy } from '../proxy/headers-options.js'
import { resolveIdentity } from '../proxy/identity-options.js'
import { resolvePathGuard } from '../proxy/path.js'
import { resolveShutdown, resolveTransport } from '../transport/options.js'
import { resolveCors, resolveTargetCors } from '../cors/options.js'
import { resolveAccessLog, resolveMetrics } from '../observe/options.js'
import type { ResolvedCors } from '../cors/options.js'
import { resolveHealth } from '../health/options.js'
import { underPrefix } from '../proxy/prefix.js'
import type { ResolvedHealth } from '../health/options.js'
import { resolveRequestId } from '../observe/request-id-options.js'
import type {
  AuthOptions, CredentialsFunction, GatehouseOptions, Middleware, PathOptions, TargetOptions, TokenAlgorithm, TracerProviderLike
} from '../types.js'
import type { ResolvedAuth, ResolvedCredentials, ResolvedMiddleware, ResolvedOptions, ResolvedTarget } from './resolved.js'
import {
  MIN_HMAC_SECRET_BYTES, duration, fail, headerName, headerValue, integer, isKey, isObject, knownKeys, milliseconds, object,
  optionalString, path
} from './validate.js'

export const DEFAULT_LOGIN_PATH = '/login'
export const DEFAULT_EXPIRES_IN_SECONDS = 3600
export const DEFAULT_TIMEOUTS = Object.freeze({ connect: 5_000, response: 30_000, idle: 60_000, total: 0, queue: 10_000 })

const HMAC_ALGORITHMS = new Set<TokenAlgorithm>(['HS256', 'HS384', 'HS512'])
const ALGORITHMS = new Set<TokenAlgorithm>([
  ...HMAC_ALGORITHMS, 'RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA'
])

// The keys of each option object (see `object` in validate.ts: others fail with a hint).
export const OPTION_KEYS = ['auth', 'targets', 'compress', 'shutdown', 'cors', 'paths', 'tracing', 'requestId', 'health', 'metrics', 'accessLog']
const AUTH_KEYS = [
  'algorithm', 'secret', 'privateKey', 'publicKey', 'expiresIn', 'issuer', 'audience', 'clockTolerance',
  'login', 'refresh', 'logout', 'store', 'keys', 'jwks', 'jwksRoute'
]
const LOGIN_KEYS = ['path', 'verify', 'throttle', 'concurrency', 'queue']
const TARGET_KEYS = [
  'name', 'prefix', 'upstream', 'rewritePrefix', 'rewrite', 'allow', 'tenant', 'credentials', 'authorize', 'public',
  'middleware', 'state', 'timeouts', 'maxBufferedBody', 'onUpstreamError', 'websocket', 'cors', 'transport',
  'forwardHeaders', 'hideResponseHeaders', 'identity'
]
const TIMEOUT_KEYS = ['connect', 'response', 'idle', 'total', 'queue']
const CREDENTIALS_SHAPE = '{ header, value }, { bearer }, { basic: { username, password } } or { headers, compute }'

function resolveAuth (auth: unknown): ResolvedAuth {
  if (!isObject(auth)) fail('auth', 'an object')
  knownKeys(auth, 'auth', AUTH_KEYS)
  const opts = auth as unknown as AuthOptions
  const algorithm = opts.algorithm ?? 'HS256'
  if (!ALGORITHMS.has(algorithm)) fail('auth.algorithm', `one of ${[...ALGORITHMS].join(', ')}`)

  let login: ResolvedAuth['login']
  if (opts.login === false) {
    login = false
  } else if (isObject(opts.login) && typeof opts.login.verify === 'function') {
    knownKeys(opts.login as unknown as Record<string, unknown>, 'auth.login', LOGIN_KEYS)
    login = { path: opts.login.path === undefined ? DEFAULT_LOGIN_PATH : path(opts.login.path, 'auth.login.path', '/login'), verify: opts.login.verify }
  } else {
    fail('auth.login', 'false (verify-only) or { path?, verify: async (credentials, request) => claims | null }')
  }

  let signKey: string | Buffer | undefined
  let verifyKey: string | Buffer = ''
  if (opts.keys !== undefined || (opts.jwks !== undefined && opts.secret === undefined && opts.publicKey === undefined)) {
    // auth.keys (or a provider alone) replaces the single key: keys-options.ts resolves it.
  } else if (HMAC_ALGORITHMS.has(algorithm)) {
    if (!isKey(opts.secret) || Buffer.byteLength(opts.secret) < MIN_HMAC_SECRET_BYTES) {
      fail('auth.secret', `a secret of at least ${MIN_HMAC_SECRET_BYTES} bytes for ${algorithm}`)
    }
    signKey = verifyKey = opts.secret
  } else {
    if (!isKey(opts.publicKey)) fail('auth.publicKey', `a PEM public key for ${algorithm}`)
    if (login !== false && !isKey(opts.privateKey)) fail('auth.privateKey', `a PEM private key for ${algorithm} (needed by the login route)`)
    if (opts.privateKey !== undefined && !isKey(opts.privateKey)) fail('auth.privateKey', `a PEM private key for ${algorithm}`)
    signKey = opts.privateKey
    verifyKey = opts.publicKey
  }

  const clockToleranceSeconds = opts.clockTolerance ?? 0
  if (typeof clockToleranceSeconds !== 'number' || !Number.isFinite(clockToleranceSeconds) || clockToleranceSeconds < 0) {
    fail('auth.clockTolerance', 'a number of seconds >= 0')
  }

  return {
    algorithm,
    signKey,
    verifyKey,
    expiresInSeconds: duration(opts.expiresIn, 'auth.expiresIn', DEFAULT_EXPIRES_IN_SECONDS),
    issuer: optionalString(opts.issuer, 'auth.issuer'),
    audience: optionalString(opts.audience, 'auth.audience'),
    clockToleranceSeconds,
    login,
    lifecycle: resolveLifecycle(opts, login === false ? false : login.path),
    keys: resolveKeys(opts, verifyKey === '' ? undefined : { algorithm, signKey, verifyKey }, login !== false)
  }
}

function resolveCredentials (value: unknown, at: string): ResolvedCredentials {
  if (value === undefined) return { kind: 'none' }
  if (typeof value === 'function') return { kind: 'computed', compute: value as CredentialsFunction, names: [] }
  if (!isObject(value)) fail(at, CREDENTIALS_SHAPE)
  if ('compute' in value) {
    knownKeys(value, at, ['headers', 'compute'])
    if (typeof value.compute !== 'function') fail(`${at}.compute`, 'a function (ctx) => headers')
    if (!Array.isArray(value.headers) || value.headers.length === 0) fail(`${at}.headers`, 'a non-empty array of the header names compute sets')
    const names = value.headers.map((name: unknown, index) => headerName(name, `${at}.headers[${index}]`))
    return { kind: 'computed', compute: value.compute as CredentialsFunction, names: [...new Set(names)] }
  }
  if ('header' in value) {
    knownKeys(value, at, ['header', 'value'])
    return { kind: 'static', headers: { [headerName(value.header, `${at}.header`)]: headerValue(value.value, `${at}.value`) } }
  }
  if ('bearer' in value) {
    knownKeys(value, at, ['bearer'])
    return { kind: 'static', headers: { authorization: `Bearer ${headerValue(value.bearer, `${at}.bearer`)}` } }
  }
  if ('basic' in value && isObject(value.basic)) {
    knownKeys(value, at, ['basic'])
    knownKeys(value.basic, `${at}.basic`, ['username', 'password'])
    const username = headerValue(value.basic.username, `${at}.basic.username`)
    if (username.includes(':')) fail(`${at}.basic.username`, 'a user name without ":"')
    const password = typeof value.basic.password === 'string' ? value.basic.password : fail(`${at}.basic.password`, 'a string')
    const encoded = Buffer.from(`${username}:${password}`, 'utf8').toString('base64')
    return { kind: 'static', headers: { authorization: `Basic ${encoded}` } }
  }
  fail(at, CREDENTIALS_SHAPE)
}

/** The header names a target's credentials own: the caller's copies never pass. */
function credentialNames (credentials: ResolvedCredentials): readonly string[] {
  if (credentials.kind === 'static') return Object.keys(credentials.headers)
  return credentials.kind === 'computed' ? credentials.names : []
}

function resolvePhase (phase: unknown, at: string): number {
  if (phase === undefined) return Phase.proxy
  if (typeof phase === 'string' && Object.hasOwn(Phase, phase)) return Phase[phase as keyof typeof Phase]
  if (typeof phase === 'number' && Number.isFinite(phase)) return phase
  fail(`${at}.phase`, '"clientEdge", "proxy", "targetEdge" or a finite number')
}

function resolveMiddleware (list: unknown, at: string): ResolvedMiddleware[] {
  if (list === undefined) return []
  if (!Array.isArray(list)) fail(at, 'an array of middleware')
  const entries = list.map((item: unknown, index): ResolvedMiddleware & { index: number } => {
    const where = `${at}[${index}]`
    if (typeof item === 'function') return { phase: Phase.proxy, handler: item as Middleware<any>, index }
    if (isObject(item) && typeof item.handler === 'function') {
      knownKeys(item, where, ['phase', 'handler'])
      return { phase: resolvePhase(item.phase, where), handler: item.handler as Middleware<any>, index }
    }
    throw new InvalidMiddlewareError(where)
  })
  // Lower phases are outer layers; within a phase, registration order.
  entries.sort((a, b) => a.phase - b.phase || a.index - b.index)
  return entries.map(({ phase, handler }) => ({ phase, handler }))
}

function resolveTimeouts (value: unknown, at: string): ResolvedTarget['timeouts'] {
  if (value === undefined) return DEFAULT_TIMEOUTS
  const opts = object(value, at, TIMEOUT_KEYS, 'an object { connect?, response?, idle?, total?, queue? } in milliseconds')
  return {
    connect: milliseconds(opts.connect, `${at}.connect`, DEFAULT_TIMEOUTS.connect),
    response: milliseconds(opts.response, `${at}.response`, DEFAULT_TIMEOUTS.response),
    idle: milliseconds(opts.idle, `${at}.idle`, DEFAULT_TIMEOUTS.idle),
    // 0 turns these two off.
    total: milliseconds(opts.total, `${at}.total`, DEFAULT_TIMEOUTS.total, 0),
    queue: milliseconds(opts.queue, `${at}.queue`, DEFAULT_TIMEOUTS.queue, 0)
  }
}

function resolvePaths (value: unknown): Required<PathOptions> {
  const opts = object(value, 'paths', ['caseInsensitive'], '{ caseInsensitive?: boolean }')
  if (opts.caseInsensitive !== undefined && typeof opts.caseInsensitive !== 'boolean') fail('paths', '{ caseInsensitive?: boolean }')
  return { caseInsensitive: opts.caseInsensitive !== false }
}

function resolveTarget (value: unknown, index: number, cors: ResolvedCors | undefined, auth: ResolvedAuth): Omit<ResolvedTarget, 'pathGuard'> {
  const at = `targets[${index}]`
  if (!isObject(value)) fail(at, 'an object { prefix, upstream, ... }')
  knownKeys(value, at, TARGET_KEYS)
  const target = value as unknown as TargetOptions<any>
  const prefix = path(target.prefix, `${at}.prefix`)

  let url: URL
  try {
    // Several upstreams share one base path; the first one stands for all here.
    url = new URL(String(Array.isArray(target.upstream) ? target.upstream[0] : target.upstream))
  } catch {
    fail(`${at}.upstream`, 'an absolute http: or https: URL')
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    fail(`${at}.upstream`, 'an http: or https: URL without credentials, query or fragment (use `credentials`)')
  }
  const basePath = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '')

  if (target.authorize !== undefined && typeof target.authorize !== 'function') fail(`${at}.authorize`, 'a function (ctx) => boolean')
  if (target.public !== undefined && typeof target.public !== 'boolean') fail(`${at}.public`, 'a boolean')
  if (target.state !== undefined && !isObject(target.state)) fail(`${at}.state`, 'a plain object')
  if (target.onUpstreamError !== undefined && typeof target.onUpstreamError !== 'function') {
    fail(`${at}.onUpstreamError`, 'a function (error, ctx) => response | undefined')
  }

  const credentials = resolveCredentials(target.credentials, `${at}.credentials`)
  const identity = resolveIdentity(target, at, {
    // The deprecated bare function declares no names: identity refuses it.
    credentialNames: typeof target.credentials === 'function' ? undefined : credentialNames(credentials),
    signing: auth.keys.ring[0],
    issuer: auth.issuer,
    audience: auth.audience
  })
  return {
    name: target.name === undefined ? prefix : optionalString(target.name, `${at}.name`) as string,
    prefix,
    prefixSegments: prefix === '/' ? 0 : prefix.split('/').length - 1,
    upstream: url.origin + basePath,
    origin: url.origin,
    basePath,
    rewritePrefix: target.rewritePrefix === undefined
      ? undefined
      : target.rewritePrefix === '' ? '' : path(target.rewritePrefix, `${at}.rewritePrefix`).replace(/^\/$/, ''),
    rewrite: resolveRewrite(target, prefix, at),
    rules: resolveRules(target, prefix, at),
    credentials,
    identity,
    authorize: target.authorize,
    public: target.public === true,
    middleware: resolveMiddleware(target.middleware, `${at}.middleware`),
    state: Object.freeze({ ...(target.state ?? {}) }),
    timeouts: resolveTimeouts(target.timeouts, `${at}.timeouts`),
    maxBufferedBody: integer(target.maxBufferedBody, `${at}.maxBufferedBody`, DEFAULT_MAX_BUFFERED_BODY, { min: 1 }),
    onUpstreamError: target.onUpstreamError,
    websocket: resolveWebSocket(target.websocket, `${at}.websocket`),
    transport: resolveTransport(target.transport, target.upstream, at),
    headerPolicy: resolveHeaderPolicy(target, [...credentialNames(credentials), ...(identity?.names ?? [])], at),
    cors: resolveTargetCors(target.cors, `${at}.cors`, cors)
  }
}

/** The health routes may shadow neither a target's paths nor a token route. */
function checkHealthPaths (health: ResolvedHealth, auth: ResolvedAuth, targets: readonly ResolvedTarget[], caseInsensitive: boolean): void {
  const tokenRoutes = [
    ...(auth.login === false ? [] : [auth.login.path]), ...lifecycleRoutes(auth.lifecycle), ...(auth.keys.jwksRoute === false ? [] : [auth.keys.jwksRoute])
  ]
  for (const key of ['path', 'readyPath'] as const) {
    const route = health[key]
    const target = targets.find((candidate) => underPrefix(route, candidate.prefix, caseInsensitive))
    if (target !== undefined) fail(`health.${key}`, `a path outside every target prefix (${route} is under ${target.prefix}; move it, or set health: false)`)
    if (tokenRoutes.includes(route)) fail(`health.${key}`, `a path other than the token routes ${tokenRoutes.join(', ')}`)
  }
}

/** Validates the user's options once, at register, and applies defaults. */
export function resolveOptions (opts: GatehouseOptions): ResolvedOptions {
  if (!isObject(opts)) fail('options', 'an object { auth, targets }')
  knownKeys(opts as unknown as Record<string, unknown>, '', OPTION_KEYS)
  const auth = resolveAuth(opts.auth)
  if (!Array.isArray(opts.targets)) fail('targets', 'an array of targets')
  const cors = opts.cors === undefined ? undefined : resolveCors(opts.cors, 'cors')
  const { caseInsensitive } = resolvePaths(opts.paths)
  const resolved = opts.targets.map((target, index) => resolveTarget(target, index, cors, auth))
  const prefixes = resolved.map((target) => target.prefix)
  const targets: ResolvedTarget[] = resolved.map((target) => ({ ...target, pathGuard: resolvePathGuard(target.prefix, prefixes, caseInsensitive) }))
  const seen = new Set<string>()
  for (const [index, target] of targets.entries()) {
    // Params with different names at the same place are still the same route.
    const shape = target.prefix.replace(/:[^/]+/g, ':')
    if (seen.has(shape)) fail(`targets[${index}].prefix`, 'a prefix no other target uses')
    seen.add(shape)
    if (auth.login !== false && target.prefix === auth.login.path) {
      fail(`targets[${index}].prefix`, `a prefix other than the login route ${auth.login.path}`)
    }
    if (lifecycleRoutes(auth.lifecycle).includes(target.prefix)) {
      fail(`targets[${index}].prefix`, `a prefix other than the token routes ${lifecycleRoutes(auth.lifecycle).join(', ')}`)
    }
  }
  const health = resolveHealth(opts.health)
  if (health !== undefined) checkHealthPaths(health, auth, targets, caseInsensitive)
  // @fastify/compress validates its own options: passed through untouched.
  if (opts.compress !== undefined && opts.compress !== false && !isObject(opts.compress)) {
    fail('compress', 'false or @fastify/compress options')
  }
  const metrics = resolveMetrics(opts.metrics)
  if (metrics !== undefined && metrics.path !== false) {
    const taken = [...(auth.login === false ? [] : [auth.login.path]), ...lifecycleRoutes(auth.lifecycle), ...(auth.keys.jwksRoute === false ? [] : [auth.keys.jwksRoute])]
    // The scrape must never take a path a target would proxy.
    if (taken.includes(metrics.path) || targets.some((target) => underPrefix(metrics.path as string, target.prefix, caseInsensitive))) {
      fail('metrics.path', `a path outside every target prefix and other than the login and token routes (${metrics.path} is taken)`)
    }
  }
  return {
    auth,
    targets,
    compress: opts.compress === undefined ? {} : opts.compress,
    shutdown: resolveShutdown(opts.shutdown),
    cors,
    metrics,
    accessLog: resolveAccessLog(opts.accessLog),
    tracing: resolveTracing(opts.tracing),
    requestId: resolveRequestId(opts.requestId),
    health
  }
}

function resolveTracing (value: unknown): ResolvedOptions['tracing'] {
  if (value === undefined || value === false) return undefined
  if (value === true) return { tracerProvider: undefined }
  const opts = object(value, 'tracing', ['tracerProvider'], 'true, false or { tracerProvider? }')
  const provider = opts.tracerProvider
  if (provider !== undefined && (!isObject(provider) || typeof provider.getTracer !== 'function')) {
    fail('tracing.tracerProvider', 'an OpenTelemetry TracerProvider (an object with getTracer)')
  }
  return { tracerProvider: provider as TracerProviderLike | undefined }
}
