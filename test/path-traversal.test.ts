import t from 'tap'
import type { Test } from 'tap'
import { buildApp, listen, tokenFor } from './helpers/app.js'
import type { TargetOptions } from '../lib/index.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { rawGet } from './helpers/raw-request.js'
import type { RawResponse } from './helpers/raw-request.js'

/*
 * app.inject and most clients normalise URLs, so every request here is written
 * by hand on a socket: the gateway sees the path exactly as an attacker sends it.
 */

async function gateway (t: Test, target: Partial<TargetOptions> = {}): Promise<{ upstream: Upstream, port: number, auth: Record<string, string> }> {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, ...target }] })
  const port = Number(new URL(await listen(app)).port)
  return { upstream, port, auth: { Authorization: `Bearer ${tokenFor(app)}` } }
}

function assertRefused (t: Test, res: RawResponse, upstream: Upstream): void {
  t.equal(res.status, 400)
  let body: unknown
  try {
    body = JSON.parse(res.body)
  } catch {
    body = res.body
  }
  t.same(body, {
    statusCode: 400,
    code: 'FST_GATEHOUSE_PATH_NOT_ALLOWED',
    error: 'Bad Request',
    message: 'The request path is not allowed'
  })
  t.equal(upstream.seen.length, 0, 'the upstream was never contacted')
}

const ATTACKS: Array<[string, string]> = [
  ['dot-dot segment', '/api/../admin'],
  ['dot-dot segment at the end', '/api/x/..'],
  ['dot segment', '/api/./x'],
  ['encoded dot-dot', '/api/%2e%2e/admin'],
  ['encoded dot-dot, mixed case', '/api/%2E%2e/admin'],
  ['half-encoded dot-dot', '/api/.%2e/admin'],
  ['double-encoded dot-dot', '/api/%252e%252e/admin'],
  ['triple-encoded dot-dot', '/api/%25252e%25252e/admin'],
  ['dot-dot with an encoded slash', '/api/..%2fadmin'],
  ['encoded slash', '/api/a%2fb'],
  ['encoded slash, upper case', '/api/a%2Fb'],
  ['encoded backslash', '/api/a%5cb'],
  ['dot-dot with an encoded backslash', '/api/..%5cadmin'],
  ['backslash', '/api/a\\b'],
  ['dot-dot backslash', '/api/..\\admin'],
  ['encoded NUL', '/api/a%00b'],
  ['invalid percent-encoding', '/api/%E0%A4%A'],
  ['truncated percent-encoding', '/api/a%'],
  ['overlong UTF-8 dot', '/api/%c0%ae%c0%ae/admin'],
  // Stricter than RFC 3986 on purpose: reply-from refuses `..` at a segment
  // edge too, so the gateway refuses it first, in its own shape.
  ['three dots', '/api/.../x'],
  ['a segment starting with two dots', '/api/..config/x'],
  ['a segment ending with two dots', '/api/x../y'],
  ['double-encoded slash', '/api/a%252fb'],
  // Windows and IIS drop a trailing dot, so `x.` would be read as `x`.
  ['a segment ending with a dot', '/api/x./y'],
  ['a path ending with a dot', '/api/x.'],
  ['full-width dot-dot', '/api/%EF%BC%8E%EF%BC%8E/admin'],
  ['double-encoded full-width dot-dot', '/api/%25EF%25BC%258E%25EF%25BC%258E/admin'],
  ['broken percent-encoding once decoded', '/api/%25E0%25A4%25A'],
  ['four rounds of encoding', '/api/%2525252541']
]

for (const [name, path] of ATTACKS) {
  t.test(`${name} (${path}) gives 400 with zero upstream requests`, async (t) => {
    const { upstream, port, auth } = await gateway(t)
    const res = await rawGet(`http://127.0.0.1:${port}`, path, auth)
    assertRefused(t, res, upstream)
  })
}

