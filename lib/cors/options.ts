import type { FastifyRequest } from 'fastify'
import { fail, isHeaderName, isObject, knownKeys, origin } from '../options/validate.js'
import type { CorsOptions } from '../types.js'

/** Exposed on every CORS answer: a page must be able to read why it was refused and when to retry. */
export const DEFAULT_EXPOSED_HEADERS = Object.freeze(['www-authenticate', 'retry-after', 'x-request-id'])
// Chromium caps Access-Control-Max-Age at 2 hours, Firefox at 24.
const MAX_AGE_LIMIT = 86_400
const KEYS = ['origin', 'credentials', 'allowedHeaders', 'exposedHeaders', 'maxAge']

/** A CORS policy with its defaults applied, shared by the register-time and request-time halves. */
export interface ResolvedCors {
  /** Whether a request's `Origin` may read the answer. */
  readonly allows: (origin: string, request: FastifyRequest) => boolean | Promise<boolean>
  readonly credentials: boolean
  /** `null`: the headers the preflight asks for. */
  readonly allowedHeaders: readonly string[] | null
  readonly exposedHeaders: readonly string[]
  /** `null`: no `Access-Control-Max-Age`. */
  readonly maxAge: number | null
  /** The raw fields, so a target can override some of them. */
  readonly source: Readonly<Partial<CorsOptions>>
}

function resolveOrigin (value: unknown, at: string): ResolvedCors['allows'] {
  if (typeof value === 'function') return value as ResolvedCors['allows']
  if (!Array.isArray(value) || value.length === 0) fail(at, 'a non-empty array of origins, or a function (origin, request) => boolean')
  // Browsers send the serialized origin: anything else could never match.
  const origins = new Set(value.map((item: unknown, index) => origin(item, `${at}[${index}]`, true)))
  return (origin) => origins.has(origin)
}

function headerList (value: unknown, at: string): string[] {
  if (!Array.isArray(value) || value.some((name) => !isHeaderName(name))) {
    fail(at, 'an array of header names')
  }
  return value.map((name: string) => name.toLowerCase())
}

/**
 * Validates a `cors` option. `base` is the top-level policy a target's
 * `cors` overrides field by field; without it `origin` is required.
 */
export function resolveCors (value: unknown, at: string, base?: ResolvedCors): ResolvedCors {
  if (!isObject(value)) fail(at, base === undefined ? 'an object { origin, credentials?, allowedHeaders?, exposedHeaders?, maxAge? }' : 'false or an object with cors fields to override')
  knownKeys(value, at, KEYS)
  const source = { ...base?.source, ...value } as Partial<CorsOptions>
  if (source.origin === undefined) fail(`${at}.origin`, 'a non-empty array of origins, or a function (origin, request) => boolean')
  if (source.credentials !== undefined && typeof source.credentials !== 'boolean') fail(`${at}.credentials`, 'a boolean')
  const maxAge = source.maxAge
  if (maxAge !== undefined && (typeof maxAge !== 'number' || !Number.isInteger(maxAge) || maxAge < 0 || maxAge > MAX_AGE_LIMIT)) {
    fail(`${at}.maxAge`, `a whole number of seconds from 0 to ${MAX_AGE_LIMIT}`)
  }
  const exposed = source.exposedHeaders === undefined ? [] : headerList(source.exposedHeaders, `${at}.exposedHeaders`)
  return Object.freeze({
    allows: resolveOrigin(source.origin, `${at}.origin`),
    credentials: source.credentials === true,
    allowedHeaders: source.allowedHeaders === undefined ? null : Object.freeze(headerList(source.allowedHeaders, `${at}.allowedHeaders`)),
    exposedHeaders: Object.freeze([...new Set([...DEFAULT_EXPOSED_HEADERS, ...exposed])]),
    maxAge: maxAge ?? null,
    source: Object.freeze(source)
  })
}

/** A target's policy: its own `cors` over the top-level one, `false` for none, else the top-level one. */
export function resolveTargetCors (value: unknown, at: string, base: ResolvedCors | undefined): ResolvedCors | undefined {
  if (value === undefined) return base
  if (value === false) return undefined
  return resolveCors(value, at, base)
}
