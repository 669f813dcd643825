import { createPrivateKey, createPublicKey } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { MIN_HMAC_SECRET_BYTES, duration, fail, integer, isKey, isObject, knownKeys } from '../options/validate.js'
import type { AsymmetricAlgorithm, AuthOptions, JwksOptions, TokenAlgorithm } from '../types.js'

/*
 * Options of the signing and verification keys (`auth.keys`, `auth.jwks`,
 * `auth.jwksRoute`), resolved once at register. The single-key form
 * (`secret` or `publicKey`/`privateKey` with `algorithm`) becomes a one-key
 * ring without a `kid`, so tokens signed before an upgrade keep verifying.
 */

export const DEFAULT_JWKS_ROUTE = '/.well-known/jwks.json'
export const DEFAULT_JWKS_TIMEOUT_MS = 5_000
export const DEFAULT_JWKS_COOLDOWN_SECONDS = 30
export const DEFAULT_JWKS_CACHE_MAX_AGE_SECONDS = 600
export const MAX_KID_LENGTH = 256
const HMAC = new Set<TokenAlgorithm>(['HS256', 'HS384', 'HS512'])
export const ASYMMETRIC_ALGORITHMS: readonly AsymmetricAlgorithm[] = Object.freeze([
  'RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA'
])
const ALGORITHMS = new Set<TokenAlgorithm>([...HMAC, ...ASYMMETRIC_ALGORITHMS])
// Key types each algorithm needs, so a PEM of the wrong kind fails at register, not at the first token.
const RSA_TYPES = ['rsa']
const KEY_TYPES: Record<AsymmetricAlgorithm, readonly string[]> = {
  RS256: RSA_TYPES,
  RS384: RSA_TYPES,
  RS512: RSA_TYPES,
  PS256: ['rsa', 'rsa-pss'],
  ES256: ['ec'],
  ES384: ['ec'],
  ES512: ['ec'],
  EdDSA: ['ed25519', 'ed448']
}
const KEY_OPTIONS = ['kid', 'algorithm', 'secret', 'privateKey', 'publicKey']
const JWKS_OPTIONS = ['url', 'issuer', 'audience', 'algorithms', 'cacheMaxAge', 'cooldown', 'timeout']

/** One key of the gateway's own ring. */
export interface ResolvedKey {
  /** `undefined` only for the single-key form: its tokens carry no `kid`. */
  readonly kid: string | undefined
  readonly algorithm: TokenAlgorithm
  /** What signs: the secret or the private key; `undefined` for a verify-only key. */
  readonly signKey: string | Buffer | undefined
  /** What verifies: the secret or the public key (PEM). */
  readonly verifyKey: string | Buffer
  /** The public key as a JWK for `auth.jwksRoute`; `undefined` for HMAC keys. */
  readonly publicJwk: Readonly<Record<string, unknown>> | undefined
}

/** One identity provider whose key set is fetched (`auth.jwks`). */
export interface ResolvedJwks {
  /** The key set URL; `undefined` means found through OpenID discovery of `issuer`. */
  readonly url: URL | undefined
  readonly issuer: string
  readonly audience: readonly string[]
  readonly algorithms: readonly AsymmetricAlgorithm[]
  readonly cacheMaxAgeMs: number
  readonly cooldownMs: number
  readonly timeoutMs: number
}

export interface ResolvedKeys {
  /** The keys that verify the gateway's own tokens; the first one signs. */
  readonly ring: readonly ResolvedKey[]
  /** True with `auth.keys`: tokens must name their key with `kid`. */
  readonly kidRequired: boolean
  readonly jwks: readonly ResolvedJwks[]
  /** Path of the public key set route, `false` when off. */
  readonly jwksRoute: string | false
}

/** The single-key form as resolveAuth already checked it. */
export interface SingleKey {
  readonly algorithm: TokenAlgorithm
  readonly signKey: string | Buffer | undefined
  readonly verifyKey: string | Buffer
}

function publicKeyOf (pem: string | Buffer, algorithm: AsymmetricAlgorithm, option: string): KeyObject {
  let key: KeyObject
  try {
    key = createPublicKey(pem)
  } catch {
    fail(option, `a PEM key for ${algorithm}`)
  }
  if (!KEY_TYPES[algorithm].includes(key.asymmetricKeyType as string)) fail(option, `a key of a type ${algorithm} uses (${KEY_TYPES[algorithm].join(' or ')})`)
  return key
}

