/*
 * A target prefix against a raw request path: which params it names and
 * where it ends. A leaf: the register-time resolvers, the path guard, the
 * rewriting of the path and of Location/Set-Cookie all share it.
 */

/** The parts of a resolved target that its paths depend on. */
export interface PathTarget {
  /** Number of path segments in the prefix; params match exactly one. */
  readonly prefixSegments: number
  /** Upstream base path without a trailing slash ('' for the root). */
  readonly basePath: string
  readonly rewritePrefix: string | undefined
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
 * Splits a raw request path into the part the target's prefix matched and the
 * rest (`''` or starting with `/`), both still raw.
 */
export function splitPrefix (target: PathTarget, rawPath: string): { prefix: string, rest: string } {
  if (target.prefixSegments === 0) return { prefix: '', rest: rawPath }
  // Prefix params match one segment each, so the prefix spans exactly this many.
  let end = 0
  for (let i = 0; i < target.prefixSegments; i++) {
    const next = rawPath.indexOf('/', end + 1)
    end = next === -1 ? rawPath.length : next
  }
  return { prefix: rawPath.slice(0, end), rest: rawPath.slice(end) }
}

/** True when `route` is `prefix` or below it (a `:param` segment matches any one segment). */
export function underPrefix (route: string, prefix: string, caseInsensitive: boolean): boolean {
  if (prefix === '/') return true
  const fold = (value: string): string => caseInsensitive ? value.toLowerCase() : value
  const routeSegments = fold(route).split('/')
  const prefixSegments = fold(prefix).replace(/\/$/, '').split('/')
  if (routeSegments.length < prefixSegments.length) return false
  return prefixSegments.every((segment, index) => segment.startsWith(':') ? routeSegments[index] !== '' : segment === routeSegments[index])
}
