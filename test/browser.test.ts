import t from 'tap'
import type { Page } from 'playwright-core'
import { LIVE_FEED_PROTOCOL } from '../examples/erp/transactions-service.js'
import { browserMissing, launchChromium, servePage } from './helpers/browser.js'
import { startErpStack } from './helpers/erp.js'

/*
 * The ERP example from a real browser page on another origin: headless
 * Chromium loads a page from one 127.0.0.1 port and, with the page's own
 * fetch() and WebSocket, talks to the gateway on another port, so every
 * request is cross-origin and goes through Chromium's CORS checks.
 */

const missing = browserMissing()
if (missing !== undefined && process.env.GATEHOUSE_REQUIRE_BROWSER === '1') {
  t.fail(`${missing} (GATEHOUSE_REQUIRE_BROWSER=1: the browser test must run)`)
} else if (missing !== undefined) {
  t.plan(0, missing)
} else {
  await browserTests()
}

interface FetchResult { ok: boolean, status?: number, body?: string, headers?: Record<string, string | null>, error?: string }

/** A fetch() run inside the page; a CORS refusal comes back as `error`, as the page sees it. */
async function pageFetch (page: Page, url: string, init: { method?: string, headers?: Record<string, string>, body?: string } = {}): Promise<FetchResult> {
  return page.evaluate(async ({ url, init }) => {
    try {
      const res = await fetch(url, init)
      return {
        ok: true,
        status: res.status,
        body: await res.text(),
        headers: { 'www-authenticate': res.headers.get('www-authenticate'), 'content-type': res.headers.get('content-type') }
      }
    } catch (err) {
      return { ok: false, error: String(err) }
    }
  }, { url, init })
}

async function browserTests (): Promise<void> {
  const html = '<!doctype html><meta charset="utf-8"><title>shop</title><p>shop front</p>'
  const shopOrigin = await servePage(t, html)
  const otherOrigin = await servePage(t, html)
  const stack = await startErpStack(t, { corsOrigins: [shopOrigin] })
  const seen: string[] = []
  stack.transactionsService.server.on('request', (req) => { seen.push(`${req.method ?? ''} ${req.url ?? ''}`) })
  const browser = await launchChromium(t)
  const gateway = stack.gateway
  const page = await browser.newPage()
  await page.goto(shopOrigin)
  t.not(new URL(gateway).origin, shopOrigin, 'the gateway is another origin than the page')

  let token = ''
  const json = { 'content-type': 'application/json' }

  t.test('the page logs in with fetch(): the JSON POST is preflighted and answered by the gateway', async (t) => {
    const res = await pageFetch(page, `${gateway}/login`, { method: 'POST', headers: json, body: JSON.stringify({ username: 'WAL001', password: 'wal001' }) })
    t.ok(res.ok, res.error ?? 'no CORS error')
    t.equal(res.status, 200)
    token = (JSON.parse(res.body ?? '{}') as { token: string }).token
    t.type(token, 'string')
  })

  t.test('the page lists and creates transactions with its bearer token; no preflight reaches the service', async (t) => {
    const auth = { authorization: `Bearer ${token}` }
    const list = await pageFetch(page, `${gateway}/shops/WAL001/transactions`, { headers: auth })
    t.ok(list.ok, list.error ?? 'no CORS error')
    t.equal(list.status, 200)
    const rows = JSON.parse(list.body ?? 'null') as Array<{ shopId: string }>
    t.ok(Array.isArray(rows) && rows.length > 0 && rows.every((row) => row.shopId === 'WAL001'))

    const created = await pageFetch(page, `${gateway}/shops/WAL001/transactions`, {
      method: 'POST', headers: { ...auth, ...json }, body: JSON.stringify({ type: 'sale', amount: 3.5, currency: 'USD', description: 'From the browser' })
    })
    t.equal(created.status, 201)
    t.match(JSON.parse(created.body ?? '{}'), { shopId: 'WAL001', description: 'From the browser' })
    t.notOk(seen.some((line) => line.startsWith('OPTIONS')), 'the service saw no OPTIONS')
    t.ok(seen.includes('POST /shops/WAL001/transactions'))
  })

  t.test('the page reads a 403 body and a 401 status with its WWW-Authenticate', async (t) => {
    const forbidden = await pageFetch(page, `${gateway}/shops/BBY001/transactions`, { headers: { authorization: `Bearer ${token}` } })
    t.ok(forbidden.ok, forbidden.error ?? 'no CORS error')
    t.equal(forbidden.status, 403)
    t.match(JSON.parse(forbidden.body ?? '{}'), { statusCode: 403, code: 'FST_GATEHOUSE_FORBIDDEN' })

    const anonymous = await pageFetch(page, `${gateway}/shops/WAL001/transactions`)
    t.ok(anonymous.ok, anonymous.error ?? 'no CORS error')
    t.equal(anonymous.status, 401)
    t.match(anonymous.headers?.['www-authenticate'], /^Bearer realm="gatehouse"/, 'exposed to the page')
    t.match(JSON.parse(anonymous.body ?? '{}'), { code: 'FST_GATEHOUSE_TOKEN_MISSING' })
  })

  t.test('the page opens the live feed with the token in a subprotocol and gets what it creates', async (t) => {
    const feed = `${gateway.replace(/^http/, 'ws')}/shops/WAL001/transactions/live`
    const result = await page.evaluate(async ({ feed, gateway, token, protocol }) => {
      const socket = new WebSocket(feed, [protocol, `bearer.${token}`])
      await new Promise<void>((resolve, reject) => {
        socket.onopen = () => resolve()
        socket.onerror = () => reject(new Error('the live feed did not open'))
      })
      const message = new Promise<string>((resolve) => { socket.onmessage = (event) => resolve(String(event.data)) })
      const res = await fetch(`${gateway}/shops/WAL001/transactions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'refund', amount: 1.25, currency: 'USD', description: 'Live from the browser' })
      })
      const created = await res.text()
      const pushed = await message
      const selected = socket.protocol
      socket.close()
      return { created, pushed, selected }
    }, { feed, gateway, token, protocol: LIVE_FEED_PROTOCOL })
    t.equal(result.selected, LIVE_FEED_PROTOCOL)
    t.same(JSON.parse(result.pushed), JSON.parse(result.created), 'the feed pushed the created record')
    t.match(JSON.parse(result.pushed), { description: 'Live from the browser' })
  })

  t.test('a page on an origin not in the list cannot read anything: Chromium blocks it', async (t) => {
    const other = await browser.newPage()
    t.teardown(() => other.close())
    await other.goto(otherOrigin)
    const before = seen.length
    const login = await pageFetch(other, `${gateway}/login`, { method: 'POST', headers: json, body: JSON.stringify({ username: 'WAL001', password: 'wal001' }) })
    t.notOk(login.ok, 'the preflight got no approval')
    t.match(login.error, /TypeError/)
    const list = await pageFetch(other, `${gateway}/shops/WAL001/transactions`, { headers: { authorization: `Bearer ${token}` } })
    t.notOk(list.ok, 'nor for a target')
    t.equal(seen.length, before, 'the service saw nothing of it')
  })
}
