import t from 'tap'
import { connect } from 'node:net'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import { startWsUpstream } from './helpers/ws-upstream.js'
import { within } from './helpers/wait.js'
import type { TargetCredentials } from '../lib/index.js'

t.test('computed credentials with declared names: the caller\'s copies are gone before any middleware, set or not', async (t) => {
  const upstream = await upstreamFor(t)
  const middlewareSaw: Array<string | undefined> = []
  const credentials: TargetCredentials = {
    headers: ['X-Api-Key'],
    // This request gets no key: the caller's spoofed one must not pass instead.
    compute: (ctx): Record<string, string> => ctx.request.path.endsWith('/with') ? { 'X-Api-Key': 'server-key' } : {}
  }
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      credentials,
      middleware: [async (ctx, next) => {
        middlewareSaw.push(ctx.request.headers['x-api-key'] as string | undefined)
        await next()
      }]
    }]
  })
  const headers = { ...bearer(tokenFor(app)), 'x-api-key': 'spoofed' }
  t.equal((await app.inject({ url: '/api/without', headers })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/with', headers })).statusCode, 200)
  t.same(middlewareSaw, [undefined, undefined], 'no middleware saw the caller\'s copy')
  t.equal(upstream.seen[0]?.headers['x-api-key'], undefined, 'not set this time: the caller\'s copy did not pass')
  t.equal(upstream.seen[1]?.headers['x-api-key'], 'server-key')
})

t.test('a computed header outside the declared names fails the request loudly, without reaching the upstream', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url, credentials: { headers: ['x-api-key'], compute: () => ({ 'x-api-key': 'k', 'x-tenant': 'acme' }) } }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_GATEHOUSE_INTERNAL')
  t.equal(upstream.seen.length, 0)
})

t.test('the deprecated bare function still works (it strips nothing it does not set)', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: () => ({ 'x-api-key': 'server-key' }) }] })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), 'x-api-key': 'spoofed' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.headers['x-api-key'], 'server-key')
})

t.test('a WebSocket upgrade never carries the caller\'s copy of a declared name either', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [{ prefix: '/live', upstream: upstream.url, websocket: true, credentials: { headers: ['x-api-key'], compute: () => ({}) } }]
  })
  const base = await listen(app)
  const socket = connect(Number(new URL(base).port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.write(`GET /live/feed HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${tokenFor(app)}\r\nx-api-key: spoofed\r\n` +
    'connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  const head = await within(new Promise<string>((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString('latin1')))), { message: 'the upgrade answer' })
  t.match(head, /^HTTP\/1\.1 101/)
  t.equal(upstream.handshakes.length, 1)
  t.equal(upstream.handshakes[0]?.headers['x-api-key'], undefined)
})

for (const [credentials, option] of [
  [{ headers: [], compute: () => ({}) }, 'targets[0].credentials.headers'],
  [{ headers: ['host'], compute: () => ({}) }, 'targets[0].credentials.headers[0]'],
  [{ headers: ['x-a'], compute: 'nope' }, 'targets[0].credentials.compute'],
  [{ headers: ['x-a'], compute: () => ({}), extra: 1 }, 'targets[0].credentials.extra']
] as const) {
  t.test(`register refuses ${option}`, async (t) => {
    const upstream = await upstreamFor(t)
    await t.rejects(buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: credentials as unknown as TargetCredentials }] }), { code: 'FST_GATEHOUSE_INVALID_OPTION', message: new RegExp(option.replace(/[[\].]/g, '\\$&')) })
  })
}
