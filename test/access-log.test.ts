import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import { request } from 'undici'
import { WebSocket } from 'ws'
import gatehouse, { gatehouseFrameworkErrors } from '../lib/index.js'
import type { GatehouseOptions, TargetOptions } from '../lib/index.js'
import { SECRET, bearer, testUsers, tokenFor } from './helpers/app.js'
import { serveCli } from './helpers/cli.js'
import { upstreamFor } from './helpers/upstream.js'
import { startWsUpstream } from './helpers/ws-upstream.js'
import { nextEvent, waitFor } from './helpers/wait.js'

/*
 * Issue 16 section 3: the access log. One pino line per request to a target,
 * through the request's logger (so with its reqId), with exact fields; the
 * query and the user only when asked for; no header value, token, cookie or
 * injected credential anywhere in what the gateway logs.
 */

const API_KEY = 'injected-api-key-value-42'
const COOKIE = 'session=cookie-secret-value-77'
const SET_COOKIE = 'upstream-set-cookie-secret-99'

interface Captured { app: FastifyInstance, base: string, lines: () => Array<Record<string, unknown>>, text: () => string }

async function gateway (t: Test, targets: Array<TargetOptions<any>>, extra: Partial<GatehouseOptions> = { accessLog: true }): Promise<Captured> {
  let text = ''
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      text += chunk.toString()
      done()
    }
  })
  const app = Fastify({ logger: { level: 'info', stream }, frameworkErrors: gatehouseFrameworkErrors })
  t.teardown(() => app.close())
  await app.register(gatehouse, { auth: { secret: SECRET, login: { verify: await testUsers() } }, targets, ...extra })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    app,
    base,
    text: () => text,
    lines: () => text.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>)
  }
}

function proxied (captured: Captured): Array<Record<string, unknown>> {
  return captured.lines().filter((line) => line.msg === 'proxied')
}

/** An upstream that echoes the request and sets a cookie. */
async function cookieUpstream (t: Test) {
  return await upstreamFor(t, (req, res, seen) => {
    const body = JSON.stringify({ url: req.url, apiKey: req.headers['x-api-key'], body: seen.body.toString() })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'set-cookie': `sid=${SET_COOKIE}; HttpOnly` })
    res.end(body)
  })
}

t.test('one line per proxied request with exact fields; no query and no user by default; no secret anywhere in the log', async (t) => {
  const upstream = await cookieUpstream(t)
  const log = await gateway(t, [{ name: 'api', prefix: '/api', upstream: upstream.url, credentials: { header: 'x-api-key', value: API_KEY } }])
  const token = tokenFor(log.app)
  const headers = { ...bearer(token), cookie: COOKIE }

  const get = await request(`${log.base}/api/items?q=private-query&x=1`, { headers })
  const getBody = await get.body.text()
  t.equal(get.statusCode, 200)
  t.equal(JSON.parse(getBody).apiKey, API_KEY, 'the upstream got the injected key')
  const post = await request(`${log.base}/api/items`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: '{"n":12345}' })
  const postBody = await post.body.text()
  // A streamed body of unknown length (chunked) is counted as it flows.
  const chunked = await request(`${log.base}/api/upload`, { method: 'PUT', headers, body: Readable.from([Buffer.from('abc'), Buffer.from('defgh')]) })
  const chunkedBody = await chunked.body.text()
  t.equal(JSON.parse(chunkedBody).body, 'abcdefgh')

  await waitFor(() => proxied(log).length === 3, { message: 'three access log lines' })
  const [first, second, third] = proxied(log)
  const incoming = log.lines().find((line) => line.msg === 'incoming request' && (line.req as { url: string }).url.startsWith('/api/items?'))
  t.match(first, {
    level: 30,
    reqId: incoming?.reqId,
    method: 'GET',
    target: 'api',
    path: '/api/items',
    status: 200,
    upstream: upstream.url,
    bytesIn: 0,
    bytesOut: Buffer.byteLength(getBody),
    retries: 0,
    msg: 'proxied'
  })
  t.type(first?.reqId, 'string')
  t.ok(typeof first?.durationMs === 'number' && first.durationMs > 0, 'durationMs')
  t.ok(typeof first?.upstreamMs === 'number' && first.upstreamMs > 0 && first.upstreamMs <= (first.durationMs as number), 'upstreamMs within durationMs')
  t.same(Object.keys(first ?? {}).sort(), ['bytesIn', 'bytesOut', 'durationMs', 'hostname', 'level', 'method', 'msg', 'path', 'pid', 'reqId', 'retries', 'status', 'target', 'time', 'upstream', 'upstreamMs'])
  t.match(second, { method: 'POST', path: '/api/items', status: 200, bytesIn: 11, bytesOut: Buffer.byteLength(postBody) })
  t.match(third, { method: 'PUT', path: '/api/upload', status: 200, bytesIn: 8, bytesOut: Buffer.byteLength(chunkedBody) })
  t.notOk('user' in (first ?? {}), 'no user unless opted in')

  // A refused request is logged too, without an upstream.
  t.equal((await request(`${log.base}/api/items`, { headers: { cookie: COOKIE } })).statusCode, 401)
  await waitFor(() => proxied(log).length === 4, { message: 'the refusal logged' })
  const refused = proxied(log)[3]
  t.match(refused, { method: 'GET', target: 'api', path: '/api/items', status: 401, bytesIn: 0, retries: 0 })
  t.notOk('upstream' in (refused ?? {}), 'no upstream was contacted')

  const text = log.text()
  for (const secret of [token, COOKIE, 'cookie-secret-value-77', API_KEY, SET_COOKIE]) {
    t.notOk(text.includes(secret), `"${secret.slice(0, 24)}..." appears nowhere in the log`)
  }
  // Fastify's own request lines (logging.requests) carry the URL as sent; the access log does not.
  t.notOk(JSON.stringify(proxied(log)).includes('private-query'), 'no query in the access log')
})

