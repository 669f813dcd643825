import type { Dispatcher } from 'undici'
import type { ResolvedTransport } from './options.js'

/** One upstream URL of a target, with its pool and health state. */
export class UpstreamNode {
  readonly origin: string
  /** What the Host header says for this upstream. */
  readonly host: string
  readonly pool: Dispatcher
  /** Requests sent and not finished (body included). */
  inFlight = 0
  /** Consecutive failures seen on real traffic. */
  failures = 0
  /** Passive health: skipped until this time (ms since epoch). */
  ejectedUntil = 0
  /** Active health: marked down by probes. */
  down = false

  /** Closes the pool's connections. */
  readonly destroy: () => Promise<void>

  constructor (origin: string, pool: Dispatcher, destroy: () => Promise<void>) {
    this.origin = origin
    this.host = new URL(origin).host
    this.pool = pool
    this.destroy = destroy
  }

  healthy (now: number): boolean {
    return !this.down && this.ejectedUntil <= now
  }
}

/**
 * Picks an upstream among the healthy ones (round-robin or least-in-flight)
 * and keeps passive health: `failures` consecutive failures eject an upstream
 * for `coolDown` ms.
 */
export class Balancer {
  readonly nodes: readonly UpstreamNode[]
  readonly #strategy: ResolvedTransport['balance']
  readonly #passive: ResolvedTransport['passiveHealth']
  #next = 0

  constructor (nodes: UpstreamNode[], strategy: ResolvedTransport['balance'], passive: ResolvedTransport['passiveHealth']) {
    this.nodes = nodes
    this.#strategy = strategy
    this.#passive = passive
  }

  /** A healthy upstream, preferring one other than `avoid` (the one that just failed). */
  pick (now: number, avoid?: UpstreamNode): UpstreamNode | undefined {
    const count = this.nodes.length
    let fallback: UpstreamNode | undefined
    if (this.#strategy === 'least-in-flight') {
      let best: UpstreamNode | undefined
      // Start at a rotating index so ties spread instead of piling on the first.
      const start = this.#next++ % count
      for (let i = 0; i < count; i++) {
        const node = this.nodes[(start + i) % count] as UpstreamNode
        if (!node.healthy(now)) continue
        if (node === avoid) {
          fallback = node
          continue
        }
        if (best === undefined || node.inFlight < best.inFlight) best = node
      }
      return best ?? fallback
    }
    for (let i = 0; i < count; i++) {
      const node = this.nodes[this.#next++ % count] as UpstreamNode
      if (!node.healthy(now)) continue
      if (node === avoid) {
        fallback = node
        continue
      }
      return node
    }
    return fallback
  }

  /** Milliseconds until some upstream may be healthy again. */
  retryAfter (now: number, probeInterval: number | undefined): number {
    let soonest = Infinity
    for (const node of this.nodes) {
      const at = node.down ? now + (probeInterval ?? 1000) : node.ejectedUntil
      soonest = Math.min(soonest, at - now)
    }
    return Math.max(soonest, 0)
  }

  success (node: UpstreamNode): void {
    node.failures = 0
  }

  /** Returns true when this failure ejected the upstream. */
  failure (node: UpstreamNode, now: number): boolean {
    node.failures++
    if (this.#passive === undefined || node.failures < this.#passive.failures) return false
    node.failures = 0
    node.ejectedUntil = now + this.#passive.coolDown
    return true
  }
}
