import t from 'tap'
import type { Test } from 'tap'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import type { BuildOptions } from './helpers/app.js'
import { closed, nextMessage, openClient, refusedUpgrade, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'
import type { WsUpstream, WsUpstreamOptions } from './helpers/ws-upstream.js'
import type { TargetOptions } from '../lib/index.js'
import { WebSocket } from 'ws'

async function upstreamFor (t: Test, opts?: WsUpstreamOptions): Promise<WsUpstream> {
  const upstream = await startWsUpstream(opts)
  t.teardown(upstream.close)
  return upstream
}

async function gateway (t: Test, targets: TargetOptions<any>[], extra: Partial<BuildOptions> = {}): Promise<{ base: string, token: string }> {
  const app = await buildApp(t, { targets, ...extra })
  const base = await listen(app)
  return { base, token: tokenFor(app) }
}

t.test('text and binary messages are echoed through the tunnel with their type', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, [{ prefix: '/live', upstream: upstream.url, websocket: true }])
  const client = await openClient(wsUrl(base, '/live/feed'), [], { headers: bearer(token) })
  t.teardown(() => client.terminate())

  client.send('héllo')
  const text = await nextMessage(client)
  t.equal(text.binary, false)
  t.equal(text.data.toString('utf8'), 'héllo')

  const bytes = Buffer.from([0, 1, 2, 250, 255])
  client.send(bytes)
  const binary = await nextMessage(client)
  t.equal(binary.binary, true)
  t.same([...binary.data], [...bytes])
  t.equal(upstream.handshakes.length, 1)
  t.equal(upstream.handshakes[0]?.url, '/live/feed')
})

t.test('the upstream handshake carries the target credentials and none of the caller\'s', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, [{
    prefix: '/live', upstream: upstream.url, websocket: true, credentials: { header: 'x-api-key', value: 'k1' }
  }])
  const client = await openClient(wsUrl(base, '/live'), [], {
    headers: { ...bearer(token), 'x-api-key': 'spoofed', 'x-trace': 'abc' }
  })
  t.teardown(() => client.terminate())
  const seen = upstream.handshakes[0]?.headers
  t.equal(seen?.['x-api-key'], 'k1')
  t.notOk(seen?.authorization)
  t.equal(seen?.['x-trace'], 'abc')
  t.equal(seen?.['x-forwarded-for'], '127.0.0.1')
  t.equal(seen?.host, new URL(upstream.url).host)
  // The client's own handshake key never reaches the upstream: ws made a fresh one.
  t.equal(typeof seen?.['sec-websocket-key'], 'string')
})

t.test('messages the upstream sends right after its handshake are not lost', async (t) => {
  const upstream = await upstreamFor(t, { onConnection: (socket) => { socket.send('welcome') } })
  const { base, token } = await gateway(t, [{ prefix: '/live', upstream: upstream.url, websocket: true }])
  const client = new WebSocket(wsUrl(base, '/live'), { headers: bearer(token) })
  t.teardown(() => client.terminate())
  t.equal(String((await nextMessage(client)).data), 'welcome')
})

t.test('a caller that leaves during the upstream handshake leaves no upstream connection behind', async (t) => {
  const upstream = await upstreamFor(t)
  let entered!: () => void
  let release!: () => void
  const inMiddleware = new Promise<void>((resolve) => { entered = resolve })
  const gate = new Promise<void>((resolve) => { release = resolve })
  const { base, token } = await gateway(t, [{
    prefix: '/live',
    upstream: upstream.url,
    websocket: true,
    middleware: [async (_ctx, next) => {
      entered()
      await gate
      await next()
    }]
  }])
  const client = new WebSocket(wsUrl(base, '/live'), { headers: bearer(token) })
  client.on('error', () => {})
  await inMiddleware
  client.terminate()
  release()
  const server = await upstream.nextSocket()
  t.equal((await closed(server)).code, 1006, 'the gateway dropped the upstream socket')
})

t.test('bearer credentials replace the caller token in the upstream handshake', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, [{ prefix: '/live', upstream: upstream.url, websocket: true, credentials: { bearer: 'service-token' } }])
  const client = await openClient(wsUrl(base, '/live'), [], { headers: bearer(token) })
  t.teardown(() => client.terminate())
  t.equal(upstream.handshakes[0]?.headers.authorization, 'Bearer service-token')
})

t.test('subprotocols are negotiated end to end', async (t) => {
  const upstream = await upstreamFor(t, { handleProtocols: (offered) => offered.has('chat.v1') ? 'chat.v1' : false })
  const { base, token } = await gateway(t, [{ prefix: '/live', upstream: upstream.url, websocket: true }])
  const client = await openClient(wsUrl(base, '/live'), ['chat.v2', 'chat.v1'], { headers: bearer(token) })
  t.teardown(() => client.terminate())
  t.equal(client.protocol, 'chat.v1')
  t.equal(upstream.handshakes[0]?.headers['sec-websocket-protocol'], 'chat.v2,chat.v1')
  t.equal((await upstream.nextSocket()).protocol, 'chat.v1')
})

