import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler, preHandlerHookHandler } from 'fastify'
import type { WebsocketHandler } from '@fastify/websocket'
import type { IncomingMessage } from 'node:http'
import type { ConnectionOptions } from 'node:tls'
import { WebSocket } from 'ws'
import type { RevocationCheck, TokenService } from '../auth/token.js'
import { bearerToken, requireToken } from '../auth/token.js'
import {
  NoResponseError, OriginNotAllowedError, TokenInvalidError, UpstreamBadResponseError, UpstreamTimeoutError,
  WebSocketProtocolMismatchError
} from '../errors.js'
import type { ResolvedTarget } from '../options/resolved.js'
import type { Observer } from '../observe/observer.js'
import type { Composed } from '../proxy/compose.js'
import { admit } from '../proxy/admit.js'
import { outgoingHeaders } from '../proxy/headers.js'
import { HOP_BY_HOP } from '../proxy/headers-options.js'
import { assertInsideBase, upstreamPath } from '../proxy/path.js'
import { splitUrl } from '../proxy/prefix.js'
import { upstreamError } from '../proxy/upstream-errors.js'
import type { TargetTransport } from '../transport/dispatcher.js'
import type { GatehouseContext, HeaderMap, ProxyResponse, TargetInfo } from '../types.js'
import type { ResolvedWebSocket } from './options.js'
import { agreeProtocol, handshakeTimeout, letGoOfHandshake, markTunnelled, WEBSOCKET_ROUTE } from './server.js'
import { tunnel } from './tunnel.js'

/** What a target scope lends the WebSocket route. */
export interface WebSocketRouteDeps {
  readonly target: ResolvedTarget
  /** The target's HTTP transport: tunnels take its upstream selection, health, breaker and TLS. */
  readonly transport: TargetTransport
  readonly settings: ResolvedWebSocket
  readonly tokens: TokenService
  readonly info: TargetInfo
  readonly run: Composed
  readonly credentialHeaders: (ctx: GatehouseContext<any>) => Promise<Record<string, string>>
  /** Sends a response a middleware set instead of opening the tunnel. */
  readonly refuse: (reply: FastifyReply, response: ProxyResponse) => Promise<FastifyReply> | FastifyReply
  /** Metrics and access log, when on: told of each tunnel. */
  readonly observer?: Observer | undefined
}

/** The parts of the GET route that serve upgrades; plain GETs pass through them. */
export interface WebSocketRoute {
  readonly onRequest: onRequestHookHandler[]
  readonly preHandler: preHandlerHookHandler
  readonly wsHandler: WebsocketHandler
  readonly config: Record<string, unknown>
}

interface Pending {
  readonly upstream: WebSocket
  readonly ctx: GatehouseContext<any>
  readonly token: string | undefined
  readonly abandon: () => void
}

// The client's handshake headers belong to its own hop; ws writes its own.
const HANDSHAKE_HEADER = /^sec-websocket-/

function offeredProtocols (header: string | string[] | undefined): string[] {
  if (header === undefined) return []
  const joined = Array.isArray(header) ? header.join(',') : header
  const protocols: string[] = []
  for (const entry of joined.split(',')) {
    const protocol = entry.trim()
    if (protocol !== '') protocols.push(protocol)
  }
  return protocols
}

function decode (value: string): string | undefined {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '))
  } catch {
    return undefined
  }
}

function isParameter (pair: string, name: string): boolean {
  const raw = pair.split('=', 1)[0] as string
  return raw === name || decode(raw) === name
}

/** The raw query without parameter `name`; the other pairs keep their bytes. */
function withoutParameter (query: string, name: string): string {
  return query === '' ? query : query.split('&').filter((pair) => !isParameter(pair, name)).join('&')
}

/** The value of query parameter `name` (first occurrence), decoded. */
function queryValue (query: string, name: string): string | undefined {
  for (const pair of query.split('&')) {
    if (!isParameter(pair, name)) continue
    const eq = pair.indexOf('=')
    const value = eq === -1 ? '' : decode(pair.slice(eq + 1))
    if (value === undefined) throw new TokenInvalidError()
    return value === '' ? undefined : value
  }
  return undefined
}

/**
 * The caller's token for an upgrade: `Authorization: Bearer` first, then the
 * configured `Sec-WebSocket-Protocol` entry, then the query parameter. Plain
 * HTTP requests only ever use the header.
 */
export function upgradeToken (request: FastifyRequest, settings: ResolvedWebSocket): string | undefined {
  const header = bearerToken(request)
  if (header !== undefined || request.ws !== true) return header
  const prefix = settings.tokenProtocolPrefix
  if (prefix !== false) {
    for (const protocol of offeredProtocols(request.headers['sec-websocket-protocol'])) {
      if (protocol.startsWith(prefix) && protocol.length > prefix.length) return protocol.slice(prefix.length)
    }
  }
  const parameter = settings.tokenQueryParameter
  return parameter === false ? undefined : queryValue(splitUrl(request.url).query, parameter)
}

