import t from 'tap'
import type { Test } from 'tap'
import { gzipSync } from 'node:zlib'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import type { Middleware, TargetOptions } from '../lib/index.js'

async function gateway (t: Test, middleware: Middleware<any>[], extra: Partial<TargetOptions> = {}) {
  const upstream: Upstream = await startUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, middleware, ...extra }] })
  return { app, upstream, headers: bearer(tokenFor(app)) }
}

interface Order { item: string, qty: number, note?: string, shop?: string }

t.test('a request body rewritten by a middleware reaches the upstream exactly, with its length', async (t) => {
  const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
    const order = await ctx.request.json<Order>()
    delete order.note
    ctx.request.body = { ...order, shop: String(ctx.user?.sub) }
    await next()
  }])
  const base = await listen(app)
  // Chunked on the way in: the gateway must frame the new body with a length.
  const res = await request(`${base}/api/orders`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: Readable.from([Buffer.from('{"item":"nail",'), Buffer.from('"qty":3,"note":"drop me"}')])
  })
  t.equal(res.statusCode, 200)
  await res.body.dump()
  t.equal(upstream.seen.length, 1)
  const seen = upstream.seen[0]!
  const expected = JSON.stringify({ item: 'nail', qty: 3, shop: 'alice' })
  t.equal(seen.body.toString('utf8'), expected)
  t.equal(seen.headers['content-length'], String(Buffer.byteLength(expected)))
  t.notOk('transfer-encoding' in seen.headers)
  t.match(String(seen.headers['content-type']), /^application\/json/)
})

t.test('a text and a Buffer replacement keep the content type and get their length', async (t) => {
  for (const [name, value, bytes] of [['text', 'héllo', Buffer.from('héllo')], ['buffer', Buffer.from([0, 1, 2, 255]), Buffer.from([0, 1, 2, 255])]] as const) {
    const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
      t.equal(await ctx.request.text(), 'original body')
      ctx.request.body = value
      await next()
    }])
    const res = await app.inject({ method: 'PUT', url: '/api/x', headers: { ...headers, 'content-type': 'text/plain' }, payload: 'original body' })
    t.equal(res.statusCode, 200, name)
    const seen = upstream.seen[0]!
    t.ok(seen.body.equals(bytes), `${name}: exact bytes`)
    t.equal(seen.headers['content-length'], String(bytes.length))
    t.equal(seen.headers['content-type'], 'text/plain')
  }
})

t.test('a body read but not replaced is forwarded as it came', async (t) => {
  const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
    const order = await ctx.request.json<Order>()
    ctx.request.headers['x-item'] = order.item
    await next()
  }])
  const raw = '{ "item" : "screw", "qty": 1 }'
  const res = await app.inject({ method: 'POST', url: '/api/orders', headers: { ...headers, 'content-type': 'application/json' }, payload: raw })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.body.toString(), raw, 'byte for byte, whitespace included')
  t.equal(upstream.seen[0]?.headers['x-item'], 'screw')
  t.equal(upstream.seen[0]?.headers['content-length'], String(raw.length))
})

t.test('a gzip-encoded request body is decoded for readers; a replacement is sent plain', async (t) => {
  const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
    const order = await ctx.request.json<Order>()
    ctx.request.body = { ...order, qty: order.qty * 2 }
    await next()
  }])
  const res = await app.inject({
    method: 'POST',
    url: '/api/orders',
    headers: { ...headers, 'content-type': 'application/json', 'content-encoding': 'gzip' },
    payload: gzipSync('{"item":"bolt","qty":4}')
  })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.body.toString(), '{"item":"bolt","qty":8}')
  t.notOk('content-encoding' in (upstream.seen[0]?.headers ?? {}), 'the new body is not gzip')
})

t.test('a gzip-encoded request body read but kept goes upstream still encoded', async (t) => {
  const encoded = gzipSync('{"item":"bolt","qty":4}')
  const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
    await ctx.request.json()
    await next()
  }])
  await app.inject({ method: 'POST', url: '/api/o', headers: { ...headers, 'content-type': 'application/json', 'content-encoding': 'gzip' }, payload: encoded })
  t.ok(upstream.seen[0]?.body.equals(encoded))
  t.equal(upstream.seen[0]?.headers['content-encoding'], 'gzip')
})

t.test('a request body that is not JSON gives 400 and the upstream is not contacted', async (t) => {
  let code: unknown
  const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
    try {
      await ctx.request.json()
    } catch (err) {
      code = (err as { code?: unknown }).code
      throw err
    }
    await next()
  }])
  const res = await app.inject({ method: 'POST', url: '/api/orders', headers: { ...headers, 'content-type': 'application/json' }, payload: '{"item":' })
  t.equal(code, 'FST_GATEHOUSE_BAD_REQUEST')
  t.equal(res.statusCode, 400)
  t.same(res.json(), { statusCode: 400, code: 'FST_GATEHOUSE_BAD_REQUEST', error: 'Bad Request', message: 'The request body is not valid JSON' })
  t.equal(upstream.seen.length, 0)
})

