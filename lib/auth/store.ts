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
// Entries looked at per insert into a full store, so one insert stays O(1).
const SWEEP_BATCH = 64
// Login counters: the only entries an unauthenticated caller can create at will.
const THROTTLE_PREFIX = 'gatehouse:throttle:'
// Revocations of single access tokens: only an authenticated logout creates one.
const REVOCATION_PREFIX = 'gatehouse:jti:'

export interface MemoryStoreOptions {
  /**
   * Most entries kept. When full, expired entries go first, then the oldest
   * login counters; security state (sessions, refresh records, lockouts,
   * revocations) is never evicted before its TTL. Default 100000.
   */
  maxEntries?: number
  /** Clock in epoch milliseconds; for tests. Default \`Date.now\`. */
  now?: () => number
}

interface Entry { value: string, expiresAt: number, seq: number }

/**
 * Keys in insertion order, for eviction. An array with a moving head rather
 * than the Map's own order: V8 leaves deleted Map slots in place, so taking
 * the oldest key of a Map that keeps losing its oldest ones scans ever more
 * holes (quadratic under a flood). Entries whose key was since deleted or
 * re-inserted are stale (their `seq` differs) and skipped.
 */
class Fifo {
  #items: Array<[string, number]> = []
  #head = 0

  get length (): number {
    return this.#items.length - this.#head
  }

  push (key: string, seq: number): void {
    this.#items.push([key, seq])
  }

  /** Puts an item just taken by `shift` back at the head. */
  unshift (key: string, seq: number): void {
    if (this.#head > 0) this.#items[--this.#head] = [key, seq]
    else this.#items.unshift([key, seq])
  }

  shift (): [string, number] | undefined {
    if (this.#head >= this.#items.length) return undefined
    const item = this.#items[this.#head++]
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
    return item
  }

  /** Drops stale items, keeping the order. */
  compact (live: (key: string, seq: number) => boolean): void {
    this.#items = this.#items.slice(this.#head).filter(([key, seq]) => live(key, seq))
    this.#head = 0
  }
}

/** One class of entries: a map for lookups and a queue for eviction order. */
class Shelf {
  readonly map = new Map<string, Entry>()
  readonly order = new Fifo()

  put (key: string, entry: Entry): void {
    this.map.set(key, entry)
    this.order.push(key, entry.seq)
    // Deleted keys leave stale queue items behind: keep the queue within a
    // constant factor of the map, at amortised O(1) per insert.
    if (this.order.length > 2 * this.map.size + 1024) this.order.compact((k, seq) => this.map.get(k)?.seq === seq)
  }

  /** The oldest live entry, taken off the queue, or `undefined`. */
  oldest (): [string, Entry] | undefined {
    for (let item = this.order.shift(); item !== undefined; item = this.order.shift()) {
      const entry = this.map.get(item[0])
      if (entry?.seq === item[1]) return [item[0], entry]
    }
    return undefined
  }

  /** Puts back, still the oldest, an entry `oldest` returned. */
  requeueOldest (key: string, entry: Entry): void {
    this.order.unshift(key, entry.seq)
  }

  /** Puts back, at the young end, an entry `oldest` returned. */
  requeue (key: string, entry: Entry): void {
    this.order.push(key, entry.seq)
  }
}

/**
 * The default store: one process, bounded, expiring lazily (no timers). Each
 * method runs synchronously inside its promise, so `add` and `increment` are
 * atomic. Not shared between instances: use a shared store for more than one.
 *
 * Full, it makes room in this order: expired entries, then the oldest login
 * counters (`gatehouse:throttle:`, which a flood of unknown user names can
 * create without limit). Security state is never evicted early: when only it
 * is left, a new entry is refused (the call rejects, the gateway answers 503)
 * except a revocation (`gatehouse:jti:`), which is stored over the cap, since
 * refusing it would leave a logged-out token valid.
 *
 * @example
 * auth: { store: new MemoryStore({ maxEntries: 10_000 }), refresh: true, login: { verify } }
 */
export class MemoryStore implements GatehouseStore {
  // Two classes, so that evicting a counter never has to walk past security state.
  readonly #counters = new Shelf()
  readonly #secure = new Shelf()
  readonly #max: number
  readonly #now: () => number
  #seq = 0

  constructor (opts: MemoryStoreOptions = {}) {
    const max = opts.maxEntries ?? DEFAULT_MEMORY_STORE_ENTRIES
    if (!Number.isInteger(max) || max < 1) throw new TypeError('MemoryStore: maxEntries must be a positive integer')
    this.#max = max
    this.#now = opts.now ?? Date.now
  }

  /** Live entries (expired ones not yet swept may be counted). */
  get size (): number {
    return this.#counters.map.size + this.#secure.map.size
  }

  #shelf (key: string): Shelf {
    return key.startsWith(THROTTLE_PREFIX) ? this.#counters : this.#secure
  }

  #live (key: string): Entry | undefined {
    const { map } = this.#shelf(key)
    const entry = map.get(key)
    if (entry === undefined) return undefined
    if (entry.expiresAt <= this.#now()) {
      map.delete(key)
      return undefined
    }
    return entry
  }

