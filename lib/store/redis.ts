import { createHash } from 'node:crypto'
import type { GatehouseStore } from '../types.js'
import { InvalidOptionError, StoreUnavailableError } from '../errors.js'

/*
 * `GatehouseStore` on Redis, for several gateway instances behind one load
 * balancer. Every method is ONE single-key command (or one single-key script),
 * so each is atomic on the server and any key can live on any Redis Cluster
 * slot: no hash tags are needed. The races that matter are settled by one
 * command each: refresh rotation by `SET NX` on the used mark, revocation by
 * `DEL` of the family key, which only login ever creates (with a fresh random
 * id), so no interleaving can revive a revoked session.
 *
 * Bounded waits: a command is only sent while the client is connected, and
 * gets `commandTimeout` ms for its answer. It never waits in ioredis's offline
 * queue, from which it would run after the request had already failed (a
 * refresh that got 503 would then mark its token used, and the client's retry
 * would read as theft).
 */

/**
 * The part of an ioredis `Redis` or `Cluster` client the store uses. Written
 * out rather than imported so that the package's types need no ioredis.
 */
export interface RedisStoreClient {
  /** ioredis's connection status: `wait`, `connecting`, `connect`, `ready`, `reconnecting`, `close`, `end`. */
  readonly status: string
  get: (key: string) => Promise<string | null>
  set: ((key: string, value: string, px: 'PX', ttlMs: number) => Promise<unknown>) &
  ((key: string, value: string, px: 'PX', ttlMs: number, nx: 'NX') => Promise<'OK' | null>)
  del: (key: string) => Promise<number>
  evalsha: (sha: string, numKeys: number, key: string, ...args: Array<string | number>) => Promise<unknown>
  eval: (script: string, numKeys: number, key: string, ...args: Array<string | number>) => Promise<unknown>
  connect: () => Promise<void>
  once: (event: 'ready', listener: () => void) => unknown
  removeListener: (event: 'ready', listener: () => void) => unknown
}

export interface RedisStoreOptions {
  /**
   * An ioredis `Redis` or `Cluster` client (`fastify.redis` of `@fastify/redis`
   * works). The gateway never closes it: its owner does, after the app closed.
   * @example new Redis(process.env.REDIS_URL)
   */
  client: RedisStoreClient
  /**
   * Put before every key, to share one Redis between several gateways.
   * The keys already start with `gatehouse:`. Default `''`.
   * @example 'erp:'
   */
  prefix?: string
  /**
   * Milliseconds a command may take, waiting for a connection included,
   * before the call fails (and the request with 503). Default 300.
   * @example 500
   */
  commandTimeout?: number
}

export const DEFAULT_REDIS_COMMAND_TIMEOUT = 300

// INCRBY, and a TTL only on a key that has none (the one it just created):
// later increments never extend the window. Works on Redis 6 too (unlike PEXPIRE NX).
const INCREMENT = `local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value`
const INCREMENT_SHA = createHash('sha1').update(INCREMENT).digest('hex')

function unavailable (message: string): InstanceType<typeof StoreUnavailableError> {
  // The cause is for the logs only: the client gets the generic 503 message.
  return new StoreUnavailableError({ cause: new Error(message) })
}

function isClient (value: unknown): value is RedisStoreClient {
  if (typeof value !== 'object' || value === null) return false
  const client = value as Record<string, unknown>
  return typeof client.status === 'string' &&
    ['get', 'set', 'del', 'evalsha', 'eval', 'connect', 'once', 'removeListener'].every((name) => typeof client[name] === 'function')
}

/** Redis wants whole positive milliseconds; a sub-millisecond TTL still expires. */
function ttl (ms: number): number {
  return Math.max(1, Math.ceil(ms))
}

class RedisStore implements GatehouseStore {
  readonly #client: RedisStoreClient
  readonly #prefix: string
  readonly #timeout: number
  // One 'ready' listener shared by every call waiting for the connection.
  #ready: Promise<void> | undefined

  constructor (client: RedisStoreClient, prefix: string, timeout: number) {
    this.#client = client
    this.#prefix = prefix
    this.#timeout = timeout
  }

