import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'
import Fastify, { LogController } from 'fastify'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import gatehouse, { gatehouseFrameworkErrors, Phase, redisStore } from 'fastify-gatehouse'
import { Redis } from 'ioredis'
import type { GatehouseContext, Middleware, Next, TargetOptions } from 'fastify-gatehouse'
import { verifyShopUser } from './users.js'

export const DEFAULT_TRANSACTIONS_API_KEY = 'transactions-secret-key-123'
export const DEFAULT_INVENTORY_API_KEY = 'inventory-secret-key-456'
/** The demo page's origin: a dev server such as Vite's on its default port. */
export const DEFAULT_CORS_ORIGINS = ['http://localhost:5173', 'http://127.0.0.1:5173']

export interface GatewayOptions {
  /** Where the transactions service listens, e.g. `http://127.0.0.1:8001`. */
  transactionsUrl: string
  /** Where the inventory service listens, e.g. `http://127.0.0.1:8002`. */
  inventoryUrl: string
  transactionsApiKey: string
  inventoryApiKey: string
  /** HS256 secret, at least 32 bytes. */
  jwtSecret: string
  logger?: FastifyServerOptions['logger']
  /** Browser origins that may call the gateway (CORS). Default `DEFAULT_CORS_ORIGINS`. */
  corsOrigins?: string[]
  /**
   * Redis shared by every gateway instance (sessions, logouts, login
   * throttling), e.g. `redis://127.0.0.1:6379`. Without it the state is in
   * this process's memory: fine for one instance only.
   */
  redisUrl?: string
}

/**
 * A sample middleware: one log line per proxied request. It runs outermost
 * (phase `clientEdge`), so the duration covers the other middleware too. It
 * logs no headers: they hold the caller's token and, upstream, the API keys.
 */
export const logRequests: Middleware = async (ctx: GatehouseContext, next: Next) => {
  const started = performance.now()
  let status: number | undefined
  try {
    await next()
    status = ctx.response?.status
  } catch (err) {
    status = (err as { statusCode?: number }).statusCode ?? 500
    throw err
  } finally {
    const ms = Math.round((performance.now() - started) * 10) / 10
    ctx.log.info({ method: ctx.request.method, target: ctx.target.name, status, ms }, 'proxied')
  }
}

/**
 * The verified shop, sent to the services (which log it): the token's `sub`
 * and `role`. A caller's own `X-Gatehouse-User` is always dropped first.
 */
const verifiedShop = { headers: { 'x-gatehouse-user': 'sub', 'x-gatehouse-role': 'role' } } as const

// A shop may only reach its own data: the `:shopId` in the path must be the token's `sub`.
const ownShopOnly = (ctx: GatehouseContext): boolean => ctx.params.shopId === ctx.user?.sub

/** The claims `users.ts` puts in a shop's token. */
export type ShopClaims = { sub: string, role: 'shop' }

/**
 * The tutorial's second style: `/transactions/...` and `/inventory/...` with
 * the shop taken from the token, so a caller cannot even name another shop.
 * The template's `{claims.sub}` is percent-encoded, and the rewritten path
 * must stay under the service's base path, else 400.
 */
function tokenRouted (service: 'transactions' | 'inventory', upstream: string, apiKey: string): TargetOptions<Record<string, unknown>, ShopClaims> {
  return {
    name: `${service} (by token)`,
    prefix: `/${service}`,
    upstream,
    rewrite: `/shops/{claims.sub}/${service}`,
    allow: { anyRole: ['shop'] },
    credentials: { header: 'X-API-Key', value: apiKey },
    identity: verifiedShop,
    middleware: [{ phase: Phase.clientEdge, handler: logRequests }]
  }
}

