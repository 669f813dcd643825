import { createHash, timingSafeEqual } from 'node:crypto'
import Fastify, { LogController } from 'fastify'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import { WebSocket } from 'ws'
import { shopIdentity } from './shop-identity.js'

/*
 * A demo transactions service, the first target of the ERP example. It knows
 * nothing about users or tokens: it trusts whoever holds its API key, which is
 * exactly why it sits behind the gateway. Besides CRUD it has a live feed,
 * `GET /shops/:shopId/transactions/live` (WebSocket), that pushes each
 * transaction created for the shop as one JSON text message.
 */

/** The feed's subprotocol; chosen when offered, none otherwise. */
export const LIVE_FEED_PROTOCOL = 'transactions.v1'

export interface Transaction {
  id: number
  shopId: string
  type: 'sale' | 'refund'
  amount: number
  currency: string
  description: string
  createdAt: string
}

type NewTransaction = Pick<Transaction, 'type' | 'amount' | 'currency' | 'description'>

export interface TransactionsServiceOptions {
  /** The key callers must send in `X-API-Key`. */
  apiKey: string
  logger?: FastifyServerOptions['logger']
}

const SEED: ReadonlyArray<Omit<Transaction, 'id'>> = [
  { shopId: 'WAL001', type: 'sale', amount: 129.99, currency: 'USD', description: 'Blender, 2 units', createdAt: '2025-03-01T09:15:00.000Z' },
  { shopId: 'WAL001', type: 'sale', amount: 24.5, currency: 'USD', description: 'Paper towels, 10 packs', createdAt: '2025-03-01T10:02:00.000Z' },
  { shopId: 'WAL001', type: 'refund', amount: 64.99, currency: 'USD', description: 'Returned blender, damaged box', createdAt: '2025-03-01T11:40:00.000Z' },
  { shopId: 'WAL001', type: 'sale', amount: 499, currency: 'USD', description: '55-inch television, floor model', createdAt: '2025-03-02T14:20:00.000Z' },
  { shopId: 'WAL001', type: 'sale', amount: 18.75, currency: 'USD', description: 'Coffee beans, 3 bags', createdAt: '2025-03-02T16:05:00.000Z' },
  { shopId: 'WAL001', type: 'sale', amount: 89.9, currency: 'USD', description: 'Garden hose and nozzle set', createdAt: '2025-03-03T08:45:00.000Z' },
  { shopId: 'WAL001', type: 'sale', amount: 35.2, currency: 'USD', description: 'School supplies bundle', createdAt: '2025-03-03T12:10:00.000Z' },
  { shopId: 'BBY001', type: 'sale', amount: 1299, currency: 'USD', description: 'Laptop, 16 GB RAM', createdAt: '2025-03-01T12:00:00.000Z' },
  { shopId: 'BBY001', type: 'sale', amount: 79.99, currency: 'USD', description: 'Wireless headphones', createdAt: '2025-03-02T13:30:00.000Z' },
  { shopId: 'ZAR001', type: 'sale', amount: 59.9, currency: 'EUR', description: 'Linen shirt', createdAt: '2025-03-01T17:10:00.000Z' },
  { shopId: 'ZAR001', type: 'refund', amount: 39.95, currency: 'EUR', description: 'Returned jeans, wrong size', createdAt: '2025-03-02T18:25:00.000Z' }
]

const shopParams = {
  type: 'object',
  required: ['shopId'],
  properties: { shopId: { type: 'string', pattern: '^[A-Z0-9]{1,16}$' } }
} as const

const itemParams = {
  type: 'object',
  required: ['shopId', 'id'],
  properties: { ...shopParams.properties, id: { type: 'integer', minimum: 1 } }
} as const

const fields = {
  type: { type: 'string', enum: ['sale', 'refund'] },
  amount: { type: 'number', exclusiveMinimum: 0 },
  currency: { type: 'string', pattern: '^[A-Z]{3}$' },
  description: { type: 'string', minLength: 1, maxLength: 500 }
} as const

const createBody = { type: 'object', additionalProperties: false, required: ['type', 'amount', 'currency', 'description'], properties: fields } as const
const updateBody = { type: 'object', additionalProperties: false, minProperties: 1, properties: fields } as const

const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest()

// A subscriber that lets this much pile up unread is dropped rather than buffered without bound.
const MAX_SUBSCRIBER_BACKLOG = 1024 * 1024
// How long subscribers get to answer the close frame when the service closes.
const CLOSE_GRACE_MS = 2000

