import { createHash } from 'node:crypto'
import { isIPv6 } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { StoreUnavailableError, TooManyAttemptsError } from '../errors.js'
import type { ResolvedThrottle } from './lifecycle-options.js'
import { fromStore, storeKeys } from './store.js'
import type { GatehouseStore } from '../types.js'

/*
 * Login throttling, counted on the store so that several instances share it.
 * Every attempt counts before the password is checked (so a burst of parallel
 * guesses cannot all slip under the limit), and a success takes it back: the
 * user name's counter is reset, the address's is decremented. The counters
 * are keyed by the name as typed, whether or not such a user exists, and
 * known and unknown names get the same delays and the same 429.
 */

type Kind = 'user' | 'address'

/** The user name as a key: case and Unicode form folded, hashed so no raw name is stored. */
export function userKey (username: string): string {
  return createHash('sha256').update(username.normalize('NFKC').toLowerCase()).digest('base64url')
}

/**
 * The client address as a key. IPv6 clients usually hold a whole /64, so
 * they are counted per /64; IPv4-mapped addresses count as IPv4.
 */
export function addressKey (ip: string | undefined): string {
  if (ip === undefined || ip === '') return 'unknown'
  const address = ip.replace(/%.*$/, '').toLowerCase()
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address)
  if (mapped !== null) return mapped[1] as string
  if (!isIPv6(address)) return address
  const [head = '', tail] = address.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
  return `${groups.slice(0, 4).map((group) => Number.parseInt(group, 16).toString(16)).join(':')}::/64`
}

/** What the login route calls once the credentials proved right. */
export interface ThrottledAttempt {
  succeeded: () => Promise<void>
}

/** Counts login attempts per user name and per address; delays, then refuses with 429. */
export class LoginThrottle {
  readonly #store: GatehouseStore
  readonly #options: ResolvedThrottle

  constructor (store: GatehouseStore, options: ResolvedThrottle) {
    this.#store = store
    this.#options = options
  }

  /**
   * Call before checking credentials. Throws 429 (with `Retry-After` set on
   * the reply) when either key is locked out or has just gone over its limit;
   * otherwise waits the delay the counts call for.
   */
  async attempt (username: string, request: FastifyRequest, reply: FastifyReply): Promise<ThrottledAttempt> {
    try {
      return await this.#count(username, request, reply)
    } catch (err) {
      if (!(err instanceof StoreUnavailableError) || this.#options.onStoreError === 'closed') throw err
      request.log.warn({ err }, 'gatehouse login throttle skipped: store unavailable (onStoreError: open)')
      return { succeeded: async () => {} }
    }
  }

  async #count (username: string, request: FastifyRequest, reply: FastifyReply): Promise<ThrottledAttempt> {
    const keys: Array<[Kind, string]> = [['user', userKey(username)], ['address', addressKey(request.ip)]]
    const windowMs = this.#options.windowSeconds * 1000

    const locks = await Promise.all(keys.map(([kind, id]) => fromStore(this.#store.get(storeKeys.lock(kind, id)))))
    const lockedUntil = Math.max(0, ...locks.map((value) => Number(value ?? 0) || 0))
    if (lockedUntil > Date.now()) this.#refuse(request, reply, lockedUntil)

    const counts = await Promise.all(keys.map(([kind, id]) => fromStore(this.#store.increment(storeKeys.attempts(kind, id), 1, windowMs))))
    let delay = 0
    for (const [index, [kind, id]] of keys.entries()) {
      const limit = this.#options[kind]
      const attempts = counts[index] as number
      if (attempts > limit.max) {
        const until = Date.now() + windowMs
        // Concurrent requests may race to lock: the first lock stands, the others report it.
        const locked = await fromStore(this.#store.add(storeKeys.lock(kind, id), String(until), windowMs))
        const standing = locked ? until : Number(await fromStore(this.#store.get(storeKeys.lock(kind, id)))) || until
        request.log.warn({ throttle: kind }, 'gatehouse login throttled')
        this.#refuse(request, reply, standing)
      }
      if (attempts > limit.delayAfter) {
        delay = Math.max(delay, this.#options.delayMs * 2 ** Math.min(attempts - limit.delayAfter - 1, 30))
      }
    }
    delay = Math.min(delay, this.#options.maxDelayMs)
    if (delay > 0) await sleep(delay)

    const [user, address] = keys as [[Kind, string], [Kind, string]]
    return {
      succeeded: async () => {
        try {
          await Promise.all([
            fromStore(this.#store.delete(storeKeys.attempts(...user))),
            fromStore(this.#store.increment(storeKeys.attempts(...address), -1, windowMs))
          ])
        } catch (err) {
          // The password was right: a counter left too high only errs on the strict side.
          request.log.warn({ err }, 'gatehouse login throttle: could not take back a successful attempt')
        }
      }
    }
  }

  #refuse (request: FastifyRequest, reply: FastifyReply, until: number): never {
    // Headers set before the throw survive into the error response.
    reply.header('retry-after', String(Math.max(1, Math.ceil((until - Date.now()) / 1000))))
    request.log.info({ until }, 'gatehouse login refused while locked out')
    throw new TooManyAttemptsError()
  }
}
