import t from 'tap'
import type { Test } from 'tap'
import { request } from 'undici'
import type { Dispatcher } from 'undici'
import type { FastifyInstance } from 'fastify'
import { buildInventoryService } from '../examples/erp/inventory-service.js'
import { buildTransactionsService } from '../examples/erp/transactions-service.js'
import { serveCli } from './helpers/cli.js'
import { INVENTORY_KEY, JWT_SECRET, startErpStack, TRANSACTIONS_KEY } from './helpers/erp.js'
import { nextMessage, openClient, refusedUpgrade, wsUrl } from './helpers/ws-upstream.js'

/*
 * Issue 16: examples/erp/gateway.yaml, run by `gatehouse serve` as a real
 * process, behaves as examples/erp/gateway.ts on the ERP walk-through. Each
 * gateway gets its own pair of freshly seeded demo services, so both start
 * from the same data; the two transcripts (what the client got) and the two
 * request logs (what the services got) must be equal, and the TS one is
 * checked against what the walk-through promises, so two equally broken
 * gateways cannot pass.
 */

/** One request as a demo service received it. */
interface Seen { service: string, method: string, url: string, apiKey: string | string[] | undefined, authorization: string | undefined }

// Values that differ on every run: tokens, their ids and expiry, record timestamps.
const VOLATILE = new Set(['token', 'refreshToken', 'createdAt', 'updatedAt'])

function normalize (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalize)
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, VOLATILE.has(key) ? typeof item : normalize(item)]))
  }
  return value
}

async function startServices (t: Test): Promise<{ transactions: string, inventory: string, seen: Seen[] }> {
  const services: Array<[string, FastifyInstance]> = [
    ['transactions', buildTransactionsService({ apiKey: TRANSACTIONS_KEY })],
    ['inventory', buildInventoryService({ apiKey: INVENTORY_KEY })]
  ]
  t.teardown(() => Promise.all(services.map(([, app]) => app.close())))
  const [transactions, inventory] = await Promise.all(services.map(([, app]) => app.listen({ host: '127.0.0.1', port: 0 })))
  return { transactions: transactions as string, inventory: inventory as string, seen: record(services) }
}

function record (services: Array<[string, FastifyInstance]>): Seen[] {
  const seen: Seen[] = []
  for (const [service, app] of services) {
    for (const event of ['request', 'upgrade']) {
      app.server.on(event, (req) => {
        seen.push({ service, method: req.method, url: req.url, apiKey: req.headers['x-api-key'], authorization: req.headers.authorization })
      })
    }
  }
  return seen
}

interface Step { step: string, status: number, headers: Record<string, unknown>, body: unknown }

// Response headers the walk-through relies on (CORS, auth challenge, throttling, compression).
const SHOWN_HEADERS = [
  'www-authenticate', 'retry-after', 'content-encoding', 'access-control-allow-origin', 'access-control-allow-methods',
  'access-control-max-age', 'access-control-expose-headers', 'vary', 'cache-control'
]

/** The ERP README's walk-through against `gateway`; resolves with what the client got at each step. */
async function walkThrough (gateway: string): Promise<Step[]> {
  const steps: Step[] = []
  const call = async (step: string, path: string, opts: { method?: Dispatcher.HttpMethod, token?: string, json?: unknown, headers?: Record<string, string> } = {}) => {
    const res = await request(`${gateway}${path}`, {
      method: opts.method ?? 'GET',
      headers: {
        ...opts.headers,
        ...(opts.token === undefined ? {} : { authorization: `Bearer ${opts.token}` }),
        ...(opts.json === undefined ? {} : { 'content-type': 'application/json' })
      },
      ...(opts.json === undefined ? {} : { body: JSON.stringify(opts.json) })
    })
    const raw = Buffer.from(await res.body.arrayBuffer())
    const text = res.headers['content-encoding'] === undefined ? raw.toString('utf8') : `<${raw.length > 0 ? 'encoded' : 'empty'}>`
    let body: unknown = text
    try {
      body = text === '' ? undefined : JSON.parse(text) as unknown
    } catch {}
    steps.push({ step, status: res.statusCode, headers: Object.fromEntries(SHOWN_HEADERS.map((name) => [name, res.headers[name]])), body: normalize(body) })
    return body as Record<string, unknown>
  }
  const login = (step: string, username: string, password: string) => call(step, '/login', { method: 'POST', json: { username, password } })

  const session = await login('log in', 'WAL001', 'wal001')
  const token = session.token as string
  await login('wrong password', 'WAL001', 'nope')
  await call('list transactions', '/shops/WAL001/transactions', { token })
  await call('get one transaction', '/shops/WAL001/transactions/1', { token })
  await call('create a transaction', '/shops/WAL001/transactions', { method: 'POST', token, json: { type: 'sale', amount: 15.99, currency: 'USD', description: 'Phone charger' } })
  await call('another shop', '/shops/BBY001/transactions', { token })
  await call('no token', '/shops/WAL001/transactions')
  await call('bad token', '/shops/WAL001/transactions', { token: 'not.a.token' })
  await call('list inventory', '/shops/WAL001/inventory', { token })
  await call("another shop's inventory", '/shops/BBY001/inventory', { token })
  await call('transactions by token', '/transactions', { token })
  await call('inventory by token', '/inventory', { token })
  await call('compressed list', '/shops/WAL001/transactions', { token, headers: { 'accept-encoding': 'gzip' } })
  await call('preflight from the demo page', '/shops/WAL001/transactions', {
    method: 'OPTIONS', headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' }
  })
  await call('preflight from another origin', '/login', {
    method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' }
  })

  // The live feed: the own shop's feed gets the created record; another shop's is refused before any 101.
  const feed = await openClient(wsUrl(gateway, '/shops/WAL001/transactions/live'), [], { headers: { authorization: `Bearer ${token}` } })
  const message = nextMessage(feed)
  await call('create while subscribed', '/shops/WAL001/transactions', { method: 'POST', token, json: { type: 'refund', amount: 3, currency: 'USD', description: 'Live' } })
  const pushed = await message
  feed.terminate()
  steps.push({ step: 'live feed message', status: 101, headers: {}, body: normalize(JSON.parse(pushed.data.toString('utf8'))) })
  const refused = await refusedUpgrade(wsUrl(gateway, '/shops/BBY001/transactions/live'), [], { headers: { authorization: `Bearer ${token}` } })
  steps.push({ step: "another shop's live feed", status: refused.statusCode, headers: {}, body: refused.body })

  const refreshed = await call('refresh', '/token/refresh', { method: 'POST', json: { refreshToken: session.refreshToken } })
  await call('refreshed token works', '/shops/WAL001/transactions/1', { token: refreshed.token as string })
  await call('log out', '/logout', { method: 'POST', token: refreshed.token as string })
  await call('after logout', '/shops/WAL001/transactions/1', { token: refreshed.token as string })

  for (let attempt = 1; attempt <= 11; attempt++) await login(`wrong password ${attempt}`, 'ZAR001', 'guess')
  return steps
}

