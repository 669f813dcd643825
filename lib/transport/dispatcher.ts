import { Pool } from 'undici'
import type { Dispatcher } from 'undici'
import type { ResolvedTarget } from '../options.js'

// Upstream connections per target; undici queues requests beyond it.
const POOL_CONNECTIONS = 128

/** What reply-from sends requests through for one target. */
export interface UpstreamDispatcher {
  /** Passed to reply-from as its `undici` option. */
  readonly dispatcher: Dispatcher
  /** Closes every connection; called from the target scope's onClose. */
  close: () => Promise<void>
}

/**
 * The connection pool of one target. TLS certificates are verified
 * (reply-from's own default would not) and the target's timeouts apply.
 */
export function createDispatcher (target: ResolvedTarget): UpstreamDispatcher {
  const pool = new Pool(target.origin, {
    connections: POOL_CONNECTIONS,
    connect: { timeout: target.timeouts.connect, rejectUnauthorized: true },
    headersTimeout: target.timeouts.response,
    bodyTimeout: target.timeouts.idle
  })
  return { dispatcher: pool, close: () => pool.destroy() }
}
