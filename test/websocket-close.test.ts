import { createServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import t from 'tap'
import type { Test } from 'tap'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { closedPort } from './helpers/upstream.js'
import { closed, nextMessage, openClient, refusedUpgrade, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'
import type { WsUpstream, WsUpstreamOptions } from './helpers/ws-upstream.js'
import type { TargetOptions } from '../lib/index.js'
import { WebSocket } from 'ws'

async function upstreamFor (t: Test, opts?: WsUpstreamOptions): Promise<WsUpstream> {
  const upstream = await startWsUpstream(opts)
  t.teardown(upstream.close)
  return upstream
}

async function gateway (t: Test, target: Omit<TargetOptions<any>, 'prefix'>): Promise<{ url: string, headers: { authorization: string } }> {
  const app = await buildApp(t, { targets: [{ prefix: '/live', ...target }] })
  return { url: wsUrl(await listen(app), '/live'), headers: bearer(tokenFor(app)) }
}

/** A tunnel: the caller's socket and the upstream's end of it. */
async function tunnelFor (t: Test, upstream: WsUpstream, websocket: TargetOptions['websocket'] = true): Promise<{ client: WebSocket, server: WebSocket }> {
  const { url, headers } = await gateway(t, { upstream: upstream.url, websocket })
  const client = await openClient(url, [], { headers })
  t.teardown(() => client.terminate())
  return { client, server: await upstream.nextSocket() }
}

t.test('a close from the caller reaches the upstream with its code and reason', async (t) => {
  const { client, server } = await tunnelFor(t, await upstreamFor(t))
  const [seen, mine] = [closed(server), closed(client)]
  client.close(4001, 'bye now')
  t.same(await seen, { code: 4001, reason: 'bye now' })
  t.equal((await mine).code, 4001, 'the gateway answered the close')
})

t.test('a close from the upstream reaches the caller with its code and reason', async (t) => {
  const { client, server } = await tunnelFor(t, await upstreamFor(t))
  const seen = closed(client)
  server.close(1013, 'try again later')
  t.same(await seen, { code: 1013, reason: 'try again later' })
})

t.test('messages sent just before a close arrive before it', async (t) => {
  const { client, server } = await tunnelFor(t, await upstreamFor(t, { onConnection: () => {} }))
  const received: string[] = []
  client.on('message', (data) => received.push(String(data)))
  const seen = closed(client)
  server.send('one')
  server.send('two')
  server.close(1000, 'done')
  t.same(await seen, { code: 1000, reason: 'done' })
  t.same(received, ['one', 'two'])
})

t.test('reserved codes are mapped: no code (1005) becomes 1000', async (t) => {
  const { client, server } = await tunnelFor(t, await upstreamFor(t))
  const seen = closed(server)
  client.close()
  t.equal((await seen).code, 1000)
})

t.test('reserved codes are mapped: an upstream that drops the connection (1006) gives the caller 1011', async (t) => {
  const { client, server } = await tunnelFor(t, await upstreamFor(t))
  const seen = closed(client)
  server.terminate()
  t.same(await seen, { code: 1011, reason: '' })
})

t.test('reserved codes are mapped: a caller that drops the connection gives the upstream 1011', async (t) => {
  const { client, server } = await tunnelFor(t, await upstreamFor(t))
  const seen = closed(server)
  client.terminate()
  t.equal((await seen).code, 1011)
})

t.test('an upstream that is down gives 502 before any 101', async (t) => {
  const { url, headers } = await gateway(t, { upstream: `http://127.0.0.1:${await closedPort()}`, websocket: true })
  const refusal = await refusedUpgrade(url, [], { headers })
  t.equal(refusal.statusCode, 502)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE')
})

t.test('an upstream that answers the upgrade without 101 gives 502 before any 101', async (t) => {
  const upstream = await upstreamFor(t, { refuseWith: 403 })
  const { url, headers } = await gateway(t, { upstream: upstream.url, websocket: true })
  const refusal = await refusedUpgrade(url, [], { headers })
  t.equal(refusal.statusCode, 502)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_UPSTREAM_BAD_RESPONSE')
  t.equal(upstream.handshakes.length, 1)
})

t.test('an upstream that never answers the upgrade gives 504 after the response timeout', async (t) => {
  const sockets = new Set<Socket>()
  const silent = createServer((socket) => { sockets.add(socket) })
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    silent.close()
  })
  const port = (silent.address() as AddressInfo).port
  const { url, headers } = await gateway(t, { upstream: `http://127.0.0.1:${port}`, websocket: true, timeouts: { response: 200 } })
  const refusal = await refusedUpgrade(url, [], { headers })
  t.equal(refusal.statusCode, 504)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_UPSTREAM_TIMEOUT')
})

