import t from 'tap'
import type { Test } from 'tap'
import { connect } from 'node:net'
import Fastify from 'fastify'
import type { FastifyRequest } from 'fastify'
import { buildApp, listen } from './helpers/app.js'
import type { RawResponse } from './helpers/raw-request.js'
import { startUpstream, upstreamFor } from './helpers/upstream.js'
import { closed, openClient, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'
import { resolveOptions } from '../lib/options/resolve.js'
import { bindReply, createTargetTransport } from '../lib/transport/dispatcher.js'
import { isValidAuthority } from '../lib/transport/public-origin.js'
import { rewriteResponseHeaders } from '../lib/proxy/rewrite-headers.js'

// Anything a client sends that escapes its own request fails the file here,
// instead of killing the test process or being swallowed.
const escaped: unknown[] = []
const record = (err: unknown): void => { escaped.push(err) }
process.on('unhandledRejection', record)
process.on('uncaughtException', record)
t.teardown(() => {
  process.removeListener('unhandledRejection', record)
  process.removeListener('uncaughtException', record)
})

/** A test that also fails when anything reached process level while it ran. */
function hostile (name: string, fn: (t: Test) => Promise<void>): void {
  t.test(name, async (t) => {
    await fn(t)
    // A rejection is reported a tick after it happens.
    await new Promise((resolve) => setImmediate(resolve))
    t.same(escaped.splice(0).map(String), [], 'nothing escaped to process level')
  })
}

/** Writes a request head exactly as given; gives up after `ms` (a hung request fails the test). */
function rawRequest (base: string, lines: string[], ms = 3000): Promise<RawResponse> {
  const port = Number(new URL(base).port)
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no response within ${ms} ms`))
    }, ms)
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk)
      const raw = Buffer.concat(chunks)
      const split = raw.indexOf('\r\n\r\n')
      if (split === -1) return
      const head = raw.subarray(0, split).toString('latin1').split('\r\n')
      const headers: Record<string, string> = {}
      for (const line of head.slice(1)) {
        const colon = line.indexOf(':')
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
      }
      const length = Number(headers['content-length'] ?? 0)
      if (raw.length < split + 4 + length) return
      clearTimeout(timer)
      socket.destroy()
      resolve({ status: Number(head[0]?.split(' ')[1]), headers, body: raw.subarray(split + 4, split + 4 + length).toString('utf8') })
    })
    socket.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    socket.write(lines.join('\r\n') + '\r\n\r\n', 'latin1')
  })
}

function get (base: string, path: string, headers: Record<string, string>): Promise<RawResponse> {
  const lines = [`GET ${path} HTTP/1.1`, 'Connection: close']
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`)
  return rawRequest(base, lines)
}

// Not a valid authority: bad port, unbalanced or bad IPv6 literal, spaces,
// userinfo, empty, a name WHATWG URL would read as a broken IPv4 address...
const BAD_HOSTS = [
  '127.0.0.1:99999', '127.0.0.1:0', 'gw.example:', 'gw.example:80:80', 'gw.example:+80', '[::1', '[::1]x', '[nope]:80', '[::1]:65536',
  'a b', '@', 'user@gw.example', 'user:pw@gw.example', '', 'gw..example', '.gw.example', 'gw.example/path', 'gw.example?x', 'gw%2eexample',
  '1.2.3.999', '0x7f.1', 'gw.example#', '\\gw.example', 'gw"example'
]

/** An upstream that redirects to itself and sets a cookie for its own host (rewriting on, the default). */
async function redirectingUpstream (t: Test) {
  return upstreamFor(t, (req, res) => {
    res.writeHead(302, {
      // `${prefix}/go` on the upstream: its own URL for the sibling `next`.
      location: `http://${req.headers.host ?? ''}${(req.url ?? '').replace(/go$/, 'next')}?x=1`,
      'set-cookie': `sid=1; Domain=127.0.0.1; Path=${(req.url ?? '').replace(/\/go$/, '')}`,
      'content-length': 0
    }).end()
  })
}

