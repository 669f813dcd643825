import type { ResolvedKey } from '../auth/keys-options.js'
import { duration, fail, headerName, isObject, knownKeys } from '../options/validate.js'
import type { TargetOptions, TokenAlgorithm } from '../types.js'
import { GATEWAY_SET, HOP_BY_HOP } from './headers-options.js'

/*
 * Register-time half of `targets[].identity`: which claims go upstream as
 * headers, and how the token minted for the upstream is signed. The header
 * names are checked here once, so a request only copies values.
 */

export const DEFAULT_IDENTITY_TOKEN_SECONDS = 60
// Long enough for any clock skew between gateway and upstream, short enough
// that a leaked token (an upstream's log) is worth little.
export const MAX_IDENTITY_TOKEN_SECONDS = 3600
export const DEFAULT_IDENTITY_CLAIMS: readonly string[] = Object.freeze(['sub'])

const IDENTITY_KEYS = ['headers', 'token']
const TOKEN_KEYS = ['audience', 'expiresIn', 'claims', 'header']
// The gateway sets these in a minted token; a caller's copy would be a lie.
const TIME_AND_TARGET_CLAIMS = new Set(['iss', 'aud', 'exp', 'iat', 'nbf'])
// Set by the gateway itself (or the upgrade): an identity header may not replace them.
const GATEWAY_HEADERS = new Set(['authorization', 'host', 'expect', ...GATEWAY_SET])

/** How the token for the upstream is signed: the gateway's current key, at register. */
export interface ResolvedIdentityToken {
  readonly key: string | Buffer
  readonly algorithm: TokenAlgorithm
  readonly kid: string | undefined
  readonly issuer: string | undefined
  readonly audience: string
  readonly expiresInSeconds: number
  readonly claims: readonly string[]
  /** Lower-case header name. */
  readonly header: string
  /** `'Bearer '` in `authorization`, `''` elsewhere. */
  readonly scheme: string
}

export interface ResolvedIdentity {
  /** Header name (lower case) and the claim it carries. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly token: ResolvedIdentityToken | undefined
  /** Every header name identity sets: the caller's copies are dropped before any middleware. */
  readonly names: readonly string[]
}

/** What of the rest of the options identity must agree with. */
export interface IdentityContext {
  /** The names the target's credentials own; `undefined` for the deprecated function form, which declares none. */
  readonly credentialNames: readonly string[] | undefined
  /** The gateway's current signing key, `undefined` when it only verifies. */
  readonly signing: ResolvedKey | undefined
  readonly issuer: string | undefined
  readonly audience: string | undefined
}

function identityHeaderName (
  value: unknown, option: string, taken: ReadonlySet<string>, ctx: IdentityContext, target: TargetOptions<any, any>, token = false
): string {
  const name = headerName(value, option)
  // Authorization is where a minted token goes by default; never a claim's place.
  if (HOP_BY_HOP.has(name) || name.startsWith('sec-websocket-') || (GATEWAY_HEADERS.has(name) && !(token && name === 'authorization'))) {
    fail(option, `a header name other than hop-by-hop, Sec-WebSocket-*, Host, Expect, ${token ? '' : 'Authorization, '}X-Forwarded-For/-Host/-Proto`)
  }
  if (ctx.credentialNames?.includes(name) === true) fail(option, `a header name the target's credentials do not set ("${name}" is one)`)
  if (taken.has(name)) fail(option, `a header name identity does not already set ("${name}" is used twice)`)
  const forwarded = Array.isArray(target.forwardHeaders) ? target.forwardHeaders : []
  if (forwarded.some((listed: unknown) => typeof listed === 'string' && listed.toLowerCase() === name)) {
    fail(option, `a header name not in forwardHeaders ("${name}" would be both the caller's and the gateway's)`)
  }
  return name
}

function claimName (value: unknown, option: string): string {
  if (typeof value !== 'string' || value.length === 0) fail(option, 'a claim name, a non-empty string')
  return value
}