function resolveKey (value: unknown, at: string, needsSigning: boolean): ResolvedKey {
  if (!isObject(value)) fail(at, '{ kid, algorithm, secret } or { kid, algorithm, publicKey, privateKey? }')
  knownKeys(value, at, KEY_OPTIONS)
  const { kid, algorithm } = value
  if (typeof kid !== 'string' || kid.length === 0 || kid.length > MAX_KID_LENGTH) fail(`${at}.kid`, `a non-empty string of at most ${MAX_KID_LENGTH} characters`)
  if (!ALGORITHMS.has(algorithm as TokenAlgorithm)) fail(`${at}.algorithm`, `one of ${[...ALGORITHMS].join(', ')}`)
  const alg = algorithm as TokenAlgorithm
  if (HMAC.has(alg)) {
    if (value.publicKey !== undefined || value.privateKey !== undefined) fail(at, `a secret, not publicKey/privateKey, for ${alg}`)
    if (!isKey(value.secret) || Buffer.byteLength(value.secret) < MIN_HMAC_SECRET_BYTES) {
      fail(`${at}.secret`, `a secret of at least ${MIN_HMAC_SECRET_BYTES} bytes for ${alg}`)
    }
    // A PEM as an HMAC secret is what algorithm confusion attacks forge tokens with.
    if (/-----BEGIN [A-Z ]*KEY-----/.test(String(value.secret))) fail(`${at}.secret`, 'a random secret, not a PEM key')
    return { kid, algorithm: alg, signKey: value.secret, verifyKey: value.secret, publicJwk: undefined }
  }
  const asym = alg as AsymmetricAlgorithm
  if (value.secret !== undefined) fail(`${at}.secret`, `publicKey/privateKey, not a secret, for ${alg}`)
  if (!isKey(value.publicKey)) fail(`${at}.publicKey`, `a PEM public key for ${alg}`)
  const publicKey = publicKeyOf(value.publicKey, asym, `${at}.publicKey`)
  if (value.privateKey !== undefined || needsSigning) {
    if (!isKey(value.privateKey)) fail(`${at}.privateKey`, `a PEM private key for ${alg}${needsSigning ? ' (the first key signs)' : ''}`)
    let matches = false
    try {
      const fromPrivate = createPublicKey(createPrivateKey(value.privateKey))
      matches = fromPrivate.equals(publicKey)
    } catch {
      fail(`${at}.privateKey`, `a PEM private key for ${alg}`)
    }
    if (!matches) fail(`${at}.privateKey`, 'the private key of publicKey')
  }
  const jwk = publicKey.export({ format: 'jwk' }) as Record<string, unknown>
  return {
    kid,
    algorithm: alg,
    signKey: value.privateKey as string | Buffer | undefined,
    verifyKey: publicKey.export({ type: 'spki', format: 'pem' }) as string,
    publicJwk: Object.freeze({ ...jwk, kid, alg, use: 'sig' })
  }
}

function resolveJwks (value: unknown, at: string): ResolvedJwks {
  if (!isObject(value)) fail(at, '{ issuer, audience, url?, algorithms?, cacheMaxAge?, cooldown?, timeout? }')
  const opts = value as unknown as JwksOptions
  knownKeys(value, at, JWKS_OPTIONS)
  if (typeof opts.issuer !== 'string' || opts.issuer.length === 0) fail(`${at}.issuer`, 'the issuer (`iss`) of the provider\'s tokens, a non-empty string')
  const audience = typeof opts.audience === 'string' ? [opts.audience] : opts.audience
  if (!Array.isArray(audience) || audience.length === 0 || !audience.every((a) => typeof a === 'string' && a.length > 0)) {
    fail(`${at}.audience`, 'the audience (`aud`) the tokens must be for: a non-empty string or array of them')
  }
  let url: URL | undefined
  const source = opts.url ?? (URL.canParse(opts.issuer) ? undefined : fail(`${at}.url`, 'a JWKS URL, or an issuer that is an http(s) URL for OpenID discovery'))
  try {
    url = new URL(String(source ?? opts.issuer))
  } catch {
    fail(`${at}.url`, 'an absolute http: or https: URL')
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username !== '' || url.password !== '') {
    fail(source === undefined ? `${at}.issuer` : `${at}.url`, 'an http: or https: URL without credentials')
  }
  const algorithms = opts.algorithms ?? ASYMMETRIC_ALGORITHMS
  if (!Array.isArray(algorithms) || algorithms.length === 0 || !algorithms.every((a) => ASYMMETRIC_ALGORITHMS.includes(a))) {
    // HMAC is refused: a key set is public, so a symmetric key in it is a key anyone holds.
    fail(`${at}.algorithms`, `a non-empty array of ${ASYMMETRIC_ALGORITHMS.join(', ')} (no HS*: a published key cannot be a secret)`)
  }
  const timeoutMs = integer(opts.timeout, `${at}.timeout`, DEFAULT_JWKS_TIMEOUT_MS, { min: 1, max: 60_000 })
  return {
    url: source === undefined ? undefined : url,
    issuer: opts.issuer,
    audience: Object.freeze([...audience]),
    algorithms: Object.freeze([...new Set(algorithms)]),
    cacheMaxAgeMs: duration(opts.cacheMaxAge, `${at}.cacheMaxAge`, DEFAULT_JWKS_CACHE_MAX_AGE_SECONDS) * 1000,
    cooldownMs: duration(opts.cooldown, `${at}.cooldown`, DEFAULT_JWKS_COOLDOWN_SECONDS) * 1000,
    timeoutMs
  }
}

