import t from 'tap'
import type { Test } from 'tap'
import { createServer as createHttpServer } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { createServer as createNetServer, connect } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { Writable } from 'node:stream'
import { WebSocketServer } from 'ws'
import type { WebSocket } from 'ws'
import type { TargetOptions } from '../lib/index.js'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { makePki } from './helpers/faulty-upstream.js'
import { closedPort, startUpstream } from './helpers/upstream.js'
import { echoMessages, nextMessage, openClient, refusedUpgrade, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'
import type { WsUpstream, WsUpstreamOptions } from './helpers/ws-upstream.js'
import { signal, waitFor } from './helpers/wait.js'

const pki = makePki()

async function wsUpstreamFor (t: Test, opts?: WsUpstreamOptions): Promise<WsUpstream> {
  const upstream = await startWsUpstream(opts)
  t.teardown(upstream.close)
  return upstream
}

/** A gateway listening on 127.0.0.1:0 with the given targets; `logs` collects what it logged at warn and above. */
async function gateway (t: Test, targets: TargetOptions[]) {
  const logs: Array<{ msg: string, upstream?: string }> = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(JSON.parse(line))
      done()
    }
  })
  const app = await buildApp(t, { targets, server: { logger: { level: 'warn', stream } } })
  const base = await listen(app)
  return { app, base, token: tokenFor(app), logs }
}

function opened (t: Test, client: WebSocket): WebSocket {
  t.teardown(() => client.terminate())
  return client
}

/** A `wss:` upstream with a certificate from the test CA that requires a client certificate from that CA. */
async function mtlsUpstream (t: Test) {
  const subjects: string[] = []
  const server = createHttpsServer({ cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert, requestCert: true, rejectUnauthorized: true })
  const wss = new WebSocketServer({ noServer: true })
  server.on('upgrade', (req, socket, head) => {
    subjects.push(String((req.socket as TLSSocket).getPeerCertificate().subject.CN))
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => {})
      echoMessages(ws)
    })
  })
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const ws of wss.clients) ws.terminate()
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, subjects }
}

t.test('a wss upstream behind a private CA that requires a client certificate: the tunnel uses transport.tls', async (t) => {
  const upstream = await mtlsUpstream(t)
  const { base, token } = await gateway(t, [{
    prefix: '/live',
    upstream: upstream.url,
    websocket: true,
    transport: { tls: { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey } }
  }])
  const client = opened(t, await openClient(wsUrl(base, '/live/feed'), [], { headers: bearer(token) }))
  client.send('over mtls')
  const echoed = await nextMessage(client)
  t.equal(echoed.data.toString('utf8'), 'over mtls')
  t.same(upstream.subjects, ['gateway'], 'the upstream saw the client certificate of transport.tls')
})

t.test('a wss upstream behind a private CA without transport.tls.ca: 502, nothing reaches it, the gateway goes on', async (t) => {
  const upstream = await mtlsUpstream(t)
  const { base, token } = await gateway(t, [{
    prefix: '/live',
    upstream: upstream.url,
    websocket: true,
    transport: { tls: { cert: pki.clientCert, key: pki.clientKey } }
  }])
  const refusal = await refusedUpgrade(wsUrl(base, '/live/feed'), [], { headers: bearer(token) })
  t.equal(refusal.statusCode, 502)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE')
  t.notOk(JSON.stringify(refusal.body).includes('certificate'), 'no TLS detail for the client')
  t.same(upstream.subjects, [], 'no handshake reached the upstream')
  const again = await refusedUpgrade(wsUrl(base, '/live/feed'), [], { headers: bearer(token) })
  t.equal(again.statusCode, 502, 'still serving')
})

