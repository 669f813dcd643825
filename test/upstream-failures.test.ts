import t from 'tap'
import type { Test } from 'tap'
import { Agent, request as httpRequest } from 'node:http'
import type { IncomingHttpHeaders } from 'node:http'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { closedPort, upstreamFor } from './helpers/upstream.js'
import { rawUpstream } from './helpers/faulty-upstream.js'

function assertErrorBody (t: Test, body: string, status: number, code: string, error: string, message: string): void {
  t.same(JSON.parse(body), { statusCode: status, code, error, message })
}

t.test('an upstream that is down gives 502 without internal detail', async (t) => {
  const port = await closedPort()
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `http://127.0.0.1:${port}` }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 502)
  assertErrorBody(t, res.body, 502, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE', 'Bad Gateway', 'The upstream service is unavailable')
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  for (const leak of ['127.0.0.1', String(port), 'ECONNREFUSED', 'UND_ERR', 'FST_REPLY_FROM', 'stack']) {
    t.notOk(res.body.includes(leak), `no "${leak}" in the body`)
  }
})

t.test('an upstream that accepts and never answers gives 504 after the response timeout', async (t) => {
  const silent = await rawUpstream(t, () => {})
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: silent.url, timeouts: { response: 300 } }] })
  const started = Date.now()
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  const elapsed = Date.now() - started
  t.equal(res.statusCode, 504)
  assertErrorBody(t, res.body, 504, 'FST_GATEHOUSE_UPSTREAM_TIMEOUT', 'Gateway Timeout', 'The upstream service did not answer in time')
  t.ok(elapsed >= 250 && elapsed < 5000, `timed out after the configured 300 ms (${elapsed} ms)`)
  t.equal(silent.connections(), 1, 'the upstream was contacted once')
  t.notOk(res.body.includes(String(silent.port)))
})

t.test('an upstream that resets the connection before answering gives 502', async (t) => {
  const resetting = await rawUpstream(t, (socket) => socket.resetAndDestroy())
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: resetting.url }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 502)
  assertErrorBody(t, res.body, 502, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE', 'Bad Gateway', 'The upstream service is unavailable')
  t.notOk(res.body.includes('ECONNRESET'))
  t.equal(resetting.connections(), 1, 'not retried')
})

t.test('an upstream that closes the connection before answering gives 502', async (t) => {
  const closing = await rawUpstream(t, (socket) => socket.end())
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: closing.url }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 502)
  assertErrorBody(t, res.body, 502, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE', 'Bad Gateway', 'The upstream service is unavailable')
})

const INVALID_RESPONSES: Array<[string, string]> = [
  ['a garbage status line', 'HTTP/1.1 999x\r\n\r\n'],
  ['no HTTP at all', 'NOT HTTP\r\n\r\n'],
  ['an out-of-range status code', 'HTTP/1.1 999 Odd\r\ncontent-length: 0\r\n\r\n'],
  ['a status code below 100', 'HTTP/1.1 099 Low\r\ncontent-length: 0\r\n\r\n'],
  ['a malformed header', 'HTTP/1.1 200 OK\r\nbad header line\r\ncontent-length: 2\r\n\r\nok'],
  ['both content-length and chunked', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n']
]

for (const [name, response] of INVALID_RESPONSES) {
  t.test(`an invalid response (${name}) gives 502 and the gateway keeps serving`, async (t) => {
    const broken = await rawUpstream(t, (socket) => socket.end(response, 'latin1'))
    const healthy = await upstreamFor(t)
    const app = await buildApp(t, {
      targets: [
        { prefix: '/broken', upstream: broken.url },
        { prefix: '/healthy', upstream: healthy.url }
      ]
    })
    const base = await listen(app)
    const headers = bearer(tokenFor(app))
    const res = await fetch(`${base}/broken/x`, { headers })
    const body = await res.text()
    t.equal(res.status, 502)
    assertErrorBody(t, body, 502, 'FST_GATEHOUSE_UPSTREAM_BAD_RESPONSE', 'Bad Gateway', 'The upstream service sent an invalid response')
    t.notOk(body.includes('HPE_'), 'no parser code')

    const again = await fetch(`${base}/broken/y`, { headers })
    await again.arrayBuffer()
    t.equal(again.status, 502, 'the same target fails the same way again')
    const next = await fetch(`${base}/healthy/z`, { headers })
    t.equal(next.status, 200, 'and the gateway still serves other requests')
    t.equal((await next.json() as { url: string }).url, '/healthy/z')
    t.equal(healthy.seen.length, 1)
  })
}

for (const status of [404, 500, 503]) {
  t.test(`an upstream ${status} passes through unchanged with its body`, async (t) => {
    const body = JSON.stringify({ upstream: 'says', status })
    const upstream = await upstreamFor(t, (_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json', 'x-upstream': 'yes', 'retry-after': '0' })
      res.end(body)
    })
    const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
    const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
    t.equal(res.statusCode, status)
    t.equal(res.body, body)
    t.equal(res.headers['content-type'], 'application/json')
    t.equal(res.headers['x-upstream'], 'yes')
    t.equal(upstream.seen.length, 1, 'the upstream saw exactly one request (no retry)')
  })
}

interface Answer { status: number, headers: IncomingHttpHeaders, body: Buffer, reusedSocket: boolean }

function get (url: string, agent: Agent, method = 'GET', headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, agent, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), reusedSocket: req.reusedSocket }))
    })
    req.on('error', reject)
    req.end()
  })
}

for (const status of [204, 304]) {
  t.test(`an upstream ${status} passes through without a body`, async (t) => {
    const upstream = await upstreamFor(t, (req, res) => {
      if (req.url === '/api/empty') {
        res.writeHead(status, { etag: '"v1"', 'x-upstream': 'yes' })
        res.end()
        return
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 4 })
      res.end('next')
    })
    const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
    const base = await listen(app)
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    t.teardown(() => agent.destroy())
    const headers = bearer(tokenFor(app))
    const res = await get(`${base}/api/empty`, agent, 'GET', { ...headers, 'if-none-match': '"v1"' })
    t.equal(res.status, status)
    t.equal(res.body.length, 0)
    t.equal(res.headers.etag, '"v1"')
    t.equal(res.headers['x-upstream'], 'yes')
    t.notOk('transfer-encoding' in res.headers, 'no chunked framing')
    t.ok(res.headers['content-length'] === undefined || res.headers['content-length'] === '0', `content-length: ${res.headers['content-length']}`)
    // A framing mistake would corrupt the next response on the same connection.
    const next = await get(`${base}/api/next`, agent, 'GET', headers)
    t.equal(next.status, 200)
    t.equal(next.body.toString(), 'next')
    t.equal(upstream.seen.length, 2)
  })
}

t.test('HEAD gets the headers and no body', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 1234, 'x-upstream': 'yes' })
    res.end()
  })
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const headers = bearer(tokenFor(app))
  const res = await get(`${base}/api/doc`, agent, 'HEAD', headers)
  t.equal(res.status, 200)
  t.equal(res.body.length, 0)
  t.equal(res.headers['content-type'], 'application/json')
  t.equal(res.headers['x-upstream'], 'yes')
  t.equal(res.headers['content-length'], '1234', 'the length a GET would have')
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.method, 'HEAD')
  const next = await get(`${base}/api/doc`, agent, 'HEAD', headers)
  t.equal(next.status, 200, 'the connection is still usable')
})
