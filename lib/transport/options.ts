import { MAX_TIMER_MS, fail, integer, object } from '../options/validate.js'
import type { ActiveHealthOptions, CircuitBreakerOptions, PassiveHealthOptions, PoolOptions, RetryOptions, UpstreamTlsOptions } from '../types.js'

export interface ResolvedTransport {
  /** Every upstream origin (`scheme://host:port`), in the order given. */
  readonly origins: readonly string[]
  readonly pool: Readonly<Required<PoolOptions>>
  readonly tls: Readonly<UpstreamTlsOptions> & { readonly rejectUnauthorized: boolean }
  readonly retry: Readonly<Required<Omit<RetryOptions, 'methods' | 'statuses'>>> & { readonly methods: ReadonlySet<string>, readonly statuses: ReadonlySet<number> }
  readonly balance: 'round-robin' | 'least-in-flight'
  readonly passiveHealth: Readonly<Required<PassiveHealthOptions>> | undefined
  readonly activeHealth: Readonly<Required<ActiveHealthOptions>> | undefined
  readonly circuitBreaker: Readonly<Required<CircuitBreakerOptions>> | undefined
  readonly rewrite: { readonly location: boolean, readonly cookies: boolean, readonly publicOrigin: string | undefined }
  readonly eventStreamIdle: number
  readonly http2: boolean
  readonly bufferResponses: number
}

export const DEFAULT_POOL = Object.freeze({ connections: 128, pipelining: 1, keepAliveTimeout: 4_000, keepAliveMaxTimeout: 600_000 })
export const DEFAULT_RETRY = Object.freeze({ retries: 0, minDelay: 100, maxDelay: 2_000, maxRetryAfter: 5_000 })
export const DEFAULT_RETRY_METHODS = Object.freeze(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'])
export const DEFAULT_RETRY_STATUSES = Object.freeze([503])
export const DEFAULT_PASSIVE_HEALTH = Object.freeze({ failures: 5, coolDown: 10_000 })
export const DEFAULT_ACTIVE_HEALTH = Object.freeze({ interval: 5_000, timeout: 2_000, healthyThreshold: 2, unhealthyThreshold: 2 })
export const DEFAULT_CIRCUIT_BREAKER = Object.freeze({ window: 10_000, minRequests: 20, failureRate: 0.5, coolDown: 5_000, halfOpenRequests: 1 })
export const DEFAULT_DRAIN_TIMEOUT = 10_000
export const DEFAULT_BUFFER_RESPONSES = 64 * 1024
const MAX_BUFFER_RESPONSES = 64 * 1024 * 1024

// Methods RFC 9110 calls idempotent (TRACE and CONNECT are never proxied).
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'])
const TRANSPORT_KEYS = [
  'pool', 'tls', 'retry', 'balance', 'passiveHealth', 'activeHealth', 'circuitBreaker', 'rewrite', 'eventStreamIdle', 'http2',
  'bufferResponses'
]

function int (value: unknown, option: string, fallback: number, min: number, max = MAX_TIMER_MS): number {
  return integer(value, option, fallback, { min, max })
}

/** An options object (`{}` when undefined), unknown keys refused. */
function section (value: unknown, option: string, known: readonly string[], orBoolean = false): Record<string, unknown> {
  return object(value, option, known, `${orBoolean ? 'a boolean or ' : ''}an object { ${known.map((key) => `${key}?`).join(', ')} }`)
}

function pem (value: unknown, option: string): string | Buffer | undefined {
  if (value === undefined) return undefined
  if ((typeof value === 'string' && value.length > 0) || (Buffer.isBuffer(value) && value.length > 0)) return value
  fail(option, 'a PEM string or Buffer')
}

/**
 * Validates a target's `upstream` (one URL or several) and returns the
 * origins and the base path they share.
 */
export function resolveUpstreams (value: unknown, at: string): { origins: string[], basePath: string } {
  const list = Array.isArray(value) ? value : [value]
  if (list.length === 0) fail(at, 'an http(s) URL or a non-empty array of them')
  const origins: string[] = []
  let basePath: string | undefined
  let protocol: string | undefined
  for (const [index, item] of list.entries()) {
    const where = Array.isArray(value) ? `${at}[${index}]` : at
    let url: URL | undefined
    try {
      url = new URL(String(item))
    } catch {}
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
      fail(where, 'an http: or https: URL without credentials, query or fragment (use `credentials`)')
    }
    const path = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '')
    if ((basePath !== undefined && path !== basePath) || (protocol !== undefined && url.protocol !== protocol)) {
      fail(where, 'a URL with the same scheme and base path as the other upstreams of this target')
    }
    if (origins.includes(url.origin)) fail(where, 'a URL not listed twice')
    basePath = path
    protocol = url.protocol
    origins.push(url.origin)
  }
  return { origins, basePath: basePath as string }
}

