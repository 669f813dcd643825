import { EventEmitter } from 'node:events'
import type { ConnectionOptions } from 'node:tls'
import type { Dispatcher, Pool } from 'undici'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply } from 'fastify'
import { CircuitOpenError, InternalError, NoHealthyUpstreamError, ShuttingDownError, UpstreamBusyError, UpstreamTimeoutError } from '../errors.js'
import type { ResolvedTarget } from '../options/resolved.js'
import type { HeaderMap } from '../types.js'
import { Balancer, UpstreamNode } from './balancer.js'
import { CircuitBreaker } from './breaker.js'
import type { Admission } from './breaker.js'
import { HealthChecker } from './health.js'
import { IdlePool } from './idle.js'
import { backoff, bodyUntouched, isRetryableError, parseRetryAfter, sleep } from './retry.js'
import { closeOnDrain } from './shutdown.js'
import type { UpstreamReadiness } from './shutdown.js'
import { causeChain, errorCode } from './cause.js'
import { connectOptions, tlsOptions } from './tls.js'
import { EXCHANGE } from '../observe/exchange.js'
import type { Exchange } from '../observe/exchange.js'

// Upstream statuses that count as a failure for passive health and the breaker.
const FAILURE_STATUSES = new Set([502, 503, 504])
// Where target.ts leaves the reply for the dispatcher, on the headers object
// reply-from hands over. Workaround: reply-from's `undici` option is one
// object for the scope and its `request(opts)` gets only origin, path,
// method, headers, body and timeouts, no per-request context; but its
// lib/request.js copies the headers with Object.assign, symbols included
// (pinned in test/reply-from-contract.test.ts).
const REQUEST_CONTEXT = Symbol('gatehouse.transport.request')

/** The request options reply-from passes to `request()` (see its lib/request.js). */
export interface ReplyFromRequest {
  origin?: string
  path: string
  method: string
  headers: Record<string | symbol, unknown>
  body?: unknown
  headersTimeout?: number
  bodyTimeout?: number
}

export type ReplyFromCallback = (err: Error | null, res?: Dispatcher.ResponseData) => void

/**
 * Marks upstream request headers with the reply they serve, so the dispatcher
 * can abort when the client goes away, log retries with the request's logger
 * and set `Retry-After` on fast failures, and with the request's record
 * (`exchange`) when metrics or the access log are on. Returns `headers`.
 */
export function bindReply (headers: HeaderMap, reply: FastifyReply, exchange?: Exchange): HeaderMap {
  // A plain symbol key: reply-from's Object.assign copies it, undici never sees it.
  (headers as Record<symbol, unknown>)[REQUEST_CONTEXT] = reply
  // The record metrics and the access log read, when they are on.
  if (exchange !== undefined) (headers as Record<symbol, unknown>)[EXCHANGE] = exchange
  return headers
}

/**
 * Emits 'abort' when the client's connection closes before its response was
 * sent. undici takes any EventEmitter with `aborted` as a signal; this one
 * costs a fraction of an AbortController, which matters once per request.
 */
export class ClientGone extends EventEmitter {
  aborted = false
  reason: Error | undefined = undefined

  constructor (raw?: FastifyReply['raw']) {
    super()
    if (raw === undefined) return
    const onClose = (): void => {
      if (raw.writableFinished) return
      this.abort(new Error('client gone'))
    }
    // 'close' comes once: `on` spares once()'s wrapper.
    if (raw.destroyed) onClose()
    else raw.on('close', onClose)
  }

  /** Aborts with `reason` (undici fails the request, or destroys its body, with it). */
  abort (reason: Error): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.emit('abort')
  }
}

/**
 * `timeouts.total`: aborts the exchange `ms` after it started, whether it
 * waits for a connection, for headers or for a slow client to read the body.
 * `stop()` once the body has closed.
 */
function totalDeadline (signal: ClientGone, ms: number): { stop: () => void } {
  const timer = setTimeout(() => signal.abort(new UpstreamTimeoutError()), ms)
  timer.unref()
  return { stop: () => clearTimeout(timer) }
}

