import type { Readable } from 'node:stream'
import { causeChain } from './cause.js'
import type { ResolvedTransport } from './options.js'

// Failures before any response: the request may or may not have reached the
// upstream, which is fine for idempotent methods.
const RETRYABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CLOSED'
])

/** True for connection-level failures worth another attempt. */
export function isRetryableError (err: unknown): boolean {
  for (const e of causeChain(err)) {
    if (typeof e.code === 'string' && RETRYABLE_CODES.has(e.code)) return true
  }
  return false
}

/**
 * True while no byte of the request body has left: no body, a buffer, or a
 * stream nobody has read from yet.
 */
export function bodyUntouched (body: unknown): boolean {
  if (body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array) return true
  const stream = body as Partial<Readable>
  return typeof stream.pipe === 'function' && stream.readableDidRead === false && stream.destroyed === false
}

/** Exponential backoff with full jitter: random in [minDelay, min(maxDelay, minDelay * 2^attempt)]. */
export function backoff (settings: ResolvedTransport['retry'], attempt: number): number {
  const ceiling = Math.min(settings.maxDelay, settings.minDelay * 2 ** attempt)
  return settings.minDelay + Math.floor(Math.random() * Math.max(0, ceiling - settings.minDelay))
}

/** `Retry-After` in milliseconds (delta-seconds or an HTTP date), `undefined` when absent or invalid. */
export function parseRetryAfter (value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value
  if (text === undefined || text.trim() === '') return undefined
  if (/^\s*\d+\s*$/.test(text)) return Number(text) * 1000
  const date = Date.parse(text)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/** What `sleep` can be woken by: an AbortSignal-like emitter of 'abort'. */
export interface AbortEmitter {
  readonly aborted: boolean
  once: (event: 'abort', listener: () => void) => unknown
  removeListener: (event: 'abort', listener: () => void) => unknown
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep (ms: number, signal: AbortEmitter | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve()
    const timer = setTimeout(done, ms)
    function done (): void {
      clearTimeout(timer)
      signal?.removeListener('abort', done)
      resolve()
    }
    signal?.once('abort', done)
  })
}
