import t from 'tap'
import type { Test } from 'tap'
import { brotliDecompressSync, gunzipSync, gzipSync, inflateSync } from 'node:zlib'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import type { BuildOptions } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'
import type { Upstream, UpstreamHandler } from './helpers/upstream.js'

/** About 10 KB of JSON, compressible like real API responses. */
const DOCUMENT = Buffer.from(JSON.stringify({
  items: Array.from({ length: 120 }, (_, i) => ({ id: i, sku: `SKU-${1000 + i}`, name: `Item number ${i}`, price: (i * 1.37).toFixed(2), inStock: i % 3 !== 0 }))
}))

function serve (body: Buffer, headers: Record<string, string | number>): UpstreamHandler {
  return (_req, res) => {
    res.writeHead(200, { 'content-length': body.length, ...headers })
    res.end(body)
  }
}

async function gateway (t: Test, handler: UpstreamHandler, compress?: BuildOptions['compress']) {
  const upstream: Upstream = await startUpstream(handler)
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], ...(compress === undefined ? {} : { compress }) })
  const get = (acceptEncoding?: string) => app.inject({
    url: '/api/doc',
    headers: { ...bearer(tokenFor(app)), ...(acceptEncoding === undefined ? {} : { 'accept-encoding': acceptEncoding }) }
  })
  return { upstream, get }
}

const ENCODINGS: Array<[string, (body: Buffer) => Buffer]> = [
  ['gzip', gunzipSync],
  ['br', brotliDecompressSync],
  ['deflate', inflateSync]
]

for (const [encoding, decode] of ENCODINGS) {
  t.test(`Accept-Encoding: ${encoding} gives a ${encoding} body that decodes to what the upstream sent`, async (t) => {
    const { upstream, get } = await gateway(t, serve(DOCUMENT, { 'content-type': 'application/json' }))
    const res = await get(encoding)
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-encoding'], encoding)
    t.ok(res.rawPayload.length < DOCUMENT.length, `compressed to ${res.rawPayload.length} bytes`)
    t.ok(decode(res.rawPayload).equals(DOCUMENT), 'decodes to the upstream bytes')
    t.equal(res.headers['content-type'], 'application/json')
    t.not(res.headers['content-length'], String(DOCUMENT.length), 'the upstream length is not kept for a compressed body')
    t.equal(upstream.seen.length, 1)
  })
}

t.test('the client\'s preference among several encodings is honoured', async (t) => {
  const { get } = await gateway(t, serve(DOCUMENT, { 'content-type': 'application/json' }))
  const res = await get('br;q=0.1, gzip;q=1.0')
  t.equal(res.headers['content-encoding'], 'gzip')
  t.ok(gunzipSync(res.rawPayload).equals(DOCUMENT))
})

t.test('Accept-Encoding: identity gives the body as the upstream sent it', async (t) => {
  const { upstream, get } = await gateway(t, serve(DOCUMENT, { 'content-type': 'application/json' }))
  const res = await get('identity')
  t.equal(res.statusCode, 200)
  t.notOk(res.headers['content-encoding'])
  t.ok(res.rawPayload.equals(DOCUMENT))
  t.equal(upstream.seen.length, 1)
})

t.test('no Accept-Encoding gives the body as the upstream sent it', async (t) => {
  const { get } = await gateway(t, serve(DOCUMENT, { 'content-type': 'application/json' }))
  const res = await get()
  t.equal(res.statusCode, 200)
  t.notOk(res.headers['content-encoding'])
  t.ok(res.rawPayload.equals(DOCUMENT))
})

for (const encoding of ['gzip', 'identity']) {
  t.test(`Vary includes accept-encoding (Accept-Encoding: ${encoding})`, async (t) => {
    const { get } = await gateway(t, serve(DOCUMENT, { 'content-type': 'application/json' }))
    const res = await get(encoding)
    const vary = String(res.headers.vary).toLowerCase().split(',').map((token) => token.trim())
    t.ok(vary.includes('accept-encoding'), `vary: ${res.headers.vary}`)
  })
}

t.test('an upstream Vary is kept and accept-encoding is added once', async (t) => {
  const { get } = await gateway(t, serve(DOCUMENT, { 'content-type': 'application/json', vary: 'Origin' }))
  const res = await get('gzip')
  const vary = String(res.headers.vary).toLowerCase().split(',').map((token) => token.trim())
  t.ok(vary.includes('origin'), `vary: ${res.headers.vary}`)
  t.equal(vary.filter((token) => token === 'accept-encoding').length, 1)
})

t.test('an upstream response already gzip-encoded is passed as it is', async (t) => {
  const encoded = gzipSync(DOCUMENT)
  const { upstream, get } = await gateway(t, serve(encoded, { 'content-type': 'application/json', 'content-encoding': 'gzip' }))
  for (const acceptEncoding of ['gzip', 'br, gzip', 'gzip, deflate, br']) {
    const res = await get(acceptEncoding)
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-encoding'], 'gzip')
    t.ok(res.rawPayload.equals(encoded), `the upstream bytes, untouched (${acceptEncoding})`)
    t.ok(gunzipSync(res.rawPayload).equals(DOCUMENT), 'one decode gives the original')
  }
  t.equal(upstream.seen.length, 3)
  t.equal(upstream.seen[0]?.headers['accept-encoding'], 'gzip', 'the upstream learns what the client accepts')
})