function resolveRoute (value: unknown, ring: readonly ResolvedKey[]): string | false {
  if (value === undefined || value === false) return false
  const path = value === true ? DEFAULT_JWKS_ROUTE : value
  if (typeof path !== 'string' || !path.startsWith('/') || /[?#;\\\s]|\/\/|(^|\/)\.\.?(\/|$)/.test(path)) {
    fail('auth.jwksRoute', 'true, false or an absolute path such as "/.well-known/jwks.json"')
  }
  if (!ring.some((key) => key.publicJwk !== undefined)) fail('auth.jwksRoute', 'false unless auth.keys holds an asymmetric key to publish')
  return path
}

/**
 * Resolves `auth.keys`, `auth.jwks` and `auth.jwksRoute`; `single` is the
 * single-key form, used when `auth.keys` is absent.
 */
export function resolveKeys (opts: AuthOptions, single: SingleKey | undefined, signs: boolean): ResolvedKeys {
  let ring: ResolvedKey[]
  if (opts.keys === undefined) {
    // Only reached without a single key when auth.jwks is set: a provider alone verifies, it cannot sign.
    if (single === undefined && signs) fail('auth.keys', 'a signing key (auth.keys, or auth.secret / auth.privateKey) for the login route')
    ring = single === undefined ? [] : [{ kid: undefined, ...single, publicJwk: undefined }]
  } else {
    for (const name of ['secret', 'publicKey', 'privateKey', 'algorithm'] as const) {
      if (opts[name] !== undefined) fail(`auth.${name}`, 'undefined when auth.keys is set (each key has its own)')
    }
    if (!Array.isArray(opts.keys) || opts.keys.length === 0) fail('auth.keys', 'a non-empty array of { kid, algorithm, secret | publicKey/privateKey }')
    ring = opts.keys.map((key: unknown, index) => resolveKey(key, `auth.keys[${index}]`, signs && index === 0))
    const kids = new Set<string>()
    for (const [index, key] of ring.entries()) {
      if (kids.has(key.kid as string)) fail(`auth.keys[${index}].kid`, 'a kid no other key uses')
      kids.add(key.kid as string)
    }
  }
  let jwks: ResolvedJwks[] = []
  if (opts.jwks !== undefined) {
    const list: unknown[] = Array.isArray(opts.jwks) ? opts.jwks : [opts.jwks]
    jwks = list.map((entry, index) => resolveJwks(entry, Array.isArray(opts.jwks) ? `auth.jwks[${index}]` : 'auth.jwks'))
    const issuers = new Set<string>()
    for (const provider of jwks) {
      // Tokens go to a key set by their `iss`: two owners of one issuer would make that choice ambiguous.
      if (provider.issuer === opts.issuer || issuers.has(provider.issuer)) {
        fail('auth.jwks', `issuers distinct from each other and from auth.issuer (${provider.issuer} is used twice)`)
      }
      issuers.add(provider.issuer)
    }
  }
  return { ring, kidRequired: opts.keys !== undefined, jwks, jwksRoute: resolveRoute(opts.jwksRoute, ring) }
}