hostile('a Host that is not a valid authority gets 400 before the upstream, on a public target', async (t) => {
  const upstream = await redirectingUpstream(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `${upstream.url}/base`, public: true }] })
  const base = await listen(app)
  for (const host of BAD_HOSTS) {
    const res = await get(base, '/api/go', { Host: host })
    t.equal(res.status, 400, `Host ${JSON.stringify(host)}`)
    t.equal(JSON.parse(res.body).code, 'FST_GATEHOUSE_BAD_REQUEST')
  }
  t.equal(upstream.seen.length, 0, 'the upstream was never contacted')

  // Valid authorities still work, and Location points at what the client used.
  for (const [host, origin] of [['gw.example:8443', 'http://gw.example:8443'], ['[::1]:8080', 'http://[::1]:8080'], ['GW.example.', 'http://GW.example.'], ['in_ternal-1', 'http://in_ternal-1'], ['10.0.0.1', 'http://10.0.0.1']]) {
    const res = await get(base, '/api/go', { Host: host as string })
    t.equal(res.status, 302, `Host ${host}`)
    t.equal(res.headers.location, `${origin}/api/next?x=1`)
    t.equal(res.headers['set-cookie'], 'sid=1; Path=/api', 'host-only cookie')
  }
})

hostile('each Host keeps its answer when asked again and after many other Hosts (the origin cache)', async (t) => {
  const upstream = await redirectingUpstream(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `${upstream.url}/base`, public: true }] })
  const base = await listen(app)
  const ask = async (host: string): Promise<number> => (await get(base, '/api/go', { Host: host })).status
  // More distinct valid Hosts than the cache holds: it is emptied and refilled on the way.
  for (let i = 0; i < 300; i++) t.equal(await ask(`h${i}.example`), 302, `h${i}.example`)
  for (const round of [1, 2]) {
    t.equal(await ask('gw.example:70000'), 400, `bad Host, round ${round}`)
    t.equal(await ask('gw.example:8443'), 302, `good Host, round ${round}`)
  }
  // Too long for any authority: refused without being remembered.
  t.equal(await ask(Array(5).fill('a'.repeat(60)).join('.')), 400)
  const seen = upstream.seen.length
  t.equal(seen, 302, 'only the good Hosts reached the upstream')
  const res = await get(base, '/api/go', { Host: 'GW.example:8443' })
  t.equal(res.headers.location, 'http://GW.example:8443/api/next?x=1', 'the Host as the client wrote it, not a cached spelling')
})

hostile('a bad Host is refused before the token check on a protected target', async (t) => {
  const upstream = await redirectingUpstream(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const res = await get(base, '/api/go', { Host: 'gw.example:70000', Authorization: 'Bearer nope' })
  t.equal(res.status, 400)
  t.equal(JSON.parse(res.body).code, 'FST_GATEHOUSE_BAD_REQUEST')
  t.notOk(res.body.includes('70000'), 'the bad value is not echoed')
  t.equal(upstream.seen.length, 0)
})

hostile('with trustProxy, bad X-Forwarded-Proto / X-Forwarded-Host get 400; good ones shape Location', async (t) => {
  const upstream = await redirectingUpstream(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `${upstream.url}/base`, public: true }], server: { trustProxy: true } })
  const base = await listen(app)
  const cases: Array<Record<string, string>> = [
    { 'X-Forwarded-Proto': 'javascript' },
    { 'X-Forwarded-Proto': 'ht tp' },
    { 'X-Forwarded-Proto': 'https, evil' },
    { 'X-Forwarded-Proto': 'https:' },
    { 'X-Forwarded-Host': 'gw.example:99999' },
    { 'X-Forwarded-Host': '[::1' },
    { 'X-Forwarded-Host': 'ok.example, @' },
    { 'X-Forwarded-Host': 'evil.example/x' }
  ]
  for (const headers of cases) {
    const res = await get(base, '/api/go', { Host: 'gw.example', ...headers })
    t.equal(res.status, 400, JSON.stringify(headers))
  }
  t.equal(upstream.seen.length, 0, 'the upstream was never contacted')
  const res = await get(base, '/api/go', { Host: 'internal:8080', 'X-Forwarded-Proto': 'HTTPS', 'X-Forwarded-Host': 'api.example.com' })
  t.equal(res.status, 302)
  t.equal(res.headers.location, 'https://api.example.com/api/next?x=1')
})

