import { BlockList, isIP } from 'node:net'
import { Registry } from 'prom-client'
import { boolean, fail, isObject, object, path } from '../options/validate.js'

/** Where the scrape is served unless `metrics.path` says otherwise (Prometheus' own default). */
export const DEFAULT_METRICS_PATH = '/metrics'
/** Callers allowed by default when no token is set: this machine only, as Envoy's admin and Kong's status listener. */
export const LOOPBACK = Object.freeze(['127.0.0.0/8', '::1'])
const MIN_TOKEN_LENGTH = 16
const METRICS_KEYS = ['path', 'allow', 'token', 'defaultMetrics', 'registry']

/** Who may scrape: an address list and/or a bearer token. */
export interface ResolvedScrapeAccess {
  /** `undefined`: any address (a token is then required). */
  readonly allow: BlockList | undefined
  readonly token: string | undefined
}

export interface ResolvedMetrics {
  readonly path: string | false
  readonly access: ResolvedScrapeAccess
  readonly defaultMetrics: boolean
  /** The registry given by the user, else `undefined` (the gateway makes its own). */
  readonly registry: Registry | undefined
}

export interface ResolvedAccessLog {
  readonly query: boolean
  readonly user: boolean
}

/** An address list of IPs and CIDRs (`10.0.0.0/8`, `fd00::/8`), as a BlockList. */
export function addressList (value: unknown, at: string): BlockList {
  const expected = 'a non-empty array of IP addresses or CIDRs such as "10.0.0.0/8"'
  if (!Array.isArray(value) || value.length === 0) fail(at, expected)
  const list = new BlockList()
  for (const [index, item] of value.entries()) {
    const [address, bits, extra] = typeof item === 'string' ? item.split('/') : []
    const family = isIP(address ?? '')
    const prefix = bits === undefined ? undefined : Number(bits)
    const max = family === 6 ? 128 : 32
    if (family === 0 || extra !== undefined || (prefix !== undefined && !(Number.isInteger(prefix) && prefix >= 0 && prefix <= max && bits === String(prefix)))) {
      fail(`${at}[${index}]`, expected)
    }
    const type = family === 6 ? 'ipv6' : 'ipv4'
    if (prefix === undefined) list.addAddress(address as string, type)
    else list.addSubnet(address as string, prefix, type)
  }
  return list
}

/** `allow` and `token` of `metrics` (and of the command's `metrics.listen`). */
export function resolveScrapeAccess (opts: Record<string, unknown>, at: string): ResolvedScrapeAccess {
  let token: string | undefined
  if (opts.token !== undefined) {
    if (typeof opts.token !== 'string' || opts.token.length < MIN_TOKEN_LENGTH || /[^\x21-\x7e]/.test(opts.token)) {
      fail(`${at}.token`, `a string of at least ${MIN_TOKEN_LENGTH} visible ASCII characters`)
    }
    token = opts.token
  }
  const allow = opts.allow !== undefined
    ? addressList(opts.allow, `${at}.allow`)
    : token === undefined ? addressList(LOOPBACK, `${at}.allow`) : undefined
  return { allow, token }
}

/** `metrics`: `undefined` when off. */
export function resolveMetrics (value: unknown): ResolvedMetrics | undefined {
  if (value === undefined || value === false) return undefined
  const opts = value === true ? {} : object(value, 'metrics', METRICS_KEYS, 'a boolean or { path?, allow?, token?, defaultMetrics?, registry? }')
  if (opts.registry !== undefined && !(opts.registry instanceof Registry)) fail('metrics.registry', 'a prom-client Registry')
  return {
    path: opts.path === false ? false : opts.path === undefined ? DEFAULT_METRICS_PATH : path(opts.path, 'metrics.path', DEFAULT_METRICS_PATH),
    access: resolveScrapeAccess(opts, 'metrics'),
    defaultMetrics: boolean(opts.defaultMetrics, 'metrics.defaultMetrics', true),
    registry: opts.registry as Registry | undefined
  }
}

/** `accessLog`: `undefined` when off. */
export function resolveAccessLog (value: unknown): ResolvedAccessLog | undefined {
  if (value === undefined || value === false) return undefined
  if (value === true) return { query: false, user: false }
  if (!isObject(value)) fail('accessLog', 'a boolean or { query?, user? }')
  const opts = object(value, 'accessLog', ['query', 'user'])
  return { query: boolean(opts.query, 'accessLog.query', false), user: boolean(opts.user, 'accessLog.user', false) }
}
