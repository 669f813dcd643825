import t from 'tap'
import type { Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { closed, nextMessage, openClient, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'
import type { WsUpstream, WsUpstreamOptions } from './helpers/ws-upstream.js'
import type { TargetOptions, WebSocketMessage } from '../lib/index.js'
import type { WebSocket } from 'ws'
import { waitFor, within } from './helpers/wait.js'

async function upstreamFor (t: Test, opts?: WsUpstreamOptions): Promise<WsUpstream> {
  const upstream = await startWsUpstream(opts)
  t.teardown(upstream.close)
  return upstream
}

async function tunnelFor (t: Test, upstream: WsUpstream, target: Partial<TargetOptions<any>>): Promise<{ client: WebSocket, server: WebSocket }> {
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, ...target }] })
  const client = await openClient(wsUrl(await listen(app), '/live'), [], { headers: bearer(tokenFor(app)) })
  t.teardown(() => client.terminate())
  return { client, server: await upstream.nextSocket() }
}

/**
 * Resolves once `sample()` has returned the same value five times in a row,
 * 20 ms apart (a stall cannot be an event); fails with `message` if it keeps
 * moving past the deadline.
 */
async function settled (sample: () => number, message: string): Promise<number> {
  let last = -1
  let same = 0
  await waitFor(() => {
    const value = sample()
    same = value === last ? same + 1 : 0
    last = value
    return same >= 5
  }, { interval: 20, message })
  return last
}

t.test('a slow caller pauses the upstream instead of growing the gateway buffer', async (t) => {
  const MESSAGE = 64 * 1024
  const COUNT = 512 // 32 MiB in all
  const HIGH_WATER = 256 * 1024
  const chunk = Buffer.alloc(MESSAGE, 7)
  const upstream = await upstreamFor(t, {
    onConnection: (socket) => socket.once('message', () => {
      for (let i = 0; i < COUNT; i++) socket.send(chunk)
    })
  })
  let maxQueued = 0
  let seenByGateway = 0
  const { client, server } = await tunnelFor(t, upstream, {
    websocket: {
      highWaterMark: HIGH_WATER,
      // What the gateway holds for the caller, sampled as each upstream message arrives.
      onUpstreamMessage: (_message, ctx) => {
        seenByGateway++
        maxQueued = Math.max(maxQueued, ctx.fastifyRequest.raw.socket.writableLength)
      }
    }
  })
  client.pause()
  client.send('go')
  await settled(() => seenByGateway, 'the gateway to stop reading the upstream')
  t.ok(seenByGateway < COUNT, `the gateway stopped reading the upstream (${seenByGateway} of ${COUNT} messages)`)
  t.ok(server.bufferedAmount > 0, 'the rest waits at the upstream')
  t.ok(maxQueued <= HIGH_WATER + 2 * MESSAGE, `the gateway held at most ${maxQueued} bytes for the caller`)

  let received = 0
  let bytes = 0
  const all = new Promise<void>((resolve) => client.on('message', (data: Buffer) => {
    bytes += data.length
    if (++received === COUNT) resolve()
  }))
  client.resume()
  await within(all, { message: `all ${COUNT} messages reaching the caller once it reads again`, timeout: 30_000 })
  t.equal(bytes, COUNT * MESSAGE, 'everything arrives once the caller reads again')
})

t.test('a slow upstream pauses the caller', async (t) => {
  const MESSAGE = 64 * 1024
  const HIGH_WATER = 128 * 1024
  let serverReceived = 0
  const upstream = await upstreamFor(t, {
    onConnection: (socket) => {
      socket.pause()
      socket.on('message', () => { serverReceived++ })
    }
  })
  let seenByGateway = 0
  const { client, server } = await tunnelFor(t, upstream, {
    websocket: { highWaterMark: HIGH_WATER, onClientMessage: () => { seenByGateway++ } }
  })
  const chunk = Buffer.alloc(MESSAGE, 1)
  // Enough to fill the kernel buffers on both hops several times over.
  const COUNT = 1024
  for (let i = 0; i < COUNT; i++) client.send(chunk)
  await settled(() => seenByGateway, 'the gateway to stop reading the caller')
  t.ok(seenByGateway < COUNT, `the gateway stopped reading the caller (${seenByGateway} of ${COUNT})`)
  t.ok(client.bufferedAmount > 0, 'the rest waits at the caller')
  const all = new Promise<void>((resolve) => server.on('message', () => { if (serverReceived === COUNT) resolve() }))
  server.resume()
  await within(all, { message: `all ${COUNT} messages reaching the upstream once it reads again`, timeout: 30_000 })
  t.equal(serverReceived, COUNT)
})

t.test('message hooks change and drop messages in each direction, with the connection context', async (t) => {
  const upstream = await upstreamFor(t)
  const { client, server } = await tunnelFor(t, upstream, {
    state: { count: 0 },
    websocket: {
      onClientMessage: (message: WebSocketMessage, ctx) => {
        if (message.binary) return undefined
        if (message.data === 'drop me') return null
        ctx.state.count++
        return `${String(ctx.user?.sub)}:${message.data}`
      },
      onUpstreamMessage: async (message: WebSocketMessage, ctx) => {
        // Out-of-order settling must not reorder the messages.
        await sleep(message.binary ? 1 : 30)
        return message.binary ? Buffer.concat([message.data, Buffer.from([ctx.state.count])]) : message.data.toUpperCase()
      }
    }
  })
  const seenUpstream: string[] = []
  server.on('message', (data) => seenUpstream.push(String(data)))
  const received: Array<{ data: string, binary: boolean }> = []
  const three = new Promise<void>((resolve) => client.on('message', (data: Buffer, binary: boolean) => {
    received.push({ data: binary ? data.toString('hex') : data.toString(), binary })
    if (received.length === 3) resolve()
  }))
  client.send('hello')
  client.send('drop me')
  client.send(Buffer.from([1, 2]))
  client.send('again')
  await within(three, { message: 'three messages back through the hooks' })
  t.same(received, [
    { data: 'ALICE:HELLO', binary: false },
    { data: '010202', binary: true },
    { data: 'ALICE:AGAIN', binary: false }
  ])
  t.same(seenUpstream, ['alice:hello', '\u0001\u0002', 'alice:again'])
})

t.test('a hook may close the tunnel through the context; a failing hook closes it with 1011', async (t) => {
  const upstream = await upstreamFor(t)
  const { client, server } = await tunnelFor(t, upstream, {
    websocket: {
      onClientMessage: (message, ctx) => {
        if (message.data === 'quit') ctx.close(4000, 'asked to')
        if (message.data === 'boom') throw new Error('hook failed')
      }
    }
  })
  client.send('echo')
  t.equal(String((await nextMessage(client)).data), 'echo')
  const [mine, theirs] = [closed(client), closed(server)]
  client.send('quit')
  t.same(await mine, { code: 4000, reason: 'asked to' })
  t.equal((await theirs).code, 4000)

  const again = await tunnelFor(t, upstream, {
    websocket: { onUpstreamMessage: async () => { throw new Error('async hook failed') } }
  })
  const failed = closed(again.client)
  again.client.send('boom')
  t.same(await failed, { code: 1011, reason: '' })
})
