import t from 'tap'
import type { Test } from 'tap'
import { buildApp, listen, tokenFor } from './helpers/app.js'
import { rawRequest } from './helpers/raw-request.js'
import { startUpstream } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'

async function gateway (t: Test): Promise<{ base: string, upstream: Upstream, auth: string }> {
  const upstream = await startUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }, { prefix: '/open', upstream: upstream.url, public: true }] })
  return { base: await listen(app), upstream, auth: `Authorization: Bearer ${tokenFor(app)}` }
}

t.test('more than one Host header gets 400 and reaches no upstream (RFC 9112 §3.2)', async (t) => {
  const { base, upstream, auth } = await gateway(t)
  for (const path of ['/api/items', '/open/items']) {
    const res = await rawRequest(base, [`GET ${path} HTTP/1.1`, 'Host: gw.example', 'host: evil.example', auth, 'Connection: close'])
    t.equal(res.status, 400, path)
    t.equal(JSON.parse(res.body).code, 'FST_GATEHOUSE_BAD_REQUEST')
    t.match(JSON.parse(res.body).message, /More than one Host/)
  }
  t.equal(upstream.seen.length, 0)
})

t.test('an absolute-form target whose authority disagrees with Host gets 400', async (t) => {
  const { base, upstream, auth } = await gateway(t)
  const res = await rawRequest(base, ['GET http://evil.example/api/items HTTP/1.1', 'Host: gw.example', auth, 'Connection: close'])
  t.equal(res.status, 400)
  t.match(JSON.parse(res.body).message, /different hosts/)
  t.equal(upstream.seen.length, 0)
})

t.test('an absolute-form target that agrees with Host is served', async (t) => {
  const { base, upstream, auth } = await gateway(t)
  const res = await rawRequest(base, ['GET http://GW.example/api/items?q=1 HTTP/1.1', 'Host: gw.example', auth, 'Connection: close'])
  t.equal(res.status, 200)
  t.equal(upstream.seen[0]?.url, '/api/items?q=1')
  t.equal(upstream.seen[0]?.headers['x-forwarded-host'], 'gw.example')
})
