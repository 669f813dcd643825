import type { FastifyInstance, FastifyReply } from 'fastify'
import underPressure from '@fastify/under-pressure'
import type { DrainState } from '../transport/shutdown.js'
import type { GatehouseStore } from '../types.js'
import type { ResolvedHealth } from './options.js'

/*
 * /healthz and /readyz, in a scope of their own beside the gateway's: no
 * token, no drain refusal (readiness must say "draining" itself), no CORS or
 * compression. Bodies name reasons and targets, never upstream URLs.
 */

// A fixed key: the probe reads it, never writes.
const PROBE_KEY = 'gatehouse:health'

/** What readiness looks at. */
export interface ReadinessSources {
  /** The gateway scope's drain; read once the gateway registered. */
  readonly drain: () => DrainState | undefined
  /** The user's store (`auth.store`); `undefined` when none is configured. */
  readonly store: GatehouseStore | undefined
}

/** Resolves true when the store answers a read within `ms`. */
function storeAnswers (store: GatehouseStore, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms).unref()
    store.get(PROBE_KEY).then(() => {
      clearTimeout(timer)
      resolve(true)
    }, () => {
      clearTimeout(timer)
      resolve(false)
    })
  })
}

function answer (reply: FastifyReply, status: number, body: unknown): FastifyReply {
  return reply.code(status).header('cache-control', 'no-store').type('application/json; charset=utf-8').send(body)
}

/** Registers the liveness and readiness routes on `scope` (an encapsulated scope of their own). */
export async function registerHealth (scope: FastifyInstance, settings: ResolvedHealth, sources: ReadinessSources): Promise<void> {
  const maxDelay = settings.maxEventLoopDelay
  // A host that registered @fastify/under-pressure already has its
  // measurement: decorating again would fail, so it is read instead.
  if (maxDelay > 0 && !scope.hasDecorator('memoryUsage')) {
    // No threshold given to it: it only measures, and adds no hook that would
    // refuse the liveness route under load.
    await scope.register(underPressure, { sampleInterval: settings.sampleInterval })
  }

  async function reasons (): Promise<string[]> {
    const found: string[] = []
    if (!scope.server.listening) found.push('not listening')
    const drain = sources.drain()
    if (drain?.draining === true) found.push('draining')
    if (maxDelay > 0) {
      const delay = scope.memoryUsage().eventLoopDelay
      // under-pressure reports Infinity when the loop was blocked for a whole sample.
      if (delay > maxDelay) found.push(`event loop delay ${Number.isFinite(delay) ? `${Math.round(delay)} ms` : 'unmeasurable'} over ${maxDelay} ms`)
    }
    if (settings.upstreams && drain !== undefined) {
      for (const transport of drain.transports) {
        const state = transport.readiness?.()
        if (state?.checked === true && !state.healthy) found.push(`target "${state.target}": no healthy upstream`)
      }
    }
    if (sources.store !== undefined && !await storeAnswers(sources.store, settings.storeTimeout)) found.push('store unreachable')
    return found
  }

  scope.get(settings.path, async (_request, reply) => answer(reply, 200, { status: 'ok' }))
  scope.get(settings.readyPath, async (_request, reply) => {
    const found = await reasons()
    if (found.length === 0) return answer(reply, 200, { status: 'ok' })
    reply.header('retry-after', '1')
    return answer(reply, 503, { status: 'unavailable', reasons: found })
  })
}
