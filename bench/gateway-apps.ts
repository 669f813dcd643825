import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import fastifyCompress from '@fastify/compress'
import fastifyHttpProxy from '@fastify/http-proxy'
import fastifyJwt from '@fastify/jwt'
import gatehouse from 'fastify-gatehouse'
import { API_KEY_HEADER, PREFIX } from './shared.js'

/** What every gateway contender is given. */
export interface GatewayConfig {
  upstream: string
  jwtSecret: string
  apiKey: string
  /** zlib level for gzip; undefined keeps the default. Both gateways get the same. */
  gzipLevel?: number | undefined
}

function compressOptions (config: GatewayConfig): { zlibOptions?: { level: number } } {
  return config.gzipLevel === undefined ? {} : { zlibOptions: { level: config.gzipLevel } }
}

export const GATEWAYS = ['baseline', 'gatehouse'] as const
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
    }
  })
  return app
}

/** This plugin, configured as its README shows (verify-only: tokens are minted elsewhere). */
export async function buildGatehouse (config: GatewayConfig): Promise<FastifyInstance> {
  const app = Fastify(HOST_OPTIONS)
  await app.register(gatehouse, {
    auth: { secret: config.jwtSecret, login: false },
    compress: compressOptions(config),
    targets: [{
      prefix: PREFIX,
      upstream: config.upstream,
      credentials: { header: API_KEY_HEADER, value: config.apiKey }
    }]
  })
  return app
}

export const BUILDERS: Readonly<Record<GatewayName, (config: GatewayConfig) => Promise<FastifyInstance>>> = {
  baseline: buildBaseline,
  gatehouse: buildGatehouse
}
