import t from 'tap'
import type { Test } from 'tap'
import { createSecureServer } from 'node:http2'
import type { Http2ServerRequest, SecureServerOptions } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { makePki } from './helpers/faulty-upstream.js'

const pki = makePki()

interface Seen { httpVersion: string, method: string, url: string, authorization?: string, host?: string, authority?: string, body: string }

async function h2Upstream (t: Test, options: SecureServerOptions = {}): Promise<{ port: number, seen: Seen[], sessions: () => number }> {
  const seen: Seen[] = []
  let sessions = 0
  const server = createSecureServer({ cert: pki.serverCert, key: pki.serverKey, ...options }, (req: Http2ServerRequest, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const entry: Seen = {
        httpVersion: req.httpVersion,
        method: req.method,
        url: req.url,
        authorization: req.headers.authorization,
        host: req.headers.host,
        authority: req.headers[':authority'] as string | undefined,
        body: Buffer.concat(chunks).toString('utf8')
      }
      seen.push(entry)
      const body = JSON.stringify({ echo: entry.body, method: entry.method })
      res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json', 'x-upstream': 'h2' })
      res.end(body)
    })
  })
  server.on('session', () => { sessions++ })
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const open = new Set<import('node:http2').ServerHttp2Session>()
  server.on('session', (session) => {
    open.add(session)
    session.on('close', () => open.delete(session))
  })
  t.teardown(() => new Promise<void>((resolve) => {
    for (const session of open) session.destroy()
    server.close(() => resolve())
  }))
  return { port: (server.address() as AddressInfo).port, seen, sessions: () => sessions }
}

const CREDENTIALS = { bearer: 'upstream-secret-token' }

t.test('transport.http2 speaks HTTP/2 (ALPN h2) to an https: upstream: GET and POST with a body', async (t) => {
  const upstream = await h2Upstream(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: `https://127.0.0.1:${upstream.port}`,
      credentials: CREDENTIALS,
      transport: { http2: true, tls: { ca: pki.caCert } }
    }]
  })
  const base = await listen(app)
  const headers = bearer(tokenFor(app))

  const get = await fetch(`${base}/api/items?page=2&q=a%20b`, { headers })
  t.equal(get.status, 200)
  t.equal(get.headers.get('x-upstream'), 'h2', 'upstream response headers reach the client')
  t.equal(get.headers.get('content-type'), 'application/json')
  t.same(await get.json(), { echo: '', method: 'GET' })
  t.same([...get.headers.keys()].filter((name) => name.startsWith(':')), [], 'no HTTP/2 pseudo-header leaks into the response')

  const payload = JSON.stringify({ name: 'widget', qty: 3 })
  const post = await fetch(`${base}/api/items?dry=1`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: payload })
  t.equal(post.status, 201)
  t.same(await post.json(), { echo: payload, method: 'POST' })

  t.equal(upstream.seen.length, 2)
  const [first, second] = upstream.seen
  t.equal(first?.httpVersion, '2.0', 'the GET went over HTTP/2')
  t.equal(first?.method, 'GET')
  t.equal(first?.url, '/api/items?page=2&q=a%20b', 'path and query forwarded')
  t.equal(first?.authorization, 'Bearer upstream-secret-token', 'credentials injected')
  t.equal(first?.authority, `127.0.0.1:${upstream.port}`, ':authority is the upstream')
  t.equal(second?.httpVersion, '2.0', 'the POST went over HTTP/2')
  t.equal(second?.method, 'POST')
  t.equal(second?.url, '/api/items?dry=1')
  t.equal(second?.authorization, 'Bearer upstream-secret-token')
  t.equal(second?.body, payload, 'the body arrived whole')
  t.equal(upstream.sessions(), 1, 'both requests shared one HTTP/2 session')
})

t.test('without transport.http2 the same upstream is spoken to over HTTP/1.1', async (t) => {
  const upstream = await h2Upstream(t, { allowHTTP1: true })
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: `https://127.0.0.1:${upstream.port}`, credentials: CREDENTIALS, transport: { tls: { ca: pki.caCert } } }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.httpVersion, '1.1')
})

t.test('HTTP/2 keeps certificate verification: an untrusted h2 upstream gives 502 and no credentials', async (t) => {
  const upstream = await h2Upstream(t, { cert: pki.selfSignedCert, key: pki.selfSignedKey })
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: `https://127.0.0.1:${upstream.port}`, credentials: CREDENTIALS, transport: { http2: true } }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE')
  t.equal(upstream.seen.length, 0)
})
