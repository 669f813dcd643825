import type { ResolvedTransport } from './options.js'

const BUCKETS = 10

/** What the breaker says about one attempt. */
export type Admission = { kind: 'closed' } | { kind: 'probe' } | { kind: 'open', retryAfter: number }

/**
 * A circuit breaker over a rolling window of outcomes. Closed: everything
 * passes and outcomes are counted. When at least `minRequests` outcomes in
 * the window fail at `failureRate` or more, it opens: requests fail fast for
 * `coolDown` ms. Then it is half-open: up to `halfOpenRequests` probes pass;
 * a probe's success closes it, a failure opens it again.
 */
export class CircuitBreaker {
  readonly #settings: NonNullable<ResolvedTransport['circuitBreaker']>
  readonly #bucketMs: number
  // Ring of [epoch, requests, failures] per bucket.
  readonly #buckets: Array<{ epoch: number, requests: number, failures: number }>
  #state: 'closed' | 'open' | 'half-open' = 'closed'
  #openUntil = 0
  #probes = 0

  constructor (settings: NonNullable<ResolvedTransport['circuitBreaker']>) {
    this.#settings = settings
    this.#bucketMs = Math.max(1, Math.ceil(settings.window / BUCKETS))
    this.#buckets = Array.from({ length: BUCKETS }, () => ({ epoch: -1, requests: 0, failures: 0 }))
  }

  get state (): 'closed' | 'open' | 'half-open' {
    return this.#state
  }

  admit (now: number): Admission {
    if (this.#state === 'open') {
      if (now < this.#openUntil) return { kind: 'open', retryAfter: this.#openUntil - now }
      this.#state = 'half-open'
      this.#probes = 0
    }
    if (this.#state === 'half-open') {
      if (this.#probes >= this.#settings.halfOpenRequests) return { kind: 'open', retryAfter: this.#settings.coolDown }
      this.#probes++
      return { kind: 'probe' }
    }
    return { kind: 'closed' }
  }

  /** Records the outcome of an admitted attempt. */
  record (admission: Admission, ok: boolean, now: number): void {
    if (admission.kind === 'probe') {
      this.#probes = Math.max(0, this.#probes - 1)
      if (this.#state !== 'half-open') return
      if (ok) this.#close()
      else this.#open(now)
      return
    }
    if (admission.kind !== 'closed' || this.#state !== 'closed') return
    const epoch = Math.floor(now / this.#bucketMs)
    const bucket = this.#buckets[epoch % BUCKETS] as { epoch: number, requests: number, failures: number }
    if (bucket.epoch !== epoch) {
      bucket.epoch = epoch
      bucket.requests = 0
      bucket.failures = 0
    }
    bucket.requests++
    if (!ok) bucket.failures++
    if (ok) return
    let requests = 0
    let failures = 0
    for (const b of this.#buckets) {
      if (b.epoch > epoch - BUCKETS) {
        requests += b.requests
        failures += b.failures
      }
    }
    if (requests >= this.#settings.minRequests && failures / requests >= this.#settings.failureRate) this.#open(now)
  }

  /** An admitted attempt that never reached the upstream (client gone). */
  release (admission: Admission): void {
    if (admission.kind === 'probe') this.#probes = Math.max(0, this.#probes - 1)
  }

  #open (now: number): void {
    this.#state = 'open'
    this.#openUntil = now + this.#settings.coolDown
  }

  #close (): void {
    this.#state = 'closed'
    for (const b of this.#buckets) b.epoch = -1
  }
}
