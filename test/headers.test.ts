import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Agent, request as httpRequest } from 'node:http'
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import type { UpstreamHandler } from './helpers/upstream.js'

interface RawResponse { status: number, headers: IncomingHttpHeaders, body: Buffer, reusedSocket: boolean }

/** A real request; `chunks` are written one by one (chunked unless a content-length is given). */
function send (url: string, opts: { method?: string, headers?: OutgoingHttpHeaders, chunks?: Buffer[], agent?: Agent | false }): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: opts.method ?? 'GET', headers: opts.headers ?? {}, agent: opts.agent ?? false }, (res) => {
      const body: Buffer[] = []
      res.on('data', (chunk: Buffer) => body.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(body), reusedSocket: req.reusedSocket }))
      res.on('error', reject)
    })
    req.on('error', reject)
    for (const chunk of opts.chunks ?? []) req.write(chunk)
    req.end()
  })
}

const HOP_BY_HOP_REQUEST = {
  connection: 'keep-alive, X-Hop-Only',
  'x-hop-only': 'secret-of-this-hop',
  'keep-alive': 'timeout=300',
  te: 'trailers',
  trailer: 'x-checksum',
  upgrade: 'websocket',
  'proxy-connection': 'keep-alive'
}

t.test('hop-by-hop request headers and those named in Connection are dropped upstream', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), ...HOP_BY_HOP_REQUEST, 'x-end-to-end': 'kept' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  const seen = upstream.seen[0]?.headers ?? {}
  for (const name of ['x-hop-only', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-connection']) {
    t.notOk(name in seen, `${name} is not forwarded`)
  }
  // The gateway's own client may state its own connection handling, never the caller's.
  t.ok(seen.connection === undefined || seen.connection === 'keep-alive', `connection is the gateway's (${seen.connection})`)
  t.equal(seen['x-end-to-end'], 'kept', 'end-to-end headers go through')
})

t.test('hop-by-hop request headers are dropped on a real socket too', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  // Node's client will not send Trailer without a chunked body, nor Upgrade without upgrading.
  const { upgrade, trailer, ...headers } = HOP_BY_HOP_REQUEST
  const res = await send(`${base}/api/x`, { headers: { ...bearer(tokenFor(app)), ...headers } })
  t.equal(res.status, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  for (const name of ['x-hop-only', 'keep-alive', 'te', 'proxy-connection']) {
    t.notOk(name in seen, `${name} is not forwarded`)
  }
  t.ok(seen.connection === undefined || seen.connection === 'keep-alive')
})

const hopByHopUpstream: UpstreamHandler = (_req, res) => {
  const body = '{"ok":true}'
  res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    connection: 'X-Internal, keep-alive',
    'x-internal': '1',
    'keep-alive': 'timeout=5, max=1000',
    'proxy-authenticate': 'Basic realm="upstream"',
    'x-public': 'yes'
  })
  res.end(body)
}

t.test('hop-by-hop response headers and those named in Connection are dropped downstream', async (t) => {
  const upstream = await upstreamFor(t, hopByHopUpstream)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(res.body, '{"ok":true}')
  t.notOk('x-internal' in res.headers, 'a header named in Connection stays upstream')
  t.notOk('keep-alive' in res.headers)
  t.notOk('proxy-authenticate' in res.headers)
  t.not(res.headers.connection, 'X-Internal, keep-alive', 'the upstream\'s Connection is not copied')
  t.equal(res.headers['x-public'], 'yes', 'end-to-end headers go through')
  t.equal(upstream.seen.length, 1)
})

t.test('hop-by-hop response headers are dropped on a real socket', async (t) => {
  const upstream = await upstreamFor(t, hopByHopUpstream)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const agent = new Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const res = await send(`${base}/api/x`, { headers: bearer(tokenFor(app)), agent })
  t.equal(res.status, 200)
  t.notOk('x-internal' in res.headers)
  t.notOk('proxy-authenticate' in res.headers)
  t.equal(res.headers.connection, 'keep-alive', 'the gateway\'s own Connection')
  t.not(res.headers['keep-alive'], 'timeout=5, max=1000', 'the gateway\'s own Keep-Alive, not the upstream\'s')
  t.equal(res.headers['x-public'], 'yes')
})

t.test('a keep-alive GET through a listening gateway is not answered with Connection: close', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const first = await send(`${base}/api/one`, { headers: bearer(tokenFor(app)), agent })
  const second = await send(`${base}/api/two`, { headers: bearer(tokenFor(app)), agent })
  t.equal(first.status, 200)
  t.equal(second.status, 200)
  t.not(first.headers.connection, 'close')
  t.not(second.headers.connection, 'close')
  t.equal(second.reusedSocket, true, 'the client connection is reused')
  t.equal(upstream.seen.length, 2)
})

t.test('a keep-alive POST whose body the upstream read is not answered with Connection: close', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const payload = Buffer.from('{"a":1}')
  const headers = { ...bearer(tokenFor(app)), 'content-type': 'application/json', 'content-length': payload.length }
  const first = await send(`${base}/api/one`, { method: 'POST', headers, chunks: [payload], agent })
  const second = await send(`${base}/api/two`, { method: 'POST', headers, chunks: [payload], agent })
  t.equal(first.status, 200)
  t.not(first.headers.connection, 'close')
  t.not(second.headers.connection, 'close')
  t.equal(second.reusedSocket, true)
  t.equal(upstream.seen[1]?.body.toString(), '{"a":1}')
})

