import type { IncomingMessage } from 'node:http'
import type { Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { TLSSocket } from 'node:tls'
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
// Beyond the upstream handshakes, time for token, authorize and middleware.
const UPGRADE_GRACE_MS = 5_000
// Longer socket timeouts would overflow Node's timers and fire at once.
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * The most one upstream handshake may take, TCP and TLS connect through the
 * 101: `timeouts.connect`, since the tunnel is not set up until the 101, and
 * never longer than `timeouts.response`, which bounds any response head.
 */
export function handshakeTimeout (target: ResolvedTarget): number {
  return Math.min(target.timeouts.connect, target.timeouts.response)
}

/** How long a caller's upgrade may wait for its 101: every attempt the retry budget allows, with backoff. */
function upgradeTimeout (target: ResolvedTarget): number {
  const { retries, maxDelay } = target.transport.retry
  return Math.min(handshakeTimeout(target) * (retries + 1) + maxDelay * retries + UPGRADE_GRACE_MS, MAX_TIMER_MS)
}

/** Marks an upgrade socket as a live WebSocket. */
export function markTunnelled (socket: Duplex): void {
  tunnelled.add(socket)
}

/**
 * Once a tunnel starts, lets the handshake's objects go: @fastify/websocket's
 * error listener on the caller's socket holds the Fastify request and reply
 * for the socket's life, and the response it made for routing stays on the
 * TCP socket, with the reply (and request) in its listeners. The tunnel
 * listens for errors itself. The response is kept when something waits for
 * its 'close' (metrics and the access log close the upgrade's record then).
 */
export function letGoOfHandshake (client: WebSocket, socket: Socket, response: ServerResponse): void {
  client.removeAllListeners('error')
  if (response.socket === socket && response.listenerCount('close') === 0) response.detachSocket(socket)
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

type UpgradeListener = (request: IncomingMessage, socket: Duplex, head: Buffer) => void

/** True when the request asks for WebSocket, as ws itself decides (one token, any case). */
function isWebSocketUpgrade (request: IncomingMessage): boolean {
  return request.headers.upgrade?.trim().toLowerCase() === 'websocket'
}

// Named in an ignored offer: the offer's own headers must not reach any handler.
const OFFER_HEADERS = new Set(['upgrade', 'http2-settings'])

/**
 * Serves an upgrade offer that is not WebSocket (`h2c` from `curl --http2`,
 * Java's HttpClient) as the plain HTTP/1.1 request it also is, as RFC 9110
 * §7.8 allows. Node hands every such request to the 'upgrade' listeners with
 * the body still unread on the socket, so the head is written back without
 * the offer and the socket is given to the HTTP server again (a documented
 * use of its 'connection' event): Node parses head and body as usual, and
 * keep-alive goes on.
 */
function serveAsHttp (server: Server, request: IncomingMessage, socket: Duplex, head: Buffer): void {
  const lines = [`${request.method ?? 'GET'} ${request.url ?? '/'} HTTP/${request.httpVersion}`]
  const raw = request.rawHeaders
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    let value = raw[i + 1] as string
    const lower = name.toLowerCase()
    if (OFFER_HEADERS.has(lower)) continue
    if (lower === 'connection') {
      value = value.split(',').map((token) => token.trim()).filter((token) => token !== '' && !OFFER_HEADERS.has(token.toLowerCase())).join(', ')
      if (value === '') continue
    }
    lines.push(`${name}: ${value}`)
  }
  // Node decodes header bytes as latin1: this writes back the bytes that came.
  socket.unshift(Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), head]))
  server.emit(socket instanceof TLSSocket ? 'secureConnection' : 'connection', socket)
}

/**
 * Takes over the 'upgrade' listeners that @fastify/websocket added, so that
 * only WebSocket offers reach it; any other offer is served as HTTP.
 */
function claimWebSocketUpgrades (scope: FastifyInstance, listeners: UpgradeListener[]): void {
  const server = scope.server
  for (const listener of listeners) server.removeListener('upgrade', listener)
  const onUpgrade: UpgradeListener = (request, socket, head) => {
    if (!isWebSocketUpgrade(request)) {
      serveAsHttp(server, request, socket, head)
      return
    }
    for (const listener of listeners) listener(request, socket, head)
  }
  server.on('upgrade', onUpgrade)
  scope.addHook('preClose', (done) => {
    server.removeListener('upgrade', onUpgrade)
    done()
  })
}

// How often the pending upgrade sockets are checked against their deadline.
const GUARD_SWEEP_MS = 1_000

/** An upgrade socket's peer ended it: close it too, unless ws owns it now. */
function endUnlessTunnelled (this: Duplex): void {
  if (!tunnelled.has(this)) this.destroy()
}

/**
 * A WebSocket upgrade answered with plain HTTP outside the gatehouse routes
 * (a 404, a host route) leaves a socket that Node no longer manages and that
 * stays half-open after the client leaves: close it when the client ends,
 * when its upgrade deadline passed, and at shutdown. One timer checks every
 * pending socket, and a socket that became a tunnel is let go (listeners
 * removed): a tunnel lives for hours and must not carry the guard along.
 */
function guardUpgradeSockets (scope: FastifyInstance, timeout: number): UpgradeListener {
  const waiting = new Map<Duplex, number>()
  let sweeper: NodeJS.Timeout | undefined
  function release (socket: Duplex): void {
    waiting.delete(socket)
    socket.removeListener('end', endUnlessTunnelled)
    socket.removeListener('close', forget)
  }
  function forget (this: Duplex): void {
    release(this)
  }
  function sweep (): void {
    const now = Date.now()
    for (const [socket, deadline] of waiting) {
      if (tunnelled.has(socket)) release(socket)
      // 'close' releases it.
      else if (deadline <= now) socket.destroy()
    }
    if (waiting.size === 0) {
      clearInterval(sweeper)
      sweeper = undefined
    }
  }
  scope.addHook('preClose', (done) => {
    for (const socket of waiting.keys()) {
      if (!tunnelled.has(socket)) socket.destroy()
    }
    clearInterval(sweeper)
    sweeper = undefined
    done()
  })
  return (_request, socket) => {
    waiting.set(socket, Date.now() + timeout)
    socket.on('end', endUnlessTunnelled)
    socket.on('close', forget)
    sweeper ??= setInterval(sweep, GUARD_SWEEP_MS).unref()
  }
}

/**
 * Registers @fastify/websocket once for the gatehouse scope (before any
 * route, as it attaches through onRoute) with the upgrade guards.
 */
export async function registerWebSocket (scope: FastifyInstance, targets: readonly ResolvedTarget[]): Promise<void> {
  if (scope.hasDecorator('websocketServer')) {
    throw new InvalidOptionError('targets[].websocket', 'an app that does not register @fastify/websocket itself (the gatehouse registers it)')
  }
  const before = new Set(scope.server.listeners('upgrade'))
  await scope.register(fastifyWebsocket, pluginOptions(targets))
  const added = scope.server.listeners('upgrade').filter((listener) => !before.has(listener)) as UpgradeListener[]
  scope.addHook('onRequest', refuseUnroutedUpgrade)
  let timeout = 0
  for (const target of targets) {
    if (target.websocket !== undefined) timeout = Math.max(timeout, upgradeTimeout(target))
  }
  claimWebSocketUpgrades(scope, [guardUpgradeSockets(scope, timeout), ...added])
}
