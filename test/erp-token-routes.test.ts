import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { request } from 'undici'
import type { Dispatcher } from 'undici'
import { INVENTORY_KEY, serviceRows, shopToken, startErpStack, TRANSACTIONS_KEY } from './helpers/erp.js'
import { rawGet } from './helpers/raw-request.js'

/*
 * The ERP example's token-routed targets: `/transactions/...` and
 * `/inventory/...` reach `/shops/<sub>/...` of the services, the shop taken
 * from the token. Real services and gateway on 127.0.0.1:0.
 */

interface Erp {
  app: FastifyInstance
  gateway: string
  transactions: string
  inventory: string
  /** URLs each service's HTTP server received, before any hook. */
  seen: { transactions: string[], inventory: string[] }
}

async function startErp (t: Test): Promise<Erp> {
  const stack = await startErpStack(t)
  const seen: Erp['seen'] = { transactions: [], inventory: [] }
  stack.transactionsService.server.on('request', (req) => seen.transactions.push(req.url ?? ''))
  stack.inventoryService.server.on('request', (req) => seen.inventory.push(req.url ?? ''))
  return { app: stack.gatewayApp, gateway: stack.gateway, transactions: stack.transactions, inventory: stack.inventory, seen }
}

function tokenOf (erp: Erp, shop: string): Promise<string> {
  return shopToken(erp.gateway, shop)
}

async function call (url: string, opts: { method?: Dispatcher.HttpMethod, token?: string, json?: unknown } = {}) {
  const res = await request(url, {
    method: opts.method ?? 'GET',
    headers: {
      ...(opts.token === undefined ? {} : { authorization: `Bearer ${opts.token}` }),
      ...(opts.json === undefined ? {} : { 'content-type': 'application/json' })
    },
    ...(opts.json === undefined ? {} : { body: JSON.stringify(opts.json) })
  })
  const text = await res.body.text()
  return { status: res.statusCode, body: text === '' ? undefined : JSON.parse(text) as unknown }
}

t.test("WAL001's token on GET /transactions lists WAL001's transactions", async (t) => {
  const erp = await startErp(t)
  const res = await call(`${erp.gateway}/transactions`, { token: await tokenOf(erp, 'WAL001') })
  t.equal(res.status, 200)
  const rows = res.body as Array<{ shopId: string }>
  t.same(erp.seen.transactions, ['/shops/WAL001/transactions'])
  t.same(rows, await serviceRows(erp.transactions, '/shops/WAL001/transactions', TRANSACTIONS_KEY), "exactly the service's WAL001 rows")
  t.same([...new Set(rows.map((row) => row.shopId))], ['WAL001'], 'only WAL001 rows')
})

t.test('the same path gives each shop its own data', async (t) => {
  const erp = await startErp(t)
  const wal = await call(`${erp.gateway}/inventory`, { token: await tokenOf(erp, 'WAL001') })
  const bby = await call(`${erp.gateway}/inventory`, { token: await tokenOf(erp, 'BBY001') })
  t.equal(wal.status, 200)
  t.equal(bby.status, 200)
  t.same(erp.seen.inventory, ['/shops/WAL001/inventory', '/shops/BBY001/inventory'])
  t.same(wal.body, await serviceRows(erp.inventory, '/shops/WAL001/inventory', INVENTORY_KEY), "exactly the service's WAL001 items")
  t.same(bby.body, await serviceRows(erp.inventory, '/shops/BBY001/inventory', INVENTORY_KEY), "exactly the service's BBY001 items")
  t.same([...new Set((wal.body as Array<{ shopId: string }>).map((row) => row.shopId))], ['WAL001'])
  t.same([...new Set((bby.body as Array<{ shopId: string }>).map((row) => row.shopId))], ['BBY001'])
})

t.test("an id of another shop's record is not found: the shop in the path is always the caller's", async (t) => {
  const erp = await startErp(t)
  const walToken = await tokenOf(erp, 'WAL001')
  const own = await call(`${erp.gateway}/transactions/1`, { token: walToken })
  t.equal(own.status, 200)
  t.match(own.body, { id: 1, shopId: 'WAL001' })
  const other = await call(`${erp.gateway}/transactions/1`, { token: await tokenOf(erp, 'BBY001') })
  t.equal(other.status, 404)
  t.same(erp.seen.transactions, ['/shops/WAL001/transactions/1', '/shops/BBY001/transactions/1'])
})

t.test('create, query string and the classic route agree', async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'WAL001')
  const created = await call(`${erp.gateway}/inventory`, {
    method: 'POST', token, json: { sku: 'CHG-USB-C', name: 'USB-C charger', quantity: 50, unitPrice: 15.99 }
  })
  t.equal(created.status, 201)
  const record = created.body as { id: number, shopId: string }
  t.equal(record.shopId, 'WAL001')
  const classic = await call(`${erp.gateway}/shops/WAL001/inventory/${record.id}`, { token })
  t.same(classic.body, record)
  const withQuery = await call(`${erp.gateway}/inventory/${record.id}?fields=all`, { token })
  t.equal(withQuery.status, 200)
  t.same(erp.seen.inventory, [
    '/shops/WAL001/inventory',
    `/shops/WAL001/inventory/${record.id}`,
    `/shops/WAL001/inventory/${record.id}?fields=all`
  ])
})

t.test('no token: 401, and the services hear nothing', async (t) => {
  const erp = await startErp(t)
  t.equal((await call(`${erp.gateway}/transactions`)).status, 401)
  t.equal((await call(`${erp.gateway}/inventory/1`)).status, 401)
  t.same(erp.seen, { transactions: [], inventory: [] })
})

t.test('a token without the shop role: 403, and the services hear nothing', async (t) => {
  const erp = await startErp(t)
  const token = erp.app.gatehouse.signToken({ sub: 'WAL001', role: 'admin' })
  t.equal((await call(`${erp.gateway}/transactions`, { token })).status, 403)
  t.same(erp.seen, { transactions: [], inventory: [] })
})

t.test('a `sub` that tries to climb out of /shops is refused with 400, before the services', async (t) => {
  const erp = await startErp(t)
  for (const sub of ['..', '../admin', 'BBY001/../WAL001', '%2e%2e', 'WAL001/..']) {
    const token = erp.app.gatehouse.signToken({ sub, role: 'shop' })
    const res = await rawGet(erp.gateway, '/transactions/1', { Authorization: `Bearer ${token}` })
    t.equal(res.status, 400, sub)
    t.equal(JSON.parse(res.body).code, 'FST_GATEHOUSE_PATH_NOT_ALLOWED')
  }
  t.same(erp.seen, { transactions: [], inventory: [] })
})

t.test('the services still want their key: the gateway sent it', async (t) => {
  const erp = await startErp(t)
  const direct = await call(`${erp.inventory}/shops/WAL001/inventory`)
  t.equal(direct.status, 401)
  const viaGateway = await call(`${erp.gateway}/inventory`, { token: await tokenOf(erp, 'WAL001') })
  t.equal(viaGateway.status, 200)
})
