import type { ServerProcess } from './processes.js'

export const CONTENDERS = ['direct', 'baseline', 'floor', 'gatehouse'] as const
/** The revocation scenario's pair: gatehouse with per-request store lookups, MemoryStore against Redis. */
export const REVOCATION_CONTENDERS = ['revoke-memory', 'revoke-redis'] as const
export type ContenderName = typeof CONTENDERS[number] | typeof REVOCATION_CONTENDERS[number]

/** One way of reaching the upstream, as the load generator sees it. */
export interface Contender {
  name: ContenderName
  /** Base URL the client calls. */
  url: string
  /** The process whose CPU time and memory are measured: the gateway, or the upstream for `direct`. */
  measured: ServerProcess
  /** Headers that authenticate a client. */
  credentials: Record<string, string>
  /**
   * Whether it checks credentials at all: `floor` has no auth, so the checks
   * that expect 401 do not apply to it.
   */
  authenticates: boolean
  /** Credentials that must be refused, with a label each. */
  refused: Array<{ label: string, headers: Record<string, string> }>
}
