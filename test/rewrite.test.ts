import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { TargetOptions } from '../lib/index.js'
import { bearer, buildApp, listen, tokenFor } from './helpers/app.js'
import { rawGet } from './helpers/raw-request.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { openClient, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'

/*
 * `rewrite` replaces the leading prefix from the token and the params. The
 * result is checked again: it can never leave the target's upstream base path.
 */

interface Setup { app: FastifyInstance, upstream: Upstream, base: string }

async function setup (t: Test, target: Partial<TargetOptions<any, any>>, prefix = '/transactions', basePath = ''): Promise<Setup> {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix, upstream: upstream.url + basePath, ...target }] })
  return { app, upstream, base: await listen(app) }
}

function auth (s: Setup, claims: Record<string, unknown>): Record<string, string> {
  return { Authorization: `Bearer ${tokenFor(s.app, claims)}` }
}

// Templates

t.test('a template puts a claim in place of the prefix', async (t) => {
  const s = await setup(t, { rewrite: '/shops/{claims.sub}/transactions' })
  const res = await s.app.inject({ url: '/transactions/7?full=1', headers: bearer(tokenFor(s.app, { sub: 'WAL001' })) })
  t.equal(res.statusCode, 200)
  t.same(s.upstream.seen.map((r) => r.url), ['/shops/WAL001/transactions/7?full=1'])
})

t.test('a template applies to the prefix itself and keeps only the leading prefix rewritten', async (t) => {
  const s = await setup(t, { rewrite: '/shops/{claims.sub}/transactions' })
  const headers = bearer(tokenFor(s.app, { sub: 'WAL001' }))
  t.equal((await s.app.inject({ url: '/transactions', headers })).statusCode, 200)
  t.equal((await s.app.inject({ url: '/transactions/transactions/x', headers })).statusCode, 200)
  t.same(s.upstream.seen.map((r) => r.url), ['/shops/WAL001/transactions', '/shops/WAL001/transactions/transactions/x'])
})

t.test('a template may use params and claims together, under a base path', async (t) => {
  const s = await setup(t, { rewrite: '/v2/{claims.tenant}/{params.kind}' }, '/items/:kind', '/base')
  const res = await s.app.inject({ url: '/items/books/9', headers: bearer(tokenFor(s.app, { sub: 'a', tenant: 'acme' })) })
  t.equal(res.statusCode, 200)
  t.same(s.upstream.seen.map((r) => r.url), ['/base/v2/acme/books/9'])
})

t.test('claim and param values are percent-encoded', async (t) => {
  const s = await setup(t, { rewrite: '/u/{claims.sub}/{params.name}' }, '/files/:name')
  const res = await rawGet(s.base, '/files/caf%C3%A9%20au%20lait/x', auth(s, { sub: 'jane doe@example.com' }))
  t.equal(res.status, 200)
  t.same(s.upstream.seen.map((r) => r.url), ['/u/jane%20doe%40example.com/caf%C3%A9%20au%20lait/x'])
})

t.test('a trailing slash in the template does not double the separator; "/" strips the prefix', async (t) => {
  const a = await setup(t, { rewrite: '/shops/{claims.sub}/' })
  t.equal((await rawGet(a.base, '/transactions/1', auth(a, { sub: 'WAL001' }))).status, 200)
  t.same(a.upstream.seen.map((r) => r.url), ['/shops/WAL001/1'])
  const b = await setup(t, { rewrite: '/' })
  t.equal((await rawGet(b.base, '/transactions/1', auth(b, { sub: 'WAL001' }))).status, 200)
  t.equal((await rawGet(b.base, '/transactions', auth(b, { sub: 'WAL001' }))).status, 200)
  t.same(b.upstream.seen.map((r) => r.url), ['/1', '/'])
})

t.test('a missing, empty or non-scalar claim gives 403 with zero upstream hits', async (t) => {
  const s = await setup(t, { rewrite: '/shops/{claims.shop}' })
  for (const claims of [{ sub: 'WAL001' }, { shop: '' }, { shop: ['WAL001'] }, { shop: { toString: 'x' } }, { shop: null }]) {
    const res = await rawGet(s.base, '/transactions', auth(s, claims))
    t.equal(res.status, 403, JSON.stringify(claims))
    t.equal(JSON.parse(res.body).code, 'FST_GATEHOUSE_FORBIDDEN')
  }
  t.equal(s.upstream.seen.length, 0)
})

t.test('a claim inherited from Object.prototype is missing', async (t) => {
  const s = await setup(t, { rewrite: '/x/{claims.constructor}' })
  t.equal((await rawGet(s.base, '/transactions', auth(s, { sub: 'a' }))).status, 403)
  t.equal(s.upstream.seen.length, 0)
})

// Climbing out

