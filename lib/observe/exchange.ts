/*
 * The record of one request to a target, filled in by the proxy and the
 * transport and read once, when the client's response closes, by the metrics
 * and the access log. A leaf: the transport writes to it without importing
 * anything above itself. It exists only when metrics or the access log are
 * on: with both off, nothing here runs.
 */

/** Where target.ts leaves the record for the dispatcher, beside the reply (see bindReply). */
export const EXCHANGE = Symbol('gatehouse.exchange')

/** One request to a target, from its arrival to the end of its response. */
export class Exchange {
  /** `performance.now()` at arrival. */
  readonly start = performance.now()
  /** The configured origin of the upstream the last attempt went to; `undefined` when none was contacted. */
  upstream: string | undefined = undefined
  /** When the last attempt was sent (`performance.now()`). */
  upstreamStart = 0
  /** Milliseconds from sending the last attempt to its response headers; `undefined` without an answer. */
  upstreamMs: number | undefined = undefined
  /** Request body bytes sent upstream. */
  bytesIn = 0
  /** Response body bytes handed to the client's response (before compression). */
  bytesOut = 0
  /** Attempts after the first. */
  retries = 0

  readonly target: string
  readonly method: string

  constructor (target: string, method: string) {
    this.target = target
    this.method = method
  }

  /** The request body as it goes upstream: a buffer counts at once, a stream as it flows. */
  countIn (body: unknown): void {
    if (body === undefined || body === null) return
    if (typeof body === 'string') this.bytesIn = Buffer.byteLength(body)
    else if (body instanceof Uint8Array) this.bytesIn = body.length
    else if (isReadable(body)) countStream(body, (bytes) => { this.bytesIn += bytes })
  }

  /** The response body as handed to the client's response. */
  countOut (body: unknown): void {
    if (body === undefined || body === null) return
    if (typeof body === 'string') this.bytesOut = Buffer.byteLength(body)
    else if (body instanceof Uint8Array) this.bytesOut = body.length
    else if (isReadable(body)) countStream(body, (bytes) => { this.bytesOut += bytes })
  }
}

interface CountableStream {
  readonly readableFlowing?: boolean | null
  on: (event: 'data', listener: (chunk: Buffer | string) => void) => unknown
  once: (event: 'resume', listener: () => void) => unknown
}

function isReadable (body: unknown): body is CountableStream {
  return typeof (body as { on?: unknown }).on === 'function' && typeof (body as { once?: unknown }).once === 'function'
}

/**
 * Counts a stream's bytes without changing how it flows: a 'data' listener
 * added before its consumer would start it flowing and lose chunks, so the
 * listener goes on when the consumer resumes it ('resume' is emitted just
 * before the first chunk).
 */
function countStream (stream: CountableStream, add: (bytes: number) => void): void {
  const count = (chunk: Buffer | string): void => add(typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length)
  if (stream.readableFlowing === true) stream.on('data', count)
  else stream.once('resume', () => stream.on('data', count))
}
