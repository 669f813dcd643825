import { StoreUnavailableError } from '../errors.js'

/*
 * The state behind the token lifecycle: refresh tokens, revoked access tokens
 * and login failure counters. One instance keeps it in memory; several
 * instances behind a load balancer need a shared store (Redis, ...) that
 * implements `GatehouseStore` with the atomicity documented on each method.
 */

/**
 * A small key/value store with expiring entries. Values are strings (JSON for
 * records), TTLs are milliseconds and always positive. Every method may reject;
 * the gateway then fails closed with 503 FST_GATEHOUSE_STORE_UNAVAILABLE.
 *
 * Keys it uses (`<hash>` is the SHA-256 of a refresh token, base64url):
 * - `gatehouse:refresh:<hash>` a refresh token's record, until the token expires
 * - `gatehouse:refresh-used:<hash>` set once when the token is rotated, value: that time in epoch ms
 * - `gatehouse:family:<id>` present while a login session (refresh family) is alive
 * - `gatehouse:jti:<jti>` a revoked access token, until its `exp`
 * - `gatehouse:throttle:<user|address>:<id>` login attempts in the current window
 * - `gatehouse:lock:<user|address>:<id>` a lockout, value: its end in epoch ms
 *
 * @example
 * // Redis with ioredis: get -> GET, set -> SET k v PX ttl, add -> SET k v PX ttl NX,
 * // increment -> MULTI INCRBY k delta; PEXPIRE k ttl NX; EXEC, delete -> DEL
 */
export interface GatehouseStore {
  /** The value, or `undefined` when absent or expired. */
  get: (key: string) => Promise<string | undefined>
  /** Stores a value, replacing any, for `ttlMs`. */
  set: (key: string, value: string, ttlMs: number) => Promise<void>
  /**
   * Stores a value only if the key is absent; resolves `true` when this call
   * created it. Must be atomic across instances (Redis `SET NX`): refresh token
   * rotation relies on it so that of two concurrent uses of one token exactly
   * one rotates it; the others read the value (the rotation time) to tell a
   * reuse within `refresh.reuseInterval` from theft.
   */
  add: (key: string, value: string, ttlMs: number) => Promise<boolean>
  /**
   * Adds `delta` (may be negative) to an integer counter and resolves the new
   * value; an absent key starts at 0 and expires `ttlMs` after its creation
   * (later increments do not extend it). Must be atomic (Redis `INCRBY` plus
   * `PEXPIRE ... NX` in one `MULTI`): concurrent logins each see their own count.
   */
  increment: (key: string, delta: number, ttlMs: number) => Promise<number>
  /** Removes a key; absent keys are fine. */
  delete: (key: string) => Promise<void>
}

/** The keys of `GatehouseStore`, in one place so a shared store can be audited. */
export const storeKeys = Object.freeze({
  refresh: (hash: string) => `gatehouse:refresh:${hash}`,
  refreshUsed: (hash: string) => `gatehouse:refresh-used:${hash}`,
  family: (id: string) => `gatehouse:family:${id}`,
  revokedJti: (jti: string) => `gatehouse:jti:${jti}`,
  attempts: (kind: 'user' | 'address', id: string) => `gatehouse:throttle:${kind}:${id}`,
  lock: (kind: 'user' | 'address', id: string) => `gatehouse:lock:${kind}:${id}`
})

export const DEFAULT_MEMORY_STORE_ENTRIES = 100_000
// Expired entries looked at per insert into a full store, so one insert stays O(1).
const SWEEP_BATCH = 64

export interface MemoryStoreOptions {
  /**
   * Most entries kept. When full, expired entries go first, then the oldest.
   * Default 100000.
   */
  maxEntries?: number
  /** Clock in epoch milliseconds; for tests. Default `Date.now`. */
  now?: () => number
}

interface Entry { value: string, expiresAt: number }

/**
 * The default store: one process, bounded, expiring lazily (no timers). Each
 * method runs synchronously inside its promise, so `add` and `increment` are
 * atomic. Not shared between instances: use a shared store for more than one.
 *
 * @example
 * auth: { store: new MemoryStore({ maxEntries: 10_000 }), refresh: true, login: { verify } }
 */
export class MemoryStore implements GatehouseStore {
  readonly #entries = new Map<string, Entry>()
  readonly #max: number
  readonly #now: () => number

  constructor (opts: MemoryStoreOptions = {}) {
    const max = opts.maxEntries ?? DEFAULT_MEMORY_STORE_ENTRIES
    if (!Number.isInteger(max) || max < 1) throw new TypeError('MemoryStore: maxEntries must be a positive integer')
    this.#max = max
    this.#now = opts.now ?? Date.now
  }

  /** Live entries (expired ones not yet swept may be counted). */
  get size (): number {
    return this.#entries.size
  }

  #live (key: string): Entry | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined) return undefined
    if (entry.expiresAt <= this.#now()) {
      this.#entries.delete(key)
      return undefined
    }
    return entry
  }

  #put (key: string, value: string, expiresAt: number): void {
    // Re-inserting moves the key to the young end of the eviction order.
    this.#entries.delete(key)
    if (this.#entries.size >= this.#max) this.#evict()
    this.#entries.set(key, { value, expiresAt })
  }

  #evict (): void {
    const now = this.#now()
    let looked = 0
    for (const [key, entry] of this.#entries) {
      if (entry.expiresAt <= now) this.#entries.delete(key)
      if (++looked >= SWEEP_BATCH) break
    }
    if (this.#entries.size < this.#max) return
    const oldest = this.#entries.keys().next()
    if (oldest.done !== true) this.#entries.delete(oldest.value)
  }

  async get (key: string): Promise<string | undefined> {
    return this.#live(key)?.value
  }

  async set (key: string, value: string, ttlMs: number): Promise<void> {
    this.#put(key, value, this.#now() + ttlMs)
  }

  async add (key: string, value: string, ttlMs: number): Promise<boolean> {
    if (this.#live(key) !== undefined) return false
    this.#put(key, value, this.#now() + ttlMs)
    return true
  }

  async increment (key: string, delta: number, ttlMs: number): Promise<number> {
    const entry = this.#live(key)
    if (entry === undefined) {
      this.#put(key, String(delta), this.#now() + ttlMs)
      return delta
    }
    const value = (Number.parseInt(entry.value, 10) || 0) + delta
    entry.value = String(value)
    return value
  }

  async delete (key: string): Promise<void> {
    this.#entries.delete(key)
  }

  /** Drops every entry; the plugin calls it on close for the store it created. */
  clear (): void {
    this.#entries.clear()
  }
}

/** Awaits a store call; a failing store becomes a 503 that carries the cause for the logs. */
export async function fromStore<T> (call: Promise<T>): Promise<T> {
  try {
    return await call
  } catch (err) {
    throw new StoreUnavailableError({ cause: err })
  }
}