t.test('a caller\'s X-Forwarded-For is replaced by the peer address (no trustProxy)', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), 'x-forwarded-for': '10.0.0.1, 10.0.0.2' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.headers['x-forwarded-for'], '127.0.0.1')
})

t.test('X-Forwarded-For is set to the client address when absent', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const res = await send(`${base}/api/x`, { headers: bearer(tokenFor(app)) })
  t.equal(res.status, 200)
  t.equal(upstream.seen[0]?.headers['x-forwarded-for'], '127.0.0.1')
})

t.test('X-Forwarded-Host and -Proto are the gateway\'s, not the caller\'s', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({
    url: '/api/x',
    headers: {
      ...bearer(tokenFor(app)),
      host: 'gateway.example:8443',
      'x-forwarded-host': 'evil.example',
      'x-forwarded-proto': 'https',
      forwarded: 'for=6.6.6.6;host=evil.example;proto=https'
    }
  })
  t.equal(res.statusCode, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  t.equal(seen['x-forwarded-host'], 'gateway.example:8443')
  t.equal(seen['x-forwarded-proto'], 'http')
  t.notOk('forwarded' in seen, 'a caller-made Forwarded header is dropped')
})

t.test('Host is the upstream\'s', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `${upstream.url}/base` }] })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), host: 'gateway.example' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.headers.host, `127.0.0.1:${upstream.port}`)
})

for (const method of ['GET', 'HEAD', 'DELETE', 'OPTIONS']) {
  t.test(`${method} without a body sends no content-length or transfer-encoding upstream`, async (t) => {
    const upstream = await upstreamFor(t)
    const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
    const base = await listen(app)
    const res = await send(`${base}/api/x`, { method, headers: bearer(tokenFor(app)) })
    t.equal(res.status, 200)
    t.equal(upstream.seen.length, 1)
    const seen = upstream.seen[0]?.headers ?? {}
    t.notOk('content-length' in seen, `no content-length (${seen['content-length']})`)
    t.notOk('transfer-encoding' in seen, `no transfer-encoding (${seen['transfer-encoding']})`)
  })
}

interface BodyCase { name: string, contentType?: string, body: Buffer }
const BODIES: BodyCase[] = [
  { name: 'JSON (spacing and UTF-8 kept)', contentType: 'application/json; charset=utf-8', body: Buffer.from('{ "name" : "Zoë",\n  "n":[1, 2 ,3] }') },
  { name: 'form-urlencoded', contentType: 'application/x-www-form-urlencoded', body: Buffer.from('a=1&a=2&b=x+y&c=%20&d=') },
  { name: 'binary', contentType: 'application/octet-stream', body: randomBytes(64 * 1024) },
  { name: 'binary without a content-type', body: randomBytes(4096) },
  { name: 'text with an unusual media type', contentType: 'text/x-custom', body: Buffer.from('plain text') }
]

for (const { name, contentType, body } of BODIES) {
  t.test(`a POST ${name} body arrives intact with the right content-length`, async (t) => {
    const upstream = await upstreamFor(t)
    const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
    const headers: Record<string, string> = { ...bearer(tokenFor(app)) }
    if (contentType !== undefined) headers['content-type'] = contentType
    const res = await app.inject({ method: 'POST', url: '/api/x', headers, payload: body })
    t.equal(res.statusCode, 200)
    t.equal(upstream.seen.length, 1)
    const seen = upstream.seen[0]
    t.ok(seen?.body.equals(body), 'same bytes')
    t.equal(seen?.headers['content-length'], String(body.length))
    t.equal(seen?.headers['content-type'], contentType)
  })
}

t.test('an empty POST body arrives as an empty body with content-length 0', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const res = await send(`${base}/api/x`, { method: 'POST', headers: { ...bearer(tokenFor(app)), 'content-length': 0 } })
  t.equal(res.status, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.body.length, 0)
  t.equal(upstream.seen[0]?.headers['content-length'], '0')
  t.notOk('transfer-encoding' in (upstream.seen[0]?.headers ?? {}))
})

t.test('an empty JSON POST body is forwarded, not rejected as malformed', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ method: 'POST', url: '/api/x', headers: { ...bearer(tokenFor(app)), 'content-type': 'application/json' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.body.length, 0)
  t.equal(upstream.seen[0]?.headers['content-length'], '0')
})

t.test('a chunked request body arrives intact and chunked', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const chunks = [randomBytes(1000), randomBytes(70_000), Buffer.from('end')]
  const res = await send(`${base}/api/upload`, {
    method: 'PUT',
    headers: { ...bearer(tokenFor(app)), 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
    chunks
  })
  t.equal(res.status, 200)
  t.equal(upstream.seen.length, 1)
  const seen = upstream.seen[0]
  t.ok(seen?.body.equals(Buffer.concat(chunks)), 'same bytes')
  t.equal(seen?.headers['transfer-encoding'], 'chunked')
  t.notOk('content-length' in (seen?.headers ?? {}))
})
