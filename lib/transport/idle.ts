import { errors } from 'undici'
import type { Dispatcher } from 'undici'

type Handler = Dispatcher.DispatchHandler
type Controller = Dispatcher.DispatchController

function isEventStream (headers: Record<string, string | string[] | undefined>): boolean {
  const type = headers['content-type']
  const value = Array.isArray(type) ? type[0] : type
  return value !== undefined && value.trimStart().toLowerCase().startsWith('text/event-stream')
}

/**
 * The body-idle timeout, done here rather than with undici's `bodyTimeout`
 * because it depends on the response: an event stream may stay silent for
 * long (`eventStreamIdle`, 0 = no limit), other bodies get `idle` ms between
 * chunks. On expiry the request is aborted with undici's BodyTimeoutError:
 * the upstream connection is closed and the body stream errors, so a client
 * already receiving it sees a cut transfer. While the client is not reading
 * (back-pressure) the upstream is not to blame and the timer waits.
 */
class IdleHandler implements Handler {
  readonly #handler: Handler
  readonly #idle: number
  readonly #eventStreamIdle: number
  #timer: NodeJS.Timeout | undefined

  constructor (handler: Handler, idle: number, eventStreamIdle: number) {
    this.#handler = handler
    this.#idle = idle
    this.#eventStreamIdle = eventStreamIdle
  }

  onRequestStart (controller: Controller, context: unknown): void {
    this.#handler.onRequestStart?.(controller, context)
  }

  onRequestUpgrade (controller: Controller, statusCode: number, headers: Record<string, string | string[] | undefined>, socket: import('node:stream').Duplex): void {
    this.#handler.onRequestUpgrade?.(controller, statusCode, headers as never, socket)
  }

  onResponseStart (controller: Controller, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    const ms = isEventStream(headers) ? this.#eventStreamIdle : this.#idle
    if (ms > 0 && statusCode >= 200) {
      this.#timer = setTimeout(() => {
        if (controller.paused) {
          this.#timer?.refresh()
          return
        }
        this.#timer = undefined
        controller.abort(new errors.BodyTimeoutError())
      }, ms)
      this.#timer.unref()
    }
    this.#handler.onResponseStart?.(controller, statusCode, headers as never, statusMessage)
  }

  onResponseData (controller: Controller, chunk: Buffer): void {
    this.#timer?.refresh()
    this.#handler.onResponseData?.(controller, chunk)
  }

  onResponseEnd (controller: Controller, trailers: Record<string, string | string[] | undefined>): void {
    this.#clear()
    this.#handler.onResponseEnd?.(controller, trailers as never)
  }

  onResponseError (controller: Controller, err: Error): void {
    this.#clear()
    this.#handler.onResponseError?.(controller, err)
  }

  #clear (): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }
}

/** An undici interceptor applying the body-idle timeouts above. */
export function idleInterceptor (idle: number, eventStreamIdle: number): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (opts, handler) => dispatch(opts, new IdleHandler(handler, idle, eventStreamIdle))
}
