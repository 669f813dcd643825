import { createHash, timingSafeEqual } from 'node:crypto'
import Fastify, { LogController } from 'fastify'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { shopIdentity } from './shop-identity.js'

/*
 * A demo inventory service, the second target of the ERP example. Like the
 * transactions service it only knows its own API key, not users or tokens.
 */

export interface InventoryItem {
  id: number
  shopId: string
  sku: string
  name: string
  quantity: number
  unitPrice: number
  updatedAt: string
}

type NewInventoryItem = Pick<InventoryItem, 'sku' | 'name' | 'quantity' | 'unitPrice'>

export interface InventoryServiceOptions {
  /** The key callers must send in `X-API-Key`. */
  apiKey: string
  logger?: FastifyServerOptions['logger']
}

const SEED: ReadonlyArray<Omit<InventoryItem, 'id'>> = [
  { shopId: 'WAL001', sku: 'BLN-200', name: 'Blender 600 W', quantity: 14, unitPrice: 64.99, updatedAt: '2025-03-01T08:00:00.000Z' },
  { shopId: 'WAL001', sku: 'PTW-010', name: 'Paper towels, 6 rolls', quantity: 240, unitPrice: 2.45, updatedAt: '2025-03-01T08:00:00.000Z' },
  { shopId: 'WAL001', sku: 'TV-55UHD', name: '55-inch UHD television', quantity: 6, unitPrice: 499, updatedAt: '2025-03-01T08:00:00.000Z' },
  { shopId: 'BBY001', sku: 'LAP-16-512', name: 'Laptop 16 GB / 512 GB', quantity: 9, unitPrice: 1299, updatedAt: '2025-03-01T08:00:00.000Z' },
  { shopId: 'BBY001', sku: 'HP-WL-01', name: 'Wireless headphones', quantity: 35, unitPrice: 79.99, updatedAt: '2025-03-01T08:00:00.000Z' },
  { shopId: 'ZAR001', sku: 'SHR-LIN-M', name: 'Linen shirt, size M', quantity: 42, unitPrice: 59.9, updatedAt: '2025-03-01T08:00:00.000Z' },
  { shopId: 'ZAR001', sku: 'JNS-SLM-32', name: 'Slim jeans, 32', quantity: 27, unitPrice: 39.95, updatedAt: '2025-03-01T08:00:00.000Z' }
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
  sku: { type: 'string', pattern: '^[A-Z0-9-]{1,32}$' },
  name: { type: 'string', minLength: 1, maxLength: 200 },
  quantity: { type: 'integer', minimum: 0 },
  unitPrice: { type: 'number', minimum: 0 }
} as const

const createBody = { type: 'object', additionalProperties: false, required: ['sku', 'name', 'quantity', 'unitPrice'], properties: fields } as const
const updateBody = { type: 'object', additionalProperties: false, minProperties: 1, properties: fields } as const

const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest()

/** Builds the service (not listening); state lives in the instance. */
export function buildInventoryService ({ apiKey, logger = false }: InventoryServiceOptions): FastifyInstance {
  // One line per request, the shop's (shop-identity.ts), instead of Fastify's two.
  const app = Fastify({ logger, logController: new LogController({ disableRequestLogging: true }) })
  // Digests have equal lengths, so timingSafeEqual never leaks the key's length.
  const expected = sha256(apiKey)
  const items = new Map<number, InventoryItem>()
  let lastId = 0
  for (const seed of SEED) items.set(++lastId, { id: lastId, ...seed })

  app.addHook('onRequest', async (request, reply) => {
    const key = request.headers['x-api-key']
    if (typeof key !== 'string' || !timingSafeEqual(sha256(key), expected)) {
      return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'Invalid or missing API key' })
    }
  })
  // After the key check: only a caller holding the key may name a shop.
  shopIdentity(app)

  const notFound = { statusCode: 404, error: 'Not Found', message: 'Inventory item not found' }
  const find = (shopId: string, id: number): InventoryItem | undefined => {
    const found = items.get(id)
    return found?.shopId === shopId ? found : undefined
  }

  app.get<{ Params: { shopId: string } }>('/shops/:shopId/inventory', { schema: { params: shopParams } }, async (request) => {
    return [...items.values()].filter((item) => item.shopId === request.params.shopId)
  })

  app.post<{ Params: { shopId: string }, Body: NewInventoryItem }>(
    '/shops/:shopId/inventory', { schema: { params: shopParams, body: createBody } },
    async (request, reply) => {
      const created: InventoryItem = { id: ++lastId, shopId: request.params.shopId, ...request.body, updatedAt: new Date().toISOString() }
      items.set(created.id, created)
      return reply.code(201).send(created)
    })

  app.get<{ Params: { shopId: string, id: number } }>('/shops/:shopId/inventory/:id', { schema: { params: itemParams } }, async (request, reply) => {
    return find(request.params.shopId, request.params.id) ?? reply.code(404).send(notFound)
  })

  app.patch<{ Params: { shopId: string, id: number }, Body: Partial<NewInventoryItem> }>(
    '/shops/:shopId/inventory/:id', { schema: { params: itemParams, body: updateBody } },
    async (request, reply) => {
      const found = find(request.params.shopId, request.params.id)
      if (found === undefined) return reply.code(404).send(notFound)
      Object.assign(found, request.body, { updatedAt: new Date().toISOString() })
      return found
    })

  app.delete<{ Params: { shopId: string, id: number } }>('/shops/:shopId/inventory/:id', { schema: { params: itemParams } }, async (request, reply) => {
    if (find(request.params.shopId, request.params.id) === undefined) return reply.code(404).send(notFound)
    items.delete(request.params.id)
    return reply.code(204).send()
  })

  return app
}
