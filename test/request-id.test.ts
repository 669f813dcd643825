import t from 'tap'
import type { Test } from 'tap'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import type { FastifyServerOptions } from 'fastify'
import gatehouse, { gatehouseFrameworkErrors, gatehouseRequestId, isSafeRequestId } from '../lib/index.js'
import type { GatehouseOptions, RequestIdOptions } from '../lib/index.js'
import { SECRET, bearer, listen, testUsers, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import { openClient, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

/** A gateway with `requestId` as given (and as genReqId), its upstream, and every log line it wrote. */
async function gateway (t: Test, requestId: RequestIdOptions | false | undefined, extra: Partial<GatehouseOptions> = {}, server: FastifyServerOptions = {}) {
  const upstream = await upstreamFor(t, (req, res) => {
    // An upstream that answers with an id of its own: the gateway's wins.
    res.writeHead(200, { 'content-type': 'text/plain', 'x-request-id': 'from-upstream' }).end('ok')
  })
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    }
  })
  const app = Fastify({
    logger: { level: 'info', stream },
    frameworkErrors: gatehouseFrameworkErrors,
    ...(requestId === false ? {} : { genReqId: gatehouseRequestId(requestId) }),
    ...server
  })
  t.teardown(() => app.close())
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: { verify: await testUsers() } },
    targets: [{ prefix: '/api', upstream: upstream.url }],
    ...(requestId === undefined ? {} : { requestId }),
    ...extra
  })
  await app.ready()
  return { app, upstream, lines }
}

t.test('without an incoming id, a random UUID goes upstream, back to the client and into reqId', async (t) => {
  const { app, upstream, lines } = await gateway(t, undefined)
  const res = await app.inject({ url: '/api/items', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  const id = res.headers['x-request-id'] as string
  t.match(id, UUID, 'the client gets a generated UUID, not the upstream\'s own id')
  t.equal(upstream.seen[0]?.headers['x-request-id'], id, 'the upstream got the same id')
  const logged = lines.filter((line) => line.msg === 'incoming request')
  t.equal(logged[0]?.reqId, id, 'Fastify\'s reqId is the same id')
})

t.test('an untrusted caller\'s id is replaced, never forwarded nor echoed', async (t) => {
  const { app, upstream } = await gateway(t, {})
  const res = await app.inject({ url: '/api/items', headers: { ...bearer(tokenFor(app)), 'x-request-id': 'caller-chosen-id' } })
  const id = res.headers['x-request-id'] as string
  t.match(id, UUID)
  t.not(id, 'caller-chosen-id')
  t.equal(upstream.seen[0]?.headers['x-request-id'], id, 'the upstream got the replacement')
})

t.test('a trusted caller\'s safe id is kept; an unsafe one is replaced', async (t) => {
  const { app, upstream, lines } = await gateway(t, { trust: true })
  const kept = await app.inject({ url: '/api/a', headers: { ...bearer(tokenFor(app)), 'x-request-id': 'lb-1234_abc:def' } })
  t.equal(kept.headers['x-request-id'], 'lb-1234_abc:def')
  t.equal(upstream.seen[0]?.headers['x-request-id'], 'lb-1234_abc:def')
  t.ok(lines.some((line) => line.reqId === 'lb-1234_abc:def'), 'logged under the caller\'s id')
  for (const unsafe of ['a'.repeat(129), 'id with spaces', 'id"quote', 'id\u00e9', '']) {
    const res = await app.inject({ url: '/api/b', headers: { ...bearer(tokenFor(app)), 'x-request-id': unsafe } })
    t.match(res.headers['x-request-id'], UUID, `replaced: ${JSON.stringify(unsafe.slice(0, 20))}`)
    t.equal(upstream.seen.at(-1)?.headers['x-request-id'], res.headers['x-request-id'])
  }
})

t.test('trust by peer address: a listed proxy is believed, any other peer is not', async (t) => {
  // inject's peer is 127.0.0.1.
  const listed = await gateway(t, { trust: ['10.0.0.0/8', '127.0.0.1'] })
  const kept = await listed.app.inject({ url: '/api/a', headers: { ...bearer(tokenFor(listed.app)), 'x-request-id': 'from-lb' } })
  t.equal(kept.headers['x-request-id'], 'from-lb')
  const named = await gateway(t, { trust: 'loopback' })
  const alsoKept = await named.app.inject({ url: '/api/a', headers: { ...bearer(tokenFor(named.app)), 'x-request-id': 'from-lb' } })
  t.equal(alsoKept.headers['x-request-id'], 'from-lb', '"loopback" names 127.0.0.0/8')
  const other = await gateway(t, { trust: '10.0.0.0/8, 192.168.0.0/16' })
  const replaced = await other.app.inject({ url: '/api/a', headers: { ...bearer(tokenFor(other.app)), 'x-request-id': 'from-lb' } })
  t.match(replaced.headers['x-request-id'], UUID)
  t.equal(other.upstream.seen[0]?.headers['x-request-id'], replaced.headers['x-request-id'])
})

t.test('every gateway answer carries the id: refusals, login, not found', async (t) => {
  const { app, upstream } = await gateway(t, {})
  const refused = await app.inject({ url: '/api/items' })
  t.equal(refused.statusCode, 401)
  t.match(refused.headers['x-request-id'], UUID)
  const login = await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'alice-pw' } })
  t.equal(login.statusCode, 200)
  t.match(login.headers['x-request-id'], UUID)
  const failed = await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'wrong' } })
  t.equal(failed.statusCode, 401)
  t.match(failed.headers['x-request-id'], UUID)
  t.not(failed.headers['x-request-id'], login.headers['x-request-id'], 'one id per request')
  t.equal(upstream.seen.length, 0)
})

