import type { FastifyInstance } from 'fastify'
import { InvalidOptionError, ShuttingDownError } from '../errors.js'
import { DEFAULT_DRAIN_TIMEOUT } from './options.js'

const DRAIN = Symbol.for('fastify-gatehouse.drain')

/** What readiness reads of a target's transport (lib/health). */
export interface UpstreamReadiness {
  readonly target: string
  /** Active health checks run on its upstreams. */
  readonly checked: boolean
  /** At least one upstream is not marked down by them. */
  readonly healthy: boolean
}

interface Closable {
  close: () => Promise<void>
  readiness?: () => UpstreamReadiness
}

/** Read-only view of the drain, for readiness. */
export interface DrainState {
  readonly draining: boolean
  readonly transports: ReadonlySet<Closable>
}

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

// Share of Fastify's per-hook close budget the drain may use; the rest is for
// destroying the pools after it.
const BUDGET_SHARE = 0.9

/**
 * How long the drain may last. Fastify runs each preClose hook under avvio's
 * `pluginTimeout` and `close()` rejects with AVV_ERR_READY_TIMEOUT when one
 * overruns, which crashes a host that awaits it at top level: the drain must
 * end well inside that budget. The default shrinks to fit; a value the user
 * set that cannot fit is refused at register rather than silently cut.
 */
export function drainTimeoutFor (configured: number | undefined, pluginTimeout: number | undefined): number {
  // 0 turns avvio's timeout off; Fastify's own default is 10 s.
  const budget = pluginTimeout === 0 ? Infinity : Math.floor((pluginTimeout ?? 10_000) * BUDGET_SHARE)
  if (configured === undefined) return Math.min(DEFAULT_DRAIN_TIMEOUT, budget)
  if (configured > budget) {
    throw new InvalidOptionError('shutdown.drainTimeout', `at most ${budget} ms, 90% of Fastify's pluginTimeout (${String(pluginTimeout)} ms), which bounds each close hook; raise pluginTimeout in Fastify's options or lower drainTimeout`)
  }
  return configured
}

/**
 * Graceful shutdown of the gatehouse scope. On `fastify.close()` (its
 * `preClose` phase): the server stops accepting connections, new requests on
 * open connections get 503 FST_GATEHOUSE_SHUTTING_DOWN (when the host sets
 * `return503OnClosing: false`; otherwise Fastify's own 503 answers first),
 * in-flight requests get up to the drain timeout (see drainTimeoutFor) to
 * finish, then every upstream pool is destroyed, cutting what is still
 * running (long streams), and `close()` goes on.
 */
export function gracefulShutdown (scope: FastifyInstance, settings: { readonly drainTimeout: number | undefined }): DrainState {
  const drainTimeout = drainTimeoutFor(settings.drainTimeout, scope.initialConfig.pluginTimeout)
  const drain = new Drain()
  scope.decorate(DRAIN as unknown as string, drain)
  scope.addHook('onRequest', (request, reply, done) => {
    // New WebSocket upgrades too: a tunnel opened now would be cut at once.
    if (drain.draining) {
      reply.header('connection', 'close').header('retry-after', '1')
      done(new ShuttingDownError())
      return
    }
    // WebSocket tunnels are closed (1001) by their own onClose; an upgrade's
    // reply never finishes, so it is not waited for.
    if (request.raw.headers.upgrade !== undefined) return done()
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
    await drain.settle(drainTimeout)
    await Promise.all([...drain.transports].map((transport) => transport.close()))
  })
  return drain
}

/** Registers a target's transport so that the drain closes it after the deadline. */
export function closeOnDrain (scope: FastifyInstance, transport: Closable): void {
  const drain = (scope as unknown as Record<symbol, Drain | undefined>)[DRAIN]
  drain?.transports.add(transport)
}