// The status of an upstream's answer that was not a 101, per error.
const answered = new WeakMap<Error, number>()

function answeredWith (err: unknown): number | undefined {
  return err instanceof Error ? answered.get(err) : undefined
}

function ignore (): void {}

/**
 * Opens the upstream socket; resolves once its 101 arrived, paused until the
 * tunnel starts. `tls` is the target's `transport.tls` (ws hands it to
 * `tls.connect` for a `wss:` URL); `timeout` bounds the whole handshake.
 */
function openUpstream (
  url: string, protocols: string[], headers: Record<string, string>, settings: ResolvedWebSocket, timeout: number, tls: ConnectionOptions
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const upstream = new WebSocket(url, protocols, { ...tls, headers, maxPayload: settings.maxPayload, perMessageDeflate: false, followRedirects: false })
    let settled = false
    const settle = (err?: Error): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      // These listeners hold the handshake's headers and URL: a tunnel lives
      // for hours, they must not. An error between open and tunnel must
      // still not crash; the tunnel listens for errors itself.
      upstream.removeListener('error', onError)
      upstream.removeListener('unexpected-response', onUnexpected)
      upstream.removeListener('upgrade', onUpgrade)
      upstream.removeListener('open', onOpen)
      upstream.on('error', ignore)
      if (err === undefined) {
        resolve(upstream)
      } else {
        upstream.terminate()
        reject(err)
      }
    }
    const timer = setTimeout(() => settle(new UpstreamTimeoutError()), timeout)
    const onError = (err: Error): void => settle(upstreamError(err))
    const onUnexpected = (_request: unknown, response: IncomingMessage): void => {
      const err = new UpstreamBadResponseError()
      // An answer, not an outage: health and the breaker judge its status as for HTTP.
      answered.set(err, response.statusCode ?? 0)
      settle(err)
    }
    // ws checks the answer after this event and would fail with a bare
    // error: an upstream that selects none of the offered subprotocols
    // answered, it just said no, and the caller is told so.
    const onUpgrade = (response: IncomingMessage): void => {
      const selected = response.headers['sec-websocket-protocol']
      if (protocols.length > 0 && (selected === undefined || !protocols.includes(selected))) {
        const err = new WebSocketProtocolMismatchError()
        answered.set(err, 101)
        settle(err)
      }
    }
    const onOpen = (): void => {
      // Messages that arrive before the tunnel listens must wait, not vanish.
      upstream.pause()
      settle()
    }
    upstream.on('error', onError)
    upstream.on('unexpected-response', onUnexpected)
    upstream.on('upgrade', onUpgrade)
    upstream.on('open', onOpen)
  })
}

/**
 * Builds the WebSocket side of a target's GET route. Everything that can
 * refuse the upgrade runs before the 101: origin and token (onRequest), then
 * `authorize`, the middleware and the upstream handshake (preHandler), so a
 * refused caller gets a plain HTTP error and a dead upstream a 502.
 */
