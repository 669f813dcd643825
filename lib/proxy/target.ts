import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods, onRequestHookHandler } from 'fastify'
import replyFrom from '@fastify/reply-from'
import type { TokenService } from '../auth/token.js'
import { corsRouteConfig } from '../cors/register.js'
import { requireToken } from '../auth/token.js'
import { InternalError, NoResponseError, PathNotAllowedError } from '../errors.js'
import type { ResolvedTarget } from '../options/resolved.js'
import type { Exchange } from '../observe/exchange.js'
import type { Observer } from '../observe/observer.js'
import type { GatehouseContext, HeaderMap, ProxyResponse, ResponseBody, TargetInfo } from '../types.js'
import { compose } from './compose.js'
import { admit } from './admit.js'
import { GatewayResponse, handleUpstreamError, isStream, replyFromBody, requestPayload } from './context.js'
import type { RequestContext } from './context.js'
import { incomingHeaders, outgoingHeaders, varyOnEncoding } from './headers.js'
import { createMinter, withIdentityHeaders } from './identity.js'
import { assertInsideBase, isAllowedPath, upstreamPath } from './path.js'
import { splitUrl } from './prefix.js'
import { upstreamError } from './upstream-errors.js'
import { errorCode } from '../transport/cause.js'
import { bindReply, createTargetTransport, transportError } from '../transport/dispatcher.js'
import { bracketCompression, upstreamIfNoneMatch } from './validators.js'
import { checkRequestOrigin } from '../transport/public-origin.js'
import { rewriteResponseHeaders } from './rewrite-headers.js'
import { websocketRoute } from '../ws/upgrade.js'
import type { Tracing } from '../observe/tracing.js'

// TRACE and CONNECT are never proxied (cross-site tracing, tunnels).
const METHODS: HTTPMethods[] = ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT']

type ReplyFromOptions = NonNullable<Parameters<FastifyReply['from']>[1]>
// reply-from's types describe `res` as a Node response; at run time it is this.
interface UpstreamAnswer { statusCode: number, headers: HeaderMap, stream: NodeJS.ReadableStream & { destroy: () => void } }

const noHeaders = (): Record<string, never> => ({})
const noRetry = (): null => null
const noop = (): void => {}

function passBodyThrough (_request: FastifyRequest, payload: NodeJS.ReadableStream, done: (err: Error | null, body?: unknown) => void): void {
  // The body stays a stream: reply-from pipes it upstream untouched.
  done(null, payload)
}

/**
 * Refuses, before the token check and any upstream contact (WebSocket
 * upgrades included), a path that is unsafe or that an upstream may read as
 * the prefix of a target the router prefers to this one.
 */
function pathGuard (target: ResolvedTarget): onRequestHookHandler {
  return function guardPath (request, _reply, done) {
    done(isAllowedPath(splitUrl(request.url).path, target.pathGuard) ? undefined : new PathNotAllowedError())
  }
}

/**
 * `{ ...base, ...extra }`, copied key by key: V8 spreads an object of many
 * dash-named keys (a header map) on a slow path, ten times the cost of this
 * loop, once per request.
 */
function merged<T extends HeaderMap> (base: HeaderMap, extra: T): HeaderMap & T {
  const out: HeaderMap = {}
  for (const name in base) out[name] = base[name]
  for (const name in extra) out[name] = extra[name]
  return out as HeaderMap & T
}

function safeErrorLog (err: Error): Record<string, unknown> {
  // Transport errors name internal hosts and ports: log their kind only.
  return { type: err.name, code: errorCode(err) }
}

/**
 * One encapsulated scope per target: its own connection pool, reply-from,
 * raw body pass-through, token check, authorization and middleware.
 */