/** The upstream one attempt of `TargetTransport.open()` goes to. */
export interface UpstreamChoice {
  /** `http(s)://host:port` of the upstream the balancer picked. */
  readonly origin: string
  /** The target's `transport.tls` as `tls.connect` options (ignored for `http:` upstreams). */
  readonly tls: ConnectionOptions
}

/** How `TargetTransport.open()` treats one connection the caller opens itself. */
export interface OpenOptions {
  /** The method of the opening request: retries follow `transport.retry` as for HTTP. */
  readonly method: string
  /**
   * The status the upstream answered with, when an attempt failed after an
   * answer (undefined: no answer, a connection failure or a timeout). It
   * counts against the upstream only if it would for HTTP (502, 503, 504).
   */
  readonly answeredWith?: (err: unknown) => number | undefined
  /** The reply the opening serves: `Retry-After` on fast 503s, its logger, its client's departure. */
  readonly reply?: FastifyReply
}

function setRetryAfter (reply: FastifyReply | undefined, ms: number): void {
  reply?.header('retry-after', String(Math.max(1, Math.ceil(ms / 1000))))
}

/**
 * The upstream transport of one target: one undici Pool per upstream URL,
 * balancing with passive (and optional active) health, a circuit breaker,
 * retries of idempotent requests, and the connect / headers / body-idle
 * timeouts. TLS certificates are verified unless configured otherwise
 * (reply-from's own default would not).
 */
export class TargetTransport {
  // Passed to reply-from as its `undici` option. reply-from calls
  // `request(opts, callback)` only; its types ask for undici's overloads.
  readonly dispatcher = { request: ((opts: ReplyFromRequest, callback: ReplyFromCallback): void => this.request(opts, callback)) as unknown as Dispatcher['request'] }
  readonly balancer: Balancer
  readonly breaker: CircuitBreaker | undefined
  readonly #target: ResolvedTarget
  readonly #health: HealthChecker | undefined
  readonly #log: FastifyBaseLogger | undefined
  // Requests one upstream carries at once; more wait in #waiting.
  readonly #capacity: number
  readonly #waiting = new Map<UpstreamNode, Array<() => void>>()
  readonly #tls: ConnectionOptions
  #closed = false

  constructor (target: ResolvedTarget, log?: FastifyBaseLogger) {
    const settings = target.transport
    this.#target = target
    this.#log = log
    this.#tls = tlsOptions(settings.tls)
    // HTTP/2 multiplexes on its connections: undici's own limits apply there.
    this.#capacity = settings.http2 || target.timeouts.queue === 0 ? Infinity : settings.pool.connections * settings.pool.pipelining
    const nodes = settings.origins.map((origin) => {
      const pool = createPool(target, origin)
      return new UpstreamNode(origin, pool.dispatcher, pool.destroy)
    })
    this.balancer = new Balancer(nodes, settings.balance, settings.passiveHealth)
    this.breaker = settings.circuitBreaker === undefined ? undefined : new CircuitBreaker(settings.circuitBreaker)
    this.#health = settings.activeHealth === undefined ? undefined : new HealthChecker(nodes, settings.activeHealth, log)
    this.#health?.start()
  }

  /** reply-from's entry point; calls back exactly once. */
  request (opts: ReplyFromRequest, callback: ReplyFromCallback): void {
    // reply-from's own copy for this request: the dispatcher sets Host on it
    // in place. undici skips undefined values (reply-from's way of removing
    // hop-by-hop headers) and reads string keys only, never the symbols.
    const headers = opts.headers as Record<string, unknown>
    const reply = opts.headers[REQUEST_CONTEXT] as FastifyReply | undefined
    const exchange = opts.headers[EXCHANGE] as Exchange | undefined
    exchange?.countIn(opts.body)
    const signal = new ClientGone(reply?.raw)
    const ms = this.#target.timeouts.total
    const response = ms === 0 ? this.#attempts(opts, headers, reply, signal, exchange) : this.#deadline(ms, opts, headers, reply, signal, exchange)
    response.then((res) => {
      try {
        callback(null, res)
      } catch (err) {
        res.body.on('error', noop).destroy()
        this.#callbackFailed(err, reply)
      }
    }, (err: Error) => {
      try {
        callback(err)
      } catch (thrown) {
        this.#callbackFailed(thrown, reply)
      }
    })
  }

