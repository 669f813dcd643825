import { createHmac } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { buildApp, bearer, listen, SECRET, tokenFor } from './helpers/app.js'
import { closed, nextMessage, openClient, refusedUpgrade, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'
import type { WsUpstream } from './helpers/ws-upstream.js'
import type { TargetOptions } from '../lib/index.js'

async function upstreamFor (t: Test): Promise<WsUpstream> {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  return upstream
}

async function gateway (t: Test, target: Omit<TargetOptions<any>, 'prefix'>, expiresIn?: number): Promise<{ base: string, token: (claims?: Record<string, unknown>) => string }> {
  const app = await buildApp(t, {
    targets: [{ prefix: '/shops/:shopId/live', ...target }],
    ...(expiresIn === undefined ? {} : { auth: { expiresIn } })
  })
  return { base: await listen(app), token: (claims) => tokenFor(app, claims) }
}

function base64url (value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

/** An HS256 token with the test secret whose `exp` is in the past. */
function expiredToken (): string {
  const now = Math.floor(Date.now() / 1000)
  const unsigned = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url({ sub: 'alice', shopId: '1', iat: now - 120, exp: now - 60 })}`
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`
}

const sameShop: TargetOptions<any>['authorize'] = (ctx) => ctx.user?.shopId === ctx.params.shopId
const shopClaims = { sub: 'alice', shopId: '1' }

t.test('a token in Authorization opens the tunnel and is not forwarded', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, { upstream: upstream.url, websocket: true, authorize: sameShop })
  const client = await openClient(wsUrl(base, '/shops/1/live'), [], { headers: bearer(token(shopClaims)) })
  t.teardown(() => client.terminate())
  client.send('ping')
  t.equal((await nextMessage(client)).data.toString(), 'ping')
  t.notOk(upstream.handshakes[0]?.headers.authorization)
})

t.test('a token in a Sec-WebSocket-Protocol entry opens the tunnel; the entry is neither forwarded nor selected', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, { upstream: upstream.url, websocket: true, authorize: sameShop })
  const client = await openClient(wsUrl(base, '/shops/1/live'), ['feed.v1', `bearer.${token(shopClaims)}`])
  t.teardown(() => client.terminate())
  t.equal(client.protocol, 'feed.v1')
  t.equal(upstream.handshakes[0]?.headers['sec-websocket-protocol'], 'feed.v1')
})

t.test('a custom protocol prefix is honoured', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, { upstream: upstream.url, websocket: { token: { protocolPrefix: 'jwt-' } } })
  const client = await openClient(wsUrl(base, '/shops/1/live'), [`jwt-${token()}`, 'feed.v1'])
  t.teardown(() => client.terminate())
  t.equal(client.protocol, 'feed.v1')
  t.equal(upstream.handshakes[0]?.headers['sec-websocket-protocol'], 'feed.v1')
})

t.test('a token in the access_token query parameter opens the tunnel when enabled; it is removed upstream', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, { upstream: upstream.url, websocket: { token: { queryParameter: true } }, authorize: sameShop })
  const client = await openClient(wsUrl(base, `/shops/1/live?a=1&access_token=${token(shopClaims)}&b=%2B`))
  t.teardown(() => client.terminate())
  t.equal(upstream.handshakes[0]?.url, '/shops/1/live?a=1&b=%2B')
})

t.test('the query parameter carrier is off by default, and then the parameter is an ordinary one', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, { upstream: upstream.url, websocket: true })
  const refusal = await refusedUpgrade(wsUrl(base, `/shops/1/live?access_token=${token()}`))
  t.equal(refusal.statusCode, 401)
  t.equal(refusal.body.code, 'FST_GATEHOUSE_TOKEN_MISSING')
  t.equal(upstream.connections(), 0)
})

