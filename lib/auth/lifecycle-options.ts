import { duration, fail, integer, isObject, milliseconds, object, path } from '../options/validate.js'
import type { AuthOptions, LoginOptions, LoginThrottleOptions, LogoutOptions, RefreshOptions, RefreshVerifier, ThrottleLimit } from '../types.js'
import type { GatehouseStore } from '../types.js'

/*
 * Options of the token lifecycle (refresh, logout, login throttling, store),
 * resolved once from `auth` at register time.
 */

export const DEFAULT_REFRESH_PATH = '/token/refresh'
export const DEFAULT_REFRESH_EXPIRES_IN_SECONDS = 14 * 86400
export const DEFAULT_REFRESH_MAX_AGE_SECONDS = 30 * 86400
export const DEFAULT_REFRESH_REUSE_INTERVAL_SECONDS = 2
// A longer window is a longer time in which a stolen token forks the session unnoticed (Okta's cap).
export const MAX_REFRESH_REUSE_INTERVAL_SECONDS = 60
export const DEFAULT_LOGOUT_PATH = '/logout'
export const DEFAULT_LOGIN_CONCURRENCY = 2
export const DEFAULT_LOGIN_QUEUE = 8
export const DEFAULT_THROTTLE = Object.freeze({
  windowSeconds: 15 * 60,
  user: Object.freeze({ max: 10, delayAfter: 3 }),
  address: Object.freeze({ max: 100, delayAfter: 30 }),
  delayMs: 250,
  maxDelayMs: 4000
})

export interface ResolvedRefresh {
  readonly path: string
  readonly expiresInSeconds: number
  readonly maxAgeSeconds: number
  /** Seconds after a rotation in which the same refresh token gets a fresh pair instead of revoking; 0: never. */
  readonly reuseIntervalSeconds: number
  /** Asked for fresh claims on every refresh; `undefined`: the login claims stay until `maxAge`. */
  readonly verify: RefreshVerifier | undefined
}

export interface ResolvedLogout {
  readonly path: string
  readonly revokeAccessToken: boolean
}

export interface ResolvedThrottle {
  readonly windowSeconds: number
  readonly user: Readonly<Required<ThrottleLimit>>
  readonly address: Readonly<Required<ThrottleLimit>>
  readonly delayMs: number
  readonly maxDelayMs: number
  /** What a login gets when the store fails: 503 (`closed`) or an uncounted check (`open`). */
  readonly onStoreError: 'closed' | 'open'
}

/** Bounds on concurrent credential checks at the login route. */
export interface ResolvedLoginLimit {
  readonly concurrency: number
  readonly queue: number
}

export interface ResolvedLifecycle {
  readonly loginLimit: ResolvedLoginLimit
  readonly refresh: ResolvedRefresh | false
  readonly logout: ResolvedLogout | false
  readonly throttle: ResolvedThrottle | false
  /** The user's store; `undefined` means an in-memory one when needed. */
  readonly store: GatehouseStore | undefined
}

function routePath (value: unknown, option: string, fallback: string): string {
  return value === undefined ? fallback : path(value, option, fallback)
}

function section<T extends object> (value: unknown, option: string, known: readonly string[]): T | undefined {
  if (value === undefined || value === false) return undefined
  if (value === true) return {} as T
  return object(value, option, known, `true, false or { ${known.map((key) => `${key}?`).join(', ')} }`) as T
}

function resolveLimit (value: unknown, option: string, fallback: Required<ThrottleLimit>): Required<ThrottleLimit> {
  if (value === undefined) return fallback
  const opts = object(value, option, ['max', 'delayAfter'])
  const max = integer(opts.max, `${option}.max`, fallback.max, { min: 1 })
  const delayAfter = integer(opts.delayAfter, `${option}.delayAfter`, Math.min(fallback.delayAfter, max), { min: 0 })
  if (delayAfter > max) fail(`${option}.delayAfter`, `at most max (${max})`)
  return { max, delayAfter }
}

function storeErrorPolicy (value: unknown): 'closed' | 'open' {
  if (value === undefined) return 'closed'
  if (value !== 'closed' && value !== 'open') fail('auth.login.throttle.onStoreError', '"closed" or "open"')
  return value
}

function resolveThrottle (value: unknown): ResolvedThrottle | false {
  // On unless turned off: a gateway is safe by default.
  const opts = section<LoginThrottleOptions>(value ?? true, 'auth.login.throttle', ['user', 'address', 'window', 'delayMs', 'maxDelayMs', 'onStoreError'])
  if (opts === undefined) return false
  const delayMs = milliseconds(opts.delayMs, 'auth.login.throttle.delayMs', DEFAULT_THROTTLE.delayMs, 0)
  return {
    windowSeconds: duration(opts.window, 'auth.login.throttle.window', DEFAULT_THROTTLE.windowSeconds),
    user: resolveLimit(opts.user, 'auth.login.throttle.user', DEFAULT_THROTTLE.user),
    address: resolveLimit(opts.address, 'auth.login.throttle.address', DEFAULT_THROTTLE.address),
    delayMs,
    maxDelayMs: milliseconds(opts.maxDelayMs, 'auth.login.throttle.maxDelayMs', Math.max(DEFAULT_THROTTLE.maxDelayMs, delayMs), delayMs),
    onStoreError: storeErrorPolicy(opts.onStoreError)
  }
}