t.test('text/event-stream is never compressed', async (t) => {
  const events = Buffer.from(Array.from({ length: 200 }, (_, i) => `id: ${i}\nevent: tick\ndata: {"n":${i},"pad":"${'x'.repeat(30)}"}\n\n`).join(''))
  const { get } = await gateway(t, serve(events, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' }))
  const res = await get('gzip, deflate, br')
  t.equal(res.statusCode, 200)
  t.notOk(res.headers['content-encoding'])
  t.ok(res.rawPayload.equals(events))
  t.equal(res.headers['content-type'], 'text/event-stream')
})

t.test('a body below the threshold is not compressed', async (t) => {
  const small = Buffer.from('{"ok":true}')
  const { get } = await gateway(t, serve(small, { 'content-type': 'application/json' }))
  const res = await get('gzip')
  t.notOk(res.headers['content-encoding'])
  t.equal(res.body, '{"ok":true}')
})

t.test('compress: false leaves responses as the upstream sent them', async (t) => {
  const { get } = await gateway(t, serve(DOCUMENT, { 'content-type': 'application/json' }), false)
  const res = await get('gzip, deflate, br')
  t.equal(res.statusCode, 200)
  t.notOk(res.headers['content-encoding'])
  t.ok(res.rawPayload.equals(DOCUMENT))
  t.equal(res.headers['content-length'], String(DOCUMENT.length))
})

t.test('compression options are passed to @fastify/compress', async (t) => {
  const { get } = await gateway(t, serve(DOCUMENT, { 'content-type': 'application/json' }), { encodings: ['gzip'] })
  const res = await get('br')
  t.notOk(res.headers['content-encoding'], 'br is not offered when only gzip is configured')
  const gz = await get('br, gzip')
  t.equal(gz.headers['content-encoding'], 'gzip')
  t.ok(gunzipSync(gz.rawPayload).equals(DOCUMENT))
})

/** An upstream with a strong ETag that compares If-None-Match strongly (as many do by mistake) and serves Range. */
const ETAG = '"v1-doc"'
const validating: UpstreamHandler = (req, res) => {
  const inm = req.headers['if-none-match']
  if (inm !== undefined && inm.split(',').map((tag) => tag.trim()).includes(ETAG)) {
    res.writeHead(304, { etag: ETAG }).end()
    return
  }
  const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
  if (range !== null) {
    const part = DOCUMENT.subarray(Number(range[1]), Number(range[2]) + 1)
    res.writeHead(206, { 'content-type': 'application/json', etag: ETAG, 'content-length': part.length, 'content-range': `bytes ${range[1]}-${range[2]}/${DOCUMENT.length}` })
    res.end(part)
    return
  }
  res.writeHead(200, { 'content-type': 'application/json', etag: ETAG, 'content-length': DOCUMENT.length })
  res.end(DOCUMENT)
}

t.test('a compressed response gets the weak form of a strong upstream ETag; identity keeps it strong', async (t) => {
  const { get } = await gateway(t, validating)
  const gzip = await get('gzip')
  t.equal(gzip.headers['content-encoding'], 'gzip')
  t.equal(gzip.headers.etag, `W/${ETAG}`)
  const identity = await get()
  t.equal(identity.headers['content-encoding'], undefined)
  t.equal(identity.headers.etag, ETAG)
})

t.test('an upstream response already encoded keeps its ETag', async (t) => {
  const encoded = gzipSync(DOCUMENT)
  const { get } = await gateway(t, serve(encoded, { 'content-type': 'application/json', 'content-encoding': 'gzip', etag: ETAG }))
  t.equal((await get('gzip')).headers.etag, ETAG)
})

t.test('If-None-Match with the weak tag of a compressed variant gets a 304 end to end', async (t) => {
  const upstream: Upstream = await startUpstream(validating)
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const headers = { ...bearer(tokenFor(app)), 'accept-encoding': 'gzip' }
  const first = await app.inject({ url: '/api/doc', headers })
  const res = await app.inject({ url: '/api/doc', headers: { ...headers, 'if-none-match': String(first.headers.etag) } })
  t.equal(res.statusCode, 304)
  t.equal(res.rawPayload.length, 0)
  t.equal(res.headers.etag, `W/${ETAG}`, 'the validator the client holds')
  t.equal(upstream.seen[1]?.headers['if-none-match'], ETAG, 'the upstream is asked with the strong tag')
})

t.test('a Range request is not compressed and keeps its strong ETag', async (t) => {
  const upstream: Upstream = await startUpstream(validating)
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const res = await app.inject({ url: '/api/doc', headers: { ...bearer(tokenFor(app)), 'accept-encoding': 'gzip', range: 'bytes=0-99' } })
  t.equal(res.statusCode, 206)
  t.equal(res.headers['content-encoding'], undefined)
  t.equal(res.headers.etag, ETAG)
  t.ok(res.rawPayload.equals(DOCUMENT.subarray(0, 100)))
})
