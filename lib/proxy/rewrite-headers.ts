import { isIP } from 'node:net'
import type { FastifyRequest } from 'fastify'
import type { ResolvedTarget } from '../options/resolved.js'
import { requestOrigin } from '../transport/public-origin.js'
import type { HeaderMap } from '../types.js'
import { splitPrefix } from './prefix.js'

/** Where a response is seen from: the gateway's side and the upstream's. */
interface Mapping {
  /** Undefined when the request's Host is unusable: Location stays relative. */
  readonly publicOrigin: string | undefined
  /** The configured publicOrigin's hostname, if one is configured. */
  readonly publicHostname: string | undefined
  /** The request path's part the target prefix matched, e.g. `/shops/7`. */
  readonly publicPrefix: string
  /** The same place on the upstream, e.g. `/api/v2/7` ('' for the root). */
  readonly upstreamPrefix: string
  /** The target's upstream base path, e.g. `/api` ('' for none). */
  readonly basePath: string
  readonly upstreams: ReadonlySet<string>
  readonly upstreamHostnames: ReadonlySet<string>
}

function pathOf (url: string): string {
  const q = url.search(/[?#]/)
  return q === -1 ? url : url.slice(0, q)
}

function mapping (target: ResolvedTarget, request: FastifyRequest, upstreamPath: string): Mapping {
  const settings = target.transport.rewrite
  // Never `new URL()` on what the client sent: requestOrigin validated it or gave up.
  const publicOrigin = settings.publicOrigin ?? requestOrigin(request)
  const { prefix: publicPrefix, rest } = splitPrefix(target, pathOf(request.url))
  // The upstream path ends with the same rest unless a middleware changed it.
  const upstreamPrefix = rest !== '' && upstreamPath.endsWith(rest)
    ? upstreamPath.slice(0, upstreamPath.length - rest.length)
    : rest === '' ? upstreamPath.replace(/\/$/, '') : target.basePath
  return {
    publicOrigin,
    // Validated at register, so this cannot throw.
    publicHostname: settings.publicOrigin === undefined ? undefined : new URL(settings.publicOrigin).hostname,
    publicPrefix,
    upstreamPrefix,
    basePath: target.basePath,
    upstreams: new Set(target.transport.origins),
    upstreamHostnames: new Set(target.transport.origins.map((origin) => new URL(origin).hostname.toLowerCase()))
  }
}

/** An upstream path under the upstream prefix, moved under the public prefix; others unchanged. */
function mapPath (path: string, m: Mapping): string {
  const up = m.upstreamPrefix
  if (up !== '' && path !== up && !path.startsWith(up + '/')) return path
  const mapped = m.publicPrefix + path.slice(up.length)
  return mapped === '' ? '/' : mapped
}

/**
 * A cookie `Path` maps as a URL path does, and one that covers the whole
 * upstream prefix from inside the base path (`Path=/api` for `/api/inv`,
 * the app's own root when the prefix is kept upstream) covers the whole
 * public prefix: left as it was, the browser would never send it back
 * through the gateway. Any other Path outside the mapping becomes the
 * public prefix, so a cookie set through one target comes back only
 * through it.
 */
function mapCookiePath (path: string, m: Mapping): string {
  const up = m.upstreamPrefix
  const base = m.basePath
  const inBase = base !== '' && (path === base || path.startsWith(base + '/'))
  if (inBase && path !== up && up.startsWith(path.endsWith('/') ? path : path + '/')) return m.publicPrefix === '' ? '/' : m.publicPrefix
  const mapped = mapPath(path, m)
  const prefix = m.publicPrefix
  if (prefix === '' || mapped === prefix || mapped.startsWith(prefix + '/')) return mapped
  // A Path outside what this target exposes (`Path=/`) would make browsers
  // send the cookie to every other target and to the host's routes: it is
  // confined to this target's public prefix.
  return prefix
}

function rewriteLocation (value: string, m: Mapping): string {
  if (value.startsWith('/') && !value.startsWith('//')) {
    const path = pathOf(value)
    return mapPath(path, m) + value.slice(path.length)
  }
  let url: URL
  try {
    url = new URL(value)
  } catch {
    // Relative references resolve against the public URL already.
    return value
  }
  if (!m.upstreams.has(url.origin)) return value
  // Without a usable public origin, a relative reference still leads the
  // client to the same place, and never to the internal address.
  return (m.publicOrigin ?? '') + mapPath(url.pathname, m) + url.search + url.hash
}

function rewriteCookie (cookie: string, m: Mapping): string {
  const parts = cookie.split(';')
  const out: string[] = [parts[0] as string]
  for (const part of parts.slice(1)) {
    const eq = part.indexOf('=')
    const name = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase()
    const value = eq === -1 ? '' : part.slice(eq + 1).trim()
    if (name === 'domain' && m.upstreamHostnames.has(value.replace(/^\./, '').toLowerCase())) {
      // Host-only (no Domain) binds the cookie to exactly the host the client
      // used; a configured public origin with a DNS name is set explicitly.
      if (m.publicHostname !== undefined && isIP(m.publicHostname) === 0) out.push(` Domain=${m.publicHostname}`)
      continue
    }
    if (name === 'path' && value.startsWith('/')) {
      out.push(` Path=${mapCookiePath(value, m)}`)
      continue
    }
    out.push(part)
  }
  return out.join(';')
}

/**
 * Rewrites `Location` / `Content-Location` and `Set-Cookie` (`Domain`, `Path`)
 * that point at the upstream's internal address so that they point at the
 * gateway's public origin and prefix. Redirects themselves are never
 * followed: they reach the client with the rewritten `Location`.
 * Never throws, whatever the client's Host: without a usable public origin an
 * upstream URL becomes a relative `Location` and a cookie stays host-only.
 * Mutates and returns `headers`.
 */
export function rewriteResponseHeaders (headers: HeaderMap, target: ResolvedTarget, request: FastifyRequest, upstreamPath: string): HeaderMap {
  const settings = target.transport.rewrite
  const location = settings.location && (headers.location !== undefined || headers['content-location'] !== undefined)
  const cookies = settings.cookies && headers['set-cookie'] !== undefined
  if (!location && !cookies) return headers
  const m = mapping(target, request, upstreamPath)
  if (location) {
    for (const name of ['location', 'content-location']) {
      const value = headers[name]
      if (typeof value === 'string') headers[name] = rewriteLocation(value, m)
    }
  }
  if (cookies) {
    const value = headers['set-cookie'] as string | string[]
    headers['set-cookie'] = Array.isArray(value) ? value.map((c) => rewriteCookie(c, m)) : rewriteCookie(value, m)
  }
  return headers
}