function resolveTls (value: unknown, at: string): ResolvedTransport['tls'] {
  const opts = section(value, at, ['rejectUnauthorized', 'ca', 'cert', 'key', 'passphrase', 'servername'])
  if (opts.rejectUnauthorized !== undefined && typeof opts.rejectUnauthorized !== 'boolean') fail(`${at}.rejectUnauthorized`, 'a boolean')
  const ca = opts.ca === undefined
    ? undefined
    : Array.isArray(opts.ca) ? opts.ca.map((c, i) => pem(c, `${at}.ca[${i}]`) as string | Buffer) : pem(opts.ca, `${at}.ca`)
  const cert = pem(opts.cert, `${at}.cert`)
  const key = pem(opts.key, `${at}.key`)
  if ((cert === undefined) !== (key === undefined)) fail(cert === undefined ? `${at}.cert` : `${at}.key`, 'a client certificate and its key together')
  if (opts.passphrase !== undefined && typeof opts.passphrase !== 'string') fail(`${at}.passphrase`, 'a string')
  if (opts.servername !== undefined && (typeof opts.servername !== 'string' || !/^[A-Za-z0-9.-]+$/.test(opts.servername))) {
    fail(`${at}.servername`, 'a DNS host name')
  }
  return Object.freeze({
    rejectUnauthorized: opts.rejectUnauthorized !== false,
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert, key }),
    ...(opts.passphrase === undefined ? {} : { passphrase: opts.passphrase as string }),
    ...(opts.servername === undefined ? {} : { servername: opts.servername as string })
  })
}

function resolveRetry (value: unknown, at: string): ResolvedTransport['retry'] {
  const opts = value === false ? { retries: 0 } : section(value, at, ['retries', 'methods', 'statuses', 'minDelay', 'maxDelay', 'maxRetryAfter'])
  const methods = opts.methods ?? DEFAULT_RETRY_METHODS
  if (!Array.isArray(methods) || !methods.every((m) => typeof m === 'string' && IDEMPOTENT.has(m.toUpperCase()))) {
    fail(`${at}.methods`, `an array of idempotent methods (${[...IDEMPOTENT].join(', ')})`)
  }
  const statuses = opts.statuses ?? DEFAULT_RETRY_STATUSES
  if (!Array.isArray(statuses) || !statuses.every((s) => Number.isInteger(s) && s >= 500 && s <= 599)) {
    fail(`${at}.statuses`, 'an array of 5xx status codes')
  }
  const minDelay = int(opts.minDelay, `${at}.minDelay`, DEFAULT_RETRY.minDelay, 0)
  return {
    retries: int(opts.retries, `${at}.retries`, DEFAULT_RETRY.retries, 0, 10),
    methods: new Set((methods as string[]).map((m) => m.toUpperCase())),
    statuses: new Set(statuses as number[]),
    minDelay,
    maxDelay: int(opts.maxDelay, `${at}.maxDelay`, Math.max(DEFAULT_RETRY.maxDelay, minDelay), minDelay),
    maxRetryAfter: int(opts.maxRetryAfter, `${at}.maxRetryAfter`, DEFAULT_RETRY.maxRetryAfter, 0)
  }
}

function resolvePassive (value: unknown, at: string, several: boolean): ResolvedTransport['passiveHealth'] {
  if (value === false || (value === undefined && !several)) return undefined
  const opts = value === true ? {} : section(value, at, ['failures', 'coolDown'], true)
  return {
    failures: int(opts.failures, `${at}.failures`, DEFAULT_PASSIVE_HEALTH.failures, 1, 1000),
    coolDown: int(opts.coolDown, `${at}.coolDown`, DEFAULT_PASSIVE_HEALTH.coolDown, 1)
  }
}

