import { fail, isHeaderName } from '../options/validate.js'
import type { TargetOptions } from '../types.js'

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
export const GATEWAY_SET = ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto']

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
export const FORWARDED_PREFIX = 'x-forwarded-'

/** Server banners an upstream answers with; hidden from clients by default. */
export const DEFAULT_HIDDEN_RESPONSE_HEADERS: readonly string[] = Object.freeze([
  'server', 'x-powered-by', 'x-aspnet-version', 'x-aspnetmvc-version', 'x-runtime', 'x-generator',
  'x-backend-server', 'x-sourcefiles'
])

// Hiding these would leave a body the client cannot frame or decode.
const BODY_HEADERS = new Set(['content-length', 'content-encoding', 'content-range'])

/** A target's header policy, resolved at register. */
export interface ResolvedHeaderPolicy {
  /** Request header names never sent upstream (with the target's injected ones). */
  readonly dropRequest: ReadonlySet<string>
  /** `X-Forwarded-*` names the target lets through (the others are dropped by prefix). */
  readonly forward: ReadonlySet<string>
  /** Response header names never sent to the client. */
  readonly dropResponse: ReadonlySet<string>
}

function isClaimHeader (name: string): boolean {
  return CLAIM_HEADERS.includes(name) || (name.startsWith(FORWARDED_PREFIX) && !GATEWAY_SET.includes(name))
}

function headerNames (value: unknown, option: string, expected: string, valid: (name: string) => boolean): string[] {
  if (!Array.isArray(value)) fail(option, expected)
  return value.map((name: unknown, index) => {
    const lower = isHeaderName(name) ? name.toLowerCase() : undefined
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