export function targetScope (target: ResolvedTarget, tokens: TokenService, tracing?: Tracing, observer?: Observer) {
  return async function gatehouseTarget (scope: FastifyInstance): Promise<void> {
    const upstream = createTargetTransport(target, scope)
    scope.addHook('onClose', upstream.close)
    await scope.register(replyFrom, { base: target.origin, undici: upstream.dispatcher, disableRequestLogging: true })
    if (observer !== undefined) {
      // First hook of all: requests refused before the proxy are counted and logged too.
      scope.addHook('onRequest', observer.track(target.name))
      // The token check fails with the token codes: counted by reason here, nothing added to the check itself.
      scope.addHook('onError', (_request, _reply, err, done) => {
        observer.tokenFailure(err)
        done()
      })
      observer.watch(target.name, upstream)
    }
    // First of the scope's hooks: a bad Host is refused before the token
    // check, WebSocket upgrades included, and before any upstream contact.
    scope.addHook('onRequest', checkRequestOrigin)

    // After @fastify/compress's onRoute (inherited): a compressed ETag goes weak.
    scope.addHook('onRoute', bracketCompression)

    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', passBodyThrough)

    const info: TargetInfo = Object.freeze({ name: target.name, prefix: target.prefix, upstream: target.upstream })
    const injected = target.credentials.kind === 'static' ? target.credentials.headers : undefined
    // The names the credentials own: the caller's copies are dropped before any middleware.
    const strip = new Set(injected !== undefined
      ? Object.keys(injected)
      : target.credentials.kind === 'computed' ? target.credentials.names : [])
    // Tracing wraps these once, here: with it off, requests pay no check at all.
    const traced = tracing?.target(target.name, target.origin)
    const composed = compose(target.middleware)
    const tracedRun = traced === undefined || target.middleware.length === 0 ? undefined : traced.run(composed, target.middleware.length)
    const chain: typeof composed = traced === undefined
      ? composed
      : tracedRun === undefined
        ? (ctx, terminal) => traced.upstream(terminal)(ctx)
        : (ctx, terminal) => tracedRun(ctx, traced.upstream(terminal))
    // Identity headers are on the outgoing request before the first middleware, upgrades included.
    const run = withIdentityHeaders(chain, target.identity)
    const mint = target.identity?.token === undefined ? undefined : createMinter(target.identity.token)
    const admitted: typeof admit = traced === undefined
      ? admit
      : (target, info, outgoing, request, reply) => traced.admitted(request, admit(target, info, outgoing, request, reply))
    const bufferUpTo = target.transport.bufferResponses

    async function credentialHeaders (ctx: GatehouseContext<any>): Promise<Record<string, string>> {
      const credentials = target.credentials
      if (credentials.kind === 'static') return credentials.headers
      if (credentials.kind === 'none') return {}
      const computed = await credentials.compute(ctx)
      const headers: Record<string, string> = {}
      for (const name in computed) {
        const lower = name.toLowerCase()
        // A header it did not declare: the caller's copy of it reached the
        // middleware, so the declaration is wrong. Fail loudly.
        if (credentials.names.length > 0 && !strip.has(lower)) throw new InternalError({ cause: new Error(`credentials.compute set "${lower}", not in credentials.headers`) })
        headers[lower] = String(computed[name])
      }
      return headers
    }

    // The token minted for the upstream travels like a credential: on the wire only.
    async function upstreamCredentials (ctx: GatehouseContext<any>): Promise<Record<string, string>> {
      const credentials = injected ?? await credentialHeaders(ctx)
      return mint === undefined ? credentials : merged(credentials, mint(ctx))
    }

    async function callUpstream (ctx: GatehouseContext<any>): Promise<void> {
      // ctx.respond() before next() answers without the upstream.
      if (ctx.response !== undefined) return
      const outgoing = ctx.request
      assertInsideBase(target, outgoing.path)
      // A body a middleware read or replaced goes as bytes, with its length fixed.
      const pending = requestPayload(outgoing)
      const payload = pending === undefined ? undefined : await pending
      // The caller's copies of the credentials were dropped; the target's go
      // on the wire only, so no middleware sees (or logs) them. Host is set by
      // the dispatcher, for the upstream it picks.
      const credentials = mint === undefined ? injected ?? await credentialHeaders(ctx) : await upstreamCredentials(ctx)
      const headers: HeaderMap = bindReply(merged(outgoing.headers, credentials), ctx.fastifyReply, observer?.exchangeOf(ctx.fastifyRequest))
      const ifNoneMatch = headers['if-none-match']
      if (typeof ifNoneMatch === 'string') headers['if-none-match'] = upstreamIfNoneMatch(ifNoneMatch)
      const reply = ctx.fastifyReply

      // Resolves with a transport failure; rejects only on a programming error.
      // reply-from calls these from undici's callback, inside a promise
      // chain nobody awaits: a throw there would be an unhandled rejection
      // and a request that never ends, so each one catches its own.
      const failure = await new Promise<Error | void>((resolve, reject) => {
        let settled = false
        // reply-from calls neither callback once the reply was sent (a
        // middleware answered on its own) or the client left: the end of
        // the client's response settles the exchange then. 'close' comes
        // either way, after 'finish' or when the connection went.
        const raw = reply.raw
        const ended = (): void => {
          if (settled) return
          settled = true
          resolve()
        }
        const settle = (): void => {
          raw.removeListener('close', ended)
        }
        if (raw.writableFinished || raw.destroyed) {
          resolve()
          return
        }
        raw.once('close', ended)
        const options: ReplyFromOptions = {
          method: outgoing.method as HTTPMethods,
          ...replyFromBody(payload, ctx.fastifyRequest, headers),
          rewriteRequestHeaders: () => headers as Record<string, string>,
          rewriteHeaders: noHeaders,
          queryString: () => outgoing.query,
          retryDelay: noRetry,
          onResponse (_request, _reply, res) {
            const answer = res as unknown as UpstreamAnswer
            // Dropping the body (ctx.respond, a throwing middleware) destroys
            // it; that must not surface as an unhandled 'error' event.
            answer.stream.on('error', noop)
            if (settled) {
              answer.stream.destroy()
              return
            }
            settled = true
            settle()
            try {
              ctx.response = { status: answer.statusCode, headers: rewriteResponseHeaders(incomingHeaders(answer.headers, target.headerPolicy), target, ctx.fastifyRequest, outgoing.path), body: answer.stream }
              resolve()
            } catch (err) {
              answer.stream.destroy()
              reject(err)
            }
          },
          onError (_reply, { error }) {
            if (settled) return
            settled = true
            settle()
            try {
              resolve(transportError(error) ?? upstreamError(error))
            } catch (err) {
              reject(err)
            }
          }
        }
        try {
          reply.from(outgoing.path, options)
        } catch (err) {
          settle()
          throw err
        }
      })
      // Sent by a middleware, or the client left: nothing more to do here.
      if (reply.sent || reply.raw.destroyed) return
      // The gateway's own fault is no upstream error: no hook to ask.
      if (failure instanceof InternalError) throw failure
      if (target.onUpstreamError !== undefined) await handleUpstreamError(ctx, failure ?? undefined, target.onUpstreamError)
      else if (failure !== undefined) throw failure
    }

    async function forward (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
      const { path, query } = splitUrl(request.url)
      const params = request.params as Record<string, string>
      const outgoing = {
        method: request.method,
        path: upstreamPath(target, path, params),
        query,
        headers: outgoingHeaders(request, target.headerPolicy)
      }
      const ctx = await admitted(target, info, outgoing, request, reply)

      try {
        await run(ctx, callUpstream)
      } catch (err) {
        // Every body stream it held, the upstream's included, goes now.
        ctx.release()
        throw err
      }
      if (reply.sent || reply.raw.destroyed) {
        // A middleware answered itself (or the client left): whatever body
        // it did not send, the upstream's included, must not pin the connection.
        ctx.releaseAfter(reply)
        return reply
      }
      if (ctx.response === undefined) throw new NoResponseError()
      return send(reply, ctx.response, bufferUpTo, ctx, observer?.exchangeOf(request))
    }

    const guardPath = pathGuard(target)
    const onRequest = [guardPath, ...(traced === undefined ? [] : [traced.startAdmission]), ...(target.public ? [] : [requireToken(tokens)])]
    const routeOptions = {
      ...(traced === undefined ? {} : { onError: traced.failed, onSend: traced.serverStatus }),
      method: METHODS,
      handler: forward,
      onRequest,
      exposeHeadRoute: false,
      // @fastify/compress would gunzip request bodies yet leave their
      // Content-Encoding and Content-Length: bodies pass as they came, and
      // ctx.request.json() decodes them itself.
      decompress: false as const,
      logSerializers: { err: safeErrorLog },
      config: corsRouteConfig(target.cors, METHODS)
    }
    if (target.websocket === undefined) {
      scope.route({ ...routeOptions, url: '/' })
      scope.route({ ...routeOptions, url: '/*' })
      return
    }
    // @fastify/websocket takes a wsHandler on a GET route only: GET carries both.
    const ws = websocketRoute(scope, { target, transport: upstream, settings: target.websocket, tokens, info, run, credentialHeaders: upstreamCredentials, refuse: (reply, response) => send(reply, response, bufferUpTo), observer })
    const otherMethods = METHODS.filter((method) => method !== 'GET')
    for (const url of ['/', '/*']) {
      scope.route({ ...routeOptions, url, method: otherMethods })
      scope.route({
        ...routeOptions,
        url,
        method: 'GET',
        onRequest: [guardPath, ...ws.onRequest],
        preHandler: ws.preHandler,
        wsHandler: ws.wsHandler,
        config: { ...ws.config, ...routeOptions.config }
      })
    }
  }
}

