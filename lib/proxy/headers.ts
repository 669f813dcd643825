import type { FastifyRequest } from 'fastify'
import { InvalidOptionError } from '../errors.js'
import type { HeaderMap, TargetOptions } from '../types.js'

/*
 * Header policy in both directions, one list each way, resolved per target at
 * register so a request costs one Set lookup per header.
 *
 * Hop-by-hop headers (RFC 9110 7.6.1) and any header a peer names in
 * Connection stay on their own hop. `Proxy` is here too: a CGI-style upstream
 * turns it into HTTP_PROXY (httpoxy).
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-authorization', 'proxy-authenticate', 'http2-settings', 'proxy'
])

// The gateway states these from what it saw; the caller's copies never pass.
const GATEWAY_SET = ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto']

// Never sent upstream, whatever a target allows: the caller's credentials,
// framing the gateway handles itself (Host, 100-continue) and the above.
const NEVER_FORWARDED = [...HOP_BY_HOP, 'host', 'authorization', 'expect', ...GATEWAY_SET]

/*
 * Claims about the client's address or identity, or overrides of the URL or
 * method, that upstream frameworks trust: the caller's copies are dropped
 * unless a target lets one through (`forwardHeaders`). Every other
 * `X-Forwarded-*` name (-Prefix, -Port, -Server, -User, -Email,
 * -Access-Token ...) is dropped the same way, by its prefix. The client
 * address names are those `request-ip` and similar libraries read.
 */
const CLAIM_HEADERS = [
  'forwarded', 'x-forwarded', 'forwarded-for', 'x-real-ip', 'true-client-ip', 'x-client-ip', 'x-cluster-client-ip',
  'cf-connecting-ip', 'fastly-client-ip', 'x-appengine-user-ip',
  'x-original-url', 'x-original-uri', 'x-rewrite-url', 'x-original-method',
  'x-http-method-override', 'x-http-method', 'x-method-override'
]
const FORWARDED_PREFIX = 'x-forwarded-'

/** Server banners an upstream answers with; hidden from clients by default. */
export const DEFAULT_HIDDEN_RESPONSE_HEADERS: readonly string[] = Object.freeze([
  'server', 'x-powered-by', 'x-aspnet-version', 'x-aspnetmvc-version', 'x-runtime', 'x-generator',
  'x-backend-server', 'x-sourcefiles'
])

// Hiding these would leave a body the client cannot frame or decode.
const BODY_HEADERS = new Set(['content-length', 'content-encoding', 'content-range'])
// A header name as RFC 9110 defines a token.
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** A target's header policy, resolved at register. */
export interface ResolvedHeaderPolicy {
  /** Request header names never sent upstream (with the target's injected ones). */
  readonly dropRequest: ReadonlySet<string>
  /** `X-Forwarded-*` names the target lets through (the others are dropped by prefix). */
  readonly forward: ReadonlySet<string>
  /** Response header names never sent to the client. */
  readonly dropResponse: ReadonlySet<string>
}

function fail (option: string, expected: string): never {
  throw new InvalidOptionError(option, expected)
}

function isClaimHeader (name: string): boolean {
  return CLAIM_HEADERS.includes(name) || (name.startsWith(FORWARDED_PREFIX) && !GATEWAY_SET.includes(name))
}

function headerNames (value: unknown, option: string, expected: string, valid: (name: string) => boolean): string[] {
  if (!Array.isArray(value)) fail(option, expected)
  return value.map((name: unknown, index) => {
    const lower = typeof name === 'string' && HEADER_NAME.test(name) ? name.toLowerCase() : undefined
    if (lower === undefined || !valid(lower)) fail(`${option}[${index}]`, expected)
    return lower
  })
}

/**
 * Resolves `forwardHeaders` and `hideResponseHeaders`. `injected` are the
 * names of the target's static credential headers: a caller's copy of one
 * never passes.
 */
export function resolveHeaderPolicy (target: TargetOptions<any, any>, injected: readonly string[], at: string): ResolvedHeaderPolicy {
  const forwarded = target.forwardHeaders === undefined
    ? []
    : headerNames(target.forwardHeaders, `${at}.forwardHeaders`,
      'header names the header policy drops and a target may let through (forwarded, x-real-ip, x-forwarded-prefix, ' +
      'x-http-method-override ...); never hop-by-hop headers, Host, Authorization, Expect or X-Forwarded-For/-Host/-Proto',
      isClaimHeader)
  const hide = target.hideResponseHeaders
  const hidden = hide === undefined
    ? DEFAULT_HIDDEN_RESPONSE_HEADERS
    : hide === false
      ? []
      : headerNames(hide, `${at}.hideResponseHeaders`, 'false or header names other than Content-Length, Content-Encoding, Content-Range',
        (name) => !BODY_HEADERS.has(name))

  return Object.freeze({
    dropRequest: new Set([...NEVER_FORWARDED, ...CLAIM_HEADERS.filter((name) => !forwarded.includes(name)), ...injected]),
    forward: new Set(forwarded.filter((name) => name.startsWith(FORWARDED_PREFIX))),
    dropResponse: new Set([...HOP_BY_HOP, ...hidden])
  })
}

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
