import t from 'tap'
import type { Test } from 'tap'
import { brotliCompressSync, deflateRawSync, deflateSync, gunzipSync, gzipSync } from 'node:zlib'
import { Readable } from 'node:stream'
import type { ServerResponse } from 'node:http'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream, UpstreamHandler } from './helpers/upstream.js'
import { signal, within } from './helpers/wait.js'
import type { Middleware, MiddlewareEntry, TargetOptions } from '../lib/index.js'

interface Item { id: number, name: string, cost: number }
const ITEMS: Item[] = Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item ${i}`, cost: i * 3 }))
const DOCUMENT = Buffer.from(JSON.stringify({ items: ITEMS }))

/** An upstream that encodes DOCUMENT as the caller asked (first of gzip, br, deflate), with a strong ETag. */
const negotiating: UpstreamHandler = (req, res) => {
  const accept = String(req.headers['accept-encoding'] ?? '')
  const headers: Record<string, string> = { 'content-type': 'application/json', etag: '"v1"' }
  let body = DOCUMENT
  if (accept.includes('gzip')) {
    body = gzipSync(DOCUMENT)
    headers['content-encoding'] = 'gzip'
  } else if (accept.includes('br')) {
    body = brotliCompressSync(DOCUMENT)
    headers['content-encoding'] = 'br'
  } else if (accept.includes('deflate')) {
    body = deflateSync(DOCUMENT)
    headers['content-encoding'] = 'deflate'
  }
  headers['content-length'] = String(body.length)
  res.writeHead(200, headers).end(body)
}

async function gateway (t: Test, upstream: Upstream, middleware: Array<Middleware<any> | MiddlewareEntry<any>>, extra: Partial<TargetOptions> = {}) {
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, middleware, ...extra }] })
  const headers = bearer(tokenFor(app))
  return {
    app,
    get: (acceptEncoding?: string) => app.inject({
      url: '/api/items',
      headers: acceptEncoding === undefined ? headers : { ...headers, 'accept-encoding': acceptEncoding }
    })
  }
}

const dropCost: Middleware = async (ctx, next) => {
  await next()
  const data = await ctx.response!.json<{ items: Item[] }>()
  ctx.response!.body = { items: data.items.map(({ id, name }) => ({ id, name })) }
}

const EXPECTED = { items: ITEMS.map(({ id, name }) => ({ id, name })) }

t.test('a JSON response is rewritten, then gzip-compressed for the client', async (t) => {
  const upstream = await upstreamFor(t, negotiating)
  const { get } = await gateway(t, upstream, [dropCost])
  const res = await get('gzip')
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen[0]?.headers['accept-encoding'], 'gzip', 'the upstream was asked for gzip, and sent it')
  t.equal(res.headers['content-encoding'], 'gzip', 'compressed again for the client')
  t.same(JSON.parse(gunzipSync(res.rawPayload).toString('utf8')), EXPECTED)
  t.notOk('etag' in res.headers, 'the upstream ETag named other bytes and is dropped')
  t.match(String(res.headers['content-type']), /^application\/json/)
  t.match(String(res.headers.vary), /accept-encoding/i)
})

t.test('a rewritten response to a client without Accept-Encoding has an exact Content-Length', async (t) => {
  const upstream = await upstreamFor(t, negotiating)
  const { get } = await gateway(t, upstream, [dropCost])
  const res = await get()
  t.equal(res.statusCode, 200)
  t.notOk(res.headers['content-encoding'])
  t.equal(res.headers['content-length'], String(res.rawPayload.length))
  t.same(res.json(), EXPECTED)
})

for (const encoding of ['br', 'deflate', 'gzip']) {
  t.test(`a ${encoding}-encoded upstream body is read as JSON; unreplaced, it reaches the client as sent`, async (t) => {
    const upstream = await upstreamFor(t, negotiating)
    const reader: Middleware = async (ctx, next) => {
      await next()
      const data = await ctx.response!.json<{ items: Item[] }>()
      const again = await ctx.response!.text()
      ctx.response!.headers['x-count'] = String(data.items.length)
      ctx.response!.headers['x-same-read'] = String(again === DOCUMENT.toString())
    }
    const { get } = await gateway(t, upstream, [reader])
    const res = await get(encoding)
    t.equal(res.statusCode, 200)
    t.equal(upstream.seen[0]?.headers['accept-encoding'], encoding)
    t.equal(res.headers['x-count'], '200')
    t.equal(res.headers['x-same-read'], 'true', 'a second read gives the same body')
    t.equal(res.headers['content-encoding'], encoding, 'the upstream encoding is kept')
    t.equal(res.headers.etag, '"v1"', 'the body is unchanged, so is its ETag')
    const expected = encoding === 'br' ? brotliCompressSync(DOCUMENT) : encoding === 'gzip' ? gzipSync(DOCUMENT) : deflateSync(DOCUMENT)
    t.ok(res.rawPayload.equals(expected), 'the upstream bytes, untouched')
  })
}

t.test('raw deflate (no zlib wrapper) is decoded too', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'deflate' }).end(deflateRawSync(DOCUMENT))
  })
  const { get } = await gateway(t, upstream, [dropCost])
  const res = await get('identity')
  t.equal(res.statusCode, 200)
  t.notOk(res.headers['content-encoding'])
  t.same(res.json(), EXPECTED)
})

t.test('replacement bodies: string, Buffer, stream and object, with consistent headers', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', etag: '"abc"', 'content-md5': 'xyz', 'content-length': '5' }).end('hello')
  })
  const cases: Array<{ name: string, set: () => unknown, body: string, type: RegExp }> = [
    { name: 'string', set: () => 'HELLO, WORLD', body: 'HELLO, WORLD', type: /^text\/plain/ },
    { name: 'buffer', set: () => Buffer.from('bytes!'), body: 'bytes!', type: /^text\/plain/ },
    { name: 'stream', set: () => Readable.from([Buffer.from('str'), Buffer.from('eam')]), body: 'stream', type: /^text\/plain/ },
    { name: 'object', set: () => ({ ok: true }), body: '{"ok":true}', type: /^application\/json/ }
  ]
  for (const c of cases) {
    const app = await buildApp(t, {
      targets: [{
        prefix: '/api',
        upstream: upstream.url,
        middleware: [async (ctx, next) => {
          await next()
          ctx.response!.body = c.set() as Buffer
        }]
      }]
    })
    const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
    t.equal(res.statusCode, 200, c.name)
    t.equal(res.body, c.body, c.name)
    t.match(String(res.headers['content-type']), c.type, c.name)
    t.notOk('etag' in res.headers, `${c.name}: no ETag`)
    t.notOk('content-md5' in res.headers, `${c.name}: no digest of the old bytes`)
    if (c.name !== 'stream') t.equal(res.headers['content-length'], String(Buffer.byteLength(c.body)), `${c.name}: length`)
    else t.notOk('content-length' in res.headers, 'a stream of unknown length goes chunked')
  }
})

t.test('headers set after the replacement are kept (a middleware may set its own ETag)', async (t) => {
  const upstream = await upstreamFor(t, negotiating)
  const { get } = await gateway(t, upstream, [async (ctx, next) => {
    await next()
    ctx.response!.body = 'short'
    ctx.response!.headers.etag = 'W/"mine"'
  }])
  const res = await get('identity')
  t.equal(res.body, 'short')
  t.equal(res.headers.etag, 'W/"mine"')
})

t.test('an upstream body that is not JSON gives a 502 to a json() reader', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{not json')
  })
  let code: unknown
  const { get } = await gateway(t, upstream, [async (ctx, next) => {
    await next()
    try {
      await ctx.response!.json()
    } catch (err) {
      code = (err as { code?: unknown }).code
      throw err
    }
  }])
  const res = await get()
  t.equal(code, 'FST_GATEHOUSE_UPSTREAM_BODY_INVALID')
  t.equal(res.statusCode, 502)
  t.same(res.json(), { statusCode: 502, code: 'FST_GATEHOUSE_UPSTREAM_BODY_INVALID', error: 'Bad Gateway', message: 'The upstream response body could not be processed' })
})

t.test('an unknown content coding gives a 502 to a reader', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'zstd' }).end('xxxx')
  })
  const { get } = await gateway(t, upstream, [dropCost])
  const res = await get('zstd')
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'FST_GATEHOUSE_UPSTREAM_BODY_INVALID')
})

/** Where an endless upstream reports that its response closed, and whether it had finished. */
interface Closed { promise: Promise<boolean>, resolve: (finished: boolean) => void }

/** Resolves with `finished` once the endless upstream's response has closed, or fails after a deadline. */
function upstreamClosed (closed: Closed): Promise<boolean> {
  return within(closed.promise, { message: 'the endless upstream response closed' })
}

/** An upstream that writes JSON-ish chunks forever (until its client goes away), and reports that. */
function endless (closed: Closed, headers: Record<string, string> = {}): UpstreamHandler {
  return (_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json', ...headers })
    const chunk = Buffer.alloc(64 * 1024, 0x20)
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk)) { /* until backpressure */ }
      if (!res.destroyed) res.once('drain', pump)
    }
    res.on('close', () => closed.resolve(res.writableFinished))
    pump()
  }
}

t.test('the buffer cap: an endless upstream body gives the reader a coded error and the client a 502', async (t) => {
  const closed = signal<boolean>()
  const upstream = await upstreamFor(t, endless(closed))
  let code: unknown
  const { get } = await gateway(t, upstream, [async (ctx, next) => {
    await next()
    try {
      await ctx.response!.buffer()
    } catch (err) {
      code = (err as { code?: unknown }).code
      throw err
    }
  }], { maxBufferedBody: 256 * 1024 })
  const res = await get()
  t.equal(code, 'FST_GATEHOUSE_UPSTREAM_BODY_TOO_LARGE')
  t.equal(res.statusCode, 502)
  t.same(res.json(), { statusCode: 502, code: 'FST_GATEHOUSE_UPSTREAM_BODY_TOO_LARGE', error: 'Bad Gateway', message: 'The upstream response is too large to process' })
  // The upstream stream was destroyed: the upstream sees its connection go.
  t.equal(await upstreamClosed(closed), false, 'the upstream never finished: the gateway stopped reading and closed')
})

t.test('the buffer cap: a declared Content-Length over it fails before reading', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => {
    const body = Buffer.alloc(2048, 0x61)
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) }).end(body)
  })
  const { get } = await gateway(t, upstream, [async (ctx, next) => {
    await next()
    await ctx.response!.text()
  }], { maxBufferedBody: 1024 })
  const res = await get()
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'FST_GATEHOUSE_UPSTREAM_BODY_TOO_LARGE')
})

t.test('the buffer cap applies to the decoded size too (a gzip bomb)', async (t) => {
  const bomb = gzipSync(Buffer.alloc(16 * 1024 * 1024))
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(bomb.length) }).end(bomb)
  })
  t.ok(bomb.length < 64 * 1024, 'small on the wire')
  const { get } = await gateway(t, upstream, [dropCost], { maxBufferedBody: 1024 * 1024 })
  const res = await get('gzip')
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'FST_GATEHOUSE_UPSTREAM_BODY_TOO_LARGE')
})

t.test('a body that was not read keeps flowing even when over the cap', async (t) => {
  const body = Buffer.alloc(512 * 1024, 0x62)
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body)
  })
  const { get } = await gateway(t, upstream, [async (ctx, next) => {
    await next()
    ctx.response!.headers['x-touched'] = 'headers only'
  }], { maxBufferedBody: 1024 })
  const res = await get()
  t.equal(res.statusCode, 200)
  t.ok(res.rawPayload.equals(body))
})

t.test('maxBufferedBody must be a positive integer', async (t) => {
  await t.rejects(buildApp(t, { targets: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', maxBufferedBody: -1 }] }), { code: 'FST_GATEHOUSE_INVALID_OPTION' })
})

t.test('ctx.respond() answers early; an outer middleware reads and rewrites that answer; zero upstream hits', async (t) => {
  const upstream = await upstreamFor(t, negotiating)
  const { get } = await gateway(t, upstream, [
    {
      phase: 'clientEdge',
      handler: async (ctx, next) => {
        await next()
        const cached = await ctx.response!.json<{ items: Item[] }>()
        ctx.response!.headers['x-outer-read'] = String(cached.items.length)
        ctx.response!.body = { ...cached, servedBy: 'cache' }
      }
    },
    async (ctx) => {
      ctx.respond(200, { items: ITEMS.slice(0, 2) }, { 'X-Cache': 'hit' })
    }
  ])
  const res = await get()
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 0, 'the upstream was never contacted')
  t.equal(res.headers['x-outer-read'], '2')
  t.equal(res.headers['x-cache'], 'hit', 'header names are normalised')
  t.same(res.json(), { items: ITEMS.slice(0, 2), servedBy: 'cache' })
})

t.test('ctx.respond() with a gzip-encoded Buffer: readers decode it by its headers', async (t) => {
  const upstream = await upstreamFor(t, negotiating)
  const { get } = await gateway(t, upstream, [
    async (ctx, next) => {
      await next()
      ctx.response!.headers['x-read'] = String((await ctx.response!.json<{ items: Item[] }>()).items.length)
    },
    async (ctx) => {
      ctx.respond(200, gzipSync(DOCUMENT), { 'content-type': 'application/json', 'content-encoding': 'gzip' })
    }
  ])
  const res = await get('gzip')
  t.equal(res.headers['x-read'], '200')
  t.equal(res.headers['content-encoding'], 'gzip')
  t.ok(gunzipSync(res.rawPayload).equals(DOCUMENT))
  t.equal(upstream.seen.length, 0)
})

t.test('a plain object assigned to ctx.response gets the body API', async (t) => {
  const upstream = await upstreamFor(t, negotiating)
  const { get } = await gateway(t, upstream, [
    async (ctx, next) => {
      await next()
      ctx.response!.headers['x-text'] = await ctx.response!.text()
    },
    async (ctx) => {
      ctx.response = { status: 202, headers: {}, body: Readable.from(['acc', 'epted']) }
    }
  ])
  const res = await get()
  t.equal(res.statusCode, 202)
  t.equal(res.headers['x-text'], 'accepted')
  t.equal(res.body, 'accepted', 'the bytes read are the bytes sent')
})

t.test('a middleware that throws after next() gives a clean 500, the upstream stream is destroyed, the gateway keeps serving', async (t) => {
  const closed = signal<boolean>()
  let throwNow = true
  const upstream = await upstreamFor(t, (req, res, seen) => {
    if (req.url === '/api/endless') endless(closed)(req, res, seen)
    else negotiating(req, res, seen)
  })
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (ctx, next) => {
        await next()
        if (throwNow && ctx.request.path === '/api/endless') throw new Error('secret detail')
      }]
    }]
  })
  const headers = bearer(tokenFor(app))
  const res = await app.inject({ url: '/api/endless', headers })
  t.equal(res.statusCode, 500)
  t.same(res.json(), { statusCode: 500, code: 'FST_GATEHOUSE_INTERNAL', error: 'Internal Server Error', message: 'Internal Server Error' })
  t.equal(await upstreamClosed(closed), false, 'the endless upstream response was cut')
  throwNow = false
  const after = await app.inject({ url: '/api/items', headers })
  t.equal(after.statusCode, 200, 'the next request is served')
  t.ok(after.rawPayload.equals(DOCUMENT))
})

t.test('a middleware that throws half-way through reading gives a clean 500', async (t) => {
  const closed = signal<boolean>()
  const upstream = await upstreamFor(t, endless(closed))
  const { get } = await gateway(t, upstream, [async (ctx, next) => {
    await next()
    void ctx.response!.buffer().catch(() => {})
    throw Object.assign(new Error('bad upstream data'), { statusCode: 502 })
  }])
  const res = await get()
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_GATEHOUSE_INTERNAL')
  await upstreamClosed(closed)
  t.pass('the upstream was released')
})

t.test('a replaced upstream body that nobody reads is released once the reply is done', async (t) => {
  const closed = signal<boolean>()
  const upstream = await upstreamFor(t, endless(closed))
  const { get } = await gateway(t, upstream, [async (ctx, next) => {
    await next()
    ctx.response!.body = { replaced: true }
  }])
  const res = await get()
  t.equal(res.statusCode, 200)
  t.same(res.json(), { replaced: true })
  t.equal(await upstreamClosed(closed), false, 'the unread upstream response was cut, not read to its end')
})
