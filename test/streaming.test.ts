import t from 'tap'
import type { Test } from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import type { IncomingMessage } from 'node:http'
import { once } from 'node:events'
import { createGunzip } from 'node:zlib'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'
import type { Upstream, UpstreamHandler } from './helpers/upstream.js'
import { signal } from './helpers/wait.js'

/*
 * Streaming means the gateway forwards bytes as they come. Each test blocks one
 * side half-way until the other side has seen the first bytes: a gateway that
 * buffered would never get there, and the test would time out.
 */

const MB = 1024 * 1024
const CHUNK = 64 * 1024
const STREAM_TIMEOUT = 10_000

function sha256 (data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Random (incompressible) data cut in CHUNK-sized pieces. */
function chunksOf (bytes: number): Buffer[] {
  const data = randomBytes(bytes)
  const chunks: Buffer[] = []
  for (let at = 0; at < data.length; at += CHUNK) chunks.push(data.subarray(at, at + CHUNK))
  return chunks
}

/** Writes `chunks` honouring backpressure. */
async function writeAll (stream: NodeJS.WritableStream, chunks: Buffer[]): Promise<void> {
  for (const chunk of chunks) {
    if (!stream.write(chunk)) await once(stream as unknown as NodeJS.EventEmitter, 'drain')
  }
}

interface HalfwayUpstream {
  upstream: Upstream
  /** The bytes the upstream sends in all. */
  sent: Buffer
  /** Lets the upstream write its second half. */
  release: () => void
  /** True once the upstream has ended its response. */
  finished: () => boolean
}

/** An upstream that sends half of an 8 MB body, then waits for `release()` before the rest. */
async function halfwayUpstream (t: Test): Promise<HalfwayUpstream> {
  const first = chunksOf(4 * MB)
  const second = chunksOf(4 * MB)
  const gate = signal()
  let ended = false
  const handler: UpstreamHandler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 8 * MB })
    void (async () => {
      await writeAll(res, first)
      await gate.promise
      await writeAll(res, second)
      res.end(() => { ended = true })
    })()
  }
  const upstream = await startUpstream(handler)
  // Never leave the upstream blocked, whatever happened in the test.
  t.teardown(() => { gate.resolve(); return upstream.close() })
  return { upstream, sent: Buffer.concat([...first, ...second]), release: gate.resolve, finished: () => ended }
}

t.test('a multi-MB response reaches the client while the upstream is still sending', { timeout: STREAM_TIMEOUT }, async (t) => {
  const { upstream, sent, release, finished } = await halfwayUpstream(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)

  const res = await request(`${base}/api/big`, { headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  const received: Buffer[] = []
  let bytesBeforeRelease = -1
  for await (const chunk of res.body) {
    if (bytesBeforeRelease === -1) {
      bytesBeforeRelease = (chunk as Buffer).length
      t.notOk(finished(), 'the first bytes arrived while the upstream was blocked half-way')
      release()
    }
    received.push(chunk as Buffer)
  }
  t.ok(bytesBeforeRelease > 0)
  const body = Buffer.concat(received)
  t.equal(body.length, 8 * MB)
  t.equal(sha256(body), sha256(sent), 'every byte, in order')
  t.ok(finished())
  t.equal(upstream.seen.length, 1)
})

t.test('a compressed multi-MB response streams too', { timeout: STREAM_TIMEOUT }, async (t) => {
  const { upstream, sent, release, finished } = await halfwayUpstream(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)

  const res = await request(`${base}/api/big`, { headers: { ...bearer(tokenFor(app)), 'accept-encoding': 'gzip' } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-encoding'], 'gzip')
  const gunzip = createGunzip()
  let firstSeen = false
  const decoded: Buffer[] = []
  gunzip.on('data', (chunk: Buffer) => decoded.push(chunk))
  for await (const chunk of res.body) {
    if (!firstSeen) {
      firstSeen = true
      t.notOk(finished(), 'compressed bytes arrived while the upstream was blocked half-way')
      release()
    }
    gunzip.write(chunk)
  }
  gunzip.end()
  await once(gunzip, 'end')
  const body = Buffer.concat(decoded)
  t.equal(body.length, 8 * MB)
  t.equal(sha256(body), sha256(sent))
})

interface StreamingSink {
  upstream: Upstream
  /** Resolves when the upstream has received the first bytes of the body. */
  firstBytes: Promise<void>
}

/** An upstream that reports the first body bytes at once and answers with the total once the body has ended. */
async function streamingSink (t: Test): Promise<StreamingSink> {
  const first = signal()
  const upstream = await startUpstream((req, res, seen) => {
    req.once('data', () => first.resolve())
    req.on('end', () => {
      const body = JSON.stringify({ bytes: seen.body.length, sha256: sha256(seen.body) })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  }, { raw: true })
  t.teardown(upstream.close)
  return { upstream, firstBytes: first.promise }
}

async function uploadHoldingTheRest (t: Test, framing: 'chunked' | 'content-length'): Promise<void> {
  const { upstream, firstBytes } = await streamingSink(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const head = chunksOf(CHUNK)
  const rest = chunksOf(4 * MB)
  const all = Buffer.concat([...head, ...rest])

  const headers: Record<string, string | number> = { ...bearer(tokenFor(app)), 'content-type': 'application/octet-stream' }
  if (framing === 'content-length') headers['content-length'] = all.length
  else headers['transfer-encoding'] = 'chunked'
  const req = httpRequest(`${base}/api/upload`, { method: 'POST', headers, agent: false })
  const response = once(req, 'response') as Promise<[IncomingMessage]>
  req.on('error', (err) => t.fail(String(err)))

  await writeAll(req, head)
  // The client holds the rest until the upstream has seen the first bytes.
  await firstBytes
  t.pass('the upstream got the first bytes while the client still held the rest')
  t.equal(upstream.seen.length, 1)
  t.ok((upstream.seen[0]?.body.length ?? 0) < all.length, 'the upstream had only part of the body')
  await writeAll(req, rest)
  req.end()

  const [res] = await response
  const text = Buffer.concat(await Readable.from(res).toArray() as Buffer[]).toString()
  t.equal(res.statusCode, 200)
  t.same(JSON.parse(text), { bytes: all.length, sha256: sha256(all) }, 'the whole body arrived intact')
  const seenHeaders = upstream.seen[0]?.headers ?? {}
  if (framing === 'content-length') t.equal(seenHeaders['content-length'], String(all.length))
  else t.equal(seenHeaders['transfer-encoding'], 'chunked')
}

t.test('a chunked request body streams to the upstream before the client has finished sending it', { timeout: STREAM_TIMEOUT }, async (t) => {
  await uploadHoldingTheRest(t, 'chunked')
})

t.test('a request body with a content-length streams to the upstream before the client has finished sending it', { timeout: STREAM_TIMEOUT }, async (t) => {
  await uploadHoldingTheRest(t, 'content-length')
})