/** The ERP gateway: login at POST /login, then both services behind one token. */
export async function buildGateway (opts: GatewayOptions): Promise<FastifyInstance> {
  // The `proxied` line of logRequests replaces Fastify's two lines per request.
  const logController = new LogController({ disableRequestLogging: true })
  const app = Fastify({
    logger: opts.logger ?? false,
    logController,
    // Slow or stalled request bodies may not hold a connection forever.
    requestTimeout: 60_000,
    frameworkErrors: gatehouseFrameworkErrors
  })
  let store
  if (opts.redisUrl !== undefined) {
    const redis = new Redis(opts.redisUrl)
    // ioredis reconnects by itself; while it cannot, the gateway answers 503 where it needs Redis.
    redis.on('error', (err) => app.log.warn({ err: err.message }, 'redis connection error'))
    // This app made the client, so it closes it, after the gateway has stopped using it.
    app.addHook('onClose', async () => { redis.disconnect() })
    store = redisStore({ client: redis })
  }
  await app.register(gatehouse, {
    auth: {
      secret: opts.jwtSecret,
      // Short access tokens, kept alive by refresh tokens (POST /token/refresh).
      expiresIn: '15m',
      // Failed logins are throttled per shop name and per address (on by default; shown here):
      // the 11th wrong password within 15 minutes gets 429 with Retry-After.
      login: { verify: verifyShopUser(), throttle: { user: { max: 10 }, window: '15m' } },
      refresh: { expiresIn: '7d', maxAge: '30d' },
      // POST /logout ends the session: its refresh tokens and, at once, its access tokens.
      logout: { revokeAccessToken: true },
      // Several instances behind a load balancer share this state through Redis.
      ...(store === undefined ? {} : { store })
    },
    targets: [
      {
        name: 'transactions',
        prefix: '/shops/:shopId/transactions',
        upstream: opts.transactionsUrl,
        credentials: { header: 'X-API-Key', value: opts.transactionsApiKey },
        identity: verifiedShop,
        authorize: ownShopOnly,
        middleware: [{ phase: Phase.clientEdge, handler: logRequests }],
        // The live feed (/shops/:shopId/transactions/live): the same token
        // check, authorize and key swap on the upgrade, before any 101.
        websocket: true
      },
      {
        name: 'inventory',
        prefix: '/shops/:shopId/inventory',
        upstream: opts.inventoryUrl,
        credentials: { header: 'X-API-Key', value: opts.inventoryApiKey },
        identity: verifiedShop,
        authorize: ownShopOnly,
        middleware: [{ phase: Phase.clientEdge, handler: logRequests }]
      },
      tokenRouted('transactions', opts.transactionsUrl, opts.transactionsApiKey),
      tokenRouted('inventory', opts.inventoryUrl, opts.inventoryApiKey)
    ],
    // A single-page app on another origin may log in and call every target;
    // the browser caches a preflight answer for 10 minutes.
    cors: { origin: opts.corsOrigins ?? DEFAULT_CORS_ORIGINS, maxAge: 600 }
    // compress is left out: on by default (gzip, deflate, brotli above 1 KiB).
  })
  return app
}

/** GATEHOUSE_JWT_SECRET, else a random secret (tokens then die with the process). */
export function jwtSecretFromEnv (): string {
  const secret = process.env.GATEHOUSE_JWT_SECRET
  if (secret !== undefined && secret !== '') return secret
  process.stderr.write('warning: GATEHOUSE_JWT_SECRET is not set; using a random secret, tokens will not survive a restart\n')
  return randomBytes(32).toString('base64url')
}

/** CORS_ORIGINS (comma-separated), else the demo origins. */
export function corsOriginsFromEnv (): string[] {
  const value = process.env.CORS_ORIGINS
  if (value === undefined || value.trim() === '') return DEFAULT_CORS_ORIGINS
  return value.split(',').map((origin) => origin.trim()).filter((origin) => origin !== '')
}

/** REDIS_URL, else `undefined` (the in-memory store: one instance only). */
export function redisUrlFromEnv (): string | undefined {
  const value = process.env.REDIS_URL
  return value === undefined || value.trim() === '' ? undefined : value.trim()
}

/** Reads a TCP port from the environment, or the default. */
export function portFromEnv (name: string, fallback: number): number {
  const value = process.env[name]
  if (value === undefined || value === '') return fallback
  const port = Number(value)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`${name} must be a port number, got "${value}"`)
  return port
}

async function main (): Promise<void> {
  const gateway = await buildGateway({
    transactionsUrl: process.env.TRANSACTIONS_URL ?? 'http://127.0.0.1:8001',
    inventoryUrl: process.env.INVENTORY_URL ?? 'http://127.0.0.1:8002',
    transactionsApiKey: process.env.TRANSACTIONS_API_KEY ?? DEFAULT_TRANSACTIONS_API_KEY,
    inventoryApiKey: process.env.INVENTORY_API_KEY ?? DEFAULT_INVENTORY_API_KEY,
    jwtSecret: jwtSecretFromEnv(),
    corsOrigins: corsOriginsFromEnv(),
    redisUrl: redisUrlFromEnv(),
    logger: { level: 'info' }
  })
  await gateway.listen({ host: '127.0.0.1', port: portFromEnv('PORT', 8080) })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => { gateway.close().then(() => process.exit(0), () => process.exit(1)) })
  }
}

const entry = process.argv[1]
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`gateway failed to start: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  })
}
