import { randomBytes } from 'node:crypto'
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify'
import type {} from '@fastify/jwt'
import { TokenInvalidError, TokenMissingError, TokenRevokedError } from '../errors.js'
import type { ResolvedAuth } from '../options/resolved.js'
import type { GatehouseClaims } from '../types.js'
import { fromStore, storeKeys } from './store.js'
import type { GatehouseStore } from '../types.js'
import { createKeyRing } from './keys.js'
import type { Verified } from './keys.js'
import { VerifiedTokens } from './verified.js'

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: GatehouseClaims
    user: GatehouseClaims
  }
}

// Verified tokens are cached, keyed by the whole token and never past `exp`.
const VERIFY_CACHE_SIZE = 1000
// A bearer credential as RFC 6750 allows it; anything else is not a token.
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i
const JTI_BYTES = 16
const MAX_JTI_LENGTH = 128

/** Resolves true when verified claims must be refused as revoked. */
export type RevocationCheck = (claims: GatehouseClaims) => Promise<boolean>

export interface TokenService {
  /** Signs claims; `session` (the refresh family id) becomes the `sid` claim. */
  sign: (claims: GatehouseClaims, session?: string) => string
  /** Synchronous, except for a provider token whose key set must be fetched first. */
  verify: (token: string) => GatehouseClaims | Promise<GatehouseClaims>
  /**
   * The check of HTTP requests and `verifyToken`: the token was revoked by
   * logout, or its session ended. Present only with `revokeAccessToken`, so
   * the usual path stays synchronous and lookup-free.
   */
  revoked?: RevocationCheck
  /**
   * The check of WebSocket upgrades: the HTTP one, plus the session whenever
   * refresh is on. An upgrade opens a tunnel that outlives the request, and
   * upgrades are rare enough that one lookup each costs little.
   */
  upgradeRevoked?: RevocationCheck
  /** True when `revoked` checks the session of tokens that carry a `sid`. */
  sessionChecked?: boolean
}

/** The `jti` of verified claims when it can be used as a store key, else `undefined`. */
export function tokenId (claims: GatehouseClaims): string | undefined {
  const { jti } = claims
  return typeof jti === 'string' && jti.length > 0 && jti.length <= MAX_JTI_LENGTH ? jti : undefined
}

/**
 * Looks up what logout and reuse detection leave in the store, in ONE store
 * call per check. A token of a session (a `sid`, when `session` is checked)
 * is refused once the session is gone: logout and reuse detection delete the
 * family key, and logout then writes no `jti` revocation for it, since the
 * session covers every token of it. A token without a `sid` (signed with
 * `signToken`, or with refresh off) is looked up by its `jti` (when `jti` is
 * checked). A `sid` that cannot be a store key was never issued by this
 * gateway and is refused.
 */
function revocationCheck (store: GatehouseStore, jti: boolean, session: boolean, external: WeakSet<GatehouseClaims>): RevocationCheck | undefined {
  if (!jti && !session) return undefined
  return async function revoked (claims) {
    // A provider's token is the provider's to revoke; its `sid` names no session of ours.
    if (external.has(claims)) return false
    const sid = session ? claims.sid : undefined
    if (sid !== undefined) {
      if (typeof sid !== 'string' || sid.length === 0 || sid.length > MAX_JTI_LENGTH) return true
      return await fromStore(store.get(storeKeys.family(sid))) === undefined
    }
    // Tokens signed before revocation was turned on have no jti: they cannot have been revoked.
    const id = jti ? tokenId(claims) : undefined
    if (id === undefined) return false
    return await fromStore(store.get(storeKeys.revokedJti(id))) !== undefined
  }
}

/** True when `revoked` refuses the token through its session, so a `jti` revocation would be redundant. */
export function checkedBySession (tokens: TokenService, claims: GatehouseClaims): boolean {
  return tokens.sessionChecked === true && claims.sid !== undefined
}

/**
 * Sets up the key ring (own keys, identity providers) with algorithms pinned
 * per key, `exp` required and issuer/audience checked, and returns sign/verify
 * functions that throw only gatehouse errors.
 */
