import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { FastifyInstance } from 'fastify'
import type { RequestIdOptions } from '../types.js'
import { resolveRequestId } from './request-id-options.js'
import type { ResolvedRequestId } from './request-id-options.js'

/*
 * One id per request, the same in the host's log lines (`reqId`), on the
 * upstream request and on the answer to the client.
 */

// Visible ASCII that needs no quoting in a header, a log line or a URL:
// UUIDs, hex, base64 and most tracing ids. Anything else is replaced.
const SAFE_ID = /^[A-Za-z0-9._~:+/=@-]{1,128}$/
// On the raw request: the id genReqId chose, reused by the plugin's hooks.
const REQUEST_ID = Symbol.for('fastify-gatehouse.request-id')

type Tagged = IncomingMessage & { [REQUEST_ID]?: string }

/** True for an id the gateway may repeat: 1 to 128 characters of `A-Z a-z 0-9 . _ ~ : + / = @ -`. */
export function isSafeRequestId (value: unknown): value is string {
  return typeof value === 'string' && SAFE_ID.test(value)
}

/** The id of `raw`: the one already chosen, else the trusted caller's safe one, else a random UUID. */
export function requestIdOf (raw: IncomingMessage, settings: ResolvedRequestId): string {
  const tagged = raw as Tagged
  const chosen = tagged[REQUEST_ID]
  if (chosen !== undefined) return chosen
  const incoming = raw.headers[settings.header]
  const id = isSafeRequestId(incoming) && settings.trusts(raw.socket?.remoteAddress) ? incoming : randomUUID()
  tagged[REQUEST_ID] = id
  return id
}

/**
 * For Fastify's `genReqId`, so that `reqId` in the host's log lines is the
 * gateway's request id. Give it the plugin's `requestId` options (keep
 * Fastify's `requestIdHeader` at its default, `false`: it would take the
 * caller's header unchecked).
 *
 * @example
 * const requestId = { trust: ['10.0.0.0/8'] }
 * const app = Fastify({ logger: true, genReqId: gatehouseRequestId(requestId) })
 * await app.register(gatehouse, { auth, targets, requestId })
 */
export function gatehouseRequestId (opts?: RequestIdOptions): (raw: IncomingMessage) => string {
  const settings = resolveRequestId(opts ?? {}) as ResolvedRequestId
  return (raw) => requestIdOf(raw, settings)
}

/**
 * Hooks of a scope: the request's header becomes the chosen id (so the
 * header policy, middleware and the WebSocket handshake forward that one,
 * never an untrusted copy), and every answer of the scope carries it, over
 * any value an upstream sent.
 */
export function requestIdHooks (scope: FastifyInstance, settings: ResolvedRequestId): void {
  scope.addHook('onRequest', (request, _reply, done) => {
    request.raw.headers[settings.header] = requestIdOf(request.raw, settings)
    done()
  })
  scope.addHook('onSend', (request, reply, payload, done) => {
    reply.header(settings.header, requestIdOf(request.raw, settings))
    done(null, payload)
  })
}