const CLIMBS = ['..', '.', '../admin', '../../etc/passwd', 'a/b', '%2e%2e', '%2E%2E%2Fadmin', '..%2f..', 'a\\..\\b', '..\\admin', '%252e%252e', '%00', 'x/../../y']

for (const sub of CLIMBS) {
  t.test(`a claim of ${JSON.stringify(sub)} cannot climb out of the base path`, async (t) => {
    const s = await setup(t, { rewrite: '/shops/{claims.sub}/transactions' }, '/transactions', '/base')
    const res = await rawGet(s.base, '/transactions/1', auth(s, { sub }))
    // Either refused outright, or kept as one encoded segment under /base/shops/.
    if (res.status === 200) {
      const seen = s.upstream.seen[0]?.url ?? ''
      t.ok(seen.startsWith('/base/shops/') && !seen.slice('/base/shops/'.length).split('/')[0]?.includes('.'), `stayed inside: ${seen}`)
    } else {
      t.equal(res.status, 400)
      t.equal(JSON.parse(res.body).code, 'FST_GATEHOUSE_PATH_NOT_ALLOWED')
      t.equal(s.upstream.seen.length, 0, 'the upstream was never contacted')
    }
  })
}

t.test('every climbing claim is refused (none reaches the upstream)', async (t) => {
  const s = await setup(t, { rewrite: '/shops/{claims.sub}/transactions' }, '/transactions', '/base')
  const statuses: number[] = []
  for (const sub of ['..', '../admin', '%2e%2e', 'a/b', '..%2f..', '%252e%252e', '..\\admin']) {
    statuses.push((await rawGet(s.base, '/transactions/1', auth(s, { sub }))).status)
  }
  t.same(statuses, [400, 400, 400, 400, 400, 400, 400])
  t.equal(s.upstream.seen.length, 0)
})

t.test('a climbing rewrite is refused before authorize and the middleware run', async (t) => {
  const calls: string[] = []
  const s = await setup(t, {
    rewrite: '/shops/{claims.sub}',
    authorize: () => { calls.push('authorize'); return true },
    middleware: [async (_ctx, next) => { calls.push('middleware'); await next() }]
  }, '/transactions', '/base')
  t.equal((await rawGet(s.base, '/transactions/1', auth(s, { sub: '..' }))).status, 400)
  t.same(calls, [])
  t.equal(s.upstream.seen.length, 0)
})

t.test('a param of ".." cannot climb either: the path guard refuses it first', async (t) => {
  const s = await setup(t, { rewrite: '/{params.kind}' }, '/items/:kind', '/base')
  for (const path of ['/items/%2e%2e/etc', '/items/%252e%252e/etc', '/items/a%2fb/x']) {
    t.equal((await rawGet(s.base, path, auth(s, { sub: 'a' }))).status, 400, path)
  }
  t.equal(s.upstream.seen.length, 0)
})

// Functions

t.test('a function returns the new prefix from the context', async (t) => {
  const s = await setup(t, { rewrite: (ctx) => `/shops/${encodeURIComponent(String(ctx.user?.sub))}/transactions` })
  t.equal((await rawGet(s.base, '/transactions/3?x=1', auth(s, { sub: 'WAL001' }))).status, 200)
  t.same(s.upstream.seen.map((r) => r.url), ['/shops/WAL001/transactions/3?x=1'])
})

t.test('an async function works and sees the path before the rewrite', async (t) => {
  let before = ''
  const s = await setup(t, {
    rewrite: async (ctx) => {
      before = ctx.request.path
      return '/v3'
    }
  }, '/transactions', '/base')
  t.equal((await rawGet(s.base, '/transactions/3', auth(s, { sub: 'a' }))).status, 200)
  t.equal(before, '/base/transactions/3')
  t.same(s.upstream.seen.map((r) => r.url), ['/base/v3/3'])
})

t.test('authorize and the middleware see the rewritten path', async (t) => {
  const paths: string[] = []
  const s = await setup(t, {
    rewrite: '/shops/{claims.sub}',
    authorize: (ctx) => { paths.push(ctx.request.path); return true },
    middleware: [async (ctx, next) => { paths.push(ctx.request.path); await next() }]
  })
  t.equal((await rawGet(s.base, '/transactions/1', auth(s, { sub: 'WAL001' }))).status, 200)
  t.same(paths, ['/shops/WAL001/1', '/shops/WAL001/1'])
})

const FUNCTION_CLIMBS: Array<[string, string]> = [
  ['a dot-dot segment', '/../admin'],
  ['a dot-dot made of an unencoded claim', '/shops/../../etc'],
  ['an encoded dot-dot', '/%2e%2e/admin'],
  ['an encoded slash', '/a%2f..%2fb'],
  ['a protocol-relative path', '//evil.example'],
  ['a query string', '/shops?admin=1'],
  ['a fragment', '/shops#x'],
  ['a backslash', '/..\\admin'],
  ['a control character', '/a\r\nx-injected: 1']
]

