import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fastifyCors from '@fastify/cors'
import type { FastifyCorsOptions } from '@fastify/cors'
import { InvalidOptionError } from '../errors.js'
import type { ResolvedCors } from './options.js'

/** What a gatehouse route answers to CORS: its policy (`false`: none) and the methods a preflight may ask for. */
export interface CorsRoute {
  readonly policy: ResolvedCors | false
  readonly methods: string
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Set on target routes; the token routes and @fastify/cors's own OPTIONS route are found by path. */
    gatehouseCors?: CorsRoute
  }
}

// Per request: the policy of the route, and the origin it allowed (if any).
const kCors = Symbol('gatehouse.cors')
interface CorsState { policy: ResolvedCors, origin: string | undefined }
type WithCors = FastifyRequest & { [kCors]?: CorsState, corsPreflightEnabled?: boolean }

const DISABLED: FastifyCorsOptions = { origin: false }

/** Route config for a target's routes. */
export function corsRouteConfig (policy: ResolvedCors | undefined, methods: readonly string[]): { gatehouseCors: CorsRoute } {
  return { gatehouseCors: { policy: policy ?? false, methods: methods.join(', ') } }
}

function hasToken (list: string, token: string): boolean {
  return list.split(',').some((item) => item.trim().toLowerCase() === token)
}

/**
 * Registers @fastify/cors in the gatehouse scope (so host routes never run
 * its hook) with a per-request delegator: target routes carry their policy
 * in their config, the token routes (POST only, so their preflights land on
 * @fastify/cors's catch-all OPTIONS route) are looked up by path. Its
 * onRequest hook comes before every other hook of the scope and before the
 * targets' route-level token check, so preflights need no token and never
 * reach a target's handler.
 */
export async function registerCors (scope: FastifyInstance, policy: ResolvedCors | undefined, tokenPaths: readonly string[]): Promise<void> {
  // @fastify/cors decorates the request: a second copy in the same tree throws
  // a Fastify error naming neither plugin; say what to do instead.
  if (scope.hasRequestDecorator('corsPreflightEnabled')) {
    throw new InvalidOptionError('cors', 'no @fastify/cors registered by the host around the gatehouse (register the host\'s in its own encapsulated scope)')
  }
  const tokenRoutes = new Map<string, CorsRoute>(tokenPaths.map((path) => [scope.prefix + path, { policy: policy ?? false, methods: 'POST' }]))

  function routeOf (request: FastifyRequest): CorsRoute | undefined {
    const own = request.routeOptions.config.gatehouseCors
    if (own !== undefined) return own
    const url = request.routeOptions.url
    if (url !== undefined && tokenRoutes.has(url)) return tokenRoutes.get(url)
    // Anything else here is @fastify/cors's catch-all OPTIONS route: only the
    // token routes' preflights are ours, other paths stay 404 as before.
    if (request.method !== 'OPTIONS') return undefined
    const query = request.url.indexOf('?')
    return tokenRoutes.get(query === -1 ? request.url : request.url.slice(0, query))
  }

  function optionsFor (request: WithCors, route: CorsRoute, policy: ResolvedCors, origin: string): FastifyCorsOptions {
    request[kCors] = { policy, origin }
    // @fastify/cors takes `null` (not undefined) for "leave out".
    return {
      origin,
      methods: route.methods,
      credentials: policy.credentials,
      exposedHeaders: policy.exposedHeaders as string[],
      allowedHeaders: policy.allowedHeaders as string[] | null,
      maxAge: policy.maxAge,
      // A preflight is an OPTIONS with Access-Control-Request-Method (Fetch
      // standard); any other OPTIONS is a real request: token check, upstream.
      preflight: request.method === 'OPTIONS' && request.headers['access-control-request-method'] !== undefined,
      strictPreflight: false
    } as unknown as FastifyCorsOptions
  }

  function delegator (request: WithCors, callback: (error: Error | null, options: FastifyCorsOptions) => void): void {
    const route = routeOf(request)
    if (route === undefined || route.policy === false) return callback(null, DISABLED)
    const policy = route.policy
    // The gateway owns CORS on this route, whatever the origin: see onSend.
    request[kCors] = { policy, origin: undefined }
    const origin = request.headers.origin
    if (origin === undefined) return callback(null, DISABLED)
    let allowed: boolean | Promise<boolean>
    try {
      allowed = policy.allows(origin, request)
    } catch (err) {
      return callback(err as Error, DISABLED)
    }
    if (typeof allowed === 'boolean') return callback(null, allowed ? optionsFor(request, route, policy, origin) : DISABLED)
    allowed.then(
      (ok) => callback(null, ok === true ? optionsFor(request, route, policy, origin) : DISABLED),
      (err: Error) => callback(err, DISABLED)
    )
  }

  await scope.register(fastifyCors, { delegator, hook: 'onRequest' } as FastifyCorsOptions)

  // The gateway's CORS headers are the only ones: an upstream's own would
  // contradict the policy (or open a target to every origin), and an
  // upstream's Vary would drop Origin from it.
  scope.addHook('onSend', function gatehouseCorsHeaders (request: WithCors, reply: FastifyReply, payload, done) {
    const state = request[kCors]
    if (state === undefined || request.corsPreflightEnabled === true) return done(null, payload)
    for (const name of Object.keys(reply.getHeaders())) {
      if (name.startsWith('access-control-')) reply.removeHeader(name)
    }
    if (state.origin !== undefined) {
      reply.header('access-control-allow-origin', state.origin)
      if (state.policy.credentials) reply.header('access-control-allow-credentials', 'true')
      reply.header('access-control-expose-headers', state.policy.exposedHeaders.join(', '))
    }
    const vary = reply.getHeader('vary')
    const list = Array.isArray(vary) ? vary.join(', ') : vary === undefined ? '' : String(vary)
    if (list === '') reply.header('vary', 'Origin')
    else if (!hasToken(list, 'origin') && !hasToken(list, '*')) reply.header('vary', `${list}, Origin`)
    done(null, payload)
  })
}
