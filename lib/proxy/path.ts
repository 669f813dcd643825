import { PathTraversalError } from '../errors.js'
import type { ResolvedTarget } from '../options.js'

// Decoding more than this many times is itself a sign of an attack.
const MAX_DECODE_ROUNDS = 3

/**
 * True when a raw request path can reach the upstream as it is: however often
 * it is percent-decoded, no dot segment, no `..` at a segment edge (which
 * reply-from refuses too), no backslash or NUL, and no encoded slash or
 * backslash that an upstream might turn into a separator.
 */
export function isSafePath (rawPath: string): boolean {
  let path = rawPath
  for (let round = 0; round <= MAX_DECODE_ROUNDS; round++) {
    if (UNSAFE.test(path) || hasDotSegment(path)) return false
    if (!path.includes('%')) return true
    let decoded: string
    try {
      decoded = decodeURIComponent(path)
    } catch {
      return false
    }
    if (decoded === path) return true
    path = decoded
  }
  return false
}

// Encoded slash, backslash or NUL; a raw backslash or NUL; `..` at a segment edge.
// eslint-disable-next-line no-control-regex
const UNSAFE = /%(2f|5c|00)|[\\\u0000]|\/\.\.|\.\.\//i

// A `.` or `..` segment: between slashes or at either end.
const DOT_SEGMENT = /(?:^|\/)\.\.?(?:\/|$)/

function hasDotSegment (path: string): boolean {
  return DOT_SEGMENT.test(path)
}

/** Names of the params in a target prefix, in order (`'/shops/:shopId'` gives `['shopId']`). */
export function prefixParams (prefix: string): string[] {
  return [...prefix.matchAll(/:([A-Za-z0-9_]+)/g)].map((match) => match[1] as string)
}

/** Raw path of a request URL, without the query string. */
export function splitUrl (url: string): { path: string, query: string } {
  const q = url.indexOf('?')
  return q === -1 ? { path: url, query: '' } : { path: url.slice(0, q), query: url.slice(q + 1) }
}

/**
 * The path to send upstream: base path + (rewritten) prefix + the rest, with
 * only the leading prefix replaced. Params in `rewritePrefix` take the
 * request's values.
 */
export function upstreamPath (target: ResolvedTarget, rawPath: string, params: Record<string, string>): string {
  const { prefix, rest } = splitPrefix(target, rawPath)
  const leading = target.rewritePrefix === undefined
    ? prefix
    : target.rewritePrefix.replace(/:([A-Za-z0-9_]+)/g, (_, name: string) => encodeURIComponent(params[name] ?? ''))
  const path = target.basePath + leading + rest
  return path === '' ? '/' : path
}

/**
 * Splits a raw request path into the part the target's prefix matched and the
 * rest (`''` or starting with `/`), both still raw.
 */
export function splitPrefix (target: ResolvedTarget, rawPath: string): { prefix: string, rest: string } {
  if (target.prefixSegments === 0) return { prefix: '', rest: rawPath }
  // Prefix params match one segment each, so the prefix spans exactly this many.
  let end = 0
  for (let i = 0; i < target.prefixSegments; i++) {
    const next = rawPath.indexOf('/', end + 1)
    end = next === -1 ? rawPath.length : next
  }
  return { prefix: rawPath.slice(0, end), rest: rawPath.slice(end) }
}

/** Throws unless `path` is a safe path inside the target's upstream base path. */
export function assertInsideBase (target: ResolvedTarget, path: string): void {
  if (!isSafePath(path) || !path.startsWith('/') || path.startsWith('//') ||
      (target.basePath !== '' && path !== target.basePath && !path.startsWith(target.basePath + '/'))) {
    throw new PathTraversalError()
  }
}