/** Reads a whole upstream body; a transport failure becomes a gateway error. */
function readBody (stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    stream.on('data', (chunk: Buffer) => chunks.push(chunk))
    stream.once('end', () => resolve(chunks.length === 1 ? chunks[0] as Buffer : Buffer.concat(chunks)))
    stream.once('error', (err) => reject(upstreamError(err)))
  })
}

/**
 * Resolves once a body stream has its first bytes (or has ended), rejects
 * with the gateway error for a failure before them: until then nothing has
 * been committed to the client, which gets a clean 502/504 instead of the
 * upstream's status and headers over an error body. The idle and total
 * timeouts bound the wait.
 */
function firstBytes (stream: NodeJS.ReadableStream): Promise<void> {
  const readable = stream as NodeJS.ReadableStream & { readableLength?: number, readableEnded?: boolean }
  if ((readable.readableLength ?? 0) > 0 || readable.readableEnded === true) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      stream.removeListener('readable', ready)
      stream.removeListener('error', failed)
      stream.removeListener('close', closed)
      if (err === undefined) resolve()
      else reject(upstreamError(err))
    }
    // 'readable' also fires at the end of an empty body. Removing the
    // listener leaves the stream paused for Fastify to pipe.
    const ready = (): void => done()
    const failed = (err: Error): void => done(err)
    const closed = (): void => done(readable.readableEnded === true ? undefined : new Error('upstream body closed before its end'))
    stream.on('readable', ready)
    stream.once('error', failed)
    stream.once('close', closed)
  })
}

