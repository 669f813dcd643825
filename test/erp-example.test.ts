import { Writable } from 'node:stream'
import { gunzipSync } from 'node:zlib'
import t from 'tap'
import type { Test } from 'tap'
import { request } from 'undici'
import type { Dispatcher } from 'undici'
import { claimsOf, INVENTORY_KEY, JWT_SECRET, serviceRows, shopToken, startErpStack, TRANSACTIONS_KEY } from './helpers/erp.js'

/*
 * The ERP example end to end: both demo services and the gateway listening on
 * 127.0.0.1:0, driven with a real HTTP client.
 */

/** One request as a service's HTTP server received it, before any hook. */
interface Seen { method: string, url: string, apiKey: string | string[] | undefined, authorization: string | undefined }

interface Erp {
  gateway: string
  transactions: string
  inventory: string
  seen: { transactions: Seen[], inventory: Seen[] }
  logs: Array<Record<string, unknown>>
  rawLogs: string[]
}

async function startErp (t: Test): Promise<Erp> {
  const rawLogs: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      rawLogs.push(chunk.toString('utf8'))
      done()
    }
  })
  const stack = await startErpStack(t, { logger: { level: 'info', stream } })
  const seen: Erp['seen'] = { transactions: [], inventory: [] }
  for (const [name, service] of [['transactions', stack.transactionsService], ['inventory', stack.inventoryService]] as const) {
    service.server.on('request', (req) => {
      seen[name].push({ method: req.method ?? '', url: req.url ?? '', apiKey: req.headers['x-api-key'], authorization: req.headers.authorization })
    })
  }
  return {
    gateway: stack.gateway,
    transactions: stack.transactions,
    inventory: stack.inventory,
    seen,
    get logs () { return rawLogs.map((line) => JSON.parse(line) as Record<string, unknown>) },
    rawLogs
  }
}

