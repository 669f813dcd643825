import { StoreUnavailableError } from '../errors.js'
import type { GatehouseStore } from '../types.js'

/*
 * The state behind the token lifecycle: refresh tokens, revoked access tokens
 * and login failure counters. One instance keeps it in memory; several
 * instances behind a load balancer need a shared store (Redis, ...) that
 * implements `GatehouseStore` with the atomicity documented on each method.
 */


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