  /** Runs `command` once connected, failing after the timeout in any case. */
  async #run<T> (name: string, command: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#timeout
    const status = this.#client.status
    if (status === 'end') throw unavailable(`redis ${name}: the client was closed`)
    if (status !== 'ready') await this.#bounded(this.#connected(), deadline, `redis ${name}: not connected within ${this.#timeout} ms (status ${status})`)
    return this.#bounded(command(), deadline, `redis ${name}: no answer within ${this.#timeout} ms`)
  }

  #connected (): Promise<void> {
    if (this.#ready === undefined) {
      this.#ready = new Promise<void>((resolve) => {
        this.#client.once('ready', () => {
          this.#ready = undefined
          resolve()
        })
      })
      // A lazyConnect client connects on its first command; this one must not be queued.
      if (this.#client.status === 'wait') this.#client.connect().catch(() => {})
    }
    return this.#ready
  }

  #bounded<T> (promise: Promise<T>, deadline: number, message: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      // Unref'd: a command Redis never answers must not hold the process open.
      const timer = setTimeout(() => reject(unavailable(message)), Math.max(0, deadline - Date.now())).unref()
      promise.then((value) => {
        clearTimeout(timer)
        resolve(value)
      }, (err: unknown) => {
        clearTimeout(timer)
        reject(new StoreUnavailableError({ cause: err }))
      })
    })
  }

  async get (key: string): Promise<string | undefined> {
    const value = await this.#run('GET', () => this.#client.get(this.#prefix + key))
    return value ?? undefined
  }

  async set (key: string, value: string, ttlMs: number): Promise<void> {
    await this.#run('SET', () => this.#client.set(this.#prefix + key, value, 'PX', ttl(ttlMs)))
  }

  async add (key: string, value: string, ttlMs: number): Promise<boolean> {
    return await this.#run('SET NX', () => this.#client.set(this.#prefix + key, value, 'PX', ttl(ttlMs), 'NX')) === 'OK'
  }

  async increment (key: string, delta: number, ttlMs: number): Promise<number> {
    const args = [this.#prefix + key, delta, ttl(ttlMs)] as const
    const value = await this.#run('INCRBY', async () => {
      try {
        return await this.#client.evalsha(INCREMENT_SHA, 1, ...args)
      } catch (err) {
        // First use on this server (or after SCRIPT FLUSH / a restart): send the script itself.
        if (!String((err as Error | undefined)?.message).startsWith('NOSCRIPT')) throw err
        return await this.#client.eval(INCREMENT, 1, ...args)
      }
    })
    return Number(value)
  }

  async delete (key: string): Promise<void> {
    await this.#run('DEL', () => this.#client.del(this.#prefix + key))
  }
}

/**
 * A `GatehouseStore` on Redis through an ioredis client, shared by every
 * gateway instance that uses the same Redis (and prefix). A call that cannot
 * get an answer within `commandTimeout` rejects, and the gateway fails closed
 * (503 `FST_GATEHOUSE_STORE_UNAVAILABLE`), except login throttling with
 * `onStoreError: 'open'`.
 *
 * @example
 * import { Redis } from 'ioredis'
 * const redis = new Redis(process.env.REDIS_URL!)
 * app.addHook('onClose', async () => { redis.disconnect() })
 * await app.register(gatehouse, { auth: { secret, login: { verify }, refresh: true, store: redisStore({ client: redis }) }, targets })
 */
export function redisStore (opts: RedisStoreOptions): GatehouseStore {
  if (typeof opts !== 'object' || opts === null || !isClient(opts.client)) {
    throw new InvalidOptionError('redisStore.client', 'an ioredis Redis or Cluster client')
  }
  const prefix = opts.prefix ?? ''
  if (typeof prefix !== 'string' || !/^[!-~]{0,64}$/.test(prefix)) {
    throw new InvalidOptionError('redisStore.prefix', 'at most 64 printable ASCII characters without spaces, such as "erp:"')
  }
  const timeout = opts.commandTimeout ?? DEFAULT_REDIS_COMMAND_TIMEOUT
  if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 1 || timeout > 60_000) {
    throw new InvalidOptionError('redisStore.commandTimeout', 'an integer number of milliseconds from 1 to 60000')
  }
  return new RedisStore(opts.client, prefix, timeout)
}