t.test('query and user when opted in', async (t) => {
  const upstream = await upstreamFor(t)
  const log = await gateway(t, [{ name: 'api', prefix: '/api', upstream: upstream.url }], { accessLog: { query: true, user: true } })
  const res = await request(`${log.base}/api/items?a=1&b=two`, { headers: bearer(tokenFor(log.app, { sub: 'alice', role: 'admin' })) })
  await res.body.dump()
  await waitFor(() => proxied(log).length === 1, { message: 'the access log line' })
  t.match(proxied(log)[0], { path: '/api/items?a=1&b=two', user: 'alice', status: 200 })
})

t.test('a client that leaves before the end of its response is logged as 499 (nginx)', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('first part')
    // ...and never ends.
  })
  const log = await gateway(t, [{ name: 'slow', prefix: '/slow', upstream: upstream.url, public: true }])
  const controller = new AbortController()
  const res = await request(`${log.base}/slow/x`, { signal: controller.signal })
  t.equal(res.statusCode, 200)
  res.body.on('error', () => {})
  controller.abort()
  await waitFor(() => proxied(log).length === 1, { message: 'the line of the abandoned request' })
  t.match(proxied(log)[0], { status: 499, upstream: upstream.url, target: 'slow' })
})

t.test('off by default in code: no access log line', async (t) => {
  const upstream = await upstreamFor(t)
  const log = await gateway(t, [{ prefix: '/api', upstream: upstream.url, public: true }], {})
  const res = await request(`${log.base}/api/x`)
  await res.body.dump()
  t.equal(res.statusCode, 200)
  await waitFor(() => log.lines().some((line) => line.msg === 'request completed'), { message: 'Fastify\'s own line' })
  t.same(proxied(log), [])
})

t.test('a WebSocket tunnel logs one line when it closes', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const log = await gateway(t, [{ name: 'live', prefix: '/live', upstream: upstream.url, websocket: true, public: true }])
  const client = new WebSocket(`${log.base.replace('http', 'ws')}/live/feed`)
  await nextEvent(client, 'open', { message: 'the tunnel open' })
  client.close(4001, 'bye')
  await waitFor(() => log.lines().find((line) => line.msg === 'tunnel closed'), { message: 'the tunnel line' })
  const line = log.lines().find((line) => line.msg === 'tunnel closed')
  t.match(line, { level: 30, target: 'live', code: 4001 })
  t.type(line?.reqId, 'string')
  t.type(line?.durationMs, 'number')
})

t.test('gatehouse serve logs proxied requests by default', async (t) => {
  t.setTimeout(120_000)
  const upstream = await upstreamFor(t)
  const root = t.testdir({
    'gateway.yaml': [
      'listen: { host: 127.0.0.1, port: 0 }',
      'logging: { level: info, requests: false }',
      `auth: { secret: '${'$'}{JWT_SECRET}', login: false }`,
      'targets:',
      `  - { name: api, prefix: /api, upstream: '${upstream.url}', public: true }`
    ].join('\n') + '\n'
  })
  const cli = await serveCli(t, join(root, 'gateway.yaml'), { JWT_SECRET: 'an-access-log-test-secret-of-32-bytes' })
  const res = await request(`${cli.url}/api/hello?token=abc`)
  await res.body.dump()
  const match = await cli.waitForOutput(/^\{[^\n]*"msg":"proxied"[^\n]*\}$/m)
  t.match(JSON.parse(match[0]), { method: 'GET', target: 'api', path: '/api/hello', status: 200, upstream: upstream.url })
  t.notOk(cli.stdout().includes('token=abc'), 'no query in the command\'s log')
})
