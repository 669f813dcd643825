import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Exchange } from './exchange.js'
import { GatehouseMetrics } from './metrics.js'
import type { WatchedTransport } from './metrics.js'
import type { ResolvedAccessLog, ResolvedMetrics } from './options.js'

/*
 * One per gateway instance: the event points the proxy, the transport, the
 * login route and the WebSocket tunnels report to, fanned out to the metrics
 * and the access log. It exists only when one of them is on; callers hold
 * `Observer | undefined`, so with both off the request path tests one
 * variable and does nothing else.
 */

// What a client that closed before its whole response gets in the log and
// the status class, as nginx's 499.
export const CLIENT_CLOSED = 499

const LOGIN_OUTCOMES: Record<string, string> = {
  FST_GATEHOUSE_BAD_CREDENTIALS: 'bad_credentials',
  FST_GATEHOUSE_TOO_MANY_ATTEMPTS: 'throttled',
  FST_GATEHOUSE_LOGIN_BUSY: 'busy',
  FST_GATEHOUSE_STORE_UNAVAILABLE: 'store_unavailable'
}

// The token errors keep one 401 shape for clients; their codes are the reasons.
const TOKEN_REASONS: Record<string, string> = {
  FST_GATEHOUSE_TOKEN_MISSING: 'missing',
  FST_GATEHOUSE_TOKEN_INVALID: 'invalid',
  FST_GATEHOUSE_TOKEN_EXPIRED: 'expired',
  FST_GATEHOUSE_TOKEN_REVOKED: 'revoked'
}

/** A login's outcome from the error it failed with: a fixed set of label values. */
export function loginOutcome (err: { code?: unknown, statusCode?: unknown }): string {
  const outcome = typeof err.code === 'string' ? LOGIN_OUTCOMES[err.code] : undefined
  if (outcome !== undefined) return outcome
  const status = typeof err.statusCode === 'number' ? err.statusCode : 500
  return status >= 400 && status < 500 ? 'bad_request' : 'error'
}

/** What a tunnel reports when it closes. */
export interface TunnelObservation {
  closed: (code: number) => void
}

// The request's record: a symbol key set only when observing, so other requests keep their shape.
const exchangeKey = Symbol('gatehouse.exchange.request')
type ExchangeRequest = FastifyRequest & { [exchangeKey]?: Exchange }

export class Observer {
  readonly metrics: GatehouseMetrics | undefined
  readonly accessLog: ResolvedAccessLog | undefined

  constructor (metrics: ResolvedMetrics | undefined, accessLog: ResolvedAccessLog | undefined) {
    this.metrics = metrics === undefined ? undefined : new GatehouseMetrics(metrics)
    this.accessLog = accessLog
  }

  /**
   * The first onRequest hook of a target scope: opens the request's record
   * and closes it when the client's response closes, however it ends.
   */
  track (target: string): (request: FastifyRequest, reply: FastifyReply, done: () => void) => void {
    return (request, reply, done) => {
      const exchange = new Exchange(target, request.method)
      ;(request as ExchangeRequest)[exchangeKey] = exchange
      reply.raw.once('close', () => this.#ended(request, reply, exchange))
      done()
    }
  }

  /** The record `track` opened for this request. */
  exchangeOf (request: FastifyRequest): Exchange | undefined {
    return (request as ExchangeRequest)[exchangeKey]
  }

  #ended (request: FastifyRequest, reply: FastifyReply, exchange: Exchange): void {
    const ms = performance.now() - exchange.start
    const status = reply.raw.writableFinished ? reply.raw.statusCode : CLIENT_CLOSED
    this.metrics?.exchange(exchange, status, ms / 1000)
    const settings = this.accessLog
    if (settings === undefined) return
    const url = request.url
    const queryAt = settings.query ? -1 : url.indexOf('?')
    const line: Record<string, unknown> = {
      method: request.method,
      target: exchange.target,
      path: queryAt === -1 ? url : url.slice(0, queryAt),
      status,
      durationMs: round(ms),
      upstream: exchange.upstream,
      upstreamMs: exchange.upstreamMs === undefined ? undefined : round(exchange.upstreamMs),
      bytesIn: exchange.bytesIn,
      bytesOut: exchange.bytesOut,
      retries: exchange.retries
    }
    if (settings.user) {
      const sub = (request.user as { sub?: unknown } | null | undefined)?.sub
      if (typeof sub === 'string' || typeof sub === 'number') line.user = sub
    }
    request.log.info(line, 'proxied')
  }

  /** A target's transport, for the upstream health and circuit gauges. */
  watch (target: string, transport: WatchedTransport): void {
    this.metrics?.watch(target, transport)
  }

  /** Counts token refusals by reason (an onError hook of each target scope). */
  tokenFailure (err: { code?: unknown }): void {
    const reason = typeof err.code === 'string' ? TOKEN_REASONS[err.code] : undefined
    if (reason !== undefined) this.metrics?.tokenFailure(reason)
  }

  /** Counts the login route's outcomes: successes as they answer, failures by their error. */
  observeLogin (login: FastifyInstance): void {
    const metrics = this.metrics
    if (metrics === undefined) return
    login.addHook('onError', (_request, _reply, err, done) => {
      metrics.login(loginOutcome(err))
      done()
    })
    login.addHook('onResponse', (_request, reply, done) => {
      if (reply.statusCode < 300) metrics.login('success')
      done()
    })
  }

  /** A WebSocket tunnel opened; the returned object is told when it closes. */
  tunnel (target: string, log: FastifyBaseLogger): TunnelObservation {
    const start = performance.now()
    this.metrics?.tunnel(target, 1)
    let open = true
    return {
      closed: (code) => {
        if (!open) return
        open = false
        this.metrics?.tunnel(target, -1)
        if (this.accessLog !== undefined) log.info({ target, durationMs: round(performance.now() - start), code }, 'tunnel closed')
      }
    }
  }
}

function round (ms: number): number {
  return Math.round(ms * 1000) / 1000
}
