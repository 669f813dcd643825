import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fastifyCompress from '@fastify/compress'
import { createTokenLifecycle } from './auth/lifecycle.js'
import { registerLogin } from './auth/login.js'
import { registerLogout } from './auth/logout.js'
import { registerRefresh } from './auth/refresh.js'
import { registerTokens, verifyAccessToken } from './auth/token.js'
import type { TokenService } from './auth/token.js'
import { registerCors } from './cors/register.js'
import { gatehouseErrorHandler } from './error-handler.js'
import { registerHealth } from './health/routes.js'
import { requestIdHooks } from './observe/request-id.js'
import { lifecycleRoutes } from './auth/lifecycle-options.js'
import { resolveOptions } from './options/resolve.js'
import { createTracing } from './observe/tracing.js'
import { targetScope } from './proxy/target.js'
import { deferContinue } from './transport/expect-continue.js'
import { gracefulShutdown } from './transport/shutdown.js'
import type { DrainState } from './transport/shutdown.js'
import { Observer } from './observe/observer.js'
import { registerScrapeRoute } from './observe/scrape.js'
import type { Registry } from 'prom-client'
import type { GatehouseClaims, GatehouseOptions } from './types.js'
import { registerWebSocket } from './ws/server.js'

/** What the plugin adds to the host instance as `fastify.gatehouse`. */
export interface GatehouseDecorator {
  /** Signs claims into a token with the gateway's key, algorithm and lifetime. */
  signToken: (claims: GatehouseClaims) => string
  /**
   * Verifies a token as the proxied HTTP routes do, revocation included: with
   * `auth.logout.revokeAccessToken` a token revoked by logout, or whose session
   * ended, is refused, which takes a store lookup, hence the promise. Rejects
   * with a 401 gatehouse error.
   * @example const claims = await fastify.gatehouse.verifyToken(token)
   */
  verifyToken: (token: string) => Promise<GatehouseClaims>
  /**
   * The prom-client registry of the gateway's metrics; `undefined` when
   * `metrics` is off. With `metrics.path: false`, serve it yourself.
   * @example reply.type(fastify.gatehouse.metrics!.contentType).send(await fastify.gatehouse.metrics!.metrics())
   */
  metrics: Registry | undefined
}

declare module 'fastify' {
  interface FastifyInstance {
    gatehouse: GatehouseDecorator
  }
}

/**
 * The plugin body: options are validated once, then one encapsulated scope
 * holds compression, tokens, the login route and one child scope per target,
 * so nothing leaks into the host's own routes.
 */
export const gatehouse: FastifyPluginAsync<GatehouseOptions> = async function gatehouse (fastify, opts) {
  const options = resolveOptions(opts)
  let tokens: TokenService | undefined
  let drain: DrainState | undefined
  // Only when metrics or the access log are on: `undefined` costs the request path nothing.
  const observer = options.metrics === undefined && options.accessLog === undefined ? undefined : new Observer(options.metrics, options.accessLog)

  fastify.decorate('gatehouse', {
    signToken: (claims: GatehouseClaims) => (tokens as TokenService).sign(claims),
    verifyToken: async (token: string) => await verifyAccessToken(tokens as TokenService, token),
    metrics: observer?.metrics?.registry
  })

  await fastify.register(async function gatehouseScope (scope: FastifyInstance) {
    scope.setErrorHandler(gatehouseErrorHandler)
    // First of all: the server span opens before any other hook of the scope runs.
    const tracing = options.tracing === undefined ? undefined : await createTracing(scope, options.tracing)
    // Then the request id: preflights, refusals and errors carry it too.
    if (options.requestId !== undefined) requestIdHooks(scope, options.requestId)
    // First hook of the scope: preflights are answered before the shutdown
    // drain and the targets' token check, and errors keep its headers.
    if (options.cors !== undefined || options.targets.some((target) => target.cors !== undefined)) {
      const auth = options.auth
      await registerCors(scope, options.cors, [...(auth.login === false ? [] : [auth.login.path]), ...lifecycleRoutes(auth.lifecycle)])
    }
    // Before the targets: they register their transports with the drain.
    drain = gracefulShutdown(scope, options.shutdown)
    // 100 Continue only once a request is admitted and its body is read.
    deferContinue(scope)
    // Compression hooks attach to routes as they are added: it goes first.
    if (options.compress !== false) await scope.register(fastifyCompress, options.compress)
    // Same for WebSocket routes; one instance owns the server's 'upgrade' event.
    if (options.targets.some((target) => target.websocket !== undefined)) await registerWebSocket(scope, options.targets)
    const lifecycle = createTokenLifecycle(scope, options.auth)
    tokens = await registerTokens(scope, options.auth, lifecycle.store)
    registerLogin(scope, options.auth, tokens, lifecycle, observer)
    registerRefresh(scope, options.auth, tokens, lifecycle.sessions)
    registerLogout(scope, options.auth, tokens, lifecycle)
    const metrics = observer?.metrics
    if (metrics !== undefined && options.metrics !== undefined && options.metrics.path !== false) {
      registerScrapeRoute(scope, options.metrics.path, options.metrics.access, metrics)
    }
    for (const target of options.targets) {
      await scope.register(targetScope(target, tokens, tracing, observer), { prefix: target.prefix === '/' ? '' : target.prefix })
    }
  })

  const health = options.health
  if (health !== undefined) {
    // Beside the gateway's scope, not in it: no token, and the drain's
    // refusal would hide the "draining" reason.
    await fastify.register(async function gatehouseHealth (scope: FastifyInstance) {
      if (options.requestId !== undefined) requestIdHooks(scope, options.requestId)
      await registerHealth(scope, health, { drain: () => drain, store: options.auth.lifecycle.store })
    })
  }
}