for (const [name, prefix] of FUNCTION_CLIMBS) {
  t.test(`a function returning ${name} gives 400 with zero upstream hits`, async (t) => {
    for (const basePath of ['', '/base']) {
      const s = await setup(t, { rewrite: () => prefix }, '/transactions', basePath)
      const res = await rawGet(s.base, '/transactions/1', auth(s, { sub: 'a' }))
      t.equal(res.status, 400, `base path "${basePath}"`)
      t.equal(JSON.parse(res.body).code, 'FST_GATEHOUSE_PATH_NOT_ALLOWED')
      t.equal(s.upstream.seen.length, 0)
    }
  })
}

t.test('a function returning something that is not a path gives 500 FST_GATEHOUSE_REWRITE_FAILED', async (t) => {
  for (const value of ['shops', 42, undefined, null]) {
    const s = await setup(t, { rewrite: () => value as string })
    const res = await rawGet(s.base, '/transactions/1', auth(s, { sub: 'a' }))
    t.equal(res.status, 500, String(value))
    t.same(JSON.parse(res.body), {
      statusCode: 500,
      code: 'FST_GATEHOUSE_REWRITE_FAILED',
      error: 'Internal Server Error',
      message: 'The gateway could not route this request'
    })
    t.equal(s.upstream.seen.length, 0)
  }
})

t.test('a throwing function fails the request without contacting the upstream', async (t) => {
  const s = await setup(t, { rewrite: () => { throw new Error('boom at 10.0.0.7') } })
  const res = await rawGet(s.base, '/transactions/1', auth(s, { sub: 'a' }))
  t.equal(res.status, 500)
  t.notMatch(res.body, /10\.0\.0\.7|boom/)
  t.equal(s.upstream.seen.length, 0)
})

t.test('the rules run before the rewrite: a refused token never reaches the function', async (t) => {
  let called = 0
  const s = await setup(t, { allow: { anyRole: ['shop'] }, rewrite: () => { called++; return '/x' } })
  t.equal((await rawGet(s.base, '/transactions', auth(s, { sub: 'a', role: 'admin' }))).status, 403)
  t.equal(called, 0)
  t.equal(s.upstream.seen.length, 0)
})

t.test('a WebSocket upgrade is rewritten too', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/live', upstream: upstream.url, websocket: true, rewrite: '/shops/{claims.sub}/live' }] })
  const base = await listen(app)
  const client = await openClient(wsUrl(base, '/live/feed'), [], { headers: bearer(tokenFor(app, { sub: 'WAL001' })) })
  client.close()
  t.same(upstream.handshakes.map((h) => h.url), ['/shops/WAL001/live/feed'])
})

// Register-time validation

const INVALID: Array<[string, string, Partial<TargetOptions<any, any>>]> = [
  ['rewrite with rewritePrefix', '/api', { rewrite: '/x', rewritePrefix: '/y' }],
  ['a relative template', '/api', { rewrite: 'shops/{claims.sub}' }],
  ['a template with a dot segment', '/api', { rewrite: '/a/../{claims.sub}' }],
  ['a template with a query', '/api', { rewrite: '/a?x={claims.sub}' }],
  ['a template with a double slash', '/api', { rewrite: '/a//{claims.sub}' }],
  ['an unknown placeholder source', '/api', { rewrite: '/shops/{user.sub}' }],
  ['a bare placeholder', '/api', { rewrite: '/shops/{sub}' }],
  ['an empty placeholder', '/api', { rewrite: '/shops/{}' }],
  ['an unclosed placeholder', '/api', { rewrite: '/shops/{claims.sub' }],
  ['a param the prefix does not have', '/shops/:shopId', { rewrite: '/s/{params.shop}' }],
  ['a :param (rewritePrefix syntax)', '/shops/:shopId', { rewrite: '/s/:shopId' }],
  ['a claim on a public target', '/api', { public: true, rewrite: '/s/{claims.sub}' }],
  ['a number', '/api', { rewrite: 42 as never }]
]

for (const [name, prefix, target] of INVALID) {
  t.test(`register fails on ${name}`, async (t) => {
    await t.rejects(buildApp(t, { targets: [{ prefix, upstream: 'http://127.0.0.1:9', ...target }] }), { code: 'FST_GATEHOUSE_INVALID_OPTION' })
  })
}

t.test('a public target may use params in its template', async (t) => {
  const s = await setup(t, { public: true, rewrite: '/v1/{params.id}' }, '/docs/:id')
  t.equal((await rawGet(s.base, '/docs/readme/x')).status, 200)
  t.same(s.upstream.seen.map((r) => r.url), ['/v1/readme/x'])
})
