import type { FastifyRequest } from 'fastify'
import type { HeaderMap } from '../types.js'

/*
 * Header policy in both directions. Hop-by-hop headers (RFC 9110 7.6.1) and
 * any header a peer names in Connection stay on their own hop. On the way up
 * the caller's credentials and forwarding claims go too: the gateway states
 * who is calling, the caller does not.
 */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']

const DROP_REQUEST = new Set([
  ...HOP_BY_HOP,
  'host', 'authorization', 'proxy-authorization', 'expect', 'forwarded',
  'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto'
])

const DROP_RESPONSE = new Set([...HOP_BY_HOP, 'proxy-authenticate'])

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
 * The headers to send upstream: the caller's, minus hop-by-hop, credentials,
 * forwarding claims and any header in `strip`, plus X-Forwarded-*.
 */
export function outgoingHeaders (request: FastifyRequest, strip: ReadonlySet<string>): HeaderMap {
  const incoming = request.headers
  const named = connectionTokens(incoming.connection)
  const headers: HeaderMap = {}
  for (const name in incoming) {
    if (DROP_REQUEST.has(name) || strip.has(name) || (named.length > 0 && named.includes(name))) continue
    headers[name] = incoming[name]
  }
  const forwardedFor = incoming['x-forwarded-for']
  const previous = Array.isArray(forwardedFor) ? forwardedFor.join(', ') : forwardedFor
  headers['x-forwarded-for'] = previous === undefined || previous === '' ? request.ip : `${previous}, ${request.ip}`
  headers['x-forwarded-host'] = request.host
  headers['x-forwarded-proto'] = request.protocol
  return headers
}

/** The upstream's response headers a client may see. */
export function incomingHeaders (upstream: HeaderMap): HeaderMap {
  const named = connectionTokens(upstream.connection)
  const headers: HeaderMap = {}
  for (const name in upstream) {
    if (DROP_RESPONSE.has(name) || (named.length > 0 && named.includes(name))) continue
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
