import type { Duplex } from 'node:stream'
import { Pool, errors } from 'undici'
import type { Dispatcher } from 'undici'

type Handler = Dispatcher.DispatchHandler

const CONTENT_TYPE = 'content-type'
const EVENT_STREAM = 'text/event-stream'

/** True when raw response headers (name, value, name, value ...) declare an event stream. */
function isEventStream (rawHeaders: Buffer[]): boolean {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as Buffer
    if (name.length === CONTENT_TYPE.length && name.toString('latin1').toLowerCase() === CONTENT_TYPE) {
      return String(rawHeaders[i + 1]).trimStart().toLowerCase().startsWith(EVENT_STREAM)
    }
  }
  return false
}

/**
 * The body-idle timeout, done here rather than with undici's `bodyTimeout`
 * because it depends on the response: an event stream may stay silent for
 * long (`eventStreamIdle`, 0 = no limit), other bodies get `idle` ms between
 * chunks. On expiry the request is aborted with undici's BodyTimeoutError:
 * the upstream connection is closed and the body stream errors, so a client
 * already receiving it sees a cut transfer. While the client is not reading
 * (back-pressure) the upstream is not to blame and the timer waits.
 *
 * It speaks the handler interface `pool.request()`'s own handler speaks
 * (onConnect / onHeaders / onData ...), so no adapter sits between the two;
 * undici's `compose()` would add one on each side, and a Proxy in front of
 * the pool, for every request.
 */
class IdleHandler implements Handler {
  readonly #handler: Handler
  readonly #idle: number
  readonly #eventStreamIdle: number
  #abort: ((err?: Error) => void) | undefined
  #timer: NodeJS.Timeout | undefined
  #paused = false

  constructor (handler: Handler, idle: number, eventStreamIdle: number) {
    this.#handler = handler
    this.#idle = idle
    this.#eventStreamIdle = eventStreamIdle
  }

  onConnect (abort: (err?: Error) => void, context?: object): void {
    this.#abort = abort
    ;(this.#handler.onConnect as (abort: (err?: Error) => void, context?: object) => void)(abort, context)
  }

  onError (err: Error): void {
    this.#clear()
    this.#handler.onError?.(err)
  }

  onUpgrade (statusCode: number, headers: Buffer[] | string[] | null, socket: Duplex): void {
    this.#handler.onUpgrade?.(statusCode, headers, socket)
  }

  onResponseStarted (): void {
    this.#handler.onResponseStarted?.()
  }

  onBodySent (chunkSize: number, totalBytesSent: number): void {
    this.#handler.onBodySent?.(chunkSize, totalBytesSent)
  }

  onHeaders (statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode >= 200) {
      const ms = isEventStream(headers) ? this.#eventStreamIdle : this.#idle
      if (ms > 0) this.#start(ms)
    }
    const wrapped = this.#timer === undefined
      ? resume
      : () => {
          this.#paused = false
          resume()
        }
    return this.#flowing(this.#handler.onHeaders?.(statusCode, headers, wrapped, statusText))
  }

  onData (chunk: Buffer): boolean {
    this.#timer?.refresh()
    return this.#flowing(this.#handler.onData?.(chunk))
  }

  onComplete (trailers: string[] | null): void {
    this.#clear()
    this.#handler.onComplete?.(trailers)
  }

  #flowing (result: boolean | undefined): boolean {
    // false: the body's reader is full; undici waits for resume().
    if (result === false) this.#paused = true
    return result !== false
  }

  #start (ms: number): void {
    this.#timer = setTimeout(() => {
      if (this.#paused) {
        this.#timer?.refresh()
        return
      }
      this.#timer = undefined
      this.#abort?.(new errors.BodyTimeoutError())
    }, ms)
    this.#timer.unref()
  }

  #clear (): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }
}

/** An undici Pool whose every request gets the body-idle timeouts above. */
export class IdlePool extends Pool {
  readonly #idle: number
  readonly #eventStreamIdle: number

  constructor (origin: string, options: Pool.Options, idle: number, eventStreamIdle: number) {
    super(origin, options)
    this.#idle = idle
    this.#eventStreamIdle = eventStreamIdle
  }

  override dispatch (opts: Dispatcher.DispatchOptions, handler: Handler): boolean {
    // The transport only calls request(), whose handler speaks this interface;
    // a handler of undici's newer one (onRequestStart ...) passes untimed.
    if (typeof handler.onRequestStart === 'function') return super.dispatch(opts, handler)
    return super.dispatch(opts, new IdleHandler(handler, this.#idle, this.#eventStreamIdle))
  }
}
