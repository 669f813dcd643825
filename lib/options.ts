import type { FastifyCompressOptions } from '@fastify/compress'
import { InvalidMiddlewareError, InvalidOptionError } from './errors.js'
import { Phase } from './proxy/phase.js'
import { DEFAULT_MAX_BUFFERED_BODY } from './proxy/body.js'
import { resolveWebSocket } from './ws/options.js'
import { lifecycleRoutes, resolveLifecycle } from './auth/lifecycle-options.js'
import type { ResolvedLifecycle } from './auth/lifecycle-options.js'
import { resolveKeys } from './auth/keys-options.js'
import type { ResolvedKeys } from './auth/keys-options.js'
import { resolveRules } from './auth/rules.js'
import type { ResolvedRules } from './auth/rules.js'
import { resolveRewrite } from './proxy/rewrite.js'
import { resolveHeaderPolicy } from './proxy/headers.js'
import type { ResolvedHeaderPolicy } from './proxy/headers.js'
import { resolvePathGuard } from './proxy/path.js'
import type { ResolvedPathGuard } from './proxy/path.js'
import type { ResolvedRewrite } from './proxy/rewrite.js'
import type { ResolvedWebSocket } from './ws/options.js'
import { resolveShutdown, resolveTransport } from './transport/options.js'
import type { ResolvedTransport } from './transport/options.js'
import { resolveCors, resolveTargetCors } from './cors/options.js'
import type { ResolvedCors } from './cors/options.js'
import type {
  AuthOptions, CredentialsVerifier, GatehouseOptions, Middleware, PathOptions, TargetCredentials,
  TargetOptions, TokenAlgorithm
} from './types.js'

export const DEFAULT_LOGIN_PATH = '/login'
export const DEFAULT_EXPIRES_IN_SECONDS = 3600
export const MIN_HMAC_SECRET_BYTES = 32
export const DEFAULT_TIMEOUTS = Object.freeze({ connect: 5_000, response: 30_000, idle: 60_000 })

const HMAC_ALGORITHMS = new Set<TokenAlgorithm>(['HS256', 'HS384', 'HS512'])
const ALGORITHMS = new Set<TokenAlgorithm>([
  ...HMAC_ALGORITHMS, 'RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA'
])
const DURATION = /^(\d+)\s*(s|m|h|d)$/
const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 }
// A header name as RFC 9110 defines a token.
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// Headers a credential may never set: they frame or route the message.
const RESERVED_HEADERS = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'keep-alive'])

export interface ResolvedAuth {
  readonly algorithm: TokenAlgorithm
  readonly signKey: string | Buffer | undefined
  readonly verifyKey: string | Buffer
  readonly expiresInSeconds: number
  readonly issuer: string | undefined
  readonly audience: string | undefined
  readonly clockToleranceSeconds: number
  readonly login: { readonly path: string, readonly verify: CredentialsVerifier } | false
  /** Refresh, logout, login throttling and their store. */
  readonly lifecycle: ResolvedLifecycle
  /** Own key ring (the single-key form is a ring of one), identity providers, JWKS route. */
  readonly keys: ResolvedKeys
}

export type ResolvedCredentials =
  | { readonly kind: 'static', readonly headers: Readonly<Record<string, string>> }
  | { readonly kind: 'computed', readonly compute: Extract<TargetCredentials, Function> }
  | { readonly kind: 'none' }

export interface ResolvedMiddleware {
  readonly phase: number
  readonly handler: Middleware<any>
}

export interface ResolvedTarget {
  readonly name: string
  readonly prefix: string
  /** Number of path segments in the prefix; params match exactly one. */
  readonly prefixSegments: number
  readonly upstream: string
  readonly origin: string
  /** Upstream base path without a trailing slash ('' for the root). */
  readonly basePath: string
  readonly rewritePrefix: string | undefined
  /** `rewrite`: a parsed template or a function, `undefined` when off. */
  readonly rewrite: ResolvedRewrite | undefined
  /** `allow` and `tenant`, `undefined` when neither is set. */
  readonly rules: ResolvedRules | undefined
  readonly credentials: ResolvedCredentials
  readonly authorize: TargetOptions<any>['authorize']
  readonly public: boolean
  readonly middleware: readonly ResolvedMiddleware[]
  readonly state: Readonly<Record<string, unknown>>
  readonly timeouts: Readonly<Required<NonNullable<TargetOptions['timeouts']>>>
  /** Cap of bodies read by middleware, in bytes. */
  readonly maxBufferedBody: number
  readonly onUpstreamError: TargetOptions<any>['onUpstreamError']
  /** WebSocket tunnelling, `undefined` when off. */
  readonly websocket: ResolvedWebSocket | undefined
  /** Pool, TLS, retries, balancing, health, breaker, rewriting; `origins` lists every upstream. */
  readonly transport: ResolvedTransport
  /** What goes upstream and back of the headers (`forwardHeaders`, `hideResponseHeaders`). */
  readonly headerPolicy: ResolvedHeaderPolicy
  /** The CORS policy of this target (its own over the top-level one), `undefined` when off. */
  readonly cors: ResolvedCors | undefined
  /** What the path guard compares a request path with: the prefixes the router prefers to this one. */
  readonly pathGuard: ResolvedPathGuard
}