async function login (erp: Erp, username: string, password: string) {
  const res = await request(`${erp.gateway}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password })
  })
  return { status: res.statusCode, headers: res.headers, body: await res.body.json() as Record<string, unknown> }
}

function tokenOf (erp: Erp, shop: string): Promise<string> {
  return shopToken(erp.gateway, shop)
}

/** A JSON request to a URL; the body is parsed unless empty. */
async function call (url: string, opts: { method?: Dispatcher.HttpMethod, headers?: Record<string, string>, json?: unknown } = {}) {
  const headers = { ...opts.headers, ...(opts.json === undefined ? {} : { 'content-type': 'application/json' }) }
  const res = await request(url, {
    method: opts.method ?? 'GET',
    headers,
    ...(opts.json === undefined ? {} : { body: JSON.stringify(opts.json) })
  })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) as unknown }
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

t.test('a shop logs in and lists its own transactions through the gateway', async (t) => {
  const erp = await startErp(t)
  const res = await login(erp, 'WAL001', 'wal001')
  t.equal(res.status, 200)
  const token = String(res.body.token)
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'a compact JWT')
  const claims = claimsOf(token)
  t.match(claims, { sub: 'WAL001', role: 'shop' }, 'the token carries the shop claims')
  t.equal(claims.exp, Number(claims.iat) + Number(res.body.expiresIn), 'and expires after expiresIn seconds')
  t.equal(res.body.tokenType, 'Bearer')
  t.match(res.body.claims, { sub: 'WAL001', role: 'shop' })
  t.equal(res.headers['cache-control'], 'no-store')

  const list = await call(`${erp.gateway}/shops/WAL001/transactions`, { headers: bearer(token) })
  t.equal(list.status, 200)
  const rows = list.body as Array<{ shopId: string }>
  t.equal(erp.seen.transactions.length, 1)
  t.equal(erp.seen.transactions[0]?.url, '/shops/WAL001/transactions')
  t.same(rows, await serviceRows(erp.transactions, '/shops/WAL001/transactions', TRANSACTIONS_KEY), "exactly the service's WAL001 rows")
  t.same([...new Set(rows.map((row) => row.shopId))], ['WAL001'], 'only WAL001 rows')
})

t.test('a transaction created through the gateway is stored by the service', async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'WAL001')
  const input = { type: 'sale', amount: 42.5, currency: 'USD', description: 'Created through the gateway' }
  const created = await call(`${erp.gateway}/shops/WAL001/transactions`, { method: 'POST', headers: bearer(token), json: input })
  t.equal(created.status, 201)
  const record = created.body as { id: number, shopId: string }
  t.match(record, { ...input, shopId: 'WAL001' })

  // Read it back from the service itself, with the service's key.
  const stored = await call(`${erp.transactions}/shops/WAL001/transactions/${record.id}`, { headers: { 'x-api-key': TRANSACTIONS_KEY } })
  t.equal(stored.status, 200)
  t.same(stored.body, record)

  const invalid = await call(`${erp.gateway}/shops/WAL001/transactions`, { method: 'POST', headers: bearer(token), json: { amount: -1 } })
  t.equal(invalid.status, 400, 'the service validates the body; its 400 passes through')
})

t.test('inventory get, update and delete through the gateway', async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'BBY001')
  const base = `${erp.gateway}/shops/BBY001/inventory`
  const created = await call(base, { method: 'POST', headers: bearer(token), json: { sku: 'TAB-11', name: 'Tablet 11-inch', quantity: 5, unitPrice: 349 } })
  t.equal(created.status, 201)
  const id = (created.body as { id: number }).id

  const got = await call(`${base}/${id}`, { headers: bearer(token) })
  t.equal(got.status, 200)
  t.match(got.body, { id, shopId: 'BBY001', sku: 'TAB-11' })

  const updated = await call(`${base}/${id}`, { method: 'PATCH', headers: bearer(token), json: { quantity: 4 } })
  t.equal(updated.status, 200)
  t.match(updated.body, { id, quantity: 4, name: 'Tablet 11-inch' })

  const deleted = await call(`${base}/${id}`, { method: 'DELETE', headers: bearer(token) })
  t.equal(deleted.status, 204)
  t.equal((await call(`${base}/${id}`, { headers: bearer(token) })).status, 404, 'gone')
  // Item 1 exists but belongs to WAL001: the service scopes ids by shop.
  t.equal((await call(`${base}/1`, { headers: bearer(token) })).status, 404)
})

t.test("another shop's data is refused with 403 before any upstream contact", async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'WAL001')
  for (const path of ['/shops/BBY001/transactions', '/shops/BBY001/transactions/7', '/shops/ZAR001/inventory']) {
    const res = await call(`${erp.gateway}${path}`, { headers: bearer(token) })
    t.equal(res.status, 403, path)
    t.match(res.body, { statusCode: 403, code: 'FST_GATEHOUSE_FORBIDDEN' })
  }
  const post = await call(`${erp.gateway}/shops/BBY001/inventory`, {
    method: 'POST', headers: bearer(token), json: { sku: 'X-1', name: 'Smuggled', quantity: 1, unitPrice: 1 }
  })
  t.equal(post.status, 403)
  t.same(erp.seen, { transactions: [], inventory: [] }, 'neither service saw a request')
})

t.test('a missing or bad token gives 401 and reaches no service', async (t) => {
  const erp = await startErp(t)
  const missing = await call(`${erp.gateway}/shops/WAL001/transactions`)
  t.equal(missing.status, 401)
  t.match(missing.body, { statusCode: 401, code: 'FST_GATEHOUSE_TOKEN_MISSING' })
  t.match(missing.headers['www-authenticate'], /^Bearer/)

  const forged = await call(`${erp.gateway}/shops/WAL001/inventory`, { headers: bearer('eyJhbGciOiJub25lIn0.eyJzdWIiOiJXQUwwMDEifQ.') })
  t.equal(forged.status, 401)
  t.same(erp.seen, { transactions: [], inventory: [] })
})

t.test('a wrong password and an unknown user give the same 401', async (t) => {
  const erp = await startErp(t)
  const wrong = await login(erp, 'WAL001', 'bby001')
  const unknown = await login(erp, 'NOPE001', 'wal001')
  t.equal(wrong.status, 401)
  t.equal(unknown.status, 401)
  t.same(wrong.body, unknown.body)
  t.notOk('token' in wrong.body)
})

t.test('the services refuse requests without their own key', async (t) => {
  const erp = await startErp(t)
  const cases = [
    { url: `${erp.transactions}/shops/WAL001/transactions`, own: TRANSACTIONS_KEY, other: INVENTORY_KEY },
    { url: `${erp.inventory}/shops/WAL001/inventory`, own: INVENTORY_KEY, other: TRANSACTIONS_KEY }
  ]
  for (const { url, own, other } of cases) {
    const none = await call(url)
    t.equal(none.status, 401, `${url} without a key`)
    t.match(none.body, { statusCode: 401, error: 'Unauthorized' })
    t.equal((await call(url, { headers: { 'x-api-key': other } })).status, 401, `${url} with the other service's key`)
    t.equal((await call(url, { headers: { 'x-api-key': `${own}x` } })).status, 401, `${url} with a longer key`)
    t.equal((await call(url, { headers: { 'x-api-key': own } })).status, 200, `${url} with its key`)
  }
})

