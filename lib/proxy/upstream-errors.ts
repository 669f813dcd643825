import { UpstreamBadResponseError, UpstreamTimeoutError, UpstreamUnavailableError } from '../errors.js'

const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT',
  'FST_REPLY_FROM_TIMEOUT', 'FST_REPLY_FROM_HTTP_REQUEST_TIMEOUT', 'FST_REPLY_FROM_GATEWAY_TIMEOUT'
])

interface CodedError { code?: unknown, cause?: unknown }

function codes (err: unknown): string[] {
  const found: string[] = []
  // reply-from wraps undici's error, which may wrap the socket's.
  for (let e = err as CodedError | undefined, depth = 0; e != null && depth < 4; e = e.cause as CodedError | undefined, depth++) {
    if (typeof e.code === 'string') found.push(e.code)
  }
  return found
}

/**
 * Maps a transport failure to the error a client sees: 504 for timeouts, 502
 * for everything else. The cause is kept for logs, never sent.
 */
export function upstreamError (err: unknown): Error {
  const all = codes(err)
  if (all.some((code) => TIMEOUT_CODES.has(code))) return new UpstreamTimeoutError({ cause: err })
  if (all.some((code) => code.startsWith('HPE_') || code === 'FST_REPLY_FROM_BAD_GATEWAY' || code === 'UND_ERR_INFO')) {
    return new UpstreamBadResponseError({ cause: err })
  }
  return new UpstreamUnavailableError({ cause: err })
}