t.test('two upstreams, one down: every tunnel lands on the live one and the dead one is ejected', async (t) => {
  const live = await wsUpstreamFor(t)
  const dead = `http://127.0.0.1:${await closedPort()}`
  const { base, token, logs } = await gateway(t, [{
    prefix: '/live',
    // The dead one first: round-robin tries it first.
    upstream: [dead, live.url],
    websocket: true,
    transport: { retry: { retries: 1, minDelay: 0, maxDelay: 0 }, passiveHealth: { failures: 1, coolDown: 60_000 } }
  }])
  for (let i = 0; i < 4; i++) {
    const client = opened(t, await openClient(wsUrl(base, `/live/feed?n=${i}`), [], { headers: bearer(token) }))
    client.send(`hello ${i}`)
    t.equal((await nextMessage(client)).data.toString('utf8'), `hello ${i}`)
  }
  t.same(live.handshakes.map((h) => h.url), ['/live/feed?n=0', '/live/feed?n=1', '/live/feed?n=2', '/live/feed?n=3'])
  t.same(logs.filter((l) => l.msg === 'upstream ejected after consecutive failures').map((l) => l.upstream), [dead], 'the refused connect ejected the dead upstream')
  t.equal(logs.filter((l) => l.msg === 'retrying upstream connection after a connection error').length, 1, 'only the first tunnel needed a retry: the others skipped the ejected upstream')
})

t.test('an upstream that the active health check marks down gets no tunnel', async (t) => {
  const healthy = await wsUpstreamFor(t)
  // Fails its health probes; counts the handshakes it would still get.
  let probes = 0
  let handshakes = 0
  const sick = createHttpServer((_req, res) => {
    probes++
    res.writeHead(503, { 'content-length': 0 }).end()
  })
  sick.on('upgrade', (_req, socket: Socket) => {
    handshakes++
    socket.destroy()
  })
  await new Promise<void>((resolve) => sick.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    sick.closeAllConnections()
    sick.close(() => resolve())
  }))
  const { base, token } = await gateway(t, [{
    prefix: '/live',
    upstream: [`http://127.0.0.1:${(sick.address() as AddressInfo).port}`, healthy.url],
    websocket: true,
    transport: { activeHealth: { path: '/healthz', interval: 20, unhealthyThreshold: 1 } }
  }])
  // A second probe starts only once the first has been counted.
  await waitFor(() => probes >= 2, { message: 'two failed health probes of the sick upstream' })
  for (let i = 0; i < 3; i++) opened(t, await openClient(wsUrl(base, '/live/feed'), [], { headers: bearer(token) }))
  t.equal(healthy.handshakes.length, 3, 'every tunnel went to the healthy upstream')
  t.equal(handshakes, 0, 'none to the one marked down')
})