function resolveActive (value: unknown, at: string): ResolvedTransport['activeHealth'] {
  if (value === undefined) return undefined
  const opts = section(value, at, ['path', 'interval', 'timeout', 'healthyThreshold', 'unhealthyThreshold'])
  if (typeof opts.path !== 'string' || !opts.path.startsWith('/') || /[\s#]/.test(opts.path)) fail(`${at}.path`, 'an absolute path such as "/healthz"')
  return {
    path: opts.path,
    interval: int(opts.interval, `${at}.interval`, DEFAULT_ACTIVE_HEALTH.interval, 10),
    timeout: int(opts.timeout, `${at}.timeout`, DEFAULT_ACTIVE_HEALTH.timeout, 1),
    healthyThreshold: int(opts.healthyThreshold, `${at}.healthyThreshold`, DEFAULT_ACTIVE_HEALTH.healthyThreshold, 1, 100),
    unhealthyThreshold: int(opts.unhealthyThreshold, `${at}.unhealthyThreshold`, DEFAULT_ACTIVE_HEALTH.unhealthyThreshold, 1, 100)
  }
}

function resolveBreaker (value: unknown, at: string): ResolvedTransport['circuitBreaker'] {
  if (value === undefined || value === false) return undefined
  const opts = value === true ? {} : section(value, at, ['window', 'minRequests', 'failureRate', 'coolDown', 'halfOpenRequests'], true)
  const failureRate = opts.failureRate ?? DEFAULT_CIRCUIT_BREAKER.failureRate
  if (typeof failureRate !== 'number' || !(failureRate > 0 && failureRate <= 1)) fail(`${at}.failureRate`, 'a ratio above 0, up to 1')
  return {
    window: int(opts.window, `${at}.window`, DEFAULT_CIRCUIT_BREAKER.window, 10),
    minRequests: int(opts.minRequests, `${at}.minRequests`, DEFAULT_CIRCUIT_BREAKER.minRequests, 1, 1_000_000),
    failureRate,
    coolDown: int(opts.coolDown, `${at}.coolDown`, DEFAULT_CIRCUIT_BREAKER.coolDown, 1),
    halfOpenRequests: int(opts.halfOpenRequests, `${at}.halfOpenRequests`, DEFAULT_CIRCUIT_BREAKER.halfOpenRequests, 1, 1000)
  }
}

function resolveRewrite (value: unknown, at: string): ResolvedTransport['rewrite'] {
  if (value === false) return { location: false, cookies: false, publicOrigin: undefined }
  const opts = value === true ? {} : section(value, at, ['location', 'cookies', 'publicOrigin'], true)
  for (const name of ['location', 'cookies'] as const) {
    if (opts[name] !== undefined && typeof opts[name] !== 'boolean') fail(`${at}.${name}`, 'a boolean')
  }
  let publicOrigin: string | undefined
  if (opts.publicOrigin !== undefined) {
    let url: URL | undefined
    try {
      url = new URL(String(opts.publicOrigin))
    } catch {}
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.origin !== opts.publicOrigin) {
      fail(`${at}.publicOrigin`, 'an origin such as "https://api.example.com" (no path or trailing slash)')
    }
    publicOrigin = url.origin
  }
  return { location: opts.location !== false, cookies: opts.cookies !== false, publicOrigin }
}

/** Validates a target's `transport` option (and its `upstream` list) and applies defaults. */
export function resolveTransport (value: unknown, upstream: unknown, at: string): ResolvedTransport {
  const opts = section(value, `${at}.transport`, TRANSPORT_KEYS)
  const { origins } = resolveUpstreams(upstream, `${at}.upstream`)
  const where = `${at}.transport`
  const pool = section(opts.pool, `${where}.pool`, ['connections', 'pipelining', 'keepAliveTimeout', 'keepAliveMaxTimeout'])
  if (opts.balance !== undefined && opts.balance !== 'round-robin' && opts.balance !== 'least-in-flight') {
    fail(`${where}.balance`, '"round-robin" or "least-in-flight"')
  }
  if (opts.http2 !== undefined && typeof opts.http2 !== 'boolean') fail(`${where}.http2`, 'a boolean')
  return {
    origins,
    pool: {
      connections: int(pool.connections, `${where}.pool.connections`, DEFAULT_POOL.connections, 1, 65_536),
      pipelining: int(pool.pipelining, `${where}.pool.pipelining`, DEFAULT_POOL.pipelining, 1, 1000),
      keepAliveTimeout: int(pool.keepAliveTimeout, `${where}.pool.keepAliveTimeout`, DEFAULT_POOL.keepAliveTimeout, 1),
      keepAliveMaxTimeout: int(pool.keepAliveMaxTimeout, `${where}.pool.keepAliveMaxTimeout`, DEFAULT_POOL.keepAliveMaxTimeout, 1)
    },
    tls: resolveTls(opts.tls, `${where}.tls`),
    retry: resolveRetry(opts.retry, `${where}.retry`),
    balance: (opts.balance as ResolvedTransport['balance'] | undefined) ?? 'round-robin',
    passiveHealth: resolvePassive(opts.passiveHealth, `${where}.passiveHealth`, origins.length > 1),
    activeHealth: resolveActive(opts.activeHealth, `${where}.activeHealth`),
    circuitBreaker: resolveBreaker(opts.circuitBreaker, `${where}.circuitBreaker`),
    rewrite: resolveRewrite(opts.rewrite, `${where}.rewrite`),
    eventStreamIdle: int(opts.eventStreamIdle, `${where}.eventStreamIdle`, 0, 0),
    http2: opts.http2 === true,
    bufferResponses: int(opts.bufferResponses, `${where}.bufferResponses`, DEFAULT_BUFFER_RESPONSES, 0, MAX_BUFFER_RESPONSES)
  }
}

/** Validates the top-level `shutdown` option; `drainTimeout` stays undefined when not set (see shutdown.ts). */
export function resolveShutdown (value: unknown): { readonly drainTimeout: number | undefined } {
  const opts = section(value, 'shutdown', ['drainTimeout'])
  return { drainTimeout: opts.drainTimeout === undefined ? undefined : int(opts.drainTimeout, 'shutdown.drainTimeout', DEFAULT_DRAIN_TIMEOUT, 0) }
}