export async function registerTokens (scope: FastifyInstance, auth: ResolvedAuth, store?: GatehouseStore): Promise<TokenService> {
  const ring = createKeyRing(auth, scope.log)
  // The host may have @fastify/jwt (which adds `user`) registered around us.
  if (!scope.hasRequestDecorator('user')) scope.decorateRequest('user', null as unknown as GatehouseClaims)
  if (auth.keys.jwksRoute !== false) {
    scope.get(auth.keys.jwksRoute, async (_request, reply) => {
      // Caches may keep it a while: a new key is published before it signs (see the README).
      reply.header('cache-control', 'public, max-age=300')
      return { keys: ring.publicKeys() }
    })
  }
  const { refresh, logout } = auth.lifecycle
  const revokeAccessToken = logout !== false && logout.revokeAccessToken && store !== undefined
  // Only the gateway puts a sid in tokens, and only when refresh is on.
  const sessions = refresh !== false && store !== undefined
  const external = new WeakSet<GatehouseClaims>()
  const revoked = store === undefined ? undefined : revocationCheck(store, revokeAccessToken, revokeAccessToken && sessions, external)
  const upgradeRevoked = store === undefined ? undefined : revocationCheck(store, revokeAccessToken, sessions, external)
  const verified = new VerifiedTokens(VERIFY_CACHE_SIZE)
  function remember (token: string, result: Verified, now: number): GatehouseClaims {
    const claims = verified.add(token, result.claims, now)
    if (result.external) external.add(claims)
    return claims
  }

  return {
    sign (claims, session) {
      // Time claims are the gateway's to set, never the verifier's; so are the
      // token id and the session id when the lifecycle relies on them.
      const { exp, iat, nbf, ...rest } = claims
      if (refresh !== false) {
        delete rest.sid
        if (session !== undefined) rest.sid = session
      }
      if (revokeAccessToken) rest.jti = randomBytes(JTI_BYTES).toString('base64url')
      return ring.sign(rest)
    },
    verify (token) {
      const now = Date.now()
      const known = verified.get(token, now)
      if (known !== undefined) return known
      const result = ring.verify(token)
      return result instanceof Promise ? result.then((later) => remember(token, later, Date.now())) : remember(token, result, now)
    },
    ...(revoked === undefined ? {} : { revoked }),
    ...(upgradeRevoked === undefined ? {} : { upgradeRevoked }),
    sessionChecked: revokeAccessToken && sessions
  }
}

/**
 * Verifies a token as a proxied HTTP route does: signature and claims, then,
 * when access tokens can be revoked, the store. Throws a 401 gatehouse error.
 */
export async function verifyAccessToken (tokens: TokenService, token: string): Promise<GatehouseClaims> {
  const claims = await tokens.verify(token)
  if (tokens.revoked !== undefined && await tokens.revoked(claims)) throw new TokenRevokedError()
  return claims
}

/** The bearer token of a request, or `undefined`; throws on a malformed one. */
export function bearerToken (request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (header === undefined || header === '') return undefined
  const match = BEARER.exec(header)
  if (match === null) throw new TokenInvalidError()
  return match[1]
}

/**
 * An onRequest hook that sets `request.user` from a valid bearer token or fails with 401.
 * `find` locates the token; WebSocket upgrades pass one that also reads their other carriers,
 * and `check` picks the revocation check for a request (none: no store lookup).
 */
export function requireToken (
  tokens: TokenService,
  find: (request: FastifyRequest) => string | undefined = bearerToken,
  check: (request: FastifyRequest) => RevocationCheck | undefined = () => tokens.revoked
): onRequestHookHandler {
  return function verifyBearerToken (request, _reply, done) {
    let result: GatehouseClaims | Promise<GatehouseClaims>
    try {
      const token = find(request)
      if (token === undefined) throw new TokenMissingError()
      result = tokens.verify(token)
    } catch (err) {
      done(err as Error)
      return
    }
    if (result instanceof Promise) {
      result.then((claims) => admit(request, claims, done), done)
      return
    }
    admit(request, result, done)
  }

  function admit (request: FastifyRequest, claims: GatehouseClaims, done: (err?: Error) => void): void {
    const revoked = check(request)
    if (revoked === undefined) {
      request.user = claims
      done()
      return
    }
    revoked(claims).then((revoked) => {
      if (revoked) {
        done(new TokenRevokedError())
        return
      }
      request.user = claims
      done()
    }, done)
  }
}
