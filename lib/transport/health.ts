import type { FastifyBaseLogger } from 'fastify'
import type { UpstreamNode } from './balancer.js'
import type { ResolvedTransport } from './options.js'

/**
 * Active health checks: every `interval` ms each upstream gets a GET of the
 * probe path through its own pool (same TLS settings as traffic). A 2xx/3xx
 * answer counts as a success; `unhealthyThreshold` consecutive failures mark
 * it down, `healthyThreshold` consecutive successes up again. Timers are
 * unref'd: they never keep the process alive, and `stop()` clears them.
 */
export class HealthChecker {
  readonly #nodes: readonly UpstreamNode[]
  readonly #settings: NonNullable<ResolvedTransport['activeHealth']>
  readonly #log: FastifyBaseLogger | undefined
  readonly #timers: NodeJS.Timeout[] = []
  readonly #streaks = new Map<UpstreamNode, { ok: number, failed: number, running: boolean }>()
  #stopped = false

  constructor (nodes: readonly UpstreamNode[], settings: NonNullable<ResolvedTransport['activeHealth']>, log?: FastifyBaseLogger) {
    this.#nodes = nodes
    this.#settings = settings
    this.#log = log
  }

  start (): void {
    for (const node of this.#nodes) {
      this.#streaks.set(node, { ok: 0, failed: 0, running: false })
      void this.probe(node)
      const timer = setInterval(() => { void this.probe(node) }, this.#settings.interval)
      timer.unref()
      this.#timers.push(timer)
    }
  }

  stop (): void {
    this.#stopped = true
    for (const timer of this.#timers) clearInterval(timer)
    this.#timers.length = 0
  }

  /** One probe of one upstream; overlapping probes are skipped. */
  async probe (node: UpstreamNode): Promise<void> {
    const streak = this.#streaks.get(node)
    if (streak === undefined || streak.running || this.#stopped) return
    streak.running = true
    let ok = false
    try {
      const { statusCode, body } = await node.pool.request({
        origin: node.origin,
        path: this.#settings.path,
        method: 'GET',
        headers: { host: node.host, 'user-agent': 'fastify-gatehouse-health' },
        headersTimeout: this.#settings.timeout,
        bodyTimeout: this.#settings.timeout,
        signal: AbortSignal.timeout(this.#settings.timeout)
      })
      await body.dump()
      ok = statusCode >= 200 && statusCode < 400
    } catch {}
    streak.running = false
    if (this.#stopped) return
    if (ok) {
      streak.ok++
      streak.failed = 0
      if (node.down && streak.ok >= this.#settings.healthyThreshold) {
        node.down = false
        node.failures = 0
        node.ejectedUntil = 0
        this.#log?.info({ upstream: node.origin }, 'upstream healthy again')
      }
    } else {
      streak.failed++
      streak.ok = 0
      if (!node.down && streak.failed >= this.#settings.unhealthyThreshold) {
        node.down = true
        this.#log?.warn({ upstream: node.origin }, 'upstream failed its health checks')
      }
    }
  }
}
