import type { FastifyInstance } from 'fastify'
import type { ResolvedAuth } from '../options/resolved.js'
import { RefreshSessions } from './refresh.js'
import { MemoryStore } from './store.js'
import type { GatehouseStore } from '../types.js'
import { LoginThrottle } from './throttle.js'

/** The run-time parts of the token lifecycle, shared by the login, refresh and logout routes. */
export interface TokenLifecycle {
  /** `undefined` when no lifecycle feature is on: then nothing is ever looked up. */
  readonly store: GatehouseStore | undefined
  readonly sessions: RefreshSessions | undefined
  readonly throttle: LoginThrottle | undefined
}

/**
 * Builds the lifecycle on the user's store (left open: they own it) or on an
 * in-memory one that is cleared when the app closes.
 */
export function createTokenLifecycle (scope: FastifyInstance, auth: ResolvedAuth): TokenLifecycle {
  const { refresh, logout, throttle, store: userStore } = auth.lifecycle
  if (refresh === false && logout === false && throttle === false) {
    return { store: undefined, sessions: undefined, throttle: undefined }
  }
  let store = userStore
  if (store === undefined) {
    const memory = new MemoryStore()
    scope.addHook('onClose', async () => memory.clear())
    store = memory
  }
  return {
    store,
    sessions: refresh === false ? undefined : new RefreshSessions(store, refresh),
    throttle: throttle === false ? undefined : new LoginThrottle(store, throttle)
  }
}
