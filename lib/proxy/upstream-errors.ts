import { UpstreamBadResponseError, UpstreamTimeoutError, UpstreamUnavailableError } from '../errors.js'

const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT',
  'FST_REPLY_FROM_TIMEOUT', 'FST_REPLY_FROM_HTTP_REQUEST_TIMEOUT', 'FST_REPLY_FROM_GATEWAY_TIMEOUT'
])

interface CodedError { code?: unknown, name?: unknown, cause?: unknown }

// reply-from wraps undici's error, which may wrap the socket's: a few levels.
const MAX_CAUSE_DEPTH = 4

/** An error and its causes, outermost first. */
export function * causeChain (err: unknown): Generator<CodedError> {
  let e = err as CodedError | undefined
  for (let depth = 0; e != null && depth < MAX_CAUSE_DEPTH; depth++, e = e.cause as CodedError | undefined) yield e
}

/** The first string `code` along an error's causes. */
export function errorCode (err: unknown): string | undefined {
  for (const e of causeChain(err)) if (typeof e.code === 'string') return e.code
  return undefined
}

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
