import type { GatehouseClaims } from '../types.js'

interface Entry {
  readonly claims: GatehouseClaims
  /** Epoch ms after which the entry is not used: the token's `exp`. */
  readonly until: number
}

/**
 * Tokens that passed verification, keyed by their whole text, until their
 * `exp` (never past it, whatever the clock tolerance): a hit skips the
 * signature check. Keying by the text itself avoids hashing every token, as
 * fast-jwt's own cache does. Only successes are kept. Bounded: past `max`
 * entries the oldest goes.
 *
 * The claims are frozen, since one object now serves every request that
 * carries the same token.
 */
export class VerifiedTokens {
  readonly #entries = new Map<string, Entry>()
  readonly #max: number

  constructor (max: number) {
    this.#max = max
  }

  get (token: string, now: number): GatehouseClaims | undefined {
    const entry = this.#entries.get(token)
    if (entry === undefined) return undefined
    if (now < entry.until) return entry.claims
    this.#entries.delete(token)
    return undefined
  }

  /** Remembers verified claims and returns them frozen. */
  add (token: string, claims: GatehouseClaims, now: number): GatehouseClaims {
    const frozen = deepFreeze(claims)
    const until = typeof claims.exp === 'number' ? claims.exp * 1000 : 0
    if (until <= now || this.#max === 0) return frozen
    if (this.#entries.size >= this.#max) {
      const oldest = this.#entries.keys().next()
      if (oldest.done !== true) this.#entries.delete(oldest.value)
    }
    this.#entries.set(token, { claims: frozen, until })
    return frozen
  }

  get size (): number {
    return this.#entries.size
  }
}

function deepFreeze<T> (value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}
