import { once } from 'node:events'
import { connect } from 'node:net'
import { setImmediate as tick } from 'node:timers/promises'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import type { Test } from 'tap'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { signal, within } from './helpers/wait.js'
import { nextMessage, openClient, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'
import type { TargetOptions } from '../lib/index.js'
import { WebSocket } from 'ws'

// A gateway holds thousands of idle tunnels (issue 18): what one tunnel keeps
// after its handshake is what they all cost. tap runs without --expose-gc;
// the flag set at run time gives a fresh context its `gc`.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** Collects until both are gone or a few rounds passed; true when both were collected. */
async function collected (refs: Array<WeakRef<object>>): Promise<boolean> {
  for (let round = 0; round < 10; round++) {
    gc()
    if (refs.every((ref) => ref.deref() === undefined)) return true
    await tick()
  }
  return false
}

interface Handshake {
  request: WeakRef<FastifyRequest> | undefined
  reply: WeakRef<FastifyReply> | undefined
}

/** A tunnel through a gatehouse whose middleware remembers the upgrade's request and reply weakly. */
async function tunnel (t: Test, websocket: TargetOptions['websocket']): Promise<{ client: Awaited<ReturnType<typeof openClient>>, seen: Handshake }> {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const seen: Handshake = { request: undefined, reply: undefined }
  const app = await buildApp(t, {
    targets: [{
      prefix: '/live',
      upstream: upstream.url,
      websocket,
      middleware: [async (ctx, next) => {
        seen.request = new WeakRef(ctx.fastifyRequest)
        seen.reply = new WeakRef(ctx.fastifyReply)
        await next()
      }]
    }]
  })
  const client = await openClient(wsUrl(await listen(app), '/live/feed'), [], { headers: bearer(tokenFor(app)) })
  t.teardown(() => client.terminate())
  return { client, seen }
}

t.test('an open tunnel without message hooks holds neither the Fastify request nor its reply', async (t) => {
  const { client, seen } = await tunnel(t, true)
  client.send('hello')
  t.equal(String((await nextMessage(client)).data), 'hello', 'the tunnel relays')
  t.ok(await collected([seen.request as WeakRef<object>, seen.reply as WeakRef<object>]), 'request and reply were collected while the tunnel is open')
  client.send('still here')
  t.equal(String((await nextMessage(client)).data), 'still here', 'the tunnel still relays after the collection')
})

t.test('a message hook still sees the upgrade request for the tunnel\'s life (ctx.fastifyRequest)', async (t) => {
  const { client, seen } = await tunnel(t, { onClientMessage: (message, ctx) => `${String(message.data)} via ${ctx.fastifyRequest.url}` })
  client.send('hello')
  t.equal(String((await nextMessage(client)).data), 'hello via /live/feed')
  t.notOk(await collected([seen.request as WeakRef<object>]), 'the request stays while a hook may read it')
  client.send('again')
  t.equal(String((await nextMessage(client)).data), 'again via /live/feed')
})

t.test('an upgrade answered with HTTP whose client stays is closed at the upgrade deadline; tunnels opened meanwhile stay', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  // The deadline: one 50 ms handshake (no retries) plus the 5 s grace for token, authorize and middleware.
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, websocket: true, timeouts: { connect: 50, response: 50 } }] })
  const base = await listen(app)
  const started = Date.now()
  const socket = connect(Number(new URL(base).port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  let answer = ''
  socket.on('data', (data: Buffer) => { answer += data.toString('latin1') })
  socket.write('GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
    'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  const client = await openClient(wsUrl(base, '/live/feed'), [], { headers: bearer(tokenFor(app)) })
  t.teardown(() => client.terminate())
  await once(socket, 'close')
  t.match(answer, /^HTTP\/1\.1 404 /, 'the upgrade was answered with HTTP')
  t.ok(Date.now() - started >= 5_000, 'closed at the deadline, not before')
  client.send('past the deadline')
  t.equal(String((await nextMessage(client)).data), 'past the deadline', 'the tunnel opened meanwhile was not closed with it')
})

t.test('one keep-alive timer pings every tunnel of its interval, slot by slot', async (t) => {
  const count = 300
  const pinged = new Set<WebSocket>()
  const everyUpstream = signal()
  const upstream = await startWsUpstream({
    onConnection: (socket) => socket.on('ping', () => {
      pinged.add(socket)
      if (pinged.size === count) everyUpstream.resolve()
    })
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, websocket: { pingInterval: 100 } }] })
  const url = wsUrl(await listen(app), '/live/feed')
  const headers = bearer(tokenFor(app))
  const clients = await Promise.all(Array.from({ length: count }, () => openClient(url, [], { headers })))
  t.teardown(() => { for (const client of clients) client.terminate() })
  const callersPinged = within(Promise.all(clients.map((client) => once(client, 'ping'))), { message: 'a ping on every caller' })
  await within(everyUpstream.promise, { message: 'a ping on every upstream socket' })
  await callersPinged
  t.equal(pinged.size, count, 'every upstream socket was pinged')
  t.ok(clients.every((client) => client.readyState === WebSocket.OPEN), 'answered pings keep every tunnel open')
})