t.test('refused connects open the circuit breaker: then 503 FST_GATEHOUSE_CIRCUIT_OPEN without contacting the upstream', async (t) => {
  const { base, token } = await gateway(t, [{
    prefix: '/live',
    upstream: `http://127.0.0.1:${await closedPort()}`,
    websocket: true,
    transport: { circuitBreaker: { minRequests: 2, failureRate: 0.5, coolDown: 60_000 } }
  }])
  for (let i = 0; i < 2; i++) {
    const refusal = await refusedUpgrade(wsUrl(base, '/live/feed'), [], { headers: bearer(token) })
    t.equal(refusal.body.code, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE', `connect ${i + 1} refused`)
  }
  const open = await refusedUpgrade(wsUrl(base, '/live/feed'), [], { headers: bearer(token) })
  t.equal(open.statusCode, 503)
  t.equal(open.body.code, 'FST_GATEHOUSE_CIRCUIT_OPEN')
  t.ok(Number(open.headers['retry-after']) > 0, 'Retry-After set')
})

t.test('an upstream that answers the handshake with a 4xx is not held against it: the breaker stays closed', async (t) => {
  const upstream = await wsUpstreamFor(t, { refuseWith: 403 })
  const { base, token } = await gateway(t, [{
    prefix: '/live',
    upstream: upstream.url,
    websocket: true,
    transport: { circuitBreaker: { minRequests: 2, failureRate: 0.5, coolDown: 60_000 }, retry: { retries: 2 } }
  }])
  for (let i = 0; i < 3; i++) {
    const refusal = await refusedUpgrade(wsUrl(base, '/live/feed'), [], { headers: bearer(token) })
    t.equal(refusal.statusCode, 502)
    t.equal(refusal.body.code, 'FST_GATEHOUSE_UPSTREAM_BAD_RESPONSE')
  }
  t.equal(upstream.handshakes.length, 3, 'an answer is not retried')
})

t.test('an upstream that answers the handshake with 503 counts as a failure for the breaker', async (t) => {
  const upstream = await wsUpstreamFor(t, { refuseWith: 503 })
  const { base, token } = await gateway(t, [{
    prefix: '/live',
    upstream: upstream.url,
    websocket: true,
    transport: { circuitBreaker: { minRequests: 1, failureRate: 0.5, coolDown: 60_000 } }
  }])
  const first = await refusedUpgrade(wsUrl(base, '/live/feed'), [], { headers: bearer(token) })
  t.equal(first.body.code, 'FST_GATEHOUSE_UPSTREAM_BAD_RESPONSE')
  const second = await refusedUpgrade(wsUrl(base, '/live/feed'), [], { headers: bearer(token) })
  t.equal(second.body.code, 'FST_GATEHOUSE_CIRCUIT_OPEN')
  t.equal(upstream.handshakes.length, 1)
})

t.test('timeouts.connect bounds the upstream handshake: an upstream that accepts TCP and never answers gives 504', async (t) => {
  const accepted: Socket[] = []
  const closedSockets: Socket[] = []
  const silent = createNetServer((socket) => {
    accepted.push(socket)
    // Reading, so that the gateway's close is seen; never answering.
    socket.resume()
    socket.on('close', () => closedSockets.push(socket))
  })
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of accepted) socket.destroy()
    silent.close(() => resolve())
  }))
  const { base, token } = await gateway(t, [{
    prefix: '/live',
    upstream: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`,
    websocket: true,
    timeouts: { connect: 300 }
  }])
  const started = Date.now()
  const refusal = await refusedUpgrade(wsUrl(base, '/live/feed'), [], { headers: bearer(token) })
  const elapsed = Date.now() - started
  t.equal(refusal.statusCode, 504)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_UPSTREAM_TIMEOUT')
  t.ok(elapsed >= 250 && elapsed < 3000, `answered after about timeouts.connect (${elapsed} ms), not timeouts.response`)
  t.equal(accepted.length, 1, 'the upstream accepted the connection')
  await waitFor(() => closedSockets.length === 1, { message: 'the abandoned upstream connection closed' })
})

t.test('an upgrade during the drain gets 503 FST_GATEHOUSE_SHUTTING_DOWN and never reaches the upstream', async (t) => {
  const held = signal()
  const middle = signal()
  const http = await startUpstream((req, res) => {
    const answer = (): void => { res.writeHead(200, { 'content-length': 4 }).end('done') }
    void (req.url === '/api/held' ? held.promise : middle.promise).then(answer)
  })
  t.teardown(http.close)
  const ws = await wsUpstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: http.url }, { prefix: '/live', upstream: ws.url, websocket: true }],
    server: { return503OnClosing: false }
  })
  const base = await listen(app)
  const token = tokenFor(app)
  const port = Number(new URL(base).port)
  const request = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${token}\r\n${extra}\r\n`

  // One request keeps the drain going; a second, on a keep-alive
  // connection, ends during it, and that connection then asks to upgrade.
  const keeper = connect(port, '127.0.0.1')
  const conn = connect(port, '127.0.0.1')
  t.teardown(() => { keeper.destroy(); conn.destroy() })
  let received = ''
  conn.on('data', (chunk: Buffer) => { received += chunk.toString('latin1') })
  keeper.on('error', () => {})
  conn.on('error', () => {})
  keeper.write(request('/api/held'))
  conn.write(request('/api/middle'))
  await waitFor(() => http.seen.length === 2, { message: 'both requests reached the upstream' })
  const closing = app.close()
  await waitFor(() => !app.server.listening, { message: 'the drain closed the listener' })
  middle.resolve()
  await waitFor(() => received.includes('done'), { message: 'the in-flight request finished' })
  t.match(received, /^HTTP\/1\.1 200/)
  received = ''
  conn.write(request('/live/feed', 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'))
  await waitFor(() => received.includes('}'), { message: 'the answer to the upgrade' })
  t.match(received, /^HTTP\/1\.1 503 /)
  t.match(received, /retry-after: 1/i)
  t.match(received.slice(received.indexOf('\r\n\r\n') + 4), /"code":"FST_GATEHOUSE_SHUTTING_DOWN"/)
  t.equal(ws.connections(), 0, 'the WebSocket upstream was never contacted')
  held.resolve()
  await closing
})
