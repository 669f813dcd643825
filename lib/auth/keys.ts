import type { FastifyBaseLogger } from 'fastify'
import { createSigner, createVerifier } from 'fast-jwt'
import { TokenExpiredError, TokenInvalidError } from '../errors.js'
import type { ResolvedAuth } from '../options/resolved.js'
import type { GatehouseClaims } from '../types.js'
import { ProviderKeySet } from './jwks.js'
import type { ProviderKey } from './jwks.js'
import { MAX_KID_LENGTH } from './keys-options.js'

/*
 * Which key verifies a token: the token's `iss` picks the key set (an
 * identity provider's, or the gateway's own), its `kid` picks the one key in
 * it, as an opaque map key. The algorithm is the key's, never the header's,
 * and no token is ever tried against a second key. Header members that point
 * elsewhere (`jku`, `x5u`, `jwk`, `x5c`) are never read; `crit` is refused,
 * since no extension is understood here.
 */

type Verify = (token: string) => GatehouseClaims

/** A verified token: its claims, and whether an identity provider issued it. */
export interface Verified {
  readonly claims: GatehouseClaims
  readonly external: boolean
}

export interface KeyRing {
  /** Signs with the first key, its `kid` in the header. */
  sign: (payload: GatehouseClaims) => string
  /** Synchronous unless a provider's key set has to be fetched first. */
  verify: (token: string) => Verified | Promise<Verified>
  /** The public keys to publish at `auth.jwksRoute`. */
  publicKeys: () => Array<Readonly<Record<string, unknown>>>
}

function decodePart (part: string | undefined): Record<string, unknown> {
  if (part === undefined || part.length === 0) throw new TokenInvalidError()
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'))
  } catch {
    throw new TokenInvalidError()
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TokenInvalidError()
  return value as Record<string, unknown>
}

function run (verify: Verify, token: string, external: boolean): Verified {
  try {
    return { claims: verify(token), external }
  } catch (err) {
    throw (err as { code?: unknown }).code === 'FAST_JWT_EXPIRED' ? new TokenExpiredError() : new TokenInvalidError()
  }
}

/** Builds the signer and the per-key verifiers from resolved options. */
export function createKeyRing (auth: ResolvedAuth, log: FastifyBaseLogger): KeyRing {
  const { ring, kidRequired, jwks } = auth.keys
  const clockTolerance = auth.clockToleranceSeconds * 1000
  const own = new Map<string | undefined, Verify>()
  for (const key of ring) {
    own.set(key.kid, createVerifier({
      key: key.verifyKey,
      algorithms: [key.algorithm],
      // fast-jwt checks iss/aud only when present: require them when configured.
      requiredClaims: ['exp', ...(auth.issuer === undefined ? [] : ['iss']), ...(auth.audience === undefined ? [] : ['aud'])],
      clockTolerance,
      cache: false,
      ...(auth.issuer === undefined ? {} : { allowedIss: auth.issuer }),
      ...(auth.audience === undefined ? {} : { allowedAud: auth.audience })
    }) as Verify)
  }
  const signing = ring[0]
  const signer = signing?.signKey === undefined
    ? undefined
    : createSigner({
      key: signing.signKey,
      algorithm: signing.algorithm,
      ...(signing.kid === undefined ? {} : { kid: signing.kid }),
      expiresIn: auth.expiresInSeconds * 1000,
      ...(auth.issuer === undefined ? {} : { iss: auth.issuer }),
      ...(auth.audience === undefined ? {} : { aud: auth.audience })
    })

  const providers = new Map(jwks.map((provider) => [provider.issuer, new ProviderKeySet(provider, log)]))
  const providerVerifiers = new WeakMap<ProviderKey, Verify>()
  function providerVerify (set: ProviderKeySet, key: ProviderKey, token: string): Verified {
    let verify = providerVerifiers.get(key)
    if (verify === undefined) {
      const { issuer, audience } = set.provider
      verify = createVerifier({
        key: key.pem,
        algorithms: [...key.algorithms],
        requiredClaims: ['exp', 'iss', 'aud'],
        allowedIss: issuer,
        allowedAud: [...audience],
        clockTolerance,
        cache: false
      }) as Verify
      providerVerifiers.set(key, verify)
    }
    return run(verify, token, true)
  }

  return {
    sign (payload) {
      if (signer === undefined) throw new TokenInvalidError()
      return signer(payload)
    },
    verify (token) {
      const parts = token.split('.')
      if (parts.length !== 3) throw new TokenInvalidError()
      const header = decodePart(parts[0])
      if ('crit' in header) throw new TokenInvalidError()
      const { kid } = header
      if (kid !== undefined && (typeof kid !== 'string' || kid.length === 0 || kid.length > MAX_KID_LENGTH)) throw new TokenInvalidError()
      if (providers.size > 0) {
        const { iss } = decodePart(parts[1])
        const set = typeof iss === 'string' ? providers.get(iss) : undefined
        if (set !== undefined) {
          if (kid === undefined) throw new TokenInvalidError()
          const key = set.key(kid)
          if (key !== undefined) return providerVerify(set, key, token)
          // An unknown kid may be a rotation: one fetch per cooldown, whoever asks.
          return set.refresh().then(() => {
            const fetched = set.key(kid)
            if (fetched === undefined) throw new TokenInvalidError()
            return providerVerify(set, fetched, token)
          })
        }
      }
      const verify = kidRequired ? (typeof kid === 'string' ? own.get(kid) : undefined) : own.get(undefined)
      if (verify === undefined) throw new TokenInvalidError()
      return run(verify, token, false)
    },
    publicKeys () {
      return ring.flatMap((key) => key.publicJwk === undefined ? [] : [key.publicJwk])
    }
  }
}
