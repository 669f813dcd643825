import type { PhaseName } from '../types.js'

/**
 * Named middleware phases; any number in between works too. Lower phases run
 * first on the way upstream and last on the way back.
 * @example middleware: [{ phase: Phase.clientEdge, handler: logRequests }]
 */
export const Phase = Object.freeze({
  clientEdge: 0,
  proxy: 500,
  targetEdge: 1000
} as const satisfies Record<PhaseName, number>)