t.test('a subprotocol the upstream would not accept gives 502 (the upstream selected none)', async (t) => {
  const upstream = await upstreamFor(t, { handleProtocols: () => false })
  const { url, headers } = await gateway(t, { upstream: upstream.url, websocket: true })
  const refusal = await refusedUpgrade(url, ['chat.v1'], { headers })
  t.equal(refusal.statusCode, 502)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_WEBSOCKET_PROTOCOL_MISMATCH')
})

t.test('a message from the caller above maxPayload closes with 1009 on both sides', async (t) => {
  const { client, server } = await tunnelFor(t, await upstreamFor(t), { maxPayload: 1024 })
  client.send('a'.repeat(1024))
  t.equal((await nextMessage(client)).data.length, 1024)
  const seen = closed(server)
  const own = closed(client)
  client.send('a'.repeat(1025))
  t.equal((await own).code, 1009)
  t.equal((await seen).code, 1009)
})

t.test('each target keeps its own maxPayload when another allows more', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [
      { prefix: '/big', upstream: upstream.url, websocket: { maxPayload: 64 * 1024 } },
      { prefix: '/small', upstream: upstream.url, websocket: { maxPayload: 1024 } }
    ]
  })
  const base = await listen(app)
  const client = await openClient(wsUrl(base, '/small'), [], { headers: bearer(tokenFor(app)) })
  t.teardown(() => client.terminate())
  const server = await upstream.nextSocket()
  const [mine, theirs] = [closed(client), closed(server)]
  client.send(Buffer.alloc(2048))
  t.equal((await mine).code, 1009)
  t.equal((await theirs).code, 1009)
})

t.test('a message from the upstream above maxPayload closes with 1009 on both sides', async (t) => {
  const { client, server } = await tunnelFor(t, await upstreamFor(t), { maxPayload: 1024 })
  const seen = closed(client)
  server.send(Buffer.alloc(2048))
  t.equal((await seen).code, 1009)
})

t.test('keep-alive pings both peers; an upstream that stops answering is dropped', async (t) => {
  const healthy = await upstreamFor(t)
  const { client, server } = await tunnelFor(t, healthy, { pingInterval: 50 })
  let clientPings = 0
  let serverPings = 0
  client.on('ping', () => clientPings++)
  await new Promise<void>((resolve) => server.on('ping', () => { if (++serverPings === 4) resolve() }))
  t.ok(clientPings >= 3, 'the caller is pinged too')
  t.equal(client.readyState, WebSocket.OPEN, 'answered pings keep the tunnel open')

  const mute = await upstreamFor(t, { autoPong: false })
  const dead = await tunnelFor(t, mute, { pingInterval: 50 })
  t.equal((await closed(dead.client)).code, 1011)
})

t.test('an idle tunnel is closed with 1001 on both sides', async (t) => {
  const { client, server } = await tunnelFor(t, await upstreamFor(t), { idleTimeout: 150 })
  const opened = Date.now()
  client.send('x')
  await nextMessage(client)
  const [mine, theirs] = await Promise.all([closed(client), closed(server)])
  t.same(mine, { code: 1001, reason: 'Idle timeout' })
  t.equal(theirs.code, 1001)
  t.ok(Date.now() - opened >= 150)
})
