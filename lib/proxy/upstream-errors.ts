import { UpstreamBadResponseError, UpstreamTimeoutError, UpstreamUnavailableError } from '../errors.js'
import { causeChain } from '../transport/cause.js'

const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT',
  'FST_REPLY_FROM_TIMEOUT', 'FST_REPLY_FROM_HTTP_REQUEST_TIMEOUT', 'FST_REPLY_FROM_GATEWAY_TIMEOUT',
  // The transport's `timeouts.total`.
  'FST_GATEHOUSE_UPSTREAM_TIMEOUT'
])

// Signs of a response that is not valid HTTP. undici's parser errors carry no
// code (it looks the code up by number in a table keyed by name), only a name.
const BAD_RESPONSE_CODES = new Set(['FST_REPLY_FROM_BAD_GATEWAY', 'UND_ERR_INFO', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'ERR_ASSERTION'])

/**
 * Maps a transport failure to the error a client sees: 504 for timeouts, 502
 * for everything else. The cause is kept for logs, never sent.
 */
export function upstreamError (err: unknown): Error {
  let badResponse = false
  for (const e of causeChain(err)) {
    const code = typeof e.code === 'string' ? e.code : ''
    if (TIMEOUT_CODES.has(code)) return new UpstreamTimeoutError({ cause: err })
    if (BAD_RESPONSE_CODES.has(code) || code.startsWith('HPE_') || e.name === 'HTTPParserError') badResponse = true
  }
  return badResponse ? new UpstreamBadResponseError({ cause: err }) : new UpstreamUnavailableError({ cause: err })
}
