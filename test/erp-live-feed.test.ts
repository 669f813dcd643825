import type { IncomingHttpHeaders } from 'node:http'
import t from 'tap'
import type { Test } from 'tap'
import { request } from 'undici'
import { WebSocket } from 'ws'
import { buildTransactionsService, LIVE_FEED_PROTOCOL } from '../examples/erp/transactions-service.js'
import { INVENTORY_KEY, shopToken, startErpStack, TRANSACTIONS_KEY } from './helpers/erp.js'
import { closed, nextMessage, openClient, refusedUpgrade, wsUrl } from './helpers/ws-upstream.js'

/*
 * The ERP example's live feed end to end: both demo services and the gateway
 * on 127.0.0.1:0, real `ws` clients through the gateway's WebSocket tunnel.
 */

interface Erp {
  gateway: string
  transactions: string
  /** Upgrade requests the transactions service's HTTP server received, before any hook. */
  upgrades: Array<{ url: string, headers: IncomingHttpHeaders }>
  /** Plain HTTP requests the transactions service received. */
  requests: string[]
}

async function startErp (t: Test): Promise<Erp> {
  const stack = await startErpStack(t)
  const upgrades: Erp['upgrades'] = []
  const requests: string[] = []
  stack.transactionsService.server.on('upgrade', (req) => { upgrades.push({ url: req.url ?? '', headers: req.headers }) })
  stack.transactionsService.server.on('request', (req) => { requests.push(`${req.method ?? ''} ${req.url ?? ''}`) })
  return { gateway: stack.gateway, transactions: stack.transactions, upgrades, requests }
}

function tokenOf (erp: Erp, shop: string): Promise<string> {
  return shopToken(erp.gateway, shop)
}