t.test('no subprotocol offered, none selected', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, [{ prefix: '/live', upstream: upstream.url, websocket: true }])
  const client = await openClient(wsUrl(base, '/live'), [], { headers: bearer(token) })
  t.teardown(() => client.terminate())
  t.equal(client.protocol, '')
  t.notOk(upstream.handshakes[0]?.headers['sec-websocket-protocol'])
})

t.test('the upstream path is rewritten as for HTTP and the query is kept byte for byte', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, [{
    prefix: '/shops/:shopId/live', upstream: `${upstream.url}/base`, rewritePrefix: '/feeds/:shopId', websocket: true
  }])
  const client = await openClient(wsUrl(base, '/shops/7/live/tx?since=3&x=%20'), [], { headers: bearer(token) })
  t.teardown(() => client.terminate())
  t.equal(upstream.handshakes[0]?.url, '/base/feeds/7/tx?since=3&x=%20')
})

t.test('a traversal attempt is refused before any 101 and never reaches the upstream', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, [{ prefix: '/live', upstream: upstream.url, websocket: true }])
  // %2f, not %2e%2e: the client's URL parser would resolve the dots itself.
  const refusal = await refusedUpgrade(wsUrl(base, '/live/a%2f..%2fadmin'), [], { headers: bearer(token) })
  t.equal(refusal.statusCode, 400)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_PATH_NOT_ALLOWED')
  t.equal(upstream.connections(), 0)
})

t.test('plain HTTP requests on a WebSocket target are still proxied, GET and the other methods', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, websocket: true }] })
  const get = await app.inject({ url: '/live/items?a=1', headers: bearer(tokenFor(app)) })
  t.equal(get.statusCode, 200)
  t.same(get.json(), { method: 'GET', url: '/live/items?a=1' })
  const post = await app.inject({ method: 'POST', url: '/live', headers: bearer(tokenFor(app)), payload: 'x' })
  t.equal(post.statusCode, 200)
  t.same(post.json(), { method: 'POST', url: '/live' })
  const anonymous = await app.inject({ url: '/live/items' })
  t.equal(anonymous.statusCode, 401)
})

t.test('an upgrade to an unknown path gets 404 and its socket is closed', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, websocket: true }] })
  const base = await listen(app)
  const refusal = await refusedUpgrade(wsUrl(base, '/nowhere'), [], { headers: bearer(tokenFor(app)) })
  t.equal(refusal.statusCode, 404)
  // A half-open upgrade socket would keep close() waiting forever.
  await app.close()
  t.equal(upstream.connections(), 0)
})

t.test('an upgrade on a target without websocket is refused before any 101', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, [
    { prefix: '/live', upstream: upstream.url, websocket: true },
    { prefix: '/api', upstream: upstream.url }
  ])
  const refusal = await refusedUpgrade(wsUrl(base, '/api/feed'), [], { headers: bearer(token) })
  t.equal(refusal.statusCode, 404)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_WEBSOCKET_NOT_ENABLED')
  t.equal(upstream.connections(), 0)
})

t.test('middleware runs on the upgrade: it may add upstream headers or refuse', async (t) => {
  const upstream = await upstreamFor(t)
  const seenMethods: string[] = []
  const { base, token } = await gateway(t, [{
    prefix: '/live',
    upstream: upstream.url,
    websocket: true,
    middleware: [
      async (ctx, next) => {
        seenMethods.push(ctx.request.method)
        if (ctx.request.path.endsWith('/closed')) {
          ctx.respond(403, { message: 'closed feed' })
          return
        }
        ctx.request.headers['x-tenant'] = String(ctx.user?.sub)
        await next()
        seenMethods.push(String(ctx.response?.status))
      }
    ]
  }])
  const client = await openClient(wsUrl(base, '/live/open'), [], { headers: bearer(token) })
  t.teardown(() => client.terminate())
  t.equal(upstream.handshakes[0]?.headers['x-tenant'], 'alice')

  const refusal = await refusedUpgrade(wsUrl(base, '/live/closed'), [], { headers: bearer(token) })
  t.equal(refusal.statusCode, 403)
  t.same(refusal.body, { message: 'closed feed' })
  t.equal(upstream.handshakes.length, 1)
  t.same(seenMethods, ['GET', '101', 'GET'])
})

t.test('closing the app closes open tunnels with 1001 on both sides', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, websocket: true }] })
  const base = await listen(app)
  const client = await openClient(wsUrl(base, '/live'), [], { headers: bearer(tokenFor(app)) })
  const server = await upstream.nextSocket()
  const [clientClose, upstreamClose] = await Promise.all([closed(client), closed(server), app.close()])
  t.equal(clientClose.code, 1001)
  t.equal(upstreamClose.code, 1001)
})
