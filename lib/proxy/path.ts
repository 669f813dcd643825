import { PathNotAllowedError } from '../errors.js'
import { splitPrefix } from './prefix.js'
import type { PathTarget } from './prefix.js'

// Decoding more than this many times is itself a sign of an attack.
const MAX_DECODE_ROUNDS = 3

/**
 * A target prefix as the path guard compares it: one entry a segment, the
 * literal in canonical form, or `null` for a param (it matches any segment).
 */
export type PrefixPattern = ReadonlyArray<string | null>

/** What one target's path guard knows about the other targets. */
export interface ResolvedPathGuard {
  /** Paths are compared with other prefixes with case (and Unicode case look-alikes) folded. */
  readonly caseInsensitive: boolean
  /** Prefixes of the targets that the router prefers to this one wherever both match. */
  readonly preferred: readonly PrefixPattern[]
}

/**
 * True when a raw request path can reach the upstream as it is: however often
 * it is percent-decoded (up to 3 times), no dot segment, no segment that ends
 * in a dot (Windows and IIS drop it), no `..` at the start of a segment (which
 * reply-from refuses too), no empty segment (nginx merges `//`), no `;` (Tomcat
 * and Jetty read path parameters), no backslash or NUL, no encoded slash or
 * backslash that an upstream might turn into a separator, and no character
 * that Unicode normalisation or a best-fit mapping turns into a dot, slash,
 * backslash, `;` or `%`.
 */
export function isSafePath (rawPath: string): boolean {
  return decodedForms(rawPath) !== undefined
}

/**
 * The path guard of a target: `isSafePath`, and no reading of the path that an
 * upstream may apply (percent-decoding, Unicode NFKC, and case folding unless
 * `paths.caseInsensitive` is false) matches the prefix of a target the router
 * prefers to this one. Such a path was routed here only because it is spelled
 * differently from what the upstream will read, so it is refused rather than
 * checked against the wrong target's rules.
 */
export function isAllowedPath (rawPath: string, guard: ResolvedPathGuard): boolean {
  const forms = decodedForms(rawPath)
  if (forms === undefined) return false
  if (guard.preferred.length === 0) return true
  const segments = canonical(forms[forms.length - 1] as string, guard.caseInsensitive).slice(1).split('/')
  return !guard.preferred.some((pattern) => matches(pattern, segments))
}

/**
 * The guard of the target with `prefix`, among targets with `prefixes` (its
 * own included). find-my-way, at the first segment where two matching routes
 * differ, takes the static one over the param; where neither differs, the
 * longer prefix wins (its static child beats the shorter one's wildcard).
 */
export function resolvePathGuard (prefix: string, prefixes: readonly string[], caseInsensitive: boolean): ResolvedPathGuard {
  const own = patternOf(prefix, caseInsensitive)
  const preferred = prefixes
    .filter((other) => other !== prefix)
    .map((other) => patternOf(other, caseInsensitive))
    .filter((other) => isPreferred(other, own))
  return Object.freeze({ caseInsensitive, preferred: Object.freeze(preferred) })
}

// Encoded slash, backslash or NUL; a raw backslash, NUL or `;`; an empty
// segment; `..` at the start of a segment; a dot at the end of a segment
// (which covers `.` and `..` segments too).
// eslint-disable-next-line no-control-regex
const UNSAFE = /%(2f|5c|00)|[\\\u0000;]|\/\/|\/\.\.|\.(?:\/|$)/i

const NON_ASCII = /[\u0080-\u{10ffff}]/u
const NON_ASCII_CHARS = /[\u0080-\u{10ffff}]/gu
// What NFKC may turn a character into that changes how a path splits or decodes.
const SIGNIFICANT = /[./\\;%]/
// Dots and slashes that NFKC leaves alone but IDNA (U+3002 and its forms) or
// Windows best-fit mappings (fraction, division and big slashes, set minus)
// turn into `.`, `/` or `\`.
const LOOK_ALIKE = /[\u3002\uff61\ufe12\u2044\u2215\u2216\u29f5\u29f8\u29f9]/