  /**
   * A callback that throws here would reject a promise nobody awaits: an
   * unhandled rejection (the process exits by default) and a request that
   * never ends. It becomes a 500 for that request instead.
   */
  #callbackFailed (err: unknown, reply: FastifyReply | undefined): void {
    const log = reply?.request.log ?? this.#log
    log?.error({ err }, 'upstream response handling failed')
    if (reply === undefined || reply.sent) return
    if (reply.raw.headersSent) {
      reply.raw.destroy()
      return
    }
    reply.send(new InternalError())
  }

  /** `timeouts.total`: the exchange is aborted `ms` after it started, until its body has closed. */
  async #deadline (ms: number, opts: ReplyFromRequest, headers: Record<string, unknown>, reply: FastifyReply | undefined, signal: ClientGone, exchange: Exchange | undefined): Promise<Dispatcher.ResponseData> {
    const deadline = totalDeadline(signal, ms)
    let res: Dispatcher.ResponseData
    try {
      res = await this.#attempts(opts, headers, reply, signal, exchange)
    } catch (err) {
      deadline.stop()
      throw err
    }
    res.body.once('close', deadline.stop)
    return res
  }

  /**
   * Waits for a free connection to `node` (counting it in `inFlight` once
   * it has one), at most `timeouts.queue` ms: undici's Pool would queue
   * without limit. Slots are handed over in arrival order.
   */
  #acquire (node: UpstreamNode, signal: ClientGone, reply: FastifyReply | undefined): Promise<void> | undefined {
    const waiting = this.#waiting.get(node)
    if (node.inFlight < this.#capacity && (waiting === undefined || waiting.length === 0)) {
      node.inFlight++
      return undefined
    }
    return new Promise((resolve, reject) => {
      const queue = waiting ?? []
      this.#waiting.set(node, queue)
      const ms = this.#target.timeouts.queue
      const leave = (err: Error): void => {
        const index = queue.indexOf(wake)
        if (index !== -1) queue.splice(index, 1)
        clearTimeout(timer)
        signal.removeListener('abort', gone)
        reject(err)
      }
      const gone = (): void => leave(signal.reason ?? new Error('client gone'))
      // The slot was handed over already counted.
      const wake = (): void => {
        clearTimeout(timer)
        signal.removeListener('abort', gone)
        resolve()
      }
      const timer = ms === 0
        ? undefined
        : setTimeout(() => {
          setRetryAfter(reply, 1000)
          leave(new UpstreamBusyError())
        }, ms)
      timer?.unref()
      signal.once('abort', gone)
      queue.push(wake)
    })
  }

  /** A request to `node` has ended: its slot goes to the next waiter, if any. */
  #release (node: UpstreamNode): void {
    const next = this.#waiting.get(node)?.shift()
    if (next !== undefined) next()
    else node.inFlight--
  }

  async #attempts (opts: ReplyFromRequest, headers: Record<string, unknown>, reply: FastifyReply | undefined, signal: ClientGone, exchange: Exchange | undefined): Promise<Dispatcher.ResponseData> {
    const retry = this.#target.transport.retry
    const method = opts.method.toUpperCase()
    const log = reply?.request.log ?? this.#log
    let failed: UpstreamNode | undefined
    for (let attempt = 0; ; attempt++) {
      const { node, admission } = this.#choose(failed, reply)
      const mayRetry = attempt < retry.retries && retry.methods.has(method) && bodyUntouched(opts.body)
      const queued = this.#acquire(node, signal, reply)
      if (queued !== undefined) {
        try {
          await queued
        } catch (err) {
          // Busy or gone: nothing was sent, nothing to hold against the upstream.
          this.breaker?.release(admission)
          throw err
        }
      }
      // The host of this attempt's upstream.
      headers.host = node.host
      if (exchange !== undefined) {
        exchange.upstream = node.origin
        exchange.retries = attempt
        exchange.upstreamStart = performance.now()
      }
      let res: Dispatcher.ResponseData
      try {
        res = await node.pool.request({
          origin: node.origin,
          path: opts.path,
          method: opts.method as Dispatcher.HttpMethod,
          headers: headers as Record<string, string>,
          body: opts.body as Dispatcher.DispatchOptions['body'],
          signal: signal as unknown as Dispatcher.RequestOptions['signal']
        })
      } catch (err) {
        this.#release(node)
        if (signal.aborted) {
          this.breaker?.release(admission)
          throw err
        }
        if (isGatewayFault(err)) {
          // Refused before anything left (a header value a middleware set,
          // say): the gateway's fault, not held against the upstream.
          this.breaker?.release(admission)
          throw new InternalError({ cause: err })
        }
        this.#outcome(node, admission, false)
        if (mayRetry && isRetryableError(err) && bodyUntouched(opts.body)) {
          const delay = backoff(retry, attempt)
          log?.warn({ attempt: attempt + 1, delay, code: errorCode(err), target: this.#target.name }, 'retrying upstream request after a connection error')
          failed = node
          await sleep(delay, signal)
          continue
        }
        throw err
      }
      const status = res.statusCode
      if (exchange !== undefined) exchange.upstreamMs = performance.now() - exchange.upstreamStart
      this.#outcome(node, admission, !FAILURE_STATUSES.has(status))
      if (mayRetry && retry.statuses.has(status)) {
        const after = parseRetryAfter(res.headers['retry-after'])
        if (after === undefined || after <= retry.maxRetryAfter) {
          this.#release(node)
          res.body.on('error', noop).destroy()
          const delay = Math.max(after ?? 0, backoff(retry, attempt))
          log?.warn({ attempt: attempt + 1, delay, statusCode: status, target: this.#target.name }, 'retrying upstream request after a retryable status')
          failed = node
          await sleep(delay, signal)
          if (signal.aborted) throw signal.reason ?? new Error('client gone')
          continue
        }
      }
      // In flight until the body has been read or dropped.
      res.body.once('close', () => this.#release(node))
      return res
    }
  }

  /**
   * For connections the caller opens itself, outside undici (WebSocket
   * handshakes; this module stays free of their protocol): the same upstream
   * selection as `request()`. Refused while shutting down, fails fast while
   * the circuit is open, skips upstreams that are down or ejected, counts each
   * attempt's outcome for passive health and the breaker, and retries a
   * connection error on another upstream within `transport.retry` (for the
   * methods it lists). `connect` resolves once the connection is established
   * and rejects with the failure; it is not counted in `inFlight`, which
   * measures pooled requests.
   */
  async open<T> (connect: (upstream: UpstreamChoice) => Promise<T>, opts: OpenOptions): Promise<T> {
    const retry = this.#target.transport.retry
    const reply = opts.reply
    const log = reply?.request.log ?? this.#log
    // Made at the first retry: a listener on the reply from the start would
    // hold it (and the request) for as long as the connection lives.
    let signal: ClientGone | undefined
    let failed: UpstreamNode | undefined
    for (let attempt = 0; ; attempt++) {
      const { node, admission } = this.#choose(failed, reply)
      let result: T
      try {
        result = await connect({ origin: node.origin, tls: this.#tls })
      } catch (err) {
        const status = opts.answeredWith?.(err)
        this.#outcome(node, admission, status !== undefined && !FAILURE_STATUSES.has(status))
        const mayRetry = status === undefined && attempt < retry.retries && retry.methods.has(opts.method.toUpperCase()) && isRetryableError(err)
        if (!mayRetry) throw err
        signal ??= new ClientGone(reply?.raw)
        if (signal.aborted) throw err
        const delay = backoff(retry, attempt)
        log?.warn({ attempt: attempt + 1, delay, code: errorCode(err), target: this.#target.name }, 'retrying upstream connection after a connection error')
        failed = node
        await sleep(delay, signal)
        if (signal.aborted) throw err
        continue
      }
      this.#outcome(node, admission, true)
      return result
    }
  }

  /** An upstream for the next attempt, admitted by the breaker; throws the fast 503s. */
  #choose (failed: UpstreamNode | undefined, reply: FastifyReply | undefined): { node: UpstreamNode, admission: Admission } {
    if (this.#closed) throw new ShuttingDownError()
    const now = Date.now()
    const admission: Admission = this.breaker?.admit(now) ?? { kind: 'closed' }
    if (admission.kind === 'open') {
      setRetryAfter(reply, admission.retryAfter)
      throw new CircuitOpenError()
    }
    const node = this.balancer.pick(now, failed)
    if (node === undefined) {
      this.breaker?.release(admission)
      setRetryAfter(reply, this.balancer.retryAfter(now, this.#target.transport.activeHealth?.interval))
      throw new NoHealthyUpstreamError()
    }
    return { node, admission }
  }

  #outcome (node: UpstreamNode, admission: Admission, ok: boolean): void {
    const now = Date.now()
    this.breaker?.record(admission, ok, now)
    if (ok) {
      this.balancer.success(node)
    } else if (this.balancer.failure(node, now)) {
      this.#log?.warn({ upstream: node.origin, target: this.#target.name }, 'upstream ejected after consecutive failures')
    }
  }

  /** Requests sent upstream whose body has not finished. */
  get inFlight (): number {
    let count = 0
    for (const node of this.balancer.nodes) count += node.inFlight
    return count
  }

  /** For readiness: whether active health checks run and any upstream passes them. */
  readiness (): UpstreamReadiness {
    return { target: this.#target.name, checked: this.#health !== undefined, healthy: this.balancer.nodes.some((node) => !node.down) }
  }

  /** Idempotent; safe to pass around unbound (onClose hook, drain). */
  readonly close = async (): Promise<void> => {
    if (this.#closed) return
    this.#closed = true
    this.#health?.stop()
    await Promise.all(this.balancer.nodes.map((node) => node.destroy()))
  }
}

function noop (): void {}

// undici refuses request options it cannot put on the wire (a header value
// with CR/LF, a bad method) before any connection is used.
function isGatewayFault (err: unknown): boolean {
  return errorCode(err) === 'UND_ERR_INVALID_ARG'
}

/**
 * The gatehouse error (503 no healthy upstream, circuit open, shutting down,
 * upstream busy; 500 for a request the gateway itself got wrong) this dispatcher failed
 * with; undefined for other failures. Workaround:
 * reply-from hands `onError` its own wrapper (500 InternalServerError, 504 ...)
 * with the dispatcher's error as `cause`, never the error itself (pinned in
 * test/reply-from-contract.test.ts).
 */
export function transportError (err: unknown): Error | undefined {
  for (const e of causeChain(err)) {
    if (e instanceof NoHealthyUpstreamError || e instanceof CircuitOpenError || e instanceof ShuttingDownError || e instanceof InternalError || e instanceof UpstreamBusyError) return e as Error
  }
  return undefined
}

/** One upstream's pool: connect timeout + TLS, headers timeout, and the body-idle timeouts (IdlePool). */
function createPool (target: ResolvedTarget, origin: string): { dispatcher: Dispatcher, destroy: () => Promise<void> } {
  const { pool, http2, eventStreamIdle } = target.transport
  const options: Pool.Options = {
    connections: pool.connections,
    pipelining: pool.pipelining,
    keepAliveTimeout: pool.keepAliveTimeout,
    keepAliveMaxTimeout: pool.keepAliveMaxTimeout,
    connect: connectOptions(target.transport.tls, target.timeouts.connect),
    headersTimeout: target.timeouts.response,
    // Body idle is enforced by IdlePool, which knows the content type.
    bodyTimeout: 0,
    ...(http2 && origin.startsWith('https:') ? { allowH2: true } : {})
  }
  const upstream = new IdlePool(origin, options, target.timeouts.idle, eventStreamIdle)
  return { dispatcher: upstream, destroy: () => upstream.destroy() }
}

/** The transport of one target; reply-from gets `.dispatcher`, onClose calls `.close()`. */
export function createTargetTransport (target: ResolvedTarget, scope?: FastifyInstance): TargetTransport {
  const transport = new TargetTransport(target, scope?.log)
  if (scope !== undefined) closeOnDrain(scope, transport)
  return transport
}