/** Builds the service (not listening); state lives in the instance. */
export function buildTransactionsService ({ apiKey, logger = false }: TransactionsServiceOptions): FastifyInstance {
  // One line per request, the shop's (shop-identity.ts), instead of Fastify's two.
  const app = Fastify({ logger, logController: new LogController({ disableRequestLogging: true }) })
  // Digests have equal lengths, so timingSafeEqual never leaks the key's length.
  const expected = sha256(apiKey)
  const transactions = new Map<number, Transaction>()
  let lastId = 0
  for (const seed of SEED) transactions.set(++lastId, { id: lastId, ...seed })
  // Live feed subscribers per shop; a set is removed with its last socket.
  const subscribers = new Map<string, Set<WebSocket>>()

  // Upgrades go through the Fastify routing too, so the key check below runs
  // before any 101. Subscribers only listen: 4 KiB is plenty for their frames.
  app.register(fastifyWebsocket, {
    options: {
      maxPayload: 4096,
      handleProtocols: (offered) => offered.has(LIVE_FEED_PROTOCOL) ? LIVE_FEED_PROTOCOL : false
    },
    // On close: a close frame to every subscriber, and a subscriber that has
    // not answered within the grace period is dropped, so that close() never
    // waits for it (ws alone would wait 30 s).
    preClose (done) {
      for (const shop of subscribers.values()) {
        for (const socket of shop) socket.close(1001, 'Server shutting down')
      }
      setTimeout(() => {
        for (const shop of subscribers.values()) {
          for (const socket of shop) socket.terminate()
        }
      }, CLOSE_GRACE_MS).unref()
      this.websocketServer.close()
      done()
    }
  })

  app.addHook('onRequest', async (request, reply) => {
    const key = request.headers['x-api-key']
    if (typeof key !== 'string' || !timingSafeEqual(sha256(key), expected)) {
      return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'Invalid or missing API key' })
    }
  })
  // After the key check: only a caller holding the key may name a shop.
  shopIdentity(app)

  const notFound = { statusCode: 404, error: 'Not Found', message: 'Transaction not found' }
  const find = (shopId: string, id: number): Transaction | undefined => {
    const found = transactions.get(id)
    return found?.shopId === shopId ? found : undefined
  }

  app.get<{ Params: { shopId: string } }>('/shops/:shopId/transactions', { schema: { params: shopParams } }, async (request) => {
    return [...transactions.values()].filter((t) => t.shopId === request.params.shopId)
  })

  app.post<{ Params: { shopId: string }, Body: NewTransaction }>(
    '/shops/:shopId/transactions', { schema: { params: shopParams, body: createBody } },
    async (request, reply) => {
      const created: Transaction = { id: ++lastId, shopId: request.params.shopId, ...request.body, createdAt: new Date().toISOString() }
      transactions.set(created.id, created)
      publish(created)
      return reply.code(201).send(created)
    })

  function publish (created: Transaction): void {
    const shop = subscribers.get(created.shopId)
    if (shop === undefined) return
    const message = JSON.stringify(created)
    for (const socket of shop) {
      if (socket.readyState !== WebSocket.OPEN) continue
      if (socket.bufferedAmount > MAX_SUBSCRIBER_BACKLOG) socket.terminate()
      else socket.send(message)
    }
  }

  // Declared in a plugin so that it is added once @fastify/websocket has loaded:
  // the plugin's onRoute hook is what makes a route upgradeable.
  app.register(async (live) => {
    live.get<{ Params: { shopId: string } }>(
      '/shops/:shopId/transactions/live', { websocket: true, schema: { params: shopParams } },
      (socket, request) => {
        const { shopId } = request.params
        let shop = subscribers.get(shopId)
        if (shop === undefined) subscribers.set(shopId, shop = new Set())
        shop.add(socket)
        socket.once('close', () => {
          shop.delete(socket)
          if (shop.size === 0 && subscribers.get(shopId) === shop) subscribers.delete(shopId)
        })
      })
  })

  app.get<{ Params: { shopId: string, id: number } }>('/shops/:shopId/transactions/:id', { schema: { params: itemParams } }, async (request, reply) => {
    return find(request.params.shopId, request.params.id) ?? reply.code(404).send(notFound)
  })

  app.patch<{ Params: { shopId: string, id: number }, Body: Partial<NewTransaction> }>(
    '/shops/:shopId/transactions/:id', { schema: { params: itemParams, body: updateBody } },
    async (request, reply) => {
      const found = find(request.params.shopId, request.params.id)
      if (found === undefined) return reply.code(404).send(notFound)
      Object.assign(found, request.body)
      return found
    })

  app.delete<{ Params: { shopId: string, id: number } }>('/shops/:shopId/transactions/:id', { schema: { params: itemParams } }, async (request, reply) => {
    if (find(request.params.shopId, request.params.id) === undefined) return reply.code(404).send(notFound)
    transactions.delete(request.params.id)
    return reply.code(204).send()
  })

  return app
}