t.test('each service receives its own key and never the caller token', async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'ZAR001')
  // A caller-sent key must be replaced, not passed on.
  const spoof = { ...bearer(token), 'x-api-key': TRANSACTIONS_KEY }
  t.equal((await call(`${erp.gateway}/shops/ZAR001/transactions`, { headers: spoof })).status, 200)
  t.equal((await call(`${erp.gateway}/shops/ZAR001/inventory`, { headers: spoof })).status, 200)
  t.equal((await call(`${erp.gateway}/shops/ZAR001/inventory/6`, { headers: bearer(token) })).status, 200)

  t.equal(erp.seen.transactions.length, 1)
  t.equal(erp.seen.inventory.length, 2)
  for (const seen of erp.seen.transactions) t.equal(seen.apiKey, TRANSACTIONS_KEY)
  for (const seen of erp.seen.inventory) t.equal(seen.apiKey, INVENTORY_KEY, 'inventory never gets the transactions key')
  for (const seen of [...erp.seen.transactions, ...erp.seen.inventory]) t.equal(seen.authorization, undefined)
})

t.test('responses are gzipped when the client accepts gzip', async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'WAL001')
  const direct = await call(`${erp.transactions}/shops/WAL001/transactions`, { headers: { 'x-api-key': TRANSACTIONS_KEY } })

  const res = await request(`${erp.gateway}/shops/WAL001/transactions`, { headers: { ...bearer(token), 'accept-encoding': 'gzip' } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-encoding'], 'gzip')
  t.match(res.headers.vary, /accept-encoding/i)
  const body = Buffer.from(await res.body.arrayBuffer())
  t.same(JSON.parse(gunzipSync(body).toString('utf8')), direct.body)

  const plain = await request(`${erp.gateway}/shops/WAL001/transactions`, { headers: { ...bearer(token), 'accept-encoding': 'identity' } })
  t.equal(plain.headers['content-encoding'], undefined)
  t.same(await plain.body.json(), direct.body)
})

t.test('the sample middleware logs method, target, status and duration, and no secrets', async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'WAL001')
  await call(`${erp.gateway}/shops/WAL001/inventory/2`, { headers: bearer(token) })
  await call(`${erp.gateway}/shops/WAL001/transactions/999`, { headers: bearer(token) })

  const proxied = erp.logs.filter((line) => line.msg === 'proxied')
  t.match(proxied, [
    { method: 'GET', target: 'inventory', status: 200, ms: Number },
    { method: 'GET', target: 'transactions', status: 404, ms: Number }
  ])
  t.equal(proxied.length, 2)
  const all = erp.rawLogs.join('')
  for (const secret of [token, TRANSACTIONS_KEY, INVENTORY_KEY, JWT_SECRET, 'wal001']) t.notOk(all.includes(secret), 'no secret in the logs')
})
