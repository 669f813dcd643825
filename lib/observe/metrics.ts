import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Exchange } from './exchange.js'
import type { ResolvedMetrics } from './options.js'

/*
 * The gateway's Prometheus instruments, in one registry per gateway instance
 * (unless the user hands one in). Labels come from configuration only (target
 * names, configured upstream origins, a fixed set of methods and outcomes),
 * never from a path, a user or a query, so their number is bounded.
 */

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])
// Envoy's and prom-client's default latency buckets, in seconds.
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const CIRCUIT = { closed: 0, 'half-open': 1, open: 2 } as const

/** What the gauges read at scrape time from one target's transport (structural: no import of lib/transport). */
export interface WatchedTransport {
  readonly balancer: { readonly nodes: ReadonlyArray<{ readonly origin: string, healthy: (now: number) => boolean }> }
  readonly breaker: { readonly state: keyof typeof CIRCUIT } | undefined
}

/** A method as a label: the seven the gateway proxies, anything else `OTHER`. */
export function methodLabel (method: string): string {
  return METHODS.has(method) ? method : 'OTHER'
}

/** `2xx`, `4xx`, ...: the status as a label of five values. */
export function statusClass (status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other'
}

export class GatehouseMetrics {
  readonly registry: Registry
  readonly #requests: Counter<'target' | 'method' | 'status_class'>
  readonly #duration: Histogram<'target'>
  readonly #upstreamDuration: Histogram<'target'>
  readonly #bytesIn: Counter<'target'>
  readonly #bytesOut: Counter<'target'>
  readonly #retries: Counter<'target'>
  readonly #tunnels: Gauge<'target'>
  readonly #logins: Counter<'outcome'>
  readonly #tokenFailures: Counter<'reason'>
  readonly #watched = new Map<string, WatchedTransport>()

  constructor (settings: ResolvedMetrics) {
    const registry = this.registry = settings.registry ?? new Registry()
    const registers = [registry]
    this.#requests = new Counter({ name: 'gatehouse_requests_total', help: 'Requests to a target, by method and status class', labelNames: ['target', 'method', 'status_class'], registers })
    this.#duration = new Histogram({ name: 'gatehouse_request_duration_seconds', help: 'Time from a request\'s arrival to the end of its response', labelNames: ['target'], buckets: BUCKETS, registers })
    this.#upstreamDuration = new Histogram({ name: 'gatehouse_upstream_duration_seconds', help: 'Time from sending a request upstream to its response headers', labelNames: ['target'], buckets: BUCKETS, registers })
    this.#bytesIn = new Counter({ name: 'gatehouse_request_bytes_total', help: 'Request body bytes sent upstream', labelNames: ['target'], registers })
    this.#bytesOut = new Counter({ name: 'gatehouse_response_bytes_total', help: 'Response body bytes sent to clients (before compression)', labelNames: ['target'], registers })
    this.#retries = new Counter({ name: 'gatehouse_upstream_retries_total', help: 'Upstream attempts after the first', labelNames: ['target'], registers })
    this.#tunnels = new Gauge({ name: 'gatehouse_websocket_tunnels', help: 'Open WebSocket tunnels', labelNames: ['target'], registers })
    this.#logins = new Counter({ name: 'gatehouse_logins_total', help: 'Login attempts by outcome', labelNames: ['outcome'], registers })
    this.#tokenFailures = new Counter({ name: 'gatehouse_token_failures_total', help: 'Requests refused for their token, by reason', labelNames: ['reason'], registers })
    const watched = this.#watched
    // Read at scrape time: the request path pays nothing for them.
    // With workers, an upstream is up only if every worker sees it up, and a circuit counts at its worst.
    new Gauge({ // eslint-disable-line no-new
      name: 'gatehouse_upstream_up',
      help: 'Whether the gateway sends traffic to an upstream (1) or holds it ejected or down (0)',
      labelNames: ['target', 'upstream'],
      registers,
      aggregator: 'min',
      collect () {
        this.reset()
        const now = Date.now()
        for (const [target, transport] of watched) {
          for (const node of transport.balancer.nodes) this.set({ target, upstream: node.origin }, node.healthy(now) ? 1 : 0)
        }
      }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'gatehouse_circuit_state',
      help: 'The target\'s circuit breaker: 0 closed, 1 half-open, 2 open (targets with a breaker only)',
      labelNames: ['target'],
      registers,
      aggregator: 'max',
      collect () {
        this.reset()
        for (const [target, transport] of watched) {
          if (transport.breaker !== undefined) this.set({ target }, CIRCUIT[transport.breaker.state])
        }
      }
    })
    if (settings.defaultMetrics) collectDefaultMetrics({ register: registry })
  }

  /** A target's transport, read by the health and circuit gauges at each scrape. */
  watch (target: string, transport: WatchedTransport): void {
    this.#watched.set(target, transport)
    // Targets appear in the counters before their first request: a rate of 0 is not a missing series.
    this.#bytesIn.inc({ target }, 0)
    this.#bytesOut.inc({ target }, 0)
    this.#retries.inc({ target }, 0)
  }

  exchange (exchange: Exchange, status: number, seconds: number): void {
    const target = exchange.target
    this.#requests.inc({ target, method: methodLabel(exchange.method), status_class: statusClass(status) })
    this.#duration.observe({ target }, seconds)
    if (exchange.upstreamMs !== undefined) this.#upstreamDuration.observe({ target }, exchange.upstreamMs / 1000)
    if (exchange.bytesIn > 0) this.#bytesIn.inc({ target }, exchange.bytesIn)
    if (exchange.bytesOut > 0) this.#bytesOut.inc({ target }, exchange.bytesOut)
    if (exchange.retries > 0) this.#retries.inc({ target }, exchange.retries)
  }

  login (outcome: string): void {
    this.#logins.inc({ outcome })
  }

  tokenFailure (reason: string): void {
    this.#tokenFailures.inc({ reason })
  }

  tunnel (target: string, delta: 1 | -1): void {
    this.#tunnels.inc({ target }, delta)
  }

  /** The exposition text and its content type. */
  async scrape (): Promise<{ text: string, contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType }
  }
}
