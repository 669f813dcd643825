import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import { connect, createServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import gatehouse from '../lib/index.js'
import type { TargetOptions } from '../lib/index.js'
import { buildApp, listen, SECRET, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import { openClient, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'

/*
 * The header policy over real sockets: header lines are written byte for byte
 * (mixed case, repeated), and the tests assert what the upstream received and
 * what the client got.
 */

interface Exchange { status: number, headers: Map<string, string[]>, body: string }

/** Parses a response head; header names lower-cased, repeated lines kept apart. */
function parseHead (raw: Buffer): Exchange {
  const split = raw.indexOf('\r\n\r\n')
  const lines = raw.subarray(0, split).toString('latin1').split('\r\n')
  const headers = new Map<string, string[]>()
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    const name = line.slice(0, colon).trim().toLowerCase()
    headers.set(name, [...headers.get(name) ?? [], line.slice(colon + 1).trim()])
  }
  return { status: Number(lines[0]?.split(' ')[1]), headers, body: raw.subarray(split + 4).toString('utf8') }
}

/** Sends `GET path` with exactly these header lines (plus Host and Connection: close); reads the whole answer. */
function rawGet (base: string, path: string, lines: Array<[string, string]>): Promise<Exchange> {
  const port = Number(new URL(base).port)
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('end', () => resolve(parseHead(Buffer.concat(chunks))))
    const head = [`GET ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close', ...lines.map(([name, value]) => `${name}: ${value}`)]
    socket.write(head.join('\r\n') + '\r\n\r\n', 'latin1')
  })
}

/** An upstream that answers every request with exactly these header lines and a small JSON body. */
async function rawUpstream (t: Test, lines: Array<[string, string]>): Promise<string> {
  const sockets = new Set<Socket>()
  const body = '{"ok":true}'
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    let pending = ''
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1')
      // GETs only: each head ends the request.
      while (pending.includes('\r\n\r\n')) {
        pending = pending.slice(pending.indexOf('\r\n\r\n') + 4)
        const head = ['HTTP/1.1 200 OK', ...lines.map(([name, value]) => `${name}: ${value}`), 'Content-Type: application/json', `Content-Length: ${body.length}`]
        socket.write(head.join('\r\n') + '\r\n\r\n' + body)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

// What a caller may try to claim; none of it may reach an upstream as sent.
const CLAIMS: Array<[string, string]> = [
  ['X-Forwarded-For', '6.6.6.6'],
  ['x-forwarded-for', '7.7.7.7'],
  ['X-Forwarded-Host', 'evil.example'],
  ['X-Forwarded-Proto', 'https'],
  ['X-Forwarded-Prefix', '/admin'],
  ['X-Forwarded-Port', '443'],
  ['X-Forwarded-Server', 'evil'],
  ['X-Forwarded-User', 'root'],
  ['X-FORWARDED-EMAIL', 'root@example.com'],
  ['X-Forwarded-Access-Token', 'stolen'],
  ['Forwarded', 'for=6.6.6.6;host=evil.example;proto=https'],
  ['X-Real-IP', '6.6.6.6'],
  ['True-Client-IP', '6.6.6.6'],
  ['X-Client-IP', '6.6.6.6'],
  ['X-Original-URL', '/admin/delete'],
  ['X-Rewrite-URL', '/admin/delete'],
  ['X-HTTP-Method-Override', 'DELETE'],
  ['X-HTTP-Method', 'DELETE'],
  ['X-Method-Override', 'DELETE'],
  ['Proxy', 'http://evil.example:3128'],
  ['Proxy-Authorization', 'Basic cm9vdDpyb290'],
  ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA'],
  ['Keep-Alive', 'timeout=300'],
  ['TE', 'trailers'],
  ['X-End-To-End', 'kept']
]
const CLAIM_NAMES = [...new Set(CLAIMS.map(([name]) => name.toLowerCase()))]
  .filter((name) => !['x-end-to-end', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto'].includes(name))

t.test('without trustProxy every caller forwarding, address, override and hop-by-hop header is dropped', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const res = await rawGet(base, '/api/x', [['Authorization', `Bearer ${tokenFor(app)}`], ...CLAIMS])
  t.equal(res.status, 200)
  t.equal(upstream.seen.length, 1)
  const seen = upstream.seen[0]?.headers ?? {}
  for (const name of CLAIM_NAMES) t.notOk(name in seen, `${name} is not forwarded (${String(seen[name])})`)
  t.equal(seen['x-forwarded-for'], '127.0.0.1', 'the peer address, not the caller\'s chain')
  t.equal(seen['x-forwarded-host'], new URL(base).host, 'the Host the gateway was asked for')
  t.equal(seen['x-forwarded-proto'], 'http')
  t.equal(seen['x-end-to-end'], 'kept')
})

t.test('headers named in a repeated, mixed-case Connection are dropped upstream', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const res = await rawGet(base, '/api/x', [
    ['Authorization', `Bearer ${tokenFor(app)}`],
    ['Connection', 'X-Hop-A'],
    ['connection', 'x-HOP-b, Keep-Alive'],
    ['X-HOP-A', '1'],
    ['x-hop-b', '2'],
    ['x-hop-b', '3'],
    ['X-End-To-End', 'kept']
  ])
  t.equal(res.status, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  t.notOk('x-hop-a' in seen)
  t.notOk('x-hop-b' in seen)
  t.equal(seen['x-end-to-end'], 'kept')
})

t.test('a caller\'s Connection cannot remove the injected credentials nor the gateway\'s X-Forwarded-For', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: { header: 'x-api-key', value: 'k1' } }] })
  const base = await listen(app)
  const res = await rawGet(base, '/api/x', [
    ['Authorization', `Bearer ${tokenFor(app)}`],
    ['Connection', 'X-Api-Key, X-Forwarded-For'],
    ['X-API-KEY', 'spoofed']
  ])
  t.equal(res.status, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  t.equal(seen['x-api-key'], 'k1')
  t.equal(seen['x-forwarded-for'], '127.0.0.1')
})

t.test('with trustProxy, X-Forwarded-For holds only the trusted part of the chain', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], server: { trustProxy: ['127.0.0.1', '10.0.0.0/8'] } })
  const base = await listen(app)
  const res = await rawGet(base, '/api/x', [
    ['Authorization', `Bearer ${tokenFor(app)}`],
    // 6.6.6.6 is what the client wrote itself; 203.0.113.7 is what the trusted 10.0.0.5 saw.
    ['X-Forwarded-For', '6.6.6.6, 203.0.113.7'],
    ['X-Forwarded-For', '10.0.0.5'],
    ['X-Forwarded-Host', 'shop.example'],
    ['X-Forwarded-Proto', 'https'],
    ['Forwarded', 'for=6.6.6.6'],
    ['X-Real-IP', '6.6.6.6'],
    ['X-Forwarded-User', 'root']
  ])
  t.equal(res.status, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  t.equal(seen['x-forwarded-for'], '203.0.113.7, 10.0.0.5, 127.0.0.1')
  t.equal(seen['x-forwarded-host'], 'shop.example', 'a trusted proxy states the host')
  t.equal(seen['x-forwarded-proto'], 'https', 'a trusted proxy states the scheme')
  t.notOk('forwarded' in seen)
  t.notOk('x-real-ip' in seen)
  t.notOk('x-forwarded-user' in seen)
})

t.test('with trustProxy, a peer that is not trusted states nothing', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], server: { trustProxy: '10.0.0.1' } })
  const base = await listen(app)
  const res = await rawGet(base, '/api/x', [
    ['Authorization', `Bearer ${tokenFor(app)}`],
    ['X-Forwarded-For', '6.6.6.6, 10.0.0.1'],
    ['X-Forwarded-Host', 'evil.example'],
    ['X-Forwarded-Proto', 'https']
  ])
  t.equal(res.status, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  t.equal(seen['x-forwarded-for'], '127.0.0.1')
  t.equal(seen['x-forwarded-host'], new URL(base).host)
  t.equal(seen['x-forwarded-proto'], 'http')
})

t.test('forwardHeaders lets the named headers through, and only them', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, forwardHeaders: ['X-Real-IP', 'x-forwarded-prefix'] }] })
  const base = await listen(app)
  const res = await rawGet(base, '/api/x', [['Authorization', `Bearer ${tokenFor(app)}`], ...CLAIMS])
  t.equal(res.status, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  t.equal(seen['x-real-ip'], '6.6.6.6')
  t.equal(seen['x-forwarded-prefix'], '/admin')
  for (const name of CLAIM_NAMES.filter((name) => name !== 'x-real-ip' && name !== 'x-forwarded-prefix')) {
    t.notOk(name in seen, `${name} is not forwarded`)
  }
  t.equal(seen['x-forwarded-for'], '127.0.0.1')
})

// What an upstream may answer with that a client must not see.
const UPSTREAM_ANSWER: Array<[string, string]> = [
  ['Server', 'Apache/2.4.1 (Unix) OpenSSL/1.0.2'],
  ['X-Powered-By', 'PHP/8.1.2'],
  ['X-AspNet-Version', '4.0.30319'],
  ['X-AspNetMvc-Version', '5.2'],
  ['X-Runtime', '0.012'],
  ['Connection', 'X-Internal-A, keep-alive'],
  ['connection', 'x-INTERNAL-b'],
  ['X-Internal-A', '1'],
  ['X-Internal-B', '2'],
  ['Keep-Alive', 'timeout=5'],
  ['Proxy-Authenticate', 'Basic realm="upstream"'],
  ['Proxy', 'http://internal:3128'],
  ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA'],
  ['X-Public', 'yes']
]
const HIDDEN_BY_DEFAULT = ['server', 'x-powered-by', 'x-aspnet-version', 'x-aspnetmvc-version', 'x-runtime']
const HOP_BY_HOP_ANSWER = ['x-internal-a', 'x-internal-b', 'proxy-authenticate', 'proxy', 'http2-settings']

t.test('hop-by-hop and banner response headers do not reach the client', async (t) => {
  const upstream = await rawUpstream(t, UPSTREAM_ANSWER)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream }] })
  const base = await listen(app)
  const res = await rawGet(base, '/api/x', [['Authorization', `Bearer ${tokenFor(app)}`]])
  t.equal(res.status, 200)
  t.equal(res.body, '{"ok":true}')
  for (const name of [...HIDDEN_BY_DEFAULT, ...HOP_BY_HOP_ANSWER]) t.notOk(res.headers.has(name), `${name} is not passed (${String(res.headers.get(name))})`)
  t.same(res.headers.get('connection'), ['close'], 'the gateway\'s own Connection')
  t.notOk(res.headers.has('keep-alive'))
  t.same(res.headers.get('x-public'), ['yes'])
})

t.test('hideResponseHeaders: false passes banners, a list replaces the default one', async (t) => {
  const upstream = await rawUpstream(t, [...UPSTREAM_ANSWER, ['X-Backend', 'node-7']])
  const app = await buildApp(t, {
    targets: [
      { prefix: '/all', upstream, hideResponseHeaders: false },
      { prefix: '/some', upstream, hideResponseHeaders: ['X-Backend', 'x-powered-by'] }
    ]
  })
  const base = await listen(app)
  const all = await rawGet(base, '/all/x', [['Authorization', `Bearer ${tokenFor(app)}`]])
  t.same(all.headers.get('server'), ['Apache/2.4.1 (Unix) OpenSSL/1.0.2'])
  t.same(all.headers.get('x-powered-by'), ['PHP/8.1.2'])
  for (const name of HOP_BY_HOP_ANSWER) t.notOk(all.headers.has(name), `${name} is dropped even with false`)
  const some = await rawGet(base, '/some/x', [['Authorization', `Bearer ${tokenFor(app)}`]])
  t.notOk(some.headers.has('x-backend'))
  t.notOk(some.headers.has('x-powered-by'))
  t.same(some.headers.get('server'), ['Apache/2.4.1 (Unix) OpenSSL/1.0.2'])
})

t.test('a WebSocket handshake gets the same policy', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, websocket: true, forwardHeaders: ['x-forwarded-prefix'] }] })
  const base = await listen(app)
  const headers: Record<string, string> = { authorization: `Bearer ${tokenFor(app)}` }
  for (const [name, value] of CLAIMS) headers[name] = value
  const client = await openClient(wsUrl(base, '/live'), [], { headers })
  t.teardown(() => client.terminate())
  const seen = upstream.handshakes[0]?.headers ?? {}
  for (const name of CLAIM_NAMES.filter((name) => name !== 'x-forwarded-prefix')) t.notOk(name in seen, `${name} is not forwarded`)
  t.equal(seen['x-forwarded-prefix'], '/admin')
  t.equal(seen['x-forwarded-for'], '127.0.0.1')
  t.equal(seen['x-end-to-end'], 'kept')
  t.equal(seen.upgrade, 'websocket', 'ws\'s own handshake')
})

async function registerError (t: Test, target: Partial<TargetOptions>): Promise<(Error & { code?: string }) | undefined> {
  const app = Fastify()
  t.teardown(() => app.close())
  try {
    await app.register(gatehouse, { auth: { secret: SECRET, login: false }, targets: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', ...target }] })
    await app.ready()
  } catch (err) {
    return err as Error & { code?: string }
  }
  return undefined
}

t.test('forwardHeaders and hideResponseHeaders are checked at register', async (t) => {
  t.equal(await registerError(t, { forwardHeaders: ['Forwarded', 'x-forwarded-user', 'x-http-method-override'], hideResponseHeaders: ['via'] }), undefined, 'the control case')
  const refused: Array<[Partial<TargetOptions>, string]> = [
    [{ forwardHeaders: ['connection'] }, 'targets[0].forwardHeaders[0]'],
    [{ forwardHeaders: ['x-real-ip', 'Authorization'] }, 'targets[0].forwardHeaders[1]'],
    [{ forwardHeaders: ['proxy'] }, 'targets[0].forwardHeaders[0]'],
    [{ forwardHeaders: ['host'] }, 'targets[0].forwardHeaders[0]'],
    [{ forwardHeaders: ['X-Forwarded-For'] }, 'targets[0].forwardHeaders[0]'],
    [{ forwardHeaders: ['x-not-dropped'] }, 'targets[0].forwardHeaders[0]'],
    [{ forwardHeaders: ['bad name'] }, 'targets[0].forwardHeaders[0]'],
    [{ forwardHeaders: 'x-real-ip' as unknown as string[] }, 'targets[0].forwardHeaders'],
    [{ hideResponseHeaders: ['Content-Encoding'] }, 'targets[0].hideResponseHeaders[0]'],
    [{ hideResponseHeaders: [42 as unknown as string] }, 'targets[0].hideResponseHeaders[0]'],
    [{ hideResponseHeaders: true as unknown as false }, 'targets[0].hideResponseHeaders']
  ]
  for (const [target, option] of refused) {
    const err = await registerError(t, target)
    t.equal(err?.code, 'FST_GATEHOUSE_INVALID_OPTION', JSON.stringify(target))
    t.match(err?.message ?? '', `"${option}"`)
  }
})
