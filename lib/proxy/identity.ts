import { createSigner } from 'fast-jwt'
import type { GatehouseClaims, GatehouseContext } from '../types.js'
import type { Composed } from './compose.js'
import type { ResolvedIdentity, ResolvedIdentityToken } from './identity-options.js'

/*
 * Request-time half of `targets[].identity`. Claims become headers on the
 * outgoing request before the first middleware (HTTP and WebSocket upgrades
 * share `run`); the minted token is added on the wire with the credentials,
 * so no middleware sees, logs or replaces it.
 */

// Visible ASCII but `%`: sent as it is. Anything else is percent-encoded (UTF-8).
const PLAIN = /^[\x21-\x24\x26-\x7e]+$/
// Minted tokens kept per claims set; a bounded map, oldest dropped first.
const MINTED_CACHE_SIZE = 1000

/**
 * A claim as a header value that cannot split or corrupt the header line:
 * visible ASCII except `%` as it is, every other byte of its UTF-8 form
 * (space, CR, LF, controls, DEL, `%`, non-ASCII) as `%XX`, so an upstream
 * reads it back with `decodeURIComponent`. `undefined` for a claim that is
 * missing, empty or not a string, number or boolean.
 */
export function headerSafe (claim: unknown): string | undefined {
  let value: string
  if (typeof claim === 'string') value = claim
  else if (typeof claim === 'number' || typeof claim === 'boolean') value = String(claim)
  else return undefined
  if (value === '') return undefined
  if (PLAIN.test(value)) return value
  let encoded = ''
  for (const byte of Buffer.from(value, 'utf8')) {
    encoded += byte > 0x20 && byte < 0x7f && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte < 16 ? '0' : ''}${byte.toString(16).toUpperCase()}`
  }
  return encoded
}

/** Sets the identity headers of `claims` on `headers`; a claim that cannot be sent leaves its header absent. */
export function setIdentityHeaders (identity: ResolvedIdentity, claims: GatehouseClaims, headers: Record<string, unknown>): void {
  for (const [name, claim] of identity.headers) {
    const value = headerSafe(claims[claim])
    if (value !== undefined) headers[name] = value
  }
}

/** `run` with the identity headers set on the outgoing request before any middleware. */
export function withIdentityHeaders (run: Composed, identity: ResolvedIdentity | undefined): Composed {
  if (identity === undefined || identity.headers.length === 0) return run
  return function runWithIdentity (ctx, terminal) {
    // Refused at register on public targets: a verified caller is always there.
    setIdentityHeaders(identity, ctx.user as GatehouseClaims, ctx.request.headers)
    return run(ctx, terminal)
  }
}

interface Minted { readonly headers: Readonly<Record<string, string>>, readonly renewAt: number }

/**
 * The minter of a target's upstream tokens: the chosen claims of the caller,
 * the target's `aud`, the gateway's `iss`, `iat`/`exp` and `kid`. A token is
 * reused for the same claims during the first half of its life, so an
 * upstream always gets one with at least half its lifetime left, and an
 * asymmetric signature (about a millisecond for RS256) is paid once per
 * caller and half-life rather than per request.
 */
export function createMinter (token: ResolvedIdentityToken): (ctx: GatehouseContext<any>) => Readonly<Record<string, string>> {
  const sign = createSigner({
    key: token.key,
    algorithm: token.algorithm,
    ...(token.kid === undefined ? {} : { kid: token.kid }),
    expiresIn: token.expiresInSeconds * 1000,
    aud: token.audience,
    ...(token.issuer === undefined ? {} : { iss: token.issuer })
  })
  const cache = new Map<string, Minted>()
  const halfLife = token.expiresInSeconds * 500
  return function mint (ctx) {
    const claims = ctx.user as GatehouseClaims
    const payload: Record<string, unknown> = {}
    for (const name of token.claims) {
      if (claims[name] !== undefined) payload[name] = claims[name]
    }
    const key = JSON.stringify(payload)
    const now = Date.now()
    const cached = cache.get(key)
    if (cached !== undefined && cached.renewAt > now) return cached.headers
    if (cached !== undefined) cache.delete(key)
    else if (cache.size >= MINTED_CACHE_SIZE) cache.delete(cache.keys().next().value as string)
    const headers = Object.freeze({ [token.header]: token.scheme + sign(payload) })
    cache.set(key, { headers, renewAt: now + halfLife })
    return headers
  }
}