t.test('without the host\'s genReqId the plugin still sends one id both ways', async (t) => {
  const { app, upstream } = await gateway(t, false, { requestId: { trust: false } })
  const res = await app.inject({ url: '/api/items', headers: { ...bearer(tokenFor(app)), 'x-request-id': 'caller' } })
  t.match(res.headers['x-request-id'], UUID)
  t.equal(upstream.seen[0]?.headers['x-request-id'], res.headers['x-request-id'])
})

t.test('requestId: false leaves the header alone', async (t) => {
  const { app, upstream } = await gateway(t, false, { requestId: false })
  const res = await app.inject({ url: '/api/items', headers: { ...bearer(tokenFor(app)), 'x-request-id': 'caller' } })
  t.equal(res.headers['x-request-id'], 'from-upstream', 'the upstream\'s answer passes as before')
  t.equal(upstream.seen[0]?.headers['x-request-id'], 'caller')
  const none = await app.inject({ url: '/api/items', headers: bearer(tokenFor(app)) })
  t.equal(upstream.seen[1]?.headers['x-request-id'], undefined, 'nothing generated')
  t.equal(none.statusCode, 200)
})

t.test('a custom header name', async (t) => {
  const { app, upstream } = await gateway(t, { header: 'X-Correlation-Id' })
  const res = await app.inject({ url: '/api/items', headers: bearer(tokenFor(app)) })
  t.match(res.headers['x-correlation-id'], UUID)
  t.equal(upstream.seen[0]?.headers['x-correlation-id'], res.headers['x-correlation-id'])
  t.equal(res.headers['x-request-id'], 'from-upstream', 'the default name is not touched then')
})

t.test('the WebSocket handshake carries the id upstream, replacing an untrusted one', async (t) => {
  const ws = await startWsUpstream()
  t.teardown(ws.close)
  const app = Fastify({ genReqId: gatehouseRequestId() })
  t.teardown(() => app.close())
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: { verify: await testUsers() } },
    targets: [{ prefix: '/live', upstream: ws.url, websocket: true }]
  })
  const base = await listen(app)
  const client = await openClient(wsUrl(base, '/live/feed'), [], { headers: { ...bearer(tokenFor(app)), 'x-request-id': 'caller-ws' } })
  client.close()
  const sent = ws.handshakes[0]?.headers['x-request-id']
  t.match(sent, UUID, 'the upstream handshake got a generated id, not the caller\'s')
})

t.test('options are validated at register', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    ['yes', /requestId.*false or \{ header\?, trust\? \}/],
    [{ header: 'bad header' }, /requestId\.header/],
    [{ header: 'content-length' }, /requestId\.header/],
    [{ trust: 'not-an-address' }, /requestId\.trust.*not "not-an-address"/],
    [{ trust: ['10.0.0.0/33'] }, /requestId\.trust/],
    [{ trust: ['10.0.0.0/8/1'] }, /requestId\.trust/],
    [{ trust: [] }, /requestId\.trust/],
    [{ trust: [1] }, /requestId\.trust/],
    [{ trust: 3 }, /requestId\.trust/],
    [{ trusted: true }, /did you mean "trust"/]
  ]
  for (const [requestId, message] of bad) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => {
      await app.register(gatehouse, { auth: { secret: SECRET, login: false }, targets: [], requestId: requestId as RequestIdOptions })
    }, { code: 'FST_GATEHOUSE_INVALID_OPTION', message }, JSON.stringify(requestId))
  }
  t.throws(() => gatehouseRequestId({ trust: ['nope'] }), { code: 'FST_GATEHOUSE_INVALID_OPTION' })
  t.ok(gatehouseRequestId({ trust: ['::1', 'fe80::/10', 'uniquelocal', 'linklocal'] }))
})

t.test('isSafeRequestId', async (t) => {
  t.ok(isSafeRequestId('0b9c2f4e-6c1e-4a8e-9d55-2f4c1b7f9a10'))
  t.ok(isSafeRequestId('Root=1-5759e988/bd862e3fe1be46a994272793'))
  t.notOk(isSafeRequestId('a\r\nx-injected: 1'))
  t.notOk(isSafeRequestId(['a', 'b']))
  t.notOk(isSafeRequestId(undefined))
})