// Two gateways, 30 logins through scrypt and the throttle's delays: more than the default 60 s on a loaded machine.
t.setTimeout(180_000)

t.test('gateway.yaml through `gatehouse serve` behaves as gateway.ts on the ERP walk-through', async (t) => {
  const stack = await startErpStack(t)
  const tsSeen = record([['transactions', stack.transactionsService], ['inventory', stack.inventoryService]])
  const yamlServices = await startServices(t)
  const cli = await serveCli(t, 'examples/erp/gateway.yaml', {
    PORT: '0',
    GATEHOUSE_JWT_SECRET: JWT_SECRET,
    TRANSACTIONS_URL: yamlServices.transactions,
    INVENTORY_URL: yamlServices.inventory,
    TRANSACTIONS_API_KEY: TRANSACTIONS_KEY,
    INVENTORY_API_KEY: INVENTORY_KEY
  })
  t.match(cli.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'the bound address is printed; port 0 took a free port')

  // At once: the throttle's delays (about 16 s for 11 failures) then overlap.
  const [fromTs, fromYaml] = await Promise.all([walkThrough(stack.gateway), walkThrough(cli.url)])

  // The TS gateway does what the walk-through says, so equality below means something.
  const status = Object.fromEntries(fromTs.map((step) => [step.step, step.status]))
  t.match(status, {
    'log in': 200,
    'wrong password': 401,
    'list transactions': 200,
    'create a transaction': 201,
    'another shop': 403,
    'no token': 401,
    'bad token': 401,
    "another shop's inventory": 403,
    'transactions by token': 200,
    'preflight from the demo page': 204,
    'live feed message': 101,
    "another shop's live feed": 403,
    refresh: 200,
    'after logout': 401,
    'wrong password 10': 401,
    'wrong password 11': 429
  })
  t.equal(fromTs.find((step) => step.step === 'compressed list')?.headers['content-encoding'], 'gzip')
  t.match(fromTs.find((step) => step.step === 'live feed message')?.body, { shopId: 'WAL001', description: 'Live' })

  for (const [index, step] of fromTs.entries()) {
    if (step.step === 'preflight from another origin') {
      // The one chosen difference: the command owns the whole server, so it
      // opts in to gatehouseNotFound, which does not echo the method and path.
      t.match(fromYaml[index], { status: 404, headers: { 'access-control-allow-origin': undefined }, body: { code: 'FST_GATEHOUSE_NOT_FOUND' } })
      t.match(step, { status: 404, headers: { 'access-control-allow-origin': undefined } })
      continue
    }
    t.same(fromYaml[index], step, `same answer: ${step.step}`)
  }
  t.equal(fromYaml.length, fromTs.length)

  // What the services received: the same requests, each with its own key and never the caller's token.
  t.same(yamlServices.seen, tsSeen, 'the services saw the same requests from both gateways')
  t.ok(tsSeen.length >= 10)
  for (const seen of yamlServices.seen) {
    t.equal(seen.apiKey, seen.service === 'transactions' ? TRANSACTIONS_KEY : INVENTORY_KEY, `${seen.method} ${seen.url} carried its service key`)
    t.equal(seen.authorization, undefined)
  }

  // The middleware module named in the file ran: one `proxied` line per proxied request.
  const proxied = cli.stdout().split('\n').filter((line) => line.includes('"msg":"proxied"')).map((line) => JSON.parse(line) as Record<string, unknown>)
  t.ok(proxied.length >= 8, 'log-requests.mjs logged the proxied requests')
  t.match(proxied[0], { method: 'GET', target: 'transactions', status: 200 })
  t.notMatch(cli.stdout(), new RegExp(`${TRANSACTIONS_KEY}|${INVENTORY_KEY}|${JWT_SECRET}`), 'no secret in the logs')

  cli.child.kill('SIGTERM')
  t.equal(await cli.exit, 0, 'SIGTERM closes the gateway and exits 0')
})
