import t from 'tap'
import type { Test } from 'tap'
import { execFile } from 'node:child_process'
import { connect } from 'node:net'
import Fastify from 'fastify'
import gatehouse, { gatehouseFrameworkErrors } from '../lib/index.js'
import { SECRET, listen, testUsers } from './helpers/app.js'
import { parseResponse, rawRequest } from './helpers/raw-request.js'
import type { RawResponse } from './helpers/raw-request.js'
import { startUpstream } from './helpers/upstream.js'
import type { SeenRequest, Upstream } from './helpers/upstream.js'
import { within } from './helpers/wait.js'

// What `curl --http2` and Java's HttpClient add to an http:// request.
const H2C_OFFER = ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA']

interface Gateway { base: string, token: string, plain: Upstream, live: Upstream, hostSeen: string[] }

/**
 * A host app with its own route, a plain target and a WebSocket target
 * (whose upstream is plain HTTP: a WebSocket handshake there would show).
 */
async function gateway (t: Test): Promise<Gateway> {
  const plain = await startUpstream()
  t.teardown(plain.close)
  const live = await startUpstream()
  t.teardown(live.close)
  const app = Fastify({ logger: false, frameworkErrors: gatehouseFrameworkErrors })
  t.teardown(() => app.close())
  const hostSeen: string[] = []
  app.post('/host/echo', async (request) => {
    hostSeen.push(JSON.stringify(request.headers))
    return { body: request.body, upgrade: request.headers.upgrade ?? null }
  })
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: { verify: await testUsers() } },
    targets: [
      { prefix: '/plain', upstream: plain.url },
      { prefix: '/live', upstream: live.url, websocket: true }
    ]
  })
  const base = await listen(app)
  return { base, token: app.gatehouse.signToken({ sub: 'alice', role: 'admin' }), plain, live, hostSeen }
}

function request (g: Gateway, method: string, path: string, body = '', extra: string[] = []): Promise<RawResponse> {
  const head = [`${method} ${path} HTTP/1.1`, `Host: ${new URL(g.base).host}`, ...H2C_OFFER, ...extra]
  if (body !== '') head.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`)
  // Connection: close as its own header line, beside the offer's.
  head.push('Connection: close')
  return rawRequest(g.base, head, body)
}

function assertPlainUpstreamRequest (t: Test, seen: SeenRequest | undefined, method: string, url: string, body: string): void {
  t.equal(seen?.method, method)
  t.equal(seen?.url, url)
  t.equal(seen?.body.toString('utf8'), body, 'the body arrived whole')
  t.notOk(seen?.headers.upgrade, 'no Upgrade upstream')
  t.notOk(seen?.headers['http2-settings'], 'no HTTP2-Settings upstream')
  t.notOk(seen?.headers['sec-websocket-key'], 'no WebSocket handshake upstream')
  t.notMatch(String(seen?.headers.connection ?? ''), /upgrade|http2-settings/i)
}

t.test('an h2c offer on login is ignored: the login answers as HTTP/1.1', async (t) => {
  const g = await gateway(t)
  const res = await request(g, 'POST', '/login', JSON.stringify({ username: 'alice', password: 'alice-pw' }))
  t.equal(res.status, 200)
  t.notOk(res.headers.upgrade)
  t.type(JSON.parse(res.body).token, 'string')
})

t.test('an h2c offer on a plain target: GET and POST with a body reach the upstream without the offer', async (t) => {
  const g = await gateway(t)
  const auth = `Authorization: Bearer ${g.token}`
  const get = await request(g, 'GET', '/plain/items?a=1', '', [auth])
  t.equal(get.status, 200)
  assertPlainUpstreamRequest(t, g.plain.seen[0], 'GET', '/plain/items?a=1', '')
  const post = await request(g, 'POST', '/plain/items', '{"n":1}', [auth])
  t.equal(post.status, 200)
  assertPlainUpstreamRequest(t, g.plain.seen[1], 'POST', '/plain/items', '{"n":1}')
})

t.test('an h2c offer on a WebSocket target is plain HTTP, GET and POST, never a WebSocket upstream', async (t) => {
  const g = await gateway(t)
  const auth = `Authorization: Bearer ${g.token}`
  const get = await request(g, 'GET', '/live/feed', '', [auth])
  t.equal(get.status, 200)
  assertPlainUpstreamRequest(t, g.live.seen[0], 'GET', '/live/feed', '')
  const post = await request(g, 'POST', '/live/feed', '{"n":2}', [auth])
  t.equal(post.status, 200)
  assertPlainUpstreamRequest(t, g.live.seen[1], 'POST', '/live/feed', '{"n":2}')
  // Refused as HTTP too: the offer changes nothing about admission.
  const anonymous = await request(g, 'GET', '/live/feed')
  t.equal(anonymous.status, 401)
  t.equal(g.live.seen.length, 2)
})

t.test('an h2c offer on a host route reaches it as plain HTTP with its body', async (t) => {
  const g = await gateway(t)
  const res = await request(g, 'POST', '/host/echo', '{"hello":"host"}')
  t.equal(res.status, 200)
  t.same(JSON.parse(res.body), { body: { hello: 'host' }, upgrade: null })
  t.notMatch(g.hostSeen[0] ?? '', /http2-settings/)
})

t.test('the connection stays usable after an ignored offer (keep-alive)', async (t) => {
  const g = await gateway(t)
  const host = `Host: ${new URL(g.base).host}`
  const socket = connect(Number(new URL(g.base).port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  const ended = within(new Promise((resolve) => socket.on('end', resolve)), { message: 'the gateway closed after the second response' })
  const first = ['POST /host/echo HTTP/1.1', host, ...H2C_OFFER, 'Content-Type: application/json', 'Content-Length: 7', '', '{"n":1}']
  const second = ['POST /host/echo HTTP/1.1', host, 'Connection: close', 'Content-Type: application/json', 'Content-Length: 7', '', '{"n":2}']
  socket.write(first.join('\r\n') + second.join('\r\n'))
  await ended
  const raw = Buffer.concat(chunks)
  const at = raw.indexOf('HTTP/1.1', 1)
  t.ok(at > 0, 'two responses')
  t.same(JSON.parse(parseResponse(raw.subarray(0, at)).body).body, { n: 1 })
  t.same(JSON.parse(parseResponse(raw.subarray(at)).body).body, { n: 2 })
})

t.test('a real client that offers h2c by default (curl --http2) is served as HTTP/1.1', async (t) => {
  const g = await gateway(t)
  const out = await new Promise<string>((resolve, reject) => {
    execFile('curl', ['--http2', '-sS', '-i', '-H', `Authorization: Bearer ${g.token}`, `${g.base}/live/feed`], (err, stdout) => {
      if (err !== null) reject(err)
      else resolve(stdout)
    })
  })
  t.match(out, /^HTTP\/1\.1 200 /)
  t.equal(g.live.seen.length, 1)
  assertPlainUpstreamRequest(t, g.live.seen[0], 'GET', '/live/feed', '')
})