t.test('a backslash right after the prefix never reaches the target', async (t) => {
  // `/api\\..\\admin` is not under `/api/`: the host app answers it, the target never sees it.
  const { upstream, port, auth } = await gateway(t)
  const res = await rawGet(`http://127.0.0.1:${port}`, '/api\\..\\admin', auth)
  t.ok(res.status >= 400 && res.status < 500, `refused (${res.status})`)
  t.equal(upstream.seen.length, 0)
})

t.test('a traversal without a token is refused as a path, before the token check', async (t) => {
  const { upstream, port } = await gateway(t)
  const res = await rawGet(`http://127.0.0.1:${port}`, '/api/%2e%2e/admin')
  assertRefused(t, res, upstream)
})

t.test('a traversal on a public target is refused', async (t) => {
  const { upstream, port } = await gateway(t, { public: true })
  const res = await rawGet(`http://127.0.0.1:${port}`, '/api/../admin')
  assertRefused(t, res, upstream)
})

t.test('a traversal across params of the prefix is refused', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/shops/:shopId/tx', upstream: upstream.url }] })
  const port = Number(new URL(await listen(app)).port)
  const auth = { Authorization: `Bearer ${tokenFor(app, { sub: 'WAL001' })}` }
  for (const path of ['/shops/WAL001/tx/../../BBY001/tx', '/shops/WAL001/tx/%2e%2e/%2e%2e/BBY001/tx', '/shops/WAL001/tx/..%2f..%2fBBY001%2ftx']) {
    assertRefused(t, await rawGet(`http://127.0.0.1:${port}`, path, auth), upstream)
  }
})

t.test('a traversal in the param itself is refused', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/shops/:shopId/tx', upstream: upstream.url, rewritePrefix: '/v1/:shopId' }] })
  const port = Number(new URL(await listen(app)).port)
  const auth = { Authorization: `Bearer ${tokenFor(app)}` }
  assertRefused(t, await rawGet(`http://127.0.0.1:${port}`, '/shops/%2e%2e/tx/x', auth), upstream)
  assertRefused(t, await rawGet(`http://127.0.0.1:${port}`, '/shops/a%2fb/tx/x', auth), upstream)
})

t.test('a traversal that a rewritePrefix would hide is still refused', async (t) => {
  const { upstream, port, auth } = await gateway(t, { rewritePrefix: '/v2' })
  assertRefused(t, await rawGet(`http://127.0.0.1:${port}`, '/api/../../etc/passwd', auth), upstream)
})

const LEGIT: Array<[string, string, string]> = [
  ['dots inside a name', '/api/a.b/c..d/.hidden/.e', '/api/a.b/c..d/.hidden/.e'],
  ['an encoded space', '/api/a%20b', '/api/a%20b'],
  ['encoded unreserved characters', '/api/caf%C3%A9/%7Euser', '/api/caf%C3%A9/%7Euser'],
  ['dot segments in the query string', '/api/files?path=../../etc&x=%2e%2e%2f', '/api/files?path=../../etc&x=%2e%2e%2f']
]

for (const [name, path, expected] of LEGIT) {
  t.test(`a legit path with ${name} passes unchanged`, async (t) => {
    const { upstream, port, auth } = await gateway(t)
    const res = await rawGet(`http://127.0.0.1:${port}`, path, auth)
    t.equal(res.status, 200)
    t.equal(upstream.seen.length, 1)
    t.equal(upstream.seen[0]?.url, expected)
  })
}

t.test('a legit path under a base path and a rewritten prefix passes', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `${upstream.url}/base`, rewritePrefix: '/v2' }] })
  const port = Number(new URL(await listen(app)).port)
  const res = await rawGet(`http://127.0.0.1:${port}`, '/api/a.b/%20x', { Authorization: `Bearer ${tokenFor(app)}` })
  t.equal(res.status, 200)
  t.equal(upstream.seen[0]?.url, '/base/v2/a.b/%20x')
})
