import type { FastifyInstance } from 'fastify'
import { BadRequestError, MethodNotAllowedError } from '../errors.js'

/*
 * What the login, refresh and logout routes share at register time. A leaf,
 * so that the three routes use it without importing each other.
 */

/**
 * Replaces a scope's JSON parser with Fastify's own (same prototype-poisoning
 * protection) whose syntax errors say what is wrong with the body, like the
 * other body errors of these routes, without the parser's detail.
 */
export function jsonBodyParser (scope: FastifyInstance, what: string): void {
  const parse = scope.getDefaultJsonParser('error', 'error')
  scope.removeContentTypeParser('application/json')
  scope.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    parse(request, body as string, (err, value) => {
      // An empty body keeps Fastify's own error (a body that says nothing is not malformed JSON).
      if (err !== null && (err as { code?: string }).code !== 'FST_ERR_CTP_EMPTY_JSON_BODY') done(new BadRequestError(`Invalid ${what} body: not valid JSON`), undefined)
      else done(err, value)
    })
  })
}

/**
 * A POST-only route answers other methods that have no route of their own
 * (GET, and HEAD with it) with 405 and `Allow: POST` (RFC 9110), not the
 * host's 404. OPTIONS is left to the host (CORS preflight).
 */
export function postOnly (scope: FastifyInstance, path: string): void {
  scope.get(path, async (_request, reply) => {
    reply.header('allow', 'POST')
    throw new MethodNotAllowedError()
  })
}
