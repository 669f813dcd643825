import t from 'tap'
import type { Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'
import type { Middleware } from '../lib/index.js'

/*
 * Middleware that never reads a body must not cost the streaming path: each
 * test blocks one side half-way until the other has seen the first bytes,
 * so a gateway that buffered would time out here.
 */

const MB = 1024 * 1024
const TIMEOUT = { timeout: 10_000 }

/** Touches everything but the body, before and after next(). */
const headersOnly: Middleware = async (ctx, next) => {
  ctx.request.headers['x-before'] = 'yes'
  await next()
  ctx.response!.headers['x-after'] = String(ctx.response!.status)
}

function gate (): { wait: Promise<void>, open: () => void } {
  let open = (): void => {}
  const wait = new Promise<void>((resolve) => { open = resolve })
  return { wait, open }
}

async function app (t: Test, upstreamUrl: string) {
  return buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstreamUrl, middleware: [headersOnly, { phase: 'clientEdge', handler: headersOnly }], maxBufferedBody: 1024 }]
  })
}

t.test('a multi-MB response streams through middleware that does not read bodies', TIMEOUT, async (t) => {
  const half = randomBytes(2 * MB)
  const released = gate()
  let ended = false
  const upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(4 * MB) })
    res.write(half)
    void released.wait.then(() => res.end(half, () => { ended = true }))
  })
  t.teardown(() => { released.open(); return upstream.close() })
  const gateway = await app(t, upstream.url)
  const base = await listen(gateway)
  const res = await request(`${base}/api/big`, { headers: bearer(tokenFor(gateway)) })
  t.equal(res.headers['x-after'], '200')
  let total = 0
  for await (const chunk of res.body) {
    if (total === 0) {
      t.notOk(ended, 'bytes reached the client while the upstream still held the rest')
      released.open()
    }
    total += (chunk as Buffer).length
  }
  t.equal(total, 4 * MB, 'past maxBufferedBody: nothing was buffered')
  t.equal(upstream.seen[0]?.headers['x-before'], 'yes')
})

t.test('a request body streams upstream through middleware that does not read bodies', TIMEOUT, async (t) => {
  const first = gate()
  const upstream = await startUpstream((req, res, seen) => {
    req.once('data', () => first.open())
    req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end(String(seen.body.length)))
  }, { raw: true })
  t.teardown(upstream.close)
  const gateway = await app(t, upstream.url)
  const base = await listen(gateway)
  const req = httpRequest(`${base}/api/upload`, {
    method: 'POST',
    headers: { ...bearer(tokenFor(gateway)), 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
    agent: false
  })
  const response = once(req, 'response') as Promise<[IncomingMessage]>
  req.write(randomBytes(64 * 1024))
  await first.wait
  t.pass('the upstream got the first bytes while the client held the rest')
  req.end(randomBytes(2 * MB))
  const [res] = await response
  const text = Buffer.concat(await Readable.from(res).toArray() as Buffer[]).toString()
  t.equal(res.statusCode, 200)
  t.equal(text, String(64 * 1024 + 2 * MB))
  t.equal(upstream.seen[0]?.headers['transfer-encoding'], 'chunked', 'framing kept: the body was not buffered')
})