export function websocketRoute (scope: FastifyInstance, deps: WebSocketRouteDeps): WebSocketRoute {
  const { target, transport, settings, tokens, info, run, credentialHeaders, refuse } = deps
  const timeout = handshakeTimeout(target)
  const pending = new WeakMap<FastifyRequest, Pending>()
  const open = new Set<WebSocket>()
  // One listener for every upstream socket of the route, not a closure each.
  function forget (this: WebSocket): void {
    open.delete(this)
  }
  scope.addHook('onClose', async () => {
    // Tunnels closing since preClose keep their handshake; ws ends them in 30 s at most.
    for (const upstream of open) {
      if (upstream.readyState === WebSocket.OPEN) upstream.close(1001, 'Server shutting down')
    }
  })

  const findToken = (request: FastifyRequest): string | undefined => upgradeToken(request, settings)
  const onRequest: onRequestHookHandler[] = []
  const origins = settings.origins
  if (origins !== undefined) {
    onRequest.push(function checkOrigin (request, _reply, done) {
      const origin = request.headers.origin
      done(request.ws !== true || origin === undefined || origins.has(origin) ? undefined : new OriginNotAllowedError())
    })
  }
  // Upgrades check the token's session whenever HTTP would, and also without
  // revokeAccessToken when refresh is on, so a logout refuses new tunnels.
  const revocation = (request: FastifyRequest): RevocationCheck | undefined => request.ws === true ? tokens.upgradeRevoked : tokens.revoked
  if (!target.public) onRequest.push(requireToken(tokens, findToken, revocation))

  function isTokenProtocol (protocol: string): boolean {
    return settings.tokenProtocolPrefix !== false && protocol.startsWith(settings.tokenProtocolPrefix)
  }

  function upgradeHeaders (request: FastifyRequest): HeaderMap {
    const headers = outgoingHeaders(request, target.headerPolicy)
    for (const name in headers) {
      if (HANDSHAKE_HEADER.test(name)) delete headers[name]
    }
    // Middleware sees (and may change) the subprotocols offered upstream.
    const protocols = offeredProtocols(request.headers['sec-websocket-protocol']).filter((p) => !isTokenProtocol(p))
    if (protocols.length > 0) headers['sec-websocket-protocol'] = protocols.join(', ')
    return headers
  }

  async function connect (ctx: GatehouseContext<any>): Promise<WebSocket> {
    const outgoing = ctx.request
    assertInsideBase(target, outgoing.path)
    const headers: Record<string, string> = {}
    let protocols: string[] = []
    for (const name in outgoing.headers) {
      const value = outgoing.headers[name]
      if (value === undefined) continue
      const lower = name.toLowerCase()
      if (lower === 'sec-websocket-protocol') protocols = offeredProtocols(value)
      // ws writes its own Connection and Upgrade; a middleware's copy would double them.
      else if (!HANDSHAKE_HEADER.test(lower) && !HOP_BY_HOP.has(lower)) headers[lower] = Array.isArray(value) ? value.join(', ') : value
    }
    Object.assign(headers, await credentialHeaders(ctx))
    const pathAndQuery = outgoing.path + (outgoing.query === '' ? '' : `?${outgoing.query}`)
    // The handshake is a GET: like HTTP, a refused connect may go to the next upstream.
    const upstream = await transport.open(
      ({ origin, tls }) => openUpstream(origin.replace(/^http/, 'ws') + pathAndQuery, protocols, headers, settings, timeout, tls),
      { method: 'GET', answeredWith, reply: ctx.fastifyReply }
    )
    open.add(upstream)
    upstream.on('close', forget)
    return upstream
  }

  /** Runs the upgrade up to the upstream's 101; false when a response was sent instead. */
  async function prepare (request: FastifyRequest, reply: FastifyReply): Promise<boolean> {
    const { path, query } = splitUrl(request.url)
    const parameter = settings.tokenQueryParameter
    const outgoing = {
      method: 'GET',
      path: upstreamPath(target, path, request.params as Record<string, string>),
      query: parameter === false ? query : withoutParameter(query, parameter),
      headers: upgradeHeaders(request)
    }
    // The same gate as HTTP: rules, rewrite, authorize, all before any 101.
    const ctx = await admit(target, info, outgoing, request, reply)

    let upstream: WebSocket | undefined
    try {
      await run(ctx, async (ctx) => {
        // ctx.respond() before next() refuses the upgrade.
        if (ctx.response !== undefined) return
        upstream = await connect(ctx)
        ctx.response = { status: 101, headers: {}, body: null }
      })
    } catch (err) {
      upstream?.terminate()
      throw err
    }
    const response = ctx.response
    if (upstream === undefined || response?.status !== 101) {
      upstream?.terminate()
      if (response === undefined || response.status === 101) throw new NoResponseError()
      await refuse(reply, response)
      return false
    }

    const socket = request.raw.socket
    const connected = upstream
    // If the caller's handshake never completes, the upstream must not linger.
    const abandon = (): void => connected.terminate()
    if (socket.destroyed) abandon()
    socket.once('close', abandon)
    pending.set(request, { upstream, ctx, token: target.public ? undefined : findToken(request), abandon })
    agreeProtocol(request.raw, upstream.protocol)
    return true
  }

  const preHandler: preHandlerHookHandler = function openTunnelUpstream (request, reply, done) {
    if (request.ws !== true) {
      done()
      return
    }
    prepare(request, reply).then((proceed) => { if (proceed) done() }, done)
  }

  function tokenValid (token: string): boolean {
    try {
      const result = tokens.verify(token)
      // A provider key set being fetched again: the token was valid at the upgrade, its exp still bounds it.
      if (result instanceof Promise) result.catch(ignore)
      return true
    } catch {
      return false
    }
  }

  const wsHandler: WebsocketHandler = function startTunnel (client, request) {
    const entry = pending.get(request)
    if (entry === undefined) {
      client.close(1011)
      return
    }
    pending.delete(request)
    const { upstream, ctx, token } = entry
    const socket = request.raw.socket
    markTunnelled(socket)
    socket.removeListener('close', entry.abandon)
    letGoOfHandshake(client, socket, ctx.fastifyReply.raw)
    const exp = ctx.user?.exp
    const expiresAt = token !== undefined && typeof exp === 'number' ? exp * 1000 : undefined
    tunnel(client, upstream, {
      settings,
      context: { state: ctx.state, user: ctx.user, params: ctx.params, target: info, log: request.log, fastifyRequest: request },
      token: expiresAt === undefined ? undefined : token,
      expiresAt,
      observe: deps.observer?.tunnel(info.name, request.log),
      tokenValid
    })
  }

  return { onRequest, preHandler, wsHandler, config: { [WEBSOCKET_ROUTE]: true } }
}