export interface ResolvedOptions {
  readonly auth: ResolvedAuth
  readonly targets: readonly ResolvedTarget[]
  readonly compress: FastifyCompressOptions | false
  readonly shutdown: { readonly drainTimeout: number | undefined }
  /** The top-level CORS policy (token routes, default of targets), `undefined` when off. */
  readonly cors: ResolvedCors | undefined
}

function fail (option: string, expected: string): never {
  throw new InvalidOptionError(option, expected)
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isKey (value: unknown): value is string | Buffer {
  return (typeof value === 'string' && value.length > 0) || (Buffer.isBuffer(value) && value.length > 0)
}

function optionalString (value: unknown, option: string): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || value.length === 0) fail(option, 'a non-empty string')
  return value
}

function positiveInteger (value: unknown, option: string, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) fail(option, 'a positive integer')
  return value
}

function resolveExpiresIn (value: unknown): number {
  if (value === undefined) return DEFAULT_EXPIRES_IN_SECONDS
  if (typeof value === 'number' && Number.isInteger(value) && value > 0) return value
  const match = typeof value === 'string' ? DURATION.exec(value) : null
  if (match === null || Number(match[1]) === 0) fail('auth.expiresIn', 'a positive number of seconds or a duration such as "15m" or "1h"')
  return Number(match[1]) * (DURATION_UNITS[match[2] as string] as number)
}