  #put (key: string, value: string, expiresAt: number): void {
    const shelf = this.#shelf(key)
    // Re-inserting moves the key to the young end of the eviction order.
    const existed = shelf.map.delete(key)
    if (!existed && this.size >= this.#max && !this.#makeRoom() && !key.startsWith(REVOCATION_PREFIX)) {
      throw new Error('MemoryStore is full of security state (maxEntries reached)')
    }
    shelf.put(key, { value, expiresAt, seq: ++this.#seq })
  }

  /** Frees one slot if it can without dropping live security state. */
  #makeRoom (): boolean {
    const now = this.#now()
    // Counters all live one throttle window from their creation, so the
    // oldest expire first. Expired entries go before live ones: the oldest
    // counter if expired, else one security entry looked at round-robin.
    const counter = this.#counters.oldest()
    if (counter !== undefined && counter[1].expiresAt <= now) {
      this.#counters.map.delete(counter[0])
      if (this.size < this.#max) return true
    } else {
      const secure = this.#secure.oldest()
      if (secure !== undefined) {
        if (secure[1].expiresAt <= now) this.#secure.map.delete(secure[0])
        else this.#secure.requeue(...secure)
      }
      if (counter !== undefined) this.#counters.requeueOldest(...counter)
      if (this.size < this.#max) return true
    }
    // Then the oldest live counters (revocations may hold the store over its cap).
    for (let oldest = this.#counters.oldest(); oldest !== undefined; oldest = this.#counters.oldest()) {
      this.#counters.map.delete(oldest[0])
      if (this.size < this.#max) return true
    }
    // Security state has mixed TTLs: look at a batch, moving the live entries
    // to the young end so that successive sweeps walk it round-robin.
    for (let looked = 0; looked < SWEEP_BATCH && this.size >= this.#max; looked++) {
      const oldest = this.#secure.oldest()
      if (oldest === undefined) break
      if (oldest[1].expiresAt <= now) this.#secure.map.delete(oldest[0])
      else this.#secure.requeue(...oldest)
    }
    return this.size < this.#max
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
    this.#shelf(key).map.delete(key)
  }

  /** Drops every entry; the plugin calls it on close for the store it created. */
  clear (): void {
    for (const shelf of [this.#counters, this.#secure]) {
      shelf.map.clear()
      shelf.order.compact(() => false)
    }
  }
}

/** Awaits a store call; a failing store becomes a 503 that carries the cause for the logs. */
export async function fromStore<T> (call: Promise<T>): Promise<T> {
  try {
    return await call
  } catch (err) {
    // A store may already say so itself (the Redis store does, with the reason as cause).
    if (err instanceof StoreUnavailableError) throw err
    throw new StoreUnavailableError({ cause: err })
  }
}