function resolveToken (value: unknown, at: string, taken: ReadonlySet<string>, ctx: IdentityContext, target: TargetOptions<any, any>): ResolvedIdentityToken {
  if (!isObject(value)) fail(at, '{ audience, expiresIn?, claims?, header? }')
  knownKeys(value, at, TOKEN_KEYS)
  const signing = ctx.signing
  if (signing?.signKey === undefined) {
    fail(at, 'a gateway that can sign: auth.secret, auth.privateKey or a first auth.keys entry with its private key (a verify-only or JWKS-only gateway cannot mint tokens)')
  }
  // Without an audience of its own, the gateway would accept the tokens it
  // mints for upstreams as callers' tokens: an upstream could replay one here.
  if (ctx.audience === undefined) fail('auth.audience', `set when ${at} is: the gateway must refuse the tokens it mints for upstreams`)
  const { audience } = value
  if (typeof audience !== 'string' || audience.length === 0 || audience === ctx.audience) {
    fail(`${at}.audience`, 'the upstream\'s audience, a non-empty string other than auth.audience')
  }
  let claims = DEFAULT_IDENTITY_CLAIMS
  if (value.claims !== undefined) {
    if (!Array.isArray(value.claims) || value.claims.length === 0) fail(`${at}.claims`, 'a non-empty array of claim names')
    claims = [...new Set(value.claims.map((claim: unknown, index) => {
      const name = claimName(claim, `${at}.claims[${index}]`)
      if (TIME_AND_TARGET_CLAIMS.has(name)) fail(`${at}.claims[${index}]`, 'a claim other than iss, aud, exp, iat, nbf (the gateway sets them)')
      return name
    }))]
  }
  const header = identityHeaderName(value.header ?? 'authorization', `${at}.header`, taken, ctx, target, true)
  return {
    key: signing.signKey,
    algorithm: signing.algorithm,
    kid: signing.kid,
    issuer: ctx.issuer,
    audience,
    expiresInSeconds: duration(value.expiresIn, `${at}.expiresIn`, DEFAULT_IDENTITY_TOKEN_SECONDS, { max: MAX_IDENTITY_TOKEN_SECONDS }),
    claims,
    header,
    scheme: header === 'authorization' ? 'Bearer ' : ''
  }
}

/** Resolves `targets[i].identity`; `undefined` when it is not set. */
export function resolveIdentity (target: TargetOptions<any, any>, at: string, ctx: IdentityContext): ResolvedIdentity | undefined {
  const value: unknown = target.identity
  if (value === undefined) return undefined
  const where = `${at}.identity`
  const shape = '{ headers?, token? } with at least one of them'
  if (!isObject(value)) fail(where, shape)
  knownKeys(value, where, IDENTITY_KEYS)
  if (value.headers === undefined && value.token === undefined) fail(where, shape)
  if (target.public === true) fail(where, 'undefined on a public target: it has no verified caller')
  if (ctx.credentialNames === undefined) {
    fail(`${at}.credentials`, `{ headers, compute } rather than a bare function when ${where} is set, so their header names cannot collide`)
  }
  const taken = new Set<string>()
  const headers: Array<readonly [string, string]> = []
  if (value.headers !== undefined) {
    if (!isObject(value.headers) || Object.keys(value.headers).length === 0) fail(`${where}.headers`, 'an object of header name to claim name, not empty')
    for (const [raw, claim] of Object.entries(value.headers)) {
      const name = identityHeaderName(raw, `${where}.headers.${raw}`, taken, ctx, target)
      taken.add(name)
      headers.push(Object.freeze([name, claimName(claim, `${where}.headers.${raw}`)] as const))
    }
  }
  const token = value.token === undefined ? undefined : resolveToken(value.token, `${where}.token`, taken, ctx, target)
  if (token !== undefined) taken.add(token.header)
  return Object.freeze({ headers: Object.freeze(headers), token, names: Object.freeze([...taken]) })
}