function resolvePath (value: unknown, option: string): string {
  // What the path guard refuses in requests may not be part of a prefix either.
  if (typeof value !== 'string' || !value.startsWith('/') || /[?#;\\\s]|\/\/|(^|\/)\.\.?(\/|$)|\.(\/|$)/.test(value)) {
    fail(option, 'an absolute path such as "/api" without query, fragment, ";", backslashes, dot segments or a segment ending in "."')
  }
  return value.length > 1 && value.endsWith('/') ? value.slice(0, -1) : value
}

function resolveAuth (auth: unknown): ResolvedAuth {
  if (!isObject(auth)) fail('auth', 'an object')
  const opts = auth as unknown as AuthOptions
  const algorithm = opts.algorithm ?? 'HS256'
  if (!ALGORITHMS.has(algorithm)) fail('auth.algorithm', `one of ${[...ALGORITHMS].join(', ')}`)

  let login: ResolvedAuth['login']
  if (opts.login === false) {
    login = false
  } else if (isObject(opts.login) && typeof opts.login.verify === 'function') {
    login = { path: opts.login.path === undefined ? DEFAULT_LOGIN_PATH : resolvePath(opts.login.path, 'auth.login.path'), verify: opts.login.verify }
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
    expiresInSeconds: resolveExpiresIn(opts.expiresIn),
    issuer: optionalString(opts.issuer, 'auth.issuer'),
    audience: optionalString(opts.audience, 'auth.audience'),
    clockToleranceSeconds,
    login,
    lifecycle: resolveLifecycle(opts, login === false ? false : login.path),
    keys: resolveKeys(opts, verifyKey === '' ? undefined : { algorithm, signKey, verifyKey }, login !== false)
  }
}

function headerName (name: unknown, option: string): string {
  if (typeof name !== 'string' || !HEADER_NAME.test(name) || RESERVED_HEADERS.has(name.toLowerCase())) {
    fail(option, 'a valid header name that does not frame the message (not Host, Connection, Content-Length ...)')
  }
  return name.toLowerCase()
}

function headerValue (value: unknown, option: string): string {
  // Control characters would split or corrupt the header line.
  // eslint-disable-next-line no-control-regex
  if (typeof value !== 'string' || value.length === 0 || /[\u0000-\u001f\u007f]/.test(value)) {
    fail(option, 'a non-empty string without control characters')
  }
  return value
}

function resolveCredentials (value: unknown, at: string): ResolvedCredentials {
  if (value === undefined) return { kind: 'none' }
  if (typeof value === 'function') return { kind: 'computed', compute: value as Extract<TargetCredentials, Function> }
  if (!isObject(value)) fail(at, '{ header, value }, { bearer }, { basic: { username, password } } or a function')
  if ('header' in value) {
    return { kind: 'static', headers: { [headerName(value.header, `${at}.header`)]: headerValue(value.value, `${at}.value`) } }
  }
  if ('bearer' in value) {
    return { kind: 'static', headers: { authorization: `Bearer ${headerValue(value.bearer, `${at}.bearer`)}` } }
  }
  if ('basic' in value && isObject(value.basic)) {
    const username = headerValue(value.basic.username, `${at}.basic.username`)
    if (username.includes(':')) fail(`${at}.basic.username`, 'a user name without ":"')
    const password = typeof value.basic.password === 'string' ? value.basic.password : fail(`${at}.basic.password`, 'a string')
    const encoded = Buffer.from(`${username}:${password}`, 'utf8').toString('base64')
    return { kind: 'static', headers: { authorization: `Basic ${encoded}` } }
  }
  fail(at, '{ header, value }, { bearer }, { basic: { username, password } } or a function')
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
  if (!isObject(value)) fail(at, 'an object { connect?, response?, idle? } in milliseconds')
  return {
    connect: positiveInteger(value.connect, `${at}.connect`, DEFAULT_TIMEOUTS.connect),
    response: positiveInteger(value.response, `${at}.response`, DEFAULT_TIMEOUTS.response),
    idle: positiveInteger(value.idle, `${at}.idle`, DEFAULT_TIMEOUTS.idle)
  }
}

function resolvePaths (value: unknown): Required<PathOptions> {
  if (value === undefined) return { caseInsensitive: true }
  if (!isObject(value) || Object.keys(value).some((key) => key !== 'caseInsensitive') ||
      (value.caseInsensitive !== undefined && typeof value.caseInsensitive !== 'boolean')) {
    fail('paths', '{ caseInsensitive?: boolean }')
  }
  return { caseInsensitive: value.caseInsensitive !== false }
}

function resolveTarget (value: unknown, index: number, cors: ResolvedCors | undefined): Omit<ResolvedTarget, 'pathGuard'> {
  const at = `targets[${index}]`
  if (!isObject(value)) fail(at, 'an object { prefix, upstream, ... }')
  const target = value as unknown as TargetOptions<any>
  const prefix = resolvePath(target.prefix, `${at}.prefix`)

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
  return {
    name: target.name === undefined ? prefix : optionalString(target.name, `${at}.name`) as string,
    prefix,
    prefixSegments: prefix === '/' ? 0 : prefix.split('/').length - 1,
    upstream: url.origin + basePath,
    origin: url.origin,
    basePath,
    rewritePrefix: target.rewritePrefix === undefined
      ? undefined
      : target.rewritePrefix === '' ? '' : resolvePath(target.rewritePrefix, `${at}.rewritePrefix`).replace(/^\/$/, ''),
    rewrite: resolveRewrite(target, prefix, at),
    rules: resolveRules(target, prefix, at),
    credentials,
    authorize: target.authorize,
    public: target.public === true,
    middleware: resolveMiddleware(target.middleware, `${at}.middleware`),
    state: Object.freeze({ ...(target.state ?? {}) }),
    timeouts: resolveTimeouts(target.timeouts, `${at}.timeouts`),
    maxBufferedBody: positiveInteger(target.maxBufferedBody, `${at}.maxBufferedBody`, DEFAULT_MAX_BUFFERED_BODY),
    onUpstreamError: target.onUpstreamError,
    websocket: resolveWebSocket(target.websocket, `${at}.websocket`),
    transport: resolveTransport(target.transport, target.upstream, at),
    headerPolicy: resolveHeaderPolicy(target, credentials.kind === 'static' ? Object.keys(credentials.headers) : [], at),
    cors: resolveTargetCors(target.cors, `${at}.cors`, cors)
  }
}

/** Validates the user's options once, at register, and applies defaults. */
export function resolveOptions (opts: GatehouseOptions): ResolvedOptions {
  if (!isObject(opts)) fail('options', 'an object { auth, targets }')
  const auth = resolveAuth(opts.auth)
  if (!Array.isArray(opts.targets)) fail('targets', 'an array of targets')
  const cors = opts.cors === undefined ? undefined : resolveCors(opts.cors, 'cors')
  const { caseInsensitive } = resolvePaths(opts.paths)
  const resolved = opts.targets.map((target, index) => resolveTarget(target, index, cors))
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
  if (opts.compress !== undefined && opts.compress !== false && !isObject(opts.compress)) {
    fail('compress', 'false or @fastify/compress options')
  }
  return { auth, targets, compress: opts.compress === undefined ? {} : opts.compress, shutdown: resolveShutdown(opts.shutdown), cors }
}