// An event stream may stay silent long after its head, by design: its head
// goes to the client at once.
function isEventStream (headers: HeaderMap): boolean {
  const type = headers['content-type']
  return typeof type === 'string' && type.trimStart().toLowerCase().startsWith('text/event-stream')
}

/**
 * Sends a response. An upstream body stream of known length up to
 * `bufferUpTo` bytes is read whole first: one write, and one synchronous
 * compress call (within @fastify/compress's `syncThreshold`) instead of a
 * stream pipeline. `ctx`, when given, holds body
 * streams to release once they can no longer be sent: at once if the upstream
 * body was read whole, else when the reply is done. `exchange`, when metrics
 * or the access log are on, counts the body's bytes.
 */
async function send (reply: FastifyReply, response: ProxyResponse, bufferUpTo: number, ctx?: RequestContext<any>, exchange?: Exchange): Promise<FastifyReply> {
  const { status, headers } = response
  let body: ResponseBody
  let readWhole = false
  try {
    body = response instanceof GatewayResponse ? response.readyBody ?? await response.wireBody() : response.body
    if (status === 204 || status === 304) {
      // No body may follow; let the upstream stream end so its socket is reused.
      if (isStream(body)) body.resume()
      body = null
    } else if (isStream(body) && reply.request.method !== 'HEAD') {
      const length = Number(headers['content-length'])
      if (length > 0 && length <= bufferUpTo) {
        body = await readBody(body)
        readWhole = true
      } else if (!isEventStream(headers)) {
        await firstBytes(body)
      }
    }
  } catch (err) {
    ctx?.release()
    throw err
  }
  // A body read whole has ended: nothing left to wait for.
  if (readWhole) ctx?.release()
  else ctx?.releaseAfter(reply)
  varyOnEncoding(headers)
  // Fastify sets the length of other bytes itself; a body read whole has the
  // length its headers declare (undici fails a body of any other length).
  if (!readWhole && body !== null && !isStream(body)) delete headers['content-length']
  reply.code(status).headers(headers)
  exchange?.countOut(body)
  return body === null ? reply.send() : reply.send(body)
}
