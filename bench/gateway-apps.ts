import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'
import fastifyCompress from '@fastify/compress'
import fastifyHttpProxy from '@fastify/http-proxy'
import fastifyJwt from '@fastify/jwt'
import fastifyReplyFrom from '@fastify/reply-from'
import gatehouse, { redisStore } from 'fastify-gatehouse'
import type { GatehouseStore, TargetOptions } from 'fastify-gatehouse'
import { API_KEY_HEADER, PREFIX } from './shared.js'

/** What every gateway contender is given. */
export interface GatewayConfig {
  upstream: string
  jwtSecret: string
  apiKey: string
  /** zlib level for gzip; undefined keeps the default. Both gateways get the same. */
  gzipLevel?: number | undefined
  /** The redis-server the `revoke-redis` contender keeps its store in. */
  redisUrl?: string | undefined
  /**
   * Tunnel WebSocket upgrades too (the scale scenarios' gateways): off for
   * the HTTP scenarios, so their numbers keep measuring HTTP alone.
   */
  websocket?: boolean
}

function compressOptions (config: GatewayConfig): { zlibOptions?: { level: number } } {
  return config.gzipLevel === undefined ? {} : { zlibOptions: { level: config.gzipLevel } }
}

export const GATEWAYS = ['baseline', 'floor', 'gatehouse', 'revoke-memory', 'revoke-redis'] as const
export type GatewayName = typeof GATEWAYS[number]

// The same host settings for both: a bounded request time (Fastify's default
// is none), long enough for a 1 GiB upload on a slow machine.
const HOST_OPTIONS = { logger: false, requestTimeout: 300_000 } as const

/**
 * The hand-assembled alternative, each part wired as its README shows:
 * @fastify/compress first, @fastify/jwt with a global onRequest `jwtVerify`,
 * @fastify/http-proxy with `replyOptions.rewriteRequestHeaders` dropping the
 * caller's Authorization and adding the API key.
 */
export async function buildBaseline (config: GatewayConfig): Promise<FastifyInstance> {
  const app = Fastify(HOST_OPTIONS)
  await app.register(fastifyCompress, compressOptions(config))
  await app.register(fastifyJwt, { secret: config.jwtSecret })
  app.addHook('onRequest', async (request, reply) => {
    try {
      await request.jwtVerify()
    } catch (err) {
      reply.send(err)
    }
  })
  await app.register(fastifyHttpProxy, {
    upstream: config.upstream,
    prefix: PREFIX,
    rewritePrefix: PREFIX,
    replyOptions: {
      rewriteRequestHeaders: (_request, headers) => {
        const { authorization, ...rest } = headers
        return { ...rest, [API_KEY_HEADER]: config.apiKey }
      }
    },
    // Upgrades go through Fastify's routing, so the global jwtVerify hook
    // refuses them before the 101; the upstream handshake gets the key
    // and none of the caller's headers (http-proxy forwards only cookies).
    ...(config.websocket === true ? { websocket: true, wsClientOptions: { headers: { [API_KEY_HEADER]: config.apiKey } } } : {})
  })
  return app
}

/**
 * The floor of the chosen stack (issue 18): bare Fastify + @fastify/compress
 * + @fastify/reply-from forwarding the way both gateways do (Authorization
 * dropped, API key added) with no JWT work at all. What gatehouse costs
 * beyond it is its own per-request work.
 */
export async function buildFloor (config: GatewayConfig): Promise<FastifyInstance> {
  const app = Fastify(HOST_OPTIONS)
  await app.register(fastifyCompress, compressOptions(config))
  await app.register(fastifyReplyFrom, { base: config.upstream })
  // Bodies stream through untouched, as @fastify/http-proxy arranges it.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, payload, done) => { done(null, payload) })
  const rewriteRequestHeaders = (_request: unknown, headers: IncomingHttpHeaders): IncomingHttpHeaders => {
    const { authorization, ...rest } = headers
    return { ...rest, [API_KEY_HEADER]: config.apiKey }
  }
  app.all(`${PREFIX}/*`, (request, reply) => reply.from(request.url, { rewriteRequestHeaders }))
  return app
}

/** The one target every gatehouse contender proxies: the upstream's API key injected. */
function benchTarget (config: GatewayConfig): TargetOptions {
  return {
    prefix: PREFIX,
    upstream: config.upstream,
    credentials: { header: API_KEY_HEADER, value: config.apiKey },
    ...(config.websocket === true ? { websocket: true } : {})
  }
}

/** This plugin, configured as its README shows (verify-only: tokens are minted elsewhere). */
export async function buildGatehouse (config: GatewayConfig): Promise<FastifyInstance> {
  const app = Fastify(HOST_OPTIONS)
  await app.register(gatehouse, {
    auth: { secret: config.jwtSecret, login: false },
    compress: compressOptions(config),
    targets: [benchTarget(config)]
  })
  return app
}

/** The login's user: the runner logs in as it, so each token has a session (`sid`) and a `jti`. */
export const REVOCATION_USER = 'bench'

/**
 * Gatehouse with per-request revocation checks (issue 15): logout revokes
 * access tokens and refresh is on, so every proxied request looks its
 * token's session up in the store, once. `store` undefined keeps the
 * default MemoryStore.
 */
async function buildRevocation (config: GatewayConfig, store: GatehouseStore | undefined): Promise<FastifyInstance> {
  const app = Fastify(HOST_OPTIONS)
  await app.register(gatehouse, {
    auth: {
      secret: config.jwtSecret,
      // A plain comparison: the login runs once per contender, it is not measured.
      login: { verify: async ({ username, password }) => username === REVOCATION_USER && password === config.apiKey ? { sub: REVOCATION_USER, role: 'reader' } : null },
      refresh: true,
      logout: { revokeAccessToken: true },
      ...(store === undefined ? {} : { store })
    },
    compress: compressOptions(config),
    targets: [benchTarget(config)]
  })
  return app
}

async function buildRevocationRedis (config: GatewayConfig): Promise<FastifyInstance> {
  if (config.redisUrl === undefined) throw new Error('revoke-redis needs BENCH_REDIS_URL')
  // ioredis is an optional peer dependency of the package; only this contender needs it.
  const { Redis } = await import('ioredis').catch(() => {
    throw new Error('the revoke-redis contender needs ioredis beside fastify-gatehouse (npm install ioredis)')
  })
  const client = new Redis(config.redisUrl)
  const app = await buildRevocation(config, redisStore({ client }))
  // The store never closes its client: its owner does, after the app closed.
  app.addHook('onClose', async () => { client.disconnect() })
  return app
}

export const BUILDERS: Readonly<Record<GatewayName, (config: GatewayConfig) => Promise<FastifyInstance>>> = {
  baseline: buildBaseline,
  floor: buildFloor,
  gatehouse: buildGatehouse,
  'revoke-memory': (config) => buildRevocation(config, undefined),
  'revoke-redis': buildRevocationRedis
}
