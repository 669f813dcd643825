import t from 'tap'
import type { Test } from 'tap'
import { request as httpRequest } from 'node:http'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import { within } from './helpers/wait.js'
import type { GatehouseContext, HeaderMap, TargetCredentials } from '../lib/index.js'

const KEY_A = 'key-for-a-0123456789'
const KEY_B = 'key-for-b-9876543210'

function basic (username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`
}

/** Two targets with the given credentials; calls each once and returns what each upstream saw. */
async function twoTargets (t: Test, a: TargetCredentials, b: TargetCredentials | undefined) {
  const upA = await upstreamFor(t)
  const upB = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [
      { prefix: '/a', upstream: upA.url, credentials: a },
      { prefix: '/b', upstream: upB.url, credentials: b }
    ]
  })
  const headers = bearer(tokenFor(app))
  const resA = await app.inject({ url: '/a/x', headers })
  const resB = await app.inject({ url: '/b/x', headers })
  t.equal(resA.statusCode, 200)
  t.equal(resB.statusCode, 200)
  t.equal(upA.seen.length, 1)
  t.equal(upB.seen.length, 1)
  return { a: upA.seen[0]?.headers ?? {}, b: upB.seen[0]?.headers ?? {} }
}

t.test('header credentials arrive exactly at their own target', async (t) => {
  const seen = await twoTargets(t, { header: 'x-api-key', value: KEY_A }, { header: 'x-other-key', value: KEY_B })
  t.equal(seen.a['x-api-key'], KEY_A)
  t.notOk('x-other-key' in seen.a, 'target a never gets b\'s key')
  t.equal(seen.b['x-other-key'], KEY_B)
  t.notOk('x-api-key' in seen.b, 'target b never gets a\'s key')
  t.notOk(JSON.stringify(seen.a).includes(KEY_B))
  t.notOk(JSON.stringify(seen.b).includes(KEY_A))
})

t.test('the same header name carries each target its own value', async (t) => {
  const seen = await twoTargets(t, { header: 'x-api-key', value: KEY_A }, { header: 'X-Api-Key', value: KEY_B })
  t.equal(seen.a['x-api-key'], KEY_A)
  t.equal(seen.b['x-api-key'], KEY_B)
})

t.test('bearer credentials arrive exactly at their own target', async (t) => {
  const seen = await twoTargets(t, { bearer: KEY_A }, { bearer: KEY_B })
  t.equal(seen.a.authorization, `Bearer ${KEY_A}`)
  t.equal(seen.b.authorization, `Bearer ${KEY_B}`)
})

t.test('basic credentials arrive exactly at their own target', async (t) => {
  const seen = await twoTargets(t, { basic: { username: 'svc-a', password: 'pw:a' } }, { basic: { username: 'svc-b', password: 'pw-b' } })
  t.equal(seen.a.authorization, basic('svc-a', 'pw:a'))
  t.equal(seen.b.authorization, basic('svc-b', 'pw-b'))
})

t.test('computed credentials arrive exactly at their own target', async (t) => {
  const seen = await twoTargets(t,
    async () => ({ 'X-Api-Key': KEY_A, 'X-Tenant': 'a' }),
    () => ({ 'x-other-key': KEY_B })
  )
  t.equal(seen.a['x-api-key'], KEY_A, 'names are lower-cased')
  t.equal(seen.a['x-tenant'], 'a')
  t.notOk('x-other-key' in seen.a)
  t.equal(seen.b['x-other-key'], KEY_B)
  t.notOk('x-api-key' in seen.b)
  t.notOk('x-tenant' in seen.b)
})

t.test('a target without credentials gets none of the others\'', async (t) => {
  const seen = await twoTargets(t, { header: 'x-api-key', value: KEY_A }, undefined)
  t.equal(seen.a['x-api-key'], KEY_A)
  t.notOk('x-api-key' in seen.b)
  t.notOk('authorization' in seen.b)
})

t.test("the caller's Authorization never reaches the upstream", async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: { header: 'x-api-key', value: KEY_A } }] })
  const token = tokenFor(app)
  const res = await app.inject({ url: '/api/x', headers: bearer(token) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.notOk('authorization' in (upstream.seen[0]?.headers ?? {}))
  t.notOk(JSON.stringify(upstream.seen[0]?.headers).includes(token), 'the token appears in no header')
})

t.test("the caller's Authorization is replaced by a bearer credential, not joined", async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: { bearer: KEY_A } }] })
  const token = tokenFor(app)
  const res = await app.inject({ url: '/api/x', headers: bearer(token) })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.headers.authorization, `Bearer ${KEY_A}`)
  t.notOk(JSON.stringify(upstream.seen[0]?.headers).includes(token))
})

t.test("the caller's Proxy-Authorization never reaches the upstream", async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), 'proxy-authorization': 'Basic c2VjcmV0OnNlY3JldA==' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.notOk('proxy-authorization' in (upstream.seen[0]?.headers ?? {}))
})

t.test('on a public target the caller\'s Authorization is still dropped', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/docs', upstream: upstream.url, public: true }] })
  const res = await app.inject({ url: '/docs/x', headers: { authorization: 'Bearer caller-secret' } })
  t.equal(res.statusCode, 200)
  t.notOk('authorization' in (upstream.seen[0]?.headers ?? {}))
})

t.test('a spoofed copy of the injected header is replaced', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: { header: 'x-api-key', value: KEY_A } }] })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), 'x-api-key': 'spoofed' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.headers['x-api-key'], KEY_A)
  t.notOk(JSON.stringify(upstream.seen[0]?.headers).includes('spoofed'))
})

t.test('a spoofed copy with a different case, sent twice on the wire, is replaced', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: { header: 'X-Api-Key', value: KEY_A } }] })
  const base = await listen(app)
  const { port } = new URL(base)
  // Raw header lines so the case and the repetition reach the gateway as written.
  const status = await new Promise<number>((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      path: '/api/x',
      agent: false,
      headers: [
        'Host', `127.0.0.1:${port}`,
        'Authorization', `Bearer ${tokenFor(app)}`,
        'X-API-KEY', 'spoofed-1',
        'x-Api-kEY', 'spoofed-2'
      ]
    }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(status, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.headers['x-api-key'], KEY_A)
  t.notOk(JSON.stringify(upstream.seen[0]?.headers).includes('spoofed'))
})

t.test('a spoofed copy of a computed credential is replaced', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: () => ({ 'X-Api-Key': KEY_A }) }] })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), 'x-api-key': 'spoofed' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.headers['x-api-key'], KEY_A)
})

t.test('Connection: x-api-key from the caller cannot strip the injected key', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: { header: 'x-api-key', value: KEY_A } }] })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), connection: 'x-api-key', 'x-api-key': 'spoofed' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.headers['x-api-key'], KEY_A)
})

/** GET /api/x on a real socket (inject does not treat Connection as a client does); resolves with the status. */
function getOverSocket (base: string, headers: Record<string, string>): Promise<number> {
  return within(new Promise<number>((resolve, reject) => {
    const req = httpRequest(`${base}/api/x`, { agent: false, headers }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  }), { message: 'the response to GET /api/x' })
}

t.test('Connection: x-api-key on a real socket cannot strip the injected key', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: { header: 'x-api-key', value: KEY_A } }] })
  const status = await getOverSocket(await listen(app), { ...bearer(tokenFor(app)), connection: 'keep-alive, X-Api-Key', 'x-api-key': 'spoofed' })
  t.equal(status, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen.at(-1)?.headers['x-api-key'], KEY_A)
})

t.test('Connection naming a computed credential cannot strip it (real socket)', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: () => ({ 'x-api-key': KEY_A }) }] })
  const status = await getOverSocket(await listen(app), { ...bearer(tokenFor(app)), connection: 'keep-alive, x-api-key' })
  t.equal(status, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.headers['x-api-key'], KEY_A)
})

t.test('computed credentials get the request context with the user claims', async (t) => {
  const upstream = await upstreamFor(t)
  const contexts: Array<{ sub: unknown, role: unknown, shopId: unknown, target: string, path: string }> = []
  const app = await buildApp(t, {
    targets: [{
      prefix: '/shops/:shopId/inventory',
      upstream: upstream.url,
      credentials: async (ctx: GatehouseContext) => {
        contexts.push({ sub: ctx.user?.sub, role: ctx.user?.role, shopId: ctx.params.shopId, target: ctx.target.name, path: ctx.request.path })
        return { 'x-api-key': `key-of-${String(ctx.user?.sub)}` }
      }
    }]
  })
  const alice = await app.inject({ url: '/shops/WAL001/inventory/1', headers: bearer(tokenFor(app, { sub: 'alice', role: 'admin' })) })
  const bob = await app.inject({ url: '/shops/BBY001/inventory', headers: bearer(tokenFor(app, { sub: 'bob', role: 'clerk' })) })
  t.equal(alice.statusCode, 200)
  t.equal(bob.statusCode, 200)
  t.same(contexts, [
    { sub: 'alice', role: 'admin', shopId: 'WAL001', target: '/shops/:shopId/inventory', path: '/shops/WAL001/inventory/1' },
    { sub: 'bob', role: 'clerk', shopId: 'BBY001', target: '/shops/:shopId/inventory', path: '/shops/BBY001/inventory' }
  ])
  t.equal(upstream.seen[0]?.headers['x-api-key'], 'key-of-alice')
  t.equal(upstream.seen[1]?.headers['x-api-key'], 'key-of-bob')
})

function secretsIn (headers: HeaderMap): string {
  return JSON.stringify(headers)
}

t.test('middleware never sees an injected static secret in ctx.request.headers', async (t) => {
  const upstream = await upstreamFor(t)
  const snapshots: string[] = []
  const record = (label: string) => async (ctx: GatehouseContext, next: () => Promise<void>) => {
    snapshots.push(`${label}:before:${secretsIn(ctx.request.headers)}`)
    await next()
    snapshots.push(`${label}:after:${secretsIn(ctx.request.headers)}`)
  }
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      credentials: { header: 'x-api-key', value: KEY_A },
      middleware: [{ phase: 'clientEdge', handler: record('edge') }, { phase: 'targetEdge', handler: record('target') }]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), 'x-api-key': 'spoofed' } })
  t.equal(res.statusCode, 200)
  t.equal(snapshots.length, 4)
  for (const snapshot of snapshots) {
    t.notOk(snapshot.includes(KEY_A), 'the key is not in the headers')
    t.notOk(snapshot.includes('x-api-key'), 'not even the caller\'s copy')
    t.notOk(snapshot.includes('authorization'), 'nor the caller\'s token')
  }
  t.equal(upstream.seen[0]?.headers['x-api-key'], KEY_A, 'the key still went on the wire')
})

t.test('middleware never sees injected bearer or computed secrets in ctx.request.headers', async (t) => {
  const upstream = await upstreamFor(t)
  const seenByMiddleware: string[] = []
  const spy = {
    phase: 'targetEdge' as const,
    handler: async (ctx: GatehouseContext, next: () => Promise<void>) => {
      await next()
      seenByMiddleware.push(secretsIn(ctx.request.headers))
    }
  }
  const app = await buildApp(t, {
    targets: [
      { prefix: '/bearer', upstream: upstream.url, credentials: { bearer: KEY_A }, middleware: [spy] },
      { prefix: '/computed', upstream: upstream.url, credentials: () => ({ 'x-computed': KEY_B }), middleware: [spy] }
    ]
  })
  const headers = bearer(tokenFor(app))
  t.equal((await app.inject({ url: '/bearer/x', headers })).statusCode, 200)
  t.equal((await app.inject({ url: '/computed/x', headers })).statusCode, 200)
  t.equal(seenByMiddleware.length, 2)
  for (const snapshot of seenByMiddleware) {
    t.notOk(snapshot.includes(KEY_A))
    t.notOk(snapshot.includes(KEY_B))
  }
  t.equal(upstream.seen[0]?.headers.authorization, `Bearer ${KEY_A}`)
  t.equal(upstream.seen[1]?.headers['x-computed'], KEY_B)
})

t.test('an injected secret is not echoed to the client in response headers of the gateway', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, credentials: { header: 'x-api-key', value: KEY_A } }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.notOk(JSON.stringify(res.headers).includes(KEY_A))
})
