import type { FastifyRequest } from 'fastify'
import type { HeaderMap } from '../types.js'
import { FORWARDED_PREFIX } from './headers-options.js'
import type { ResolvedHeaderPolicy } from './headers-options.js'

function listTokens (value: string | string[] | undefined): string[] {
  if (value === undefined) return []
  const joined = Array.isArray(value) ? value.join(',') : value
  const tokens: string[] = []
  for (const token of joined.split(',')) {
    const name = token.trim().toLowerCase()
    if (name !== '') tokens.push(name)
  }
  return tokens
}

/** The header names a Connection value lists; the usual values list none. */
function connectionTokens (value: string | string[] | undefined): string[] {
  return value === undefined || value === 'keep-alive' || value === 'close' ? [] : listTokens(value)
}

/**
 * The client address chain for X-Forwarded-For, farthest first. Without
 * `trustProxy` it is the peer alone. With it, `request.ips` is the peer, the
 * proxies Fastify's trust function accepts, then the first address they vouch
 * for (the client): what a trusted proxy states is kept, entries the caller
 * wrote before it are not.
 */
function forwardedFor (request: FastifyRequest): string | undefined {
  const chain = request.ips
  if (chain === undefined || chain.length === 0) return request.ip
  let value = chain[chain.length - 1] as string
  for (let i = chain.length - 2; i >= 0; i--) value += `, ${chain[i] as string}`
  return value
}

/**
 * The headers to send upstream: the caller's, minus what the target's policy
 * drops and any header the caller names in Connection, plus the gateway's own
 * X-Forwarded-For, -Host and -Proto. Credentials are added later, so no
 * request header can remove them.
 */
export function outgoingHeaders (request: FastifyRequest, policy: ResolvedHeaderPolicy): HeaderMap {
  const incoming = request.headers
  const named = connectionTokens(incoming.connection)
  const { dropRequest, forward } = policy
  const headers: HeaderMap = {}
  for (const name in incoming) {
    if (dropRequest.has(name) || (name.startsWith(FORWARDED_PREFIX) && !forward.has(name)) || (named.length > 0 && named.includes(name))) continue
    headers[name] = incoming[name]
  }
  const address = forwardedFor(request)
  // A socket already gone has no address: state none rather than a wrong one.
  if (address !== undefined) headers['x-forwarded-for'] = address
  headers['x-forwarded-host'] = request.host
  headers['x-forwarded-proto'] = request.protocol
  return headers
}

/** The upstream's response headers a client may see. */
export function incomingHeaders (upstream: HeaderMap, policy: ResolvedHeaderPolicy): HeaderMap {
  const named = connectionTokens(upstream.connection)
  const drop = policy.dropResponse
  const headers: HeaderMap = {}
  for (const name in upstream) {
    if (drop.has(name) || (named.length > 0 && named.includes(name))) continue
    headers[name] = upstream[name]
  }
  return headers
}

/** Adds `accept-encoding` to Vary unless it is there (or Vary is `*`). */
export function varyOnEncoding (headers: HeaderMap): void {
  const vary = headers.vary
  if (vary === undefined) {
    headers.vary = 'accept-encoding'
    return
  }
  const tokens = listTokens(vary)
  if (!tokens.includes('accept-encoding') && !tokens.includes('*')) {
    headers.vary = `${Array.isArray(vary) ? vary.join(', ') : vary}, accept-encoding`
  }
}
