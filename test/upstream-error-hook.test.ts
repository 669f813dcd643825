import t from 'tap'
import type { Test } from 'tap'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { closedPort, upstreamFor } from './helpers/upstream.js'
import type { UpstreamHandler } from './helpers/upstream.js'
import type { TargetOptions, UpstreamFailure } from '../lib/index.js'
import { errors } from '../lib/index.js'

const unavailable: UpstreamHandler = (_req, res) => {
  res.writeHead(503, { 'content-type': 'application/json', 'x-internal-host': 'db-7' }).end('{"reason":"db-7 is down","retryIn":30}')
}

async function gateway (t: Test, upstream: string, target: Partial<TargetOptions<{ seen?: string }>>) {
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream, ...target }] })
  return { app, get: () => app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) }) }
}

t.test('onUpstreamError turns an upstream 503 into the answer it returns, after reading the upstream body', async (t) => {
  const upstream = await upstreamFor(t, unavailable)
  const calls: UpstreamFailure[] = []
  const { get } = await gateway(t, upstream.url, {
    async onUpstreamError (error, ctx) {
      calls.push(error)
      const detail = await ctx.response!.json<{ retryIn: number }>()
      return { status: 503, body: { message: 'Inventory is in maintenance' }, headers: { 'Retry-After': String(detail.retryIn) } }
    }
  })
  const res = await get()
  t.equal(res.statusCode, 503)
  t.same(res.json(), { message: 'Inventory is in maintenance' })
  t.equal(res.headers['retry-after'], '30')
  t.notOk('x-internal-host' in res.headers, 'nothing of the upstream answer leaks')
  t.equal(calls.length, 1)
  t.equal(calls[0]?.code, 'FST_GATEHOUSE_UPSTREAM_STATUS')
  t.equal(calls[0]?.statusCode, 503, 'the status the caller would get by default')
  t.ok(calls[0] instanceof errors.UpstreamStatusError)
})

t.test('onUpstreamError returning nothing keeps the upstream answer as it was', async (t) => {
  const upstream = await upstreamFor(t, unavailable)
  let called = 0
  const { get } = await gateway(t, upstream.url, { onUpstreamError: () => { called++ } })
  const res = await get()
  t.equal(called, 1)
  t.equal(res.statusCode, 503)
  t.same(res.json(), { reason: 'db-7 is down', retryIn: 30 })
})

t.test('onUpstreamError may answer with ctx.respond, and middleware sees that answer after next()', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => { res.writeHead(404).end('no such thing') })
  const { get } = await gateway(t, upstream.url, {
    onUpstreamError: (error, ctx) => {
      ctx.state.seen = error.code
      ctx.respond(404, { message: 'Unknown item' })
    },
    middleware: [async (ctx, next) => {
      await next()
      ctx.response!.headers['x-seen'] = `${ctx.state.seen ?? ''} ${(await ctx.response!.json<{ message: string }>()).message}`
    }]
  })
  const res = await get()
  t.equal(res.statusCode, 404)
  t.same(res.json(), { message: 'Unknown item' })
  t.equal(res.headers['x-seen'], 'FST_GATEHOUSE_UPSTREAM_STATUS Unknown item')
})

t.test('onUpstreamError is not called for 2xx and 3xx answers', async (t) => {
  const upstream = await upstreamFor(t, (req, res) => {
    if (req.url === '/api/x') res.writeHead(302, { location: '/elsewhere' }).end()
    else res.writeHead(200).end('ok')
  })
  let called = 0
  const { app, get } = await gateway(t, upstream.url, { onUpstreamError: () => { called++ } })
  t.equal((await get()).statusCode, 302)
  t.equal((await app.inject({ url: '/api/y', headers: bearer(tokenFor(app)) })).statusCode, 200)
  t.equal(called, 0)
})

t.test('onUpstreamError for a refused connection: a gatehouse error with the original cause', async (t) => {
  const port = await closedPort()
  const calls: UpstreamFailure[] = []
  let responseDuringHook: unknown = 'unset'
  const { get } = await gateway(t, `http://127.0.0.1:${port}`, {
    onUpstreamError: (error, ctx) => {
      calls.push(error)
      responseDuringHook = ctx.response
      return { status: 503, body: 'The inventory service is offline', headers: { 'content-type': 'text/plain' } }
    }
  })
  const res = await get()
  t.equal(res.statusCode, 503)
  t.equal(res.body, 'The inventory service is offline')
  t.equal(calls.length, 1)
  t.equal(calls[0]?.code, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE')
  t.equal(calls[0]?.statusCode, 502)
  t.equal(responseDuringHook, undefined, 'no upstream answer to read')
  // The cause chain leads to the socket error.
  let cause: unknown = calls[0]?.cause
  let codes = ''
  for (let depth = 0; cause !== undefined && depth < 5; depth++) {
    codes += ` ${String((cause as { code?: unknown }).code)}`
    cause = (cause as { cause?: unknown }).cause
  }
  t.match(codes, /ECONNREFUSED/)
})

t.test('without an answer from onUpstreamError a refused connection stays a 502', async (t) => {
  const port = await closedPort()
  let called = 0
  const { get } = await gateway(t, `http://127.0.0.1:${port}`, { onUpstreamError: () => { called++ } })
  const res = await get()
  t.equal(called, 1)
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE')
})

t.test('onUpstreamError for a timeout sees a 504 error', async (t) => {
  const upstream = await upstreamFor(t, () => { /* never answers */ })
  let seen: UpstreamFailure | undefined
  const { get } = await gateway(t, upstream.url, {
    timeouts: { response: 200 },
    onUpstreamError: (error) => { seen = error }
  })
  const res = await get()
  t.equal(res.statusCode, 504)
  t.equal(seen?.code, 'FST_GATEHOUSE_UPSTREAM_TIMEOUT')
  t.equal(seen?.statusCode, 504)
})

t.test('an onUpstreamError that throws gives the standard error shape', async (t) => {
  const upstream = await upstreamFor(t, unavailable)
  const { get } = await gateway(t, upstream.url, {
    onUpstreamError: (error) => { throw error }
  })
  const res = await get()
  t.equal(res.statusCode, 503, 'the upstream status, in the gatehouse shape')
  t.same(res.json(), { statusCode: 503, code: 'FST_GATEHOUSE_UPSTREAM_STATUS', error: 'Service Unavailable', message: 'The upstream service answered with status 503' })
  const failing = await gateway(t, upstream.url, { onUpstreamError: () => { throw new Error('oops') } })
  const res2 = await failing.get()
  t.equal(res2.statusCode, 500)
  t.equal(res2.json().code, 'FST_GATEHOUSE_INTERNAL')
})

t.test('without onUpstreamError, upstream statuses pass and transport failures map as before', async (t) => {
  const upstream = await upstreamFor(t, unavailable)
  const { get } = await gateway(t, upstream.url, {})
  const res = await get()
  t.equal(res.statusCode, 503)
  t.same(res.json(), { reason: 'db-7 is down', retryIn: 30 })
})

t.test('onUpstreamError must be a function', async (t) => {
  await t.rejects(buildApp(t, { targets: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', onUpstreamError: 'no' as never }] }), { code: 'FST_GATEHOUSE_INVALID_OPTION' })
})
