import t from 'tap'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'

t.test('a proxied GET reaches the upstream with its key and without the caller token', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: { header: 'x-api-key', value: 'k1' } }] })
  const res = await app.inject({ url: '/api/items?a=1', headers: { ...bearer(tokenFor(app)), 'x-api-key': 'spoofed' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/api/items?a=1')
  t.equal(upstream.seen[0]?.headers['x-api-key'], 'k1')
  t.notOk(upstream.seen[0]?.headers.authorization)
})
