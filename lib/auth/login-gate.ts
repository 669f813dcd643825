import { LoginBusyError } from '../errors.js'
import type { ResolvedLoginLimit } from './lifecycle-options.js'

/*
 * Bounds concurrent credential checks. A password check is scrypt on libuv's
 * 4-thread pool, which DNS lookups, file I/O and async zlib share: a login
 * flood must not take all of it. A few logins wait their turn (FIFO); past
 * that they are refused at once, as nginx's limit_conn/limit_req answer 503.
 */

/** Seconds a refused login is told to wait: checks take milliseconds each. */
export const LOGIN_BUSY_RETRY_AFTER = 1

export class LoginGate {
  readonly #limit: ResolvedLoginLimit
  readonly #waiting: Array<() => void> = []
  #running = 0

  constructor (limit: ResolvedLoginLimit) {
    this.#limit = limit
  }

  /** Runs `check` when a slot is free; calls `busy` and throws 503 when the queue is full too. */
  async run<T> (check: () => Promise<T> | T, busy: () => void): Promise<T> {
    if (this.#running >= this.#limit.concurrency) {
      if (this.#waiting.length >= this.#limit.queue) {
        busy()
        throw new LoginBusyError()
      }
      // The slot is handed over by `release`, so `#running` stays counted.
      await new Promise<void>((resolve) => { this.#waiting.push(resolve) })
    } else {
      this.#running++
    }
    try {
      return await check()
    } finally {
      this.#release()
    }
  }

  #release (): void {
    const next = this.#waiting.shift()
    if (next === undefined) this.#running--
    else next()
  }
}