/** Creates a transaction through the gateway; resolves with the 201 body. */
async function createTransaction (erp: Erp, shop: string, token: string, description: string): Promise<Record<string, unknown>> {
  const res = await request(`${erp.gateway}/shops/${shop}/transactions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'sale', amount: 12.5, currency: 'USD', description })
  })
  const body = await res.body.json() as Record<string, unknown>
  if (res.statusCode !== 201) throw new Error(`create failed with ${res.statusCode}: ${JSON.stringify(body)}`)
  return body
}

/** The next message on a socket, which must be JSON text. */
async function nextJson (socket: WebSocket): Promise<unknown> {
  const { data, binary } = await nextMessage(socket)
  if (binary) throw new Error('expected a text message')
  return JSON.parse(data.toString('utf8')) as unknown
}

const feed = (erp: Erp, shop: string): string => wsUrl(erp.gateway, `/shops/${shop}/transactions/live`)

t.test('a token in Authorization subscribes to the own shop feed; created transactions arrive as JSON', async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'WAL001')
  const client = await openClient(feed(erp, 'WAL001'), [], { headers: { authorization: `Bearer ${token}` } })
  t.teardown(() => client.terminate())
  t.equal(client.protocol, '', 'no subprotocol offered, none selected')

  const message = nextJson(client)
  const created = await createTransaction(erp, 'WAL001', token, 'Pushed over the live feed')
  t.same(await message, created, 'the subscriber got the created record')
  t.match(created, { shopId: 'WAL001', description: 'Pushed over the live feed' })

  t.equal(erp.upgrades.length, 1)
  const upgrade = erp.upgrades[0]
  t.equal(upgrade?.url, '/shops/WAL001/transactions/live')
  t.equal(upgrade?.headers['x-api-key'], TRANSACTIONS_KEY, 'the service got its key on the upgrade')
  t.equal(upgrade?.headers.authorization, undefined, 'and not the caller token')
})

t.test('a token in a bearer. subprotocol entry works next to the feed subprotocol, which is negotiated end to end', async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'WAL001')
  const client = await openClient(feed(erp, 'WAL001'), [LIVE_FEED_PROTOCOL, `bearer.${token}`])
  t.teardown(() => client.terminate())
  t.equal(client.protocol, LIVE_FEED_PROTOCOL)

  const upgrade = erp.upgrades[0]
  t.equal(upgrade?.headers['sec-websocket-protocol'], LIVE_FEED_PROTOCOL, 'the token entry is not forwarded')
  t.equal(upgrade?.headers['x-api-key'], TRANSACTIONS_KEY)
  t.equal(upgrade?.headers.authorization, undefined)
  t.notOk(JSON.stringify(upgrade?.headers).includes(token), 'the token reaches the service nowhere')

  // Only WAL001's transactions reach WAL001's feed.
  const message = nextJson(client)
  await createTransaction(erp, 'BBY001', await tokenOf(erp, 'BBY001'), 'Not for WAL001')
  const created = await createTransaction(erp, 'WAL001', token, 'Via the subprotocol token')
  t.same(await message, created)
})

t.test('the bearer. entry alone is not enough: the gateway never selects it, so a client must offer a real subprotocol', async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'WAL001')
  const err = await openClient(feed(erp, 'WAL001'), [`bearer.${token}`]).then(
    (client) => { client.terminate(); return undefined },
    (err: unknown) => err as Error
  )
  t.match(err, { message: /no subprotocol/i }, 'ws, like browsers, fails a handshake that selects none of the offered subprotocols')
})

t.test("another shop's token on WAL001's feed gets 403 before any 101; the service sees no upgrade", async (t) => {
  const erp = await startErp(t)
  const token = await tokenOf(erp, 'BBY001')
  const byHeader = await refusedUpgrade(feed(erp, 'WAL001'), [], { headers: { authorization: `Bearer ${token}` } })
  t.equal(byHeader.statusCode, 403)
  t.match(byHeader.body, { statusCode: 403, code: 'FST_GATEHOUSE_FORBIDDEN' })
  const byProtocol = await refusedUpgrade(feed(erp, 'WAL001'), [LIVE_FEED_PROTOCOL, `bearer.${token}`])
  t.equal(byProtocol.statusCode, 403)
  t.same(erp.upgrades, [], 'no upgrade reached the transactions service')
  t.same(erp.requests, [])
})

t.test('no token gets 401 before any 101; the service sees no upgrade', async (t) => {
  const erp = await startErp(t)
  const missing = await refusedUpgrade(feed(erp, 'WAL001'), [LIVE_FEED_PROTOCOL])
  t.equal(missing.statusCode, 401)
  t.match(missing.body, { statusCode: 401, code: 'FST_GATEHOUSE_TOKEN_MISSING' })
  t.match(missing.headers['www-authenticate'], /^Bearer/)
  t.same(erp.upgrades, [])
  t.same(erp.requests, [])
})

t.test('the service itself refuses a feed upgrade without its key, before any 101', async (t) => {
  const erp = await startErp(t)
  const url = wsUrl(erp.transactions, '/shops/WAL001/transactions/live')
  const none = await refusedUpgrade(url)
  t.equal(none.statusCode, 401)
  t.match(none.body, { statusCode: 401, message: 'Invalid or missing API key' })
  const wrong = await refusedUpgrade(url, [], { headers: { 'x-api-key': INVENTORY_KEY } })
  t.equal(wrong.statusCode, 401)

  const direct = await openClient(url, [LIVE_FEED_PROTOCOL], { headers: { 'x-api-key': TRANSACTIONS_KEY } })
  t.teardown(() => direct.terminate())
  t.equal(direct.protocol, LIVE_FEED_PROTOCOL)
  const badShop = await refusedUpgrade(wsUrl(erp.transactions, '/shops/wal-001/transactions/live'), [], { headers: { 'x-api-key': TRANSACTIONS_KEY } })
  t.equal(badShop.statusCode, 400, 'the shop id is validated before the upgrade')
})

t.test('closing the service closes its subscribers with 1001', async (t) => {
  const transactions = buildTransactionsService({ apiKey: TRANSACTIONS_KEY })
  const url = await transactions.listen({ host: '127.0.0.1', port: 0 })
  const client = await openClient(wsUrl(url, '/shops/WAL001/transactions/live'), [], { headers: { 'x-api-key': TRANSACTIONS_KEY } })
  const done = closed(client)
  await transactions.close()
  t.same(await done, { code: 1001, reason: 'Server shutting down' })
  t.equal(client.readyState, WebSocket.CLOSED)
})