function isStore (value: unknown): value is GatehouseStore {
  return isObject(value) && ['get', 'set', 'add', 'increment', 'delete'].every((name) => typeof value[name] === 'function')
}

/**
 * Resolves `auth.refresh`, `auth.logout`, `auth.login.throttle` and
 * `auth.store`; called by `resolveAuth` once `auth.login` is known.
 */
export function resolveLifecycle (opts: AuthOptions, loginPath: string | false): ResolvedLifecycle {
  const refreshOpts = section<RefreshOptions>(opts.refresh, 'auth.refresh', ['path', 'expiresIn', 'maxAge', 'reuseInterval', 'verify'])
  const logoutOpts = section<LogoutOptions>(opts.logout ?? (refreshOpts === undefined ? undefined : true), 'auth.logout', ['path', 'revokeAccessToken'])
  if (loginPath === false && refreshOpts !== undefined) fail('auth.refresh', 'false when auth.login is false (refresh needs the login route)')
  if (loginPath === false && logoutOpts !== undefined) fail('auth.logout', 'false when auth.login is false (logout needs the login route)')

  let refresh: ResolvedRefresh | false = false
  if (refreshOpts !== undefined) {
    const expiresInSeconds = duration(refreshOpts.expiresIn, 'auth.refresh.expiresIn', DEFAULT_REFRESH_EXPIRES_IN_SECONDS)
    const maxAgeSeconds = duration(refreshOpts.maxAge, 'auth.refresh.maxAge', Math.max(DEFAULT_REFRESH_MAX_AGE_SECONDS, expiresInSeconds))
    if (maxAgeSeconds < expiresInSeconds) fail('auth.refresh.maxAge', `a duration at least auth.refresh.expiresIn (${expiresInSeconds} s)`)
    const reuseIntervalSeconds = duration(refreshOpts.reuseInterval, 'auth.refresh.reuseInterval',
      DEFAULT_REFRESH_REUSE_INTERVAL_SECONDS, { min: 0, max: MAX_REFRESH_REUSE_INTERVAL_SECONDS })
    if (refreshOpts.verify !== undefined && typeof refreshOpts.verify !== 'function') {
      fail('auth.refresh.verify', 'a function (claims, request) => claims | null')
    }
    refresh = {
      path: routePath(refreshOpts.path, 'auth.refresh.path', DEFAULT_REFRESH_PATH),
      expiresInSeconds,
      maxAgeSeconds,
      reuseIntervalSeconds,
      verify: refreshOpts.verify
    }
  }

  let logout: ResolvedLogout | false = false
  if (logoutOpts !== undefined) {
    if (logoutOpts.revokeAccessToken !== undefined && typeof logoutOpts.revokeAccessToken !== 'boolean') {
      fail('auth.logout.revokeAccessToken', 'a boolean')
    }
    const revokeAccessToken = logoutOpts.revokeAccessToken === true
    if (refresh === false && !revokeAccessToken) {
      fail('auth.logout', 'refresh enabled or { revokeAccessToken: true } (otherwise logout has nothing to revoke)')
    }
    logout = { path: routePath(logoutOpts.path, 'auth.logout.path', DEFAULT_LOGOUT_PATH), revokeAccessToken }
  }

  const routes = [loginPath, refresh === false ? false : refresh.path, logout === false ? false : logout.path].filter((p) => p !== false)
  if (new Set(routes).size !== routes.length) fail('auth', `distinct login, refresh and logout paths (got ${routes.join(', ')})`)

  const throttle = isObject(opts.login) ? resolveThrottle(opts.login.throttle) : false
  const loginOpts: Partial<LoginOptions> = isObject(opts.login) ? opts.login as Partial<LoginOptions> : {}
  const loginLimit = {
    concurrency: integer(loginOpts.concurrency, 'auth.login.concurrency', DEFAULT_LOGIN_CONCURRENCY, { min: 1 }),
    queue: integer(loginOpts.queue, 'auth.login.queue', DEFAULT_LOGIN_QUEUE, { min: 0 })
  }
  if (opts.store !== undefined && !isStore(opts.store)) fail('auth.store', 'a GatehouseStore { get, set, add, increment, delete }')
  return { loginLimit, refresh, logout, throttle, store: opts.store }
}

/** The route paths the lifecycle adds, which no target prefix may take. */
export function lifecycleRoutes (lifecycle: ResolvedLifecycle): string[] {
  const paths: string[] = []
  if (lifecycle.refresh !== false) paths.push(lifecycle.refresh.path)
  if (lifecycle.logout !== false) paths.push(lifecycle.logout.path)
  return paths
}
