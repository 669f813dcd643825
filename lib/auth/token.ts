import { randomBytes } from 'node:crypto'
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { TokenExpiredError, TokenInvalidError, TokenMissingError, TokenRevokedError } from '../errors.js'
import type { ResolvedAuth } from '../options.js'
import type { GatehouseClaims } from '../types.js'
import { fromStore, storeKeys } from './store.js'
import type { GatehouseStore } from './store.js'
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

export interface TokenService {
  /** Signs claims; `session` (the refresh family id) becomes the `sid` claim. */
  sign: (claims: GatehouseClaims, session?: string) => string
  verify: (token: string) => GatehouseClaims
  /**
   * Resolves true when logout revoked this token. Present only when access
   * token revocation is on, so the usual path stays synchronous.
   */
  revoked?: (claims: GatehouseClaims) => Promise<boolean>
}

/** The `jti` of verified claims when it can be used as a store key, else `undefined`. */
export function tokenId (claims: GatehouseClaims): string | undefined {
  const { jti } = claims
  return typeof jti === 'string' && jti.length > 0 && jti.length <= MAX_JTI_LENGTH ? jti : undefined
}

/**
 * Registers @fastify/jwt with the algorithm pinned, `exp` required and
 * issuer/audience checked, and returns sign/verify functions that throw only
 * gatehouse errors.
 */
export async function registerTokens (scope: FastifyInstance, auth: ResolvedAuth, store?: GatehouseStore): Promise<TokenService> {
  const secret = auth.algorithm.startsWith('HS')
    ? auth.verifyKey
    : auth.signKey === undefined ? { public: auth.verifyKey } : { private: auth.signKey, public: auth.verifyKey }
  await scope.register(fastifyJwt, {
    secret,
    sign: {
      algorithm: auth.algorithm,
      // @fastify/jwt reads a number here as seconds.
      expiresIn: auth.expiresInSeconds,
      ...(auth.issuer === undefined ? {} : { iss: auth.issuer }),
      ...(auth.audience === undefined ? {} : { aud: auth.audience })
    },
    verify: {
      algorithms: [auth.algorithm],
      // fast-jwt checks iss/aud only when present: require them when configured.
      requiredClaims: ['exp', ...(auth.issuer === undefined ? [] : ['iss']), ...(auth.audience === undefined ? [] : ['aud'])],
      clockTolerance: auth.clockToleranceSeconds * 1000,
      ...(auth.issuer === undefined ? {} : { allowedIss: auth.issuer }),
      ...(auth.audience === undefined ? {} : { allowedAud: auth.audience })
    }
  })
  const jwt = scope.jwt
  const { refresh, logout } = auth.lifecycle
  const revocation = logout !== false && logout.revokeAccessToken && store !== undefined ? store : undefined
  const verified = new VerifiedTokens(VERIFY_CACHE_SIZE)

  return {
    sign (claims, session) {
      // Time claims are the gateway's to set, never the verifier's; so are the
      // token id and the session id when the lifecycle relies on them.
      const { exp, iat, nbf, ...rest } = claims
      if (refresh !== false) {
        delete rest.sid
        if (session !== undefined) rest.sid = session
      }
      if (revocation !== undefined) rest.jti = randomBytes(JTI_BYTES).toString('base64url')
      return jwt.sign(rest)
    },
    verify (token) {
      const now = Date.now()
      const known = verified.get(token, now)
      if (known !== undefined) return known
      let claims: GatehouseClaims
      try {
        claims = jwt.verify<GatehouseClaims>(token)
      } catch (err) {
        throw (err as { code?: unknown }).code === 'FAST_JWT_EXPIRED' ? new TokenExpiredError() : new TokenInvalidError()
      }
      return verified.add(token, claims, now)
    },
    ...(revocation === undefined
      ? {}
      : {
          async revoked (claims: GatehouseClaims): Promise<boolean> {
            // Tokens signed before revocation was turned on have no jti: they cannot have been revoked.
            const jti = tokenId(claims)
            if (jti === undefined) return false
            return await fromStore(revocation.get(storeKeys.revokedJti(jti))) !== undefined
          }
        })
  }
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
 * `find` locates the token; WebSocket upgrades pass one that also reads their other carriers.
 */
export function requireToken (
  tokens: TokenService,
  find: (request: FastifyRequest) => string | undefined = bearerToken
): onRequestHookHandler {
  return function verifyBearerToken (request, _reply, done) {
    let claims: GatehouseClaims
    try {
      const token = find(request)
      if (token === undefined) throw new TokenMissingError()
      claims = tokens.verify(token)
    } catch (err) {
      done(err as Error)
      return
    }
    if (tokens.revoked === undefined) {
      request.user = claims
      done()
      return
    }
    tokens.revoked(claims).then((revoked) => {
      if (revoked) {
        done(new TokenRevokedError())
        return
      }
      request.user = claims
      done()
    }, done)
  }
}
