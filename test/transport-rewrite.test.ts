import t from 'tap'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'

t.test('redirects are not followed; Location and Set-Cookie are rewritten to the gateway', async (t) => {
  const upstream = await startUpstream((req, res) => {
    const self = `http://${req.headers.host ?? ''}`
    res.writeHead(302, {
      location: `${self}/base/v2/orders/7?x=1`,
      'content-location': '/base/v2/orders/7',
      'set-cookie': ['sid=abc; Domain=127.0.0.1; Path=/base/v2; HttpOnly', 'other=1; Domain=elsewhere.example; Path=/x'],
      'content-length': 0
    })
    res.end()
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/shop', upstream: `${upstream.url}/base`, rewritePrefix: '/v2' }] })
  const res = await app.inject({ url: '/shop/orders', headers: { ...bearer(tokenFor(app)), host: 'gw.example' } })
  t.equal(res.statusCode, 302)
  t.equal(upstream.seen.length, 1, 'not followed')
  t.equal(res.headers.location, 'http://gw.example/shop/orders/7?x=1')
  t.equal(res.headers['content-location'], '/shop/orders/7')
  t.same(res.headers['set-cookie'], ['sid=abc; Path=/shop; HttpOnly', 'other=1; Domain=elsewhere.example; Path=/shop'])
})

t.test('foreign Location untouched; publicOrigin; rewrite: false turns it off', async (t) => {
  const upstream = await startUpstream((req, res) => {
    const location = req.url?.endsWith('/away') === true ? 'https://login.example/sso' : `http://${req.headers.host ?? ''}/p/a/b`
    res.writeHead(301, { location, 'set-cookie': 'k=v; Domain=127.0.0.1', 'content-length': 0 }).end()
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [
      { prefix: '/p', upstream: upstream.url, transport: { rewrite: { publicOrigin: 'https://api.example.com' } } },
      { prefix: '/raw', upstream: upstream.url, transport: { rewrite: false } }
    ]
  })
  const headers = bearer(tokenFor(app))
  const away = await app.inject({ url: '/p/away', headers })
  t.equal(away.headers.location, 'https://login.example/sso')
  const mine = await app.inject({ url: '/p/x', headers })
  t.equal(mine.headers.location, 'https://api.example.com/p/a/b')
  t.equal(mine.headers['set-cookie'], 'k=v; Domain=api.example.com')
  const raw = await app.inject({ url: '/raw/x', headers })
  t.equal(raw.headers.location, `${upstream.url}/p/a/b`)
  t.equal(raw.headers['set-cookie'], 'k=v; Domain=127.0.0.1')
})

t.test('an upstream base path: Location and cookie Path map in both layouts (prefix kept, rewritePrefix)', async (t) => {
  const upstream = await startUpstream((req, res) => {
    const self = `http://${req.headers.host ?? ''}`
    res.writeHead(302, {
      location: `${self}${req.url ?? ''}/7`,
      'content-location': `${req.url ?? ''}/7`,
      'set-cookie': ['root=1; Path=/api', 'slash=1; Path=/api/', `here=1; Path=${req.url ?? ''}`, 'all=1; Path=/', 'foreign=1; Path=/elsewhere'],
      'content-length': 0
    })
    res.end()
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [
      // /inv/x goes to /api/inv/x: the upstream app lives under /api.
      { prefix: '/inv', upstream: `${upstream.url}/api` },
      // /shop/x goes to /api/x.
      { prefix: '/shop', upstream: `${upstream.url}/api`, rewritePrefix: '' }
    ]
  })
  const headers = { ...bearer(tokenFor(app)), host: 'gw.example' }

  const kept = await app.inject({ url: '/inv/items', headers })
  t.equal(upstream.seen.at(-1)?.url, '/api/inv/items')
  t.equal(kept.headers.location, 'http://gw.example/inv/items/7')
  t.equal(kept.headers['content-location'], '/inv/items/7')
  t.same(kept.headers['set-cookie'], ['root=1; Path=/inv', 'slash=1; Path=/inv', 'here=1; Path=/inv/items', 'all=1; Path=/inv', 'foreign=1; Path=/inv'])

  const rewritten = await app.inject({ url: '/shop/items', headers })
  t.equal(upstream.seen.at(-1)?.url, '/api/items')
  t.equal(rewritten.headers.location, 'http://gw.example/shop/items/7')
  t.equal(rewritten.headers['content-location'], '/shop/items/7')
  t.same(rewritten.headers['set-cookie'], ['root=1; Path=/shop', 'slash=1; Path=/shop/', 'here=1; Path=/shop/items', 'all=1; Path=/shop', 'foreign=1; Path=/shop'])
})

t.test('cookies stay with their target: a Path outside the prefix is confined to it; rewrite.cookies: false keeps it', async (t) => {
  const upstream = await startUpstream((req, res) => {
    res.writeHead(200, { 'set-cookie': [`session=${req.url ?? ''}; Path=/; HttpOnly`, 'pref=1; Path=/settings', 'bare=1'], 'content-length': 0 }).end()
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [
      { prefix: '/a', upstream: upstream.url },
      { prefix: '/b', upstream: upstream.url, rewritePrefix: '' },
      { prefix: '/legacy', upstream: upstream.url, transport: { rewrite: { cookies: false } } }
    ]
  })
  const headers = bearer(tokenFor(app))
  const a = await app.inject({ url: '/a/login', headers })
  t.same(a.headers['set-cookie'], ['session=/a/login; Path=/a; HttpOnly', 'pref=1; Path=/a', 'bare=1'], 'target A: only /a gets them back')
  const b = await app.inject({ url: '/b/login', headers })
  t.same(b.headers['set-cookie'], ['session=/login; Path=/b/; HttpOnly', 'pref=1; Path=/b/settings', 'bare=1'], 'target B strips its prefix: paths map under /b')
  const legacy = await app.inject({ url: '/legacy/login', headers })
  t.same(legacy.headers['set-cookie'], ['session=/legacy/login; Path=/; HttpOnly', 'pref=1; Path=/settings', 'bare=1'], 'cookies: false leaves them as they came')
  t.same(upstream.seen.map((r) => r.url), ['/a/login', '/login', '/legacy/login'])
})