/**
 * The raw path and each percent-decoded form of it, the fully decoded one
 * last; `undefined` when any of them is unsafe, the encoding is broken, or it
 * is still encoded after `MAX_DECODE_ROUNDS`.
 */
function decodedForms (rawPath: string): string[] | undefined {
  const forms: string[] = []
  let path = rawPath
  for (let round = 0; round <= MAX_DECODE_ROUNDS; round++) {
    if (UNSAFE.test(path) || hasLookAlike(path)) return undefined
    forms.push(path)
    if (!path.includes('%')) return forms
    try {
      // A `%` either starts a valid escape, which changes the string, or throws.
      path = decodeURIComponent(path)
    } catch {
      return undefined
    }
  }
  return undefined
}

function hasLookAlike (path: string): boolean {
  if (!NON_ASCII.test(path)) return false
  for (const [char] of path.matchAll(NON_ASCII_CHARS)) {
    if (LOOK_ALIKE.test(char) || SIGNIFICANT.test(char.normalize('NFKC'))) return true
  }
  return false
}

/** A decoded path as a normalising upstream may read it. */
function canonical (decoded: string, caseInsensitive: boolean): string {
  const normal = NON_ASCII.test(decoded) ? decoded.normalize('NFKC') : decoded
  return caseInsensitive ? foldCase(normal) : normal
}

/**
 * Lower case, with the Unicode letters whose case mapping is an ASCII letter
 * folded to it: `ı` (upper `I`), `ſ` (upper `S`), the Kelvin sign (lower `k`),
 * `İ` (lower `i` and a combining dot), which Java's `equalsIgnoreCase` and
 * other case-insensitive matchers equate with ASCII letters.
 */
function foldCase (text: string): string {
  return text.replace(NON_ASCII_CHARS, (char) => {
    for (const mapped of [char.toLowerCase(), char.toUpperCase()]) {
      const letters = mapped.replace('\u0307', '')
      if (/^[A-Za-z]+$/.test(letters)) return letters
    }
    return char
  }).toLowerCase()
}

function patternOf (prefix: string, caseInsensitive: boolean): PrefixPattern {
  if (prefix === '/') return []
  return prefix.slice(1).split('/').map((segment) => {
    if (segment.includes(':')) return null
    const forms = decodedForms(segment)
    return canonical(forms === undefined ? segment : forms[forms.length - 1] as string, caseInsensitive)
  })
}

function isPreferred (other: PrefixPattern, own: PrefixPattern): boolean {
  const common = Math.min(other.length, own.length)
  for (let i = 0; i < common; i++) {
    const theirs = other[i]
    const ours = own[i]
    if (theirs === ours) continue
    // A param against a static segment: the static one wins. Two different
    // literals never match the same path.
    return ours === null && theirs !== null
  }
  return other.length > own.length
}

function matches (pattern: PrefixPattern, segments: readonly string[]): boolean {
  if (segments.length < pattern.length) return false
  return pattern.every((literal, i) => literal === null || literal === segments[i])
}

/**
 * The path to send upstream: base path + (rewritten) prefix + the rest, with
 * only the leading prefix replaced. Params in `rewritePrefix` take the
 * request's values.
 */
export function upstreamPath (target: PathTarget, rawPath: string, params: Record<string, string>): string {
  const { prefix, rest } = splitPrefix(target, rawPath)
  const leading = target.rewritePrefix === undefined
    ? prefix
    : target.rewritePrefix.replace(/:([A-Za-z0-9_]+)/g, (_, name: string) => encodeURIComponent(params[name] ?? ''))
  const path = target.basePath + leading + rest
  return path === '' ? '/' : path
}

/** Throws unless `path` is a safe path inside the target's upstream base path. */
export function assertInsideBase (target: PathTarget, path: string): void {
  if (!isSafePath(path) || !path.startsWith('/') || path.startsWith('//') ||
      (target.basePath !== '' && path !== target.basePath && !path.startsWith(target.basePath + '/'))) {
    throw new PathNotAllowedError()
  }
}
