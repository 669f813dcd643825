import type { ResolvedMiddleware } from '../options/resolved.js'
import type { GatehouseContext } from '../types.js'

export type Terminal = (ctx: GatehouseContext<any>) => Promise<void>
export type Composed = (ctx: GatehouseContext<any>, terminal: Terminal) => Promise<void>

const NEXT_CALLED_TWICE = 'next() called more than once in one middleware'

/**
 * koa-compose semantics over middleware already sorted by phase: each layer
 * wraps the ones after it, and `terminal` (the upstream call) is the core.
 */
export function compose (middleware: readonly ResolvedMiddleware[]): Composed {
  const handlers = middleware.map((m) => m.handler)
  if (handlers.length === 0) return (ctx, terminal) => terminal(ctx)

  return function run (ctx, terminal) {
    let reached = -1
    function dispatch (i: number): Promise<void> {
      if (i <= reached) return Promise.reject(new Error(NEXT_CALLED_TWICE))
      reached = i
      if (i === handlers.length) return terminal(ctx)
      try {
        return Promise.resolve((handlers[i] as (typeof handlers)[number])(ctx, () => dispatch(i + 1)))
      } catch (err) {
        return Promise.reject(err)
      }
    }
    return dispatch(0)
  }
}
