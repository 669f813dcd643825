import { InvalidOptionError } from '../errors.js'

/*
 * The one set of option checks. Every resolver (lib/options/resolve.ts and the
 * `*-options.ts` files next to each feature) validates through these, so one
 * kind of mistake gets one message, whatever the option, and every message
 * names the option by its path (`targets[0].timeouts.connect`).
 */

/** Node timers fire after 1 ms when given more than this many milliseconds. */
export const MAX_TIMER_MS = 2 ** 31 - 1

// A header name as RFC 9110 defines a token.
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// Headers a credential may never set: they frame or route the message.
const RESERVED_HEADERS = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'keep-alive'])
const DURATION = /^(\d+)\s*(s|m|h|d)$/
const DURATION_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 }
// What the path guard refuses in requests may not be part of a configured path either.
const BAD_PATH = /[?#;\\\s]|\/\/|(^|\/)\.\.?(\/|$)|\.(\/|$)/

/** The shortest HMAC secret accepted: 256 bits, as RFC 7518 3.2 requires for HS256. */
export const MIN_HMAC_SECRET_BYTES = 32

export function fail (option: string, expected: string): never {
  throw new InvalidOptionError(option, expected)
}

export function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * `value` as an options object whose keys are all in `known`; `undefined`
 * gives `{}`. `option` is its path, `''` for the top level. A key that is not known fails with its path and, when one is
 * close (case aside, or at most two edits away), a "did you mean" hint: what
 * TypeScript users get from the compiler, JavaScript users get here.
 */
export function object (value: unknown, option: string, known: readonly string[], shape?: string): Record<string, unknown> {
  if (value === undefined) return {}
  if (!isObject(value)) fail(option, shape ?? `an object { ${known.map((key) => `${key}?`).join(', ')} }`)
  knownKeys(value, option, known)
  return value
}

/** Fails on the first key of `value` that is not in `known` (see `object`). */
export function knownKeys (value: Record<string, unknown>, option: string, known: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (known.includes(key)) continue
    const hint = suggest(key, known)
    fail(option === '' ? key : `${option}.${key}`, hint === undefined
      ? `a known option (one of ${known.join(', ')})`
      : `a known option; did you mean "${hint}"?`)
  }
}

/** The known name closest to `key`: the same but for case, or at most 2 edits away. */
export function suggest (key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase()
  let best: string | undefined
  let bestDistance = 3
  for (const name of known) {
    const distance = name.toLowerCase() === lower ? 0 : editDistance(lower, name.toLowerCase())
    if (distance < bestDistance) {
      best = name
      bestDistance = distance
    }
  }
  return best
}

/** Damerau-Levenshtein distance (optimal string alignment: a swap of neighbours is one edit). */
function editDistance (a: string, b: string): number {
  const rows: number[][] = []
  for (let i = 0; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        row.push(j)
        continue
      }
      const above = rows[i - 1] as number[]
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let d = Math.min(above[j] as number + 1, row[j - 1] as number + 1, above[j - 1] as number + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, (rows[i - 2] as number[])[j - 2] as number + 1)
      row.push(d)
    }
    rows.push(row)
  }
  return (rows[a.length] as number[])[b.length] as number
}

/** An integer from `min` to `max`; `fallback` when undefined. */
export function integer (value: unknown, option: string, fallback: number, bounds: { min: number, max?: number }): number {
  if (value === undefined) return fallback
  const { min, max = Number.MAX_SAFE_INTEGER } = bounds
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    fail(option, `an integer from ${min} to ${max}${min === 0 ? ' (0 turns it off)' : ''}`)
  }
  return value
}

/** Milliseconds that become a Node timer: an integer from `min` (default 1) to 2^31-1. */
export function milliseconds (value: unknown, option: string, fallback: number, min = 1): number {
  return integer(value, option, fallback, { min, max: MAX_TIMER_MS })
}

/**
 * A duration in seconds: a whole number of seconds or a string such as
 * "15m" (s, m, h, d); from `min` (default 1) to `max`.
 */
export function duration (value: unknown, option: string, fallback: number, bounds: { min?: number, max?: number } = {}): number {
  if (value === undefined) return fallback
  const { min = 1, max = Number.MAX_SAFE_INTEGER } = bounds
  const match = typeof value === 'string' ? DURATION.exec(value) : null
  const seconds = typeof value === 'number' && Number.isSafeInteger(value)
    ? value
    : match === null ? Number.NaN : Number(match[1]) * (DURATION_SECONDS[match[2] as string] as number)
  if (!(seconds >= min && seconds <= max)) {
    fail(option, `${min === 0 ? '0 (off) or ' : ''}a number of seconds or a duration such as "15m" or "1h"` +
      `${min > 1 ? `, at least ${min} s` : ''}${max < Number.MAX_SAFE_INTEGER ? `, at most ${max} s` : ''}`)
  }
  return seconds
}

export function boolean (value: unknown, option: string, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') fail(option, 'a boolean')
  return value
}

/** A non-empty string, or `undefined`. */
export function optionalString (value: unknown, option: string): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || value.length === 0) fail(option, 'a non-empty string')
  return value
}

/** A non-empty string or Buffer (a secret or a PEM key). */
export function isKey (value: unknown): value is string | Buffer {
  return (typeof value === 'string' && value.length > 0) || (Buffer.isBuffer(value) && value.length > 0)
}

export function isHeaderName (name: unknown): name is string {
  return typeof name === 'string' && HEADER_NAME.test(name)
}

/** A header name a gateway may set (not one that frames or routes the message), lower-cased. */
export function headerName (name: unknown, option: string): string {
  if (!isHeaderName(name) || RESERVED_HEADERS.has(name.toLowerCase())) {
    fail(option, 'a valid header name that does not frame the message (not Host, Connection, Content-Length ...)')
  }
  return name.toLowerCase()
}

/** A header value: non-empty, without control characters (they would split or corrupt the header line). */
export function headerValue (value: unknown, option: string): string {
  // eslint-disable-next-line no-control-regex
  if (typeof value !== 'string' || value.length === 0 || /[\u0000-\u001f\u007f]/.test(value)) {
    fail(option, 'a non-empty string without control characters')
  }
  return value
}

/**
 * An absolute route path without query, fragment, `;`, backslashes, empty or
 * dot segments or a segment ending in "."; a trailing slash is dropped.
 */
export function path (value: unknown, option: string, example = '/api'): string {
  if (typeof value !== 'string' || !value.startsWith('/') || BAD_PATH.test(value)) {
    fail(option, `an absolute path such as "${example}" without query, fragment, ";", backslashes, dot segments or a segment ending in "."`)
  }
  return value.length > 1 && value.endsWith('/') ? value.slice(0, -1) : value
}

/** An origin as browsers serialize it (scheme, host, optional port). */
export function origin (value: unknown, option: string, orStar = false): string {
  let parsed: URL | undefined
  try {
    parsed = typeof value === 'string' ? new URL(value) : undefined
  } catch {}
  // "null" (sandboxed frames, file: pages) is shared by every such page.
  if (parsed === undefined || parsed.origin === 'null' || parsed.origin !== value) {
    fail(option, `an origin such as "https://shop.example" (scheme, host, optional port; no path${orStar ? ', trailing slash or "*"' : ' or trailing slash'})`)
  }
  return value as string
}
