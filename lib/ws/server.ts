import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { FastifyInstance, onRequestHookHandler } from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import type { WebsocketPluginOptions } from '@fastify/websocket'
import { WebSocket } from 'ws'
import { InvalidOptionError, WebSocketNotEnabledError } from '../errors.js'
import type { ResolvedTarget } from '../options/resolved.js'

/** Route config key that marks the GET routes allowed to upgrade. */
export const WEBSOCKET_ROUTE = 'gatehouseWebSocket'

// The subprotocol the upstream chose, per upgrade request, so that the
// caller's handshake can answer the same one.
const agreed = new WeakMap<IncomingMessage, string>()

// Sockets handed to ws; ws owns their end and timeout from then on.
const tunnelled = new WeakSet<Duplex>()
// Beyond the upstream handshake timeout, time for token, authorize and middleware.
const UPGRADE_GRACE_MS = 5_000

/** Marks an upgrade socket as a live WebSocket. */
export function markTunnelled (socket: Duplex): void {
  tunnelled.add(socket)
}

/** Records the subprotocol the upstream selected for this upgrade ('' for none). */
export function agreeProtocol (request: IncomingMessage, protocol: string): void {
  agreed.set(request, protocol)
}

/*
 * Options for the one @fastify/websocket instance of a gatehouse. The server
 * never picks a subprotocol itself (ws would pick the first, which may be the
 * token entry) and takes the largest `maxPayload` of all targets; each tunnel
 * applies its own target's limit.
 */
function pluginOptions (targets: readonly ResolvedTarget[]): WebsocketPluginOptions {
  let maxPayload = 0
  for (const target of targets) maxPayload = Math.max(maxPayload, target.websocket?.maxPayload ?? 0)
  return {
    options: {
      maxPayload,
      perMessageDeflate: false,
      handleProtocols: (offered, request) => {
        // Middleware may have offered the upstream more than the caller did.
        const protocol = agreed.get(request)
        return protocol !== undefined && offered.has(protocol) ? protocol : false
      }
    },
    errorHandler (error, socket, request) {
      // Protocol errors (bad frame, payload too large) are the peer's fault,
      // and ws closes the socket with the right code by itself.
      request.log.info({ err: { type: error.name, message: error.message } }, 'websocket connection error')
      if (socket.readyState === WebSocket.OPEN) socket.close(1011)
    },
    preClose (this: FastifyInstance, done: () => void) {
      for (const client of this.websocketServer.clients) client.close(1001, 'Server shutting down')
      this.websocketServer.close()
      done()
    }
  }
}

/**
 * @fastify/websocket would complete the handshake of an upgrade on any route
 * and close it at once; refuse it with an HTTP error before any 101 instead.
 */
const refuseUnroutedUpgrade: onRequestHookHandler = function refuseUnroutedUpgrade (request, _reply, done) {
  const config = request.routeOptions.config as unknown as Record<string, unknown> | undefined
  done(request.ws === true && config?.[WEBSOCKET_ROUTE] !== true ? new WebSocketNotEnabledError() : undefined)
}

/**
 * An upgrade answered with plain HTTP outside the gatehouse routes (a 404,
 * a host route) leaves a socket that Node no longer manages and that stays
 * half-open after the client leaves: close it when the client ends, when it
 * idles, and at shutdown.
 */
function guardUpgradeSockets (scope: FastifyInstance, timeout: number): void {
  const open = new Set<Duplex>()
  const onUpgrade = (_request: IncomingMessage, socket: Duplex): void => {
    open.add(socket)
    const destroy = (): void => {
      if (!tunnelled.has(socket)) socket.destroy()
    }
    socket.once('close', () => open.delete(socket))
    socket.once('end', destroy)
    // ws resets this timeout when the socket becomes a WebSocket.
    ;(socket as Socket).setTimeout(timeout, destroy)
  }
  scope.server.on('upgrade', onUpgrade)
  scope.addHook('preClose', (done) => {
    scope.server.removeListener('upgrade', onUpgrade)
    for (const socket of open) {
      if (!tunnelled.has(socket)) socket.destroy()
    }
    done()
  })
}

/**
 * Registers @fastify/websocket once for the gatehouse scope (before any
 * route, as it attaches through onRoute) with the upgrade guards.
 */
export async function registerWebSocket (scope: FastifyInstance, targets: readonly ResolvedTarget[]): Promise<void> {
  if (scope.hasDecorator('websocketServer')) {
    throw new InvalidOptionError('targets[].websocket', 'an app that does not register @fastify/websocket itself (the gatehouse registers it)')
  }
  await scope.register(fastifyWebsocket, pluginOptions(targets))
  scope.addHook('onRequest', refuseUnroutedUpgrade)
  let timeout = 0
  for (const target of targets) {
    if (target.websocket !== undefined) timeout = Math.max(timeout, target.timeouts.response + UPGRADE_GRACE_MS)
  }
  guardUpgradeSockets(scope, timeout)
}
