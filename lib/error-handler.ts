import { STATUS_CODES } from 'node:http'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { BodyTooLargeError, NotFoundError, PathNotAllowedError, UnsupportedMediaTypeError } from './errors.js'

/** The one error body shape every gatehouse response uses. */
export interface ErrorBody {
  statusCode: number
  code: string
  error: string
  message: string
}

// Codes that belong to libraries, never shown to clients.
const LIBRARY_CODE = /^(FST_ERR_|FST_REPLY_FROM_|FST_COMPRESS_|FAST_JWT_|FST_JWT_|UND_ERR|ERR_|HPE_|E[A-Z]+$)/
const CODE = /^[A-Z][A-Z0-9_]{2,63}$/
// 5xx where the upstream did answer, as it was entitled to: nothing to page anyone about.
const WARN_CODES = new Set(['FST_GATEHOUSE_WEBSOCKET_PROTOCOL_MISMATCH'])

function clientError (error: FastifyError): { status: number, code: string, message: string } {
  const status = error.statusCode ?? 500
  if (error.validation !== undefined) {
    return { status: 400, code: 'FST_GATEHOUSE_BAD_REQUEST', message: `Invalid request: ${error.message}` }
  }
  if (error.code?.startsWith('FST_GATEHOUSE_') === true && status >= 400 && status < 600) {
    return { status, code: error.code, message: error.message }
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return clientError(new UnsupportedMediaTypeError())
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return clientError(new BodyTooLargeError())
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, code: 'FST_GATEHOUSE_BAD_REQUEST', message: 'Malformed request body' }
  }
  if (status >= 400 && status < 500) {
    // An HTTP error thrown by the user's own code keeps its status, code and
    // message; a library's keeps only its status.
    if (typeof error.code === 'string' && CODE.test(error.code) && !LIBRARY_CODE.test(error.code)) {
      return { status, code: error.code, message: error.message }
    }
    const fromLibrary = error.code !== undefined || error instanceof SyntaxError || error.message === ''
    return {
      status,
      code: status === 400 ? 'FST_GATEHOUSE_BAD_REQUEST' : 'FST_GATEHOUSE_REQUEST_REJECTED',
      message: fromLibrary ? STATUS_CODES[status] ?? 'Bad Request' : error.message
    }
  }
  return { status: 500, code: 'FST_GATEHOUSE_INTERNAL', message: 'Internal Server Error' }
}

/**
 * Error handler of the gatehouse scope: one body shape, a stable code, and
 * nothing internal (no stack, cause, library code, host or secret).
 */
export function gatehouseErrorHandler (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const { status, code, message } = clientError(error)
  if (WARN_CODES.has(code)) {
    request.log.warn({ code, statusCode: status }, 'gatehouse request failed')
  } else if (status >= 500) {
    request.log.error({ err: error, code }, 'gatehouse request failed')
  } else {
    request.log.info({ code, statusCode: status }, 'gatehouse request refused')
  }
  if (status === 401) {
    const problem = code === 'FST_GATEHOUSE_TOKEN_MISSING' || code === 'FST_GATEHOUSE_BAD_CREDENTIALS' ? '' : ', error="invalid_token"'
    reply.header('www-authenticate', `Bearer realm="gatehouse"${problem}`)
  }
  // The store is likely back within seconds (a failover, a restart): say when to retry.
  if (code === 'FST_GATEHOUSE_STORE_UNAVAILABLE' && !reply.hasHeader('retry-after')) reply.header('retry-after', '1')
  const body: ErrorBody = { statusCode: status, code, error: STATUS_CODES[status] ?? 'Error', message }
  reply.code(status).header('cache-control', 'no-store').type('application/json; charset=utf-8').send(body)
}

/**
 * For the host's `frameworkErrors` server option. Fastify rejects a URL with
 * broken percent-encoding before any plugin sees it, answering with its own
 * code and the raw path; this answers in the gatehouse shape instead.
 *
 * @example const app = Fastify({ frameworkErrors: gatehouseFrameworkErrors })
 */
export function gatehouseFrameworkErrors (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  gatehouseErrorHandler(error.code === 'FST_ERR_BAD_URL' ? new PathNotAllowedError() : error, request, reply)
}

/**
 * Not-found handler of the gatehouse scope: unknown paths (and methods a
 * route lacks) get the gatehouse error shape with a code, as every other
 * gatehouse answer, instead of Fastify's body that echoes the method and path.
 */
export function gatehouseNotFound (request: FastifyRequest, reply: FastifyReply): void {
  gatehouseErrorHandler(new NotFoundError() as FastifyError, request, reply)
}
