import { createPublicKey } from 'node:crypto'
import type { JsonWebKey } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { createRemoteJWKSet } from 'jose'
import type { JWK } from 'jose'
import type { AsymmetricAlgorithm } from '../types.js'
import type { ResolvedJwks } from './keys-options.js'
import { MAX_KID_LENGTH } from './keys-options.js'

/*
 * The key set of one identity provider. jose fetches it (bounded timeout, no
 * redirects, one fetch at a time, JWKS shape checked); this class decides
 * WHEN: never more than once per `cooldown`, whatever a caller sends, and a
 * failed fetch keeps the keys it had, so a provider outage only stops tokens
 * whose key was never seen. Keys are turned into PEMs once per fetch, each
 * pinned to the algorithms its JWK allows.
 */

/** A provider key: its PEM and the only algorithms it verifies. */
export interface ProviderKey {
  readonly pem: string
  readonly algorithms: readonly AsymmetricAlgorithm[]
}

type RemoteSet = ReturnType<typeof createRemoteJWKSet>

// What each key type can verify; the JWK's own `alg`, when present, narrows it to one.
function algorithmsOf (jwk: JWK): AsymmetricAlgorithm[] {
  switch (jwk.kty) {
    case 'RSA': return ['RS256', 'RS384', 'RS512', 'PS256']
    case 'EC': return jwk.crv === 'P-256' ? ['ES256'] : jwk.crv === 'P-384' ? ['ES384'] : jwk.crv === 'P-521' ? ['ES512'] : []
    case 'OKP': return jwk.crv === 'Ed25519' || jwk.crv === 'Ed448' ? ['EdDSA'] : []
    // `oct` (a secret) and anything else: a published key set never holds a secret we would accept.
    default: return []
  }
}

const PUBLIC_MEMBERS = ['kty', 'n', 'e', 'crv', 'x', 'y'] as const

function providerKey (jwk: JWK, allowed: readonly AsymmetricAlgorithm[]): ProviderKey | undefined {
  if (jwk.use !== undefined && jwk.use !== 'sig') return undefined
  if (Array.isArray(jwk.key_ops) && !jwk.key_ops.includes('verify')) return undefined
  let algorithms = algorithmsOf(jwk).filter((alg) => allowed.includes(alg))
  if (jwk.alg !== undefined) algorithms = algorithms.filter((alg) => alg === jwk.alg)
  if (algorithms.length === 0) return undefined
  // Only the public members: a provider that leaks its private parts does not make us sign-capable.
  const members: Record<string, unknown> = {}
  for (const name of PUBLIC_MEMBERS) if (jwk[name] !== undefined) members[name] = jwk[name]
  try {
    const pem = createPublicKey({ key: members as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string
    return { pem, algorithms }
  } catch {
    return undefined
  }
}

/** The key set of one `auth.jwks` entry. */
export class ProviderKeySet {
  readonly provider: ResolvedJwks
  readonly #log: FastifyBaseLogger
  #remote: RemoteSet | undefined
  #keys = new Map<string, ProviderKey>()
  #loadedAt = -Infinity
  #attemptedAt = -Infinity
  #pending: Promise<void> | undefined

  constructor (provider: ResolvedJwks, log: FastifyBaseLogger) {
    this.provider = provider
    this.#log = log
  }

  /** The key a `kid` names; starts a background fetch when the set is older than `cacheMaxAge`. */
  key (kid: string): ProviderKey | undefined {
    if (Date.now() - this.#loadedAt > this.provider.cacheMaxAgeMs && this.#loadedAt !== -Infinity) void this.refresh()
    return this.#keys.get(kid)
  }

  /**
   * Fetches the key set unless one fetch is under way (then waits for it) or
   * the last one started less than `cooldown` ago (then returns at once).
   * Never rejects: a failure is logged and the cached keys stay.
   */
  async refresh (): Promise<void> {
    if (this.#pending !== undefined) return await this.#pending
    const now = Date.now()
    if (now - this.#attemptedAt < this.provider.cooldownMs) return
    this.#attemptedAt = now
    this.#pending = this.#load().catch((err: unknown) => {
      // The URL is the operator's to see; the message stays out of any response.
      this.#log.warn({ issuer: this.provider.issuer, err: (err as Error).message }, 'gatehouse could not fetch the JWKS of an identity provider; cached keys stay in use')
    }).finally(() => { this.#pending = undefined })
    return await this.#pending
  }

  async #load (): Promise<void> {
    if (this.#remote === undefined) {
      const url = this.provider.url ?? await discover(this.provider)
      // jose's own cache timing is turned off: `refresh` alone decides when to fetch.
      this.#remote = createRemoteJWKSet(url, { timeoutDuration: this.provider.timeoutMs, cooldownDuration: 0, cacheMaxAge: Infinity })
    }
    await this.#remote.reload()
    const keys = new Map<string, ProviderKey>()
    const ambiguous = new Set<string>()
    for (const jwk of this.#remote.jwks()?.keys ?? []) {
      const { kid } = jwk
      // A key without a kid could only be found by trying keys in turn, which we never do.
      if (typeof kid !== 'string' || kid.length === 0 || kid.length > MAX_KID_LENGTH) continue
      const key = providerKey(jwk, this.provider.algorithms)
      if (key === undefined) continue
      if (keys.has(kid)) ambiguous.add(kid)
      keys.set(kid, key)
    }
    // Two keys under one kid: neither is chosen, rather than guessing.
    for (const kid of ambiguous) keys.delete(kid)
    this.#keys = keys
    this.#loadedAt = Date.now()
  }
}

/** `jwks_uri` from the issuer's OpenID configuration, which must name the same issuer. */
async function discover (provider: ResolvedJwks): Promise<URL> {
  const base = provider.issuer.endsWith('/') ? provider.issuer.slice(0, -1) : provider.issuer
  const response = await fetch(`${base}/.well-known/openid-configuration`, {
    redirect: 'manual',
    signal: AbortSignal.timeout(provider.timeoutMs),
    headers: { accept: 'application/json' }
  })
  if (response.status !== 200) throw new Error(`OpenID discovery answered ${response.status}`)
  const config = await response.json() as { issuer?: unknown, jwks_uri?: unknown }
  if (config.issuer !== provider.issuer) throw new Error('OpenID discovery names another issuer')
  const uri = typeof config.jwks_uri === 'string' && URL.canParse(config.jwks_uri) ? new URL(config.jwks_uri) : undefined
  if (uri === undefined || (uri.protocol !== 'https:' && uri.protocol !== 'http:')) throw new Error('OpenID discovery has no http(s) jwks_uri')
  return uri
}
