import type { Duplex } from 'node:stream'
import { Pool, errors, util } from 'undici'
import type { Dispatcher } from 'undici'

type Handler = Dispatcher.DispatchHandler

const CONTENT_TYPE = 'content-type'
const EVENT_STREAM = 'text/event-stream'

/** True when raw response headers (name, value, name, value ...) declare an event stream. */
function isEventStream (rawHeaders: Buffer[]): boolean {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as Buffer
    // 'c' or 'C' first: most names of that length are skipped without a copy.
    if (name.length === CONTENT_TYPE.length && ((name[0] as number) | 0x20) === 0x63 && name.toString('latin1').toLowerCase() === CONTENT_TYPE) {
      return String(rawHeaders[i + 1]).trimStart().toLowerCase().startsWith(EVENT_STREAM)
    }
  }
  return false
}

// Handlers whose response started during the current turn of the event
// loop. Their timers are set when the turn ends: by then a small body has
// usually arrived whole (one socket read carries head and body), so most
// requests never create a timer at all.
let arming: IdleHandler[] = []

function armStarted (): void {
  const started = arming
  arming = []
  for (const handler of started) handler.arm()
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
  // The timeout to arm at the end of the turn; 0 once armed or done.
  #pending = 0
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
    let ms = 0
    if (statusCode >= 200) {
      ms = isEventStream(headers) ? this.#eventStreamIdle : this.#idle
      if (ms > 0) {
        this.#pending = ms
        if (arming.push(this) === 1) queueMicrotask(armStarted)
      }
    }
    const wrapped = ms === 0
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

  /** Starts the timer of a response that has not ended by the end of its first turn. */
  arm (): void {
    const ms = this.#pending
    this.#pending = 0
    if (ms > 0) this.#start(ms)
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
    this.#pending = 0
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }
}

/** What a handler of undici's newer interface gets to pause, resume and abort its request. */
class Controller implements Dispatcher.DispatchController {
  #abort: (reason?: Error) => void
  #resume: (() => void) | undefined = undefined
  #paused = false
  #aborted = false
  #reason: Error | null = null

  constructor (abort: (reason?: Error) => void) {
    this.#abort = abort
  }

  /** Where undici's own resume goes, once the response has started. */
  resumeWith (resume: () => void): void {
    this.#resume = resume
  }

  get aborted (): boolean { return this.#aborted }
  get paused (): boolean { return this.#paused }
  get reason (): Error | null { return this.#reason }

  pause (): void {
    this.#paused = true
  }

  resume (): void {
    if (!this.#paused) return
    this.#paused = false
    this.#resume?.()
  }

  abort (reason: Error): void {
    if (this.#aborted) return
    this.#aborted = true
    this.#reason = reason
    this.#abort(reason)
  }
}

/**
 * Presents a handler of undici's newer interface (onRequestStart,
 * onResponseStart, onResponseData ...) as one of the interface IdleHandler
 * speaks, as undici's own (unexported) UnwrapHandler does, so it is timed
 * too: with `bodyTimeout` 0 it would otherwise have no body-idle limit.
 */
class LegacyAdapter implements Handler {
  readonly #handler: Handler
  #controller: Controller | undefined

  constructor (handler: Handler) {
    this.#handler = handler
  }

  #started (abort: (reason?: Error) => void = () => {}): Controller {
    this.#controller ??= new Controller(abort)
    return this.#controller
  }

  onConnect (abort: (err?: Error) => void, context?: object): void {
    this.#controller = new Controller(abort)
    this.#handler.onRequestStart?.(this.#controller, context)
  }

  onUpgrade (statusCode: number, headers: Buffer[] | string[] | null, socket: Duplex): void {
    this.#handler.onRequestUpgrade?.(this.#started(), statusCode, util.parseHeaders(headers ?? []), socket)
  }

  onHeaders (statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean {
    const controller = this.#started()
    controller.resumeWith(resume)
    this.#handler.onResponseStart?.(controller, statusCode, util.parseHeaders(headers), statusText)
    return !controller.paused
  }

  onData (chunk: Buffer): boolean {
    const controller = this.#started()
    this.#handler.onResponseData?.(controller, chunk)
    return !controller.paused
  }

  onComplete (trailers: string[] | null): void {
    this.#handler.onResponseEnd?.(this.#started(), util.parseHeaders(trailers ?? []))
  }

  onError (err: Error): void {
    if (typeof this.#handler.onResponseError !== 'function') throw new errors.InvalidArgumentError('invalid onError method')
    this.#handler.onResponseError(this.#started(), err)
  }
}

/**
 * An undici Pool whose every request gets the body-idle timeouts above,
 * whichever handler interface it comes with: `request()` in the undici of
 * the lock file hands over the older one, its interceptors the newer one.
 */
export class IdlePool extends Pool {
  readonly #idle: number
  readonly #eventStreamIdle: number

  constructor (origin: string, options: Pool.Options, idle: number, eventStreamIdle: number) {
    super(origin, options)
    this.#idle = idle
    this.#eventStreamIdle = eventStreamIdle
  }

  override dispatch (opts: Dispatcher.DispatchOptions, handler: Handler): boolean {
    const legacy = typeof handler.onRequestStart === 'function' ? new LegacyAdapter(handler) : handler
    return super.dispatch(opts, new IdleHandler(legacy, this.#idle, this.#eventStreamIdle))
  }
}
