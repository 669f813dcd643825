import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import type { Test } from 'tap'
import { request } from 'undici'
import { buildGateway } from '../../examples/erp/gateway.js'
import { buildInventoryService } from '../../examples/erp/inventory-service.js'
import { buildTransactionsService } from '../../examples/erp/transactions-service.js'

export const TRANSACTIONS_KEY = 'test-transactions-key-1'
export const INVENTORY_KEY = 'test-inventory-key-2'
export const JWT_SECRET = 'erp-example-test-secret-of-32-bytes-or-more'

/** The ERP example as `npm start` runs it, on 127.0.0.1:0, closed on teardown. */
export interface ErpStack {
  gatewayApp: FastifyInstance
  gateway: string
  transactionsService: FastifyInstance
  transactions: string
  inventoryService: FastifyInstance
  inventory: string
}

/**
 * Starts both demo services and the gateway. Record what a service receives
 * with `stack.transactionsService.server.on('request' | 'upgrade', ...)`: the
 * raw server sees every request, even those its key check refuses.
 */
export async function startErpStack (t: Test, opts: { logger?: FastifyServerOptions['logger'], corsOrigins?: string[] } = {}): Promise<ErpStack> {
  const transactionsService = buildTransactionsService({ apiKey: TRANSACTIONS_KEY })
  const inventoryService = buildInventoryService({ apiKey: INVENTORY_KEY })
  const transactions = await transactionsService.listen({ host: '127.0.0.1', port: 0 })
  const inventory = await inventoryService.listen({ host: '127.0.0.1', port: 0 })
  const gatewayApp = await buildGateway({
    transactionsUrl: transactions,
    inventoryUrl: inventory,
    transactionsApiKey: TRANSACTIONS_KEY,
    inventoryApiKey: INVENTORY_KEY,
    jwtSecret: JWT_SECRET,
    ...(opts.logger === undefined ? {} : { logger: opts.logger }),
    ...(opts.corsOrigins === undefined ? {} : { corsOrigins: opts.corsOrigins })
  })
  const gateway = await gatewayApp.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(async () => {
    await gatewayApp.close()
    await Promise.all([transactionsService.close(), inventoryService.close()])
  })
  return { gatewayApp, gateway, transactionsService, transactions, inventoryService, inventory }
}

/** Logs in as a demo shop (its password is its lower-cased name) and returns the token. */
export async function shopToken (gateway: string, shop: string): Promise<string> {
  const res = await request(`${gateway}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: shop, password: shop.toLowerCase() })
  })
  const body = await res.body.json() as { token?: unknown }
  if (res.statusCode !== 200 || typeof body.token !== 'string') throw new Error(`login as ${shop} failed with ${res.statusCode}`)
  return body.token
}

/**
 * What a demo service itself holds under `path` (asked directly with its API
 * key): what a gateway answer must equal, so an empty or wrong list fails.
 */
export async function serviceRows<T> (service: string, path: string, apiKey: string): Promise<T[]> {
  const res = await request(`${service}${path}`, { headers: { 'x-api-key': apiKey } })
  const rows = await res.body.json() as T[]
  if (res.statusCode !== 200 || !Array.isArray(rows) || rows.length === 0) throw new Error(`the service has no rows under ${path} (${res.statusCode})`)
  return rows
}

/** The claims of a JWT, decoded without checking it (the gateway's tests check it). */
export function claimsOf (token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>
}
