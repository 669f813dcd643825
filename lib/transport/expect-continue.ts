import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyInstance } from 'fastify'

type Read = (size: number) => void

/**
 * Defers `100 Continue` until the request body is first read. Node answers
 * `Expect: 100-continue` at once unless the server has a 'checkContinue'
 * listener, so a caller would upload its whole body only to be refused.
 * Here the request is routed as usual and the 100 goes out when something
 * starts reading the body: for a target, when the token, the rules,
 * `authorize` and the middleware have admitted it and the body is piped
 * upstream (or a middleware reads it); for a host route, when its body
 * parser runs, after its own onRequest hooks. A final response sent first
 * means no 100 at all, and Node then closes the connection, since the
 * client may still send the body.
 * Leaves the server alone when the host app listens for 'checkContinue'.
 */
export function deferContinue (scope: FastifyInstance): void {
  const server = scope.server
  if (server.listenerCount('checkContinue') > 0) return
  const onCheckContinue = (request: IncomingMessage, response: ServerResponse): void => {
    const body = request as IncomingMessage & { _read: Read }
    const read = body._read
    body._read = function readAfterContinue (this: IncomingMessage, size: number): void {
      body._read = read
      if (!response.headersSent && !response.writableEnded) response.writeContinue()
      read.call(this, size)
    }
    server.emit('request', request, response)
  }
  server.on('checkContinue', onCheckContinue)
  scope.addHook('onClose', (_instance, done) => {
    server.removeListener('checkContinue', onCheckContinue)
    done()
  })
}
