import type { EventEmitter } from 'node:events'

/**
 * How long a test waits for something the gateway should do at once. Long
 * enough for a machine loaded by other jobs, far below tap's file timeout,
 * so a hang fails as an assertion that says what did not happen.
 */
export const DEFAULT_DEADLINE = 10_000

export interface Deadline {
  /** What the test was waiting for, e.g. 'the upstream saw its connection close'. */
  message: string
  /** Milliseconds; DEFAULT_DEADLINE unless given. */
  timeout?: number
}

export interface WaitForOptions extends Deadline {
  /** Milliseconds between checks (10 unless given). */
  interval?: number
}

/** What a truthy check result can be. */
export type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>

function timedOut (opts: Deadline): Error {
  return new Error(`timed out after ${opts.timeout ?? DEFAULT_DEADLINE} ms waiting for: ${opts.message}`)
}

/**
 * Resolves with `promise`, or rejects with `opts.message` once the deadline
 * passes. Prefer this over polling whenever the thing awaited is an event or
 * a promise.
 */
export function within<T> (promise: Promise<T>, opts: Deadline): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(timedOut(opts)), opts.timeout ?? DEFAULT_DEADLINE)
    promise.then(
      (value) => { clearTimeout(timer); resolve(value) },
      (err: unknown) => { clearTimeout(timer); reject(err) }
    )
  })
}

/**
 * The arguments of the next `event` on `emitter`, or a rejection with
 * `opts.message` after the deadline. Unlike `events.once`, an 'error' event
 * does not settle it: the test asserts on the event it names.
 */
export function nextEvent (emitter: EventEmitter, event: string, opts: Deadline): Promise<unknown[]> {
  let listener: ((...args: unknown[]) => void) | undefined
  const seen = new Promise<unknown[]>((resolve) => {
    listener = (...args: unknown[]) => resolve(args)
    emitter.once(event, listener)
  })
  return within(seen, opts).finally(() => {
    if (listener !== undefined) emitter.removeListener(event, listener)
  })
}

/**
 * Polls `check` until it returns a truthy value (which it resolves with), or
 * rejects with `opts.message` after the deadline. Only for state that emits
 * no event (counters kept by a server, a pool's open sockets); otherwise use
 * `within` or `nextEvent`.
 */
export async function waitFor<T> (check: () => T | Promise<T>, opts: WaitForOptions): Promise<Truthy<T>> {
  const deadline = Date.now() + (opts.timeout ?? DEFAULT_DEADLINE)
  for (;;) {
    const value = await check()
    if (value) return value as Truthy<T>
    if (Date.now() >= deadline) throw timedOut(opts)
    await new Promise((resolve) => setTimeout(resolve, opts.interval ?? 10))
  }
}

/** A promise with its resolve function outside, for an upstream to say "I saw it". */
export function signal<T = void> (): { promise: Promise<T>, resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((_resolve) => { resolve = _resolve })
  return { promise, resolve }
}
