import type { FastifyInstance } from 'fastify'
import { ShuttingDownError } from '../errors.js'

const DRAIN = Symbol.for('fastify-gatehouse.drain')

interface Closable { close: () => Promise<void> }

/** Tracks in-flight requests of the gatehouse scope and the transports to close. */
class Drain {
  draining = false
  inFlight = 0
  readonly transports = new Set<Closable>()
  readonly #idle: Array<() => void> = []

  /** A response's 'close' listener: it fires once, when the response is done or cut. */
  readonly done = (): void => {
    this.inFlight--
    if (this.inFlight === 0) for (const wake of this.#idle.splice(0)) wake()
  }

  /** Resolves when nothing is in flight or after `ms`. */
  settle (ms: number): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.#idle.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }
}

/**
 * Graceful shutdown of the gatehouse scope. On `fastify.close()` (its
 * `preClose` phase): the server stops accepting connections, new requests on
 * open connections get 503 FST_GATEHOUSE_SHUTTING_DOWN (when the host sets
 * `return503OnClosing: false`; otherwise Fastify's own 503 answers first),
 * in-flight requests get up to `drainTimeout` ms to finish, then every
 * upstream pool is destroyed, cutting what is still running (long streams).
 */
export function gracefulShutdown (scope: FastifyInstance, settings: { readonly drainTimeout: number }): void {
  const drain = new Drain()
  scope.decorate(DRAIN as unknown as string, drain)
  scope.addHook('onRequest', (request, reply, done) => {
    // WebSocket tunnels are closed (1001) by their own onClose; an upgrade's
    // reply never finishes, so it is not waited for.
    if (request.raw.headers.upgrade !== undefined) return done()
    if (drain.draining) {
      reply.header('connection', 'close').header('retry-after', '1')
      done(new ShuttingDownError())
      return
    }
    drain.inFlight++
    // One shared listener, no per-request closure: the response emits 'close'
    // exactly once, after it finished or when its connection went.
    reply.raw.on('close', drain.done)
    done()
  })

  scope.addHook('preClose', async function drainRequests () {
    drain.draining = true
    // Stop accepting connections now; Fastify's own close comes after this hook.
    if (scope.server.listening) scope.server.close()
    await drain.settle(settings.drainTimeout)
    await Promise.all([...drain.transports].map((transport) => transport.close()))
  })
}

/** Registers a target's transport so that the drain closes it after the deadline. */
export function closeOnDrain (scope: FastifyInstance, transport: Closable): void {
  const drain = (scope as unknown as Record<symbol, Drain | undefined>)[DRAIN]
  drain?.transports.add(transport)
}
