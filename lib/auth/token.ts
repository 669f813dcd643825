import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { TokenExpiredError, TokenInvalidError, TokenMissingError } from '../errors.js'
import type { ResolvedAuth } from '../options.js'
import type { GatehouseClaims } from '../types.js'

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: GatehouseClaims
    user: GatehouseClaims
  }
}

// Verified tokens are cached by fast-jwt, keyed by the whole token and never past `exp`.
const VERIFY_CACHE_SIZE = 1000
// A bearer credential as RFC 6750 allows it; anything else is not a token.
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i

export interface TokenService {
  sign: (claims: GatehouseClaims) => string
  verify: (token: string) => GatehouseClaims
}

/**
 * Registers @fastify/jwt with the algorithm pinned, `exp` required and
 * issuer/audience checked, and returns sign/verify functions that throw only
 * gatehouse errors.
 */
export async function registerTokens (scope: FastifyInstance, auth: ResolvedAuth): Promise<TokenService> {
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
      cache: VERIFY_CACHE_SIZE,
      ...(auth.issuer === undefined ? {} : { allowedIss: auth.issuer }),
      ...(auth.audience === undefined ? {} : { allowedAud: auth.audience })
    }
  })
  const jwt = scope.jwt

  return {
    sign (claims) {
      // Time claims are the gateway's to set, never the verifier's.
      const { exp, iat, nbf, ...rest } = claims
      return jwt.sign(rest)
    },
    verify (token) {
      try {
        return jwt.verify<GatehouseClaims>(token)
      } catch (err) {
        throw (err as { code?: unknown }).code === 'FAST_JWT_EXPIRED' ? new TokenExpiredError() : new TokenInvalidError()
      }
    }
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
    request.user = claims
    done()
  }
}