t.test('the protocol carrier can be turned off', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, { upstream: upstream.url, websocket: { token: { protocolPrefix: false } } })
  const refusal = await refusedUpgrade(wsUrl(base, '/shops/1/live'), [`bearer.${token()}`])
  t.equal(refusal.statusCode, 401)
  t.equal(upstream.connections(), 0)
})

t.test('refused before any 101, with zero upstream connections', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, { upstream: upstream.url, websocket: { token: { queryParameter: 'access_token' } }, authorize: sameShop })
  const url = wsUrl(base, '/shops/1/live')

  const missing = await refusedUpgrade(url)
  t.equal(missing.statusCode, 401)
  t.equal(missing.body.code, 'FST_GATEHOUSE_TOKEN_MISSING')
  t.match(missing.headers['www-authenticate'], /^Bearer realm="gatehouse"$/)

  const expired = await refusedUpgrade(url, [], { headers: bearer(expiredToken()) })
  t.equal(expired.statusCode, 401)
  t.equal(expired.body.code, 'FST_GATEHOUSE_TOKEN_EXPIRED')

  const expiredInProtocol = await refusedUpgrade(url, ['feed.v1', `bearer.${expiredToken()}`])
  t.equal(expiredInProtocol.statusCode, 401)
  t.equal(expiredInProtocol.body.code, 'FST_GATEHOUSE_TOKEN_EXPIRED')

  const garbage = await refusedUpgrade(`${url}?access_token=not.a.token`)
  t.equal(garbage.statusCode, 401)
  t.equal(garbage.body.code, 'FST_GATEHOUSE_TOKEN_INVALID')

  const wrongShop = await refusedUpgrade(wsUrl(base, '/shops/2/live'), [], { headers: bearer(token(shopClaims)) })
  t.equal(wrongShop.statusCode, 403)
  t.equal(wrongShop.body.code, 'FST_GATEHOUSE_FORBIDDEN')

  t.equal(upstream.connections(), 0)
  t.equal(upstream.handshakes.length, 0)
})

t.test('a public target needs no token', async (t) => {
  const upstream = await upstreamFor(t)
  const { base } = await gateway(t, { upstream: upstream.url, websocket: true, public: true })
  const client = await openClient(wsUrl(base, '/shops/1/live'))
  t.teardown(() => client.terminate())
  client.send('hi')
  t.equal((await nextMessage(client)).data.toString(), 'hi')
})

t.test('the Origin allow-list refuses other origins before any 101', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, { upstream: upstream.url, websocket: { origins: ['https://shop.example'] } })
  const url = wsUrl(base, '/shops/1/live')

  const evil = await refusedUpgrade(url, [], { headers: bearer(token()), origin: 'https://evil.example' })
  t.equal(evil.statusCode, 403)
  t.equal(evil.body.code, 'FST_GATEHOUSE_ORIGIN_NOT_ALLOWED')
  t.equal(upstream.connections(), 0)

  const good = await openClient(url, [], { headers: bearer(token()), origin: 'https://shop.example' })
  t.teardown(() => good.terminate())
  t.equal(upstream.handshakes[0]?.headers.origin, 'https://shop.example')

  // Non-browser clients send no Origin.
  const cli = await openClient(url, [], { headers: bearer(token()) })
  t.teardown(() => cli.terminate())
  t.equal(upstream.handshakes.length, 2)
})

t.test('when the token expires on an open connection, the gateway closes it with 1008', async (t) => {
  const upstream = await upstreamFor(t)
  const { base, token } = await gateway(t, { upstream: upstream.url, websocket: true }, 2)
  const client = await openClient(wsUrl(base, '/shops/1/live'), [], { headers: bearer(token()) })
  const server = await upstream.nextSocket()
  const opened = Date.now()
  const [clientClose, upstreamClose] = await Promise.all([closed(client), closed(server)])
  t.equal(clientClose.code, 1008)
  t.equal(clientClose.reason, 'Token expired')
  t.equal(upstreamClose.code, 1008)
  t.ok(Date.now() - opened <= 3000, 'closed within a second of exp')
})