t.test('broken gzip in a request body gives 400; an unknown coding 415', async (t) => {
  const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
    await ctx.request.buffer()
    await next()
  }])
  const broken = await app.inject({ method: 'POST', url: '/api/x', headers: { ...headers, 'content-encoding': 'gzip' }, payload: 'not gzip at all' })
  t.equal(broken.statusCode, 400)
  t.equal(broken.json().code, 'FST_GATEHOUSE_BAD_REQUEST')
  const unknown = await app.inject({ method: 'POST', url: '/api/x', headers: { ...headers, 'content-encoding': 'zstd' }, payload: 'whatever' })
  t.equal(unknown.statusCode, 415)
  t.equal(unknown.json().code, 'FST_GATEHOUSE_UNSUPPORTED_CONTENT_ENCODING')
  t.equal(upstream.seen.length, 0)
})

t.test('the buffer cap on request bodies: 413 with zero upstream hits, declared or chunked', async (t) => {
  const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
    await ctx.request.buffer()
    await next()
  }], { maxBufferedBody: 1024 })
  const base = await listen(app)
  const declared = await request(`${base}/api/upload`, { method: 'POST', headers: { ...headers, 'content-type': 'application/octet-stream' }, body: Buffer.alloc(4096) })
  t.equal(declared.statusCode, 413)
  t.same(await declared.body.json(), { statusCode: 413, code: 'FST_GATEHOUSE_BODY_TOO_LARGE', error: 'Payload Too Large', message: 'The request body is too large' })
  const chunked = await request(`${base}/api/upload`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/octet-stream' },
    body: Readable.from(Array.from({ length: 8 }, () => Buffer.alloc(512)))
  })
  t.equal(chunked.statusCode, 413)
  await chunked.body.dump()
  t.equal(upstream.seen.length, 0)
  const small = await request(`${base}/api/upload`, { method: 'POST', headers: { ...headers, 'content-type': 'application/octet-stream' }, body: Buffer.alloc(1024, 1) })
  t.equal(small.statusCode, 200, 'a body at the cap passes, and the gateway still serves')
  await small.body.dump()
  t.equal(upstream.seen[0]?.body.length, 1024)
})

t.test('a replacement stream goes upstream chunked', async (t) => {
  const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
    ctx.request.body = Readable.from([Buffer.from('one,'), Buffer.from('two')])
    await next()
  }])
  const res = await app.inject({ method: 'POST', url: '/api/x', headers: { ...headers, 'content-type': 'text/csv' }, payload: 'ignored' })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.body.toString(), 'one,two')
  t.equal(upstream.seen[0]?.headers['transfer-encoding'], 'chunked')
  t.notOk('content-length' in (upstream.seen[0]?.headers ?? {}))
})

t.test('a GET has an empty body to read; null or empty replacements send none', async (t) => {
  const { app, upstream, headers } = await gateway(t, [async (ctx, next) => {
    ctx.request.headers['x-len'] = String((await ctx.request.buffer()).length)
    ctx.request.body = ctx.request.method === 'GET' ? '' : null
    await next()
  }])
  t.equal((await app.inject({ url: '/api/x', headers })).statusCode, 200)
  t.equal(upstream.seen[0]?.headers['x-len'], '0')
  t.notOk('content-length' in (upstream.seen[0]?.headers ?? {}))
  t.equal((await app.inject({ method: 'POST', url: '/api/x', headers: { ...headers, 'content-type': 'text/plain' }, payload: 'gone' })).statusCode, 200)
  t.equal(upstream.seen[1]?.body.length, 0)
  t.equal(upstream.seen[1]?.headers['content-length'], '0')
})

t.test('with no middleware reading it, a gzip request body passes byte for byte with its headers', async (t) => {
  const encoded = gzipSync('{"item":"bolt","qty":4}')
  const { app, upstream, headers } = await gateway(t, [async (_ctx, next) => { await next() }])
  const res = await app.inject({ method: 'POST', url: '/api/o', headers: { ...headers, 'content-type': 'application/json', 'content-encoding': 'gzip' }, payload: encoded })
  t.equal(res.statusCode, 200)
  t.ok(upstream.seen[0]?.body.equals(encoded), 'not decompressed on the way')
  t.equal(upstream.seen[0]?.headers['content-encoding'], 'gzip')
  t.equal(upstream.seen[0]?.headers['content-length'], String(encoded.length))
})