hostile('a WebSocket upgrade with a bad Host gets 400 and never reaches the upstream', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, public: true, websocket: true }] })
  const base = await listen(app)
  const res = await rawRequest(base, [
    'GET /live/feed HTTP/1.1', 'Host: gw.example:99999', 'Connection: Upgrade', 'Upgrade: websocket',
    'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='
  ])
  t.equal(res.status, 400)
  t.equal(JSON.parse(res.body).code, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(upstream.connections(), 0)
})

hostile('header rewriting never throws: without a usable origin, Location goes relative and cookies host-only', async (t) => {
  const options = resolveOptions({ auth: { secret: 'test-secret-that-is-at-least-32-bytes-long!', login: false }, targets: [{ prefix: '/api', upstream: 'http://10.1.2.3:8080/base' }] })
  const target = options.targets[0]!
  for (const host of ['gw.example:99999', '[::1', '@']) {
    const request = { protocol: 'http', host, url: '/api/a' } as unknown as FastifyRequest
    const headers = rewriteResponseHeaders({ location: 'http://10.1.2.3:8080/base/b?q=1#f', 'set-cookie': 'k=v; Domain=10.1.2.3; Path=/base' }, target, request, '/base/a')
    t.equal(headers.location, '/api/b?q=1#f', `Host ${host}`)
    t.equal(headers['set-cookie'], 'k=v; Path=/api')
  }
})

hostile('a throwing response callback becomes a 500 for its request, not an unhandled rejection', async (t) => {
  const upstream = await startUpstream()
  t.teardown(upstream.close)
  const options = resolveOptions({ auth: { secret: 'test-secret-that-is-at-least-32-bytes-long!', login: false }, targets: [{ prefix: '/api', upstream: upstream.url }] })
  const transport = createTargetTransport(options.targets[0]!)
  t.teardown(transport.close)
  const app = Fastify()
  t.teardown(() => app.close())
  app.get('/', (_request, reply) => {
    transport.request({ path: '/', method: 'GET', headers: bindReply({}, reply) }, (_err, res) => {
      if (res !== undefined) throw new TypeError('bug in a response callback')
    })
    return reply
  })
  const base = await listen(app)
  const res = await get(base, '/', { Host: 'gw.example' })
  t.equal(res.status, 500)
  t.equal(upstream.seen.length, 1)
  // The upstream body was dropped, so its request is no longer counted.
  t.equal(transport.inFlight, 0)
})

hostile('isValidAuthority', async (t) => {
  for (const host of ['a', 'a.b', 'a.b.', 'a-b_c.example:1', 'x:65535', '127.0.0.1', '[::1]', '[2001:db8::1]:443']) t.ok(isValidAuthority(host), host)
  for (const host of BAD_HOSTS) t.notOk(isValidAuthority(host), JSON.stringify(host))
  t.notOk(isValidAuthority('a'.repeat(64)), 'label over 63')
  t.notOk(isValidAuthority(`${'a.'.repeat(127)}a`), 'name over 253')
})

hostile('a message hook returning something ws cannot send closes the tunnel with 1011, not the process', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/live',
      upstream: upstream.url,
      public: true,
      // A JavaScript caller's bug: neither undefined, null, a string nor a Buffer.
      websocket: { onClientMessage: () => ({ not: 'sendable' }) as unknown as string }
    }]
  })
  const client = await openClient(wsUrl(await listen(app), '/live'))
  t.teardown(() => client.terminate())
  const server = await upstream.nextSocket()
  const clientClosed = closed(client)
  const serverClosed = closed(server)
  client.send('hello')
  t.equal((await clientClosed).code, 1011, 'the caller gets 1011')
  t.equal((await serverClosed).code, 1011, 'the upstream gets 1011')
})
