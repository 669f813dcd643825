import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node'
import gatehouse, { gatehouseFrameworkErrors } from '../lib/index.js'
import type { GatehouseOptions, TargetOptions } from '../lib/index.js'
import { SECRET, bearer, testUsers, tokenFor } from './helpers/app.js'
import { closedPort, upstreamFor } from './helpers/upstream.js'
import { openClient, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'

const CALLER_TRACE = '0af7651916cd43dd8448eb211c80319c'
const CALLER_SPAN = 'b7ad6b7169203331'

/**
 * A tracer provider recording in memory. Registered globally as an
 * application would (W3C propagator, async context), and reset after.
 */
function recorder (t: Test): { provider: NodeTracerProvider, spans: () => ReadableSpan[] } {
  const exporter = new InMemorySpanExporter()
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  provider.register()
  t.teardown(async () => {
    trace.disable()
    context.disable()
    propagation.disable()
    await provider.shutdown()
  })
  return { provider, spans: () => exporter.getFinishedSpans() }
}

async function gateway (t: Test, targets: TargetOptions<any>[], tracing: GatehouseOptions['tracing'], host?: (app: ReturnType<typeof Fastify>) => Promise<void>) {
  const app = Fastify({ logger: false, frameworkErrors: gatehouseFrameworkErrors })
  t.teardown(() => app.close())
  if (host !== undefined) await host(app)
  await app.register(gatehouse, { auth: { secret: SECRET, login: { verify: await testUsers() } }, targets, tracing })
  await app.ready()
  return app
}

function named (spans: ReadableSpan[], name: string): ReadableSpan[] {
  return spans.filter((span) => span.name === name)
}

function one (t: Test, spans: ReadableSpan[], name: string): ReadableSpan {
  const found = named(spans, name)
  t.equal(found.length, 1, `one ${name} span`)
  return found[0] as ReadableSpan
}

function parentOf (span: ReadableSpan): string | undefined {
  return span.parentSpanContext?.spanId
}

/** Every attribute value and status message of every span, as one string. */
function everything (spans: ReadableSpan[]): string {
  return JSON.stringify(spans.map((span) => ({ attributes: span.attributes, status: span.status, events: span.events })))
}

t.test('a proxied request: server span, then admission, middleware and the upstream client span, with traceparent sent upstream', async (t) => {
  const { provider, spans } = recorder(t)
  const upstream = await upstreamFor(t)
  const app = await gateway(t, [{
    name: 'orders',
    prefix: '/api',
    upstream: upstream.url,
    credentials: { header: 'x-api-key', value: 'key-secret-1' },
    middleware: [async (_ctx, next) => { await next() }]
  }], { tracerProvider: provider })
  const token = tokenFor(app)
  const res = await app.inject({ url: '/api/items?card=4111111111111111', headers: bearer(token) })
  t.equal(res.statusCode, 200)

  const all = spans()
  const server = one(t, all, 'request')
  const admission = one(t, all, 'gatehouse.admission')
  const middleware = one(t, all, 'gatehouse.middleware')
  const client = one(t, all, 'gatehouse.upstream')
  t.equal(server.kind, SpanKind.SERVER)
  t.equal(parentOf(server), undefined, 'a new trace')
  t.equal(server.attributes['url.path'], '/api/items', 'no query on the server span')
  t.equal(server.attributes['gatehouse.target'], 'orders')
  for (const span of [admission, middleware, client]) {
    t.equal(span.spanContext().traceId, server.spanContext().traceId)
    t.equal(span.attributes['gatehouse.target'], 'orders')
  }
  t.equal(parentOf(admission), server.spanContext().spanId)
  t.equal(parentOf(middleware), server.spanContext().spanId)
  t.equal(parentOf(client), middleware.spanContext().spanId, 'the upstream call is the core of the middleware onion')
  t.equal(admission.kind, SpanKind.INTERNAL)
  t.equal(client.kind, SpanKind.CLIENT)
  t.equal(middleware.attributes['gatehouse.middleware.count'], 1)
  t.equal(client.attributes['gatehouse.upstream.origin'], upstream.url)
  t.equal(client.attributes['http.request.method'], 'GET')
  t.equal(client.attributes['http.response.status_code'], 200)
  t.equal(client.status.code, SpanStatusCode.UNSET)

  const seen = upstream.seen[0]
  t.equal(seen?.headers.traceparent, `00-${server.spanContext().traceId}-${client.spanContext().spanId}-01`)
  t.equal(seen?.headers['x-api-key'], 'key-secret-1')
  const recorded = everything(all)
  for (const secret of [token, '4111111111111111', 'key-secret-1']) t.notOk(recorded.includes(secret), 'no token, query value or credential in the spans')
})

t.test('a caller-sent traceparent is continued, and its tracestate goes upstream', async (t) => {
  const { provider, spans } = recorder(t)
  const upstream = await upstreamFor(t)
  const app = await gateway(t, [{ prefix: '/api', upstream: upstream.url }], { tracerProvider: provider })
  const res = await app.inject({
    url: '/api/x',
    headers: { ...bearer(tokenFor(app)), traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01`, tracestate: 'vendor=abc' }
  })
  t.equal(res.statusCode, 200)
  const all = spans()
  const server = one(t, all, 'request')
  const client = one(t, all, 'gatehouse.upstream')
  t.equal(server.spanContext().traceId, CALLER_TRACE)
  t.equal(parentOf(server), CALLER_SPAN)
  t.equal(named(all, 'gatehouse.middleware').length, 0, 'no middleware, no middleware span')
  t.equal(parentOf(client), server.spanContext().spanId)
  t.equal(upstream.seen[0]?.headers.traceparent, `00-${CALLER_TRACE}-${client.spanContext().spanId}-01`)
  t.equal(upstream.seen[0]?.headers.tracestate, 'vendor=abc')
})

t.test('a bad token: a server span and a failed admission, no upstream span, nothing sent upstream', async (t) => {
  const { provider, spans } = recorder(t)
  const upstream = await upstreamFor(t)
  const app = await gateway(t, [{ prefix: '/api', upstream: upstream.url }], { tracerProvider: provider })
  const res = await app.inject({ url: '/api/x', headers: bearer('not-a-token') })
  t.equal(res.statusCode, 401)
  const all = spans()
  const server = one(t, all, 'request')
  t.equal(server.attributes['http.response.status_code'], 401)
  const admission = one(t, all, 'gatehouse.admission')
  t.equal(parentOf(admission), server.spanContext().spanId)
  t.equal(admission.status.code, SpanStatusCode.ERROR)
  t.equal(admission.status.message, 'FST_GATEHOUSE_TOKEN_INVALID')
  t.equal(named(all, 'gatehouse.upstream').length, 0)
  t.equal(upstream.seen.length, 0)
})

t.test('a rule refusal fails the admission span with its code', async (t) => {
  const { provider, spans } = recorder(t)
  const upstream = await upstreamFor(t)
  const app = await gateway(t, [{ prefix: '/api', upstream: upstream.url, authorize: () => false }], { tracerProvider: provider })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 403)
  const admission = one(t, spans(), 'gatehouse.admission')
  t.equal(admission.status.code, SpanStatusCode.ERROR)
  t.equal(admission.attributes['error.type'], 'FST_GATEHOUSE_FORBIDDEN')
  t.equal(upstream.seen.length, 0)
})

t.test('an upstream that is down: the client span fails with the gatehouse code, no stack, no address', async (t) => {
  const { provider, spans } = recorder(t)
  const port = await closedPort()
  const app = await gateway(t, [{ prefix: '/api', upstream: `http://127.0.0.1:${port}` }], { tracerProvider: provider })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 502)
  const all = spans()
  const client = one(t, all, 'gatehouse.upstream')
  t.equal(client.status.code, SpanStatusCode.ERROR)
  t.equal(client.status.message, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE')
  t.equal(client.attributes['error.type'], 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE')
  t.same(one(t, all, 'request').status, { code: SpanStatusCode.ERROR, message: 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE' })
  const recorded = everything(all).replaceAll(`"http://127.0.0.1:${port}"`, '')
  for (const leak of ['ECONNREFUSED', 'UND_ERR', 'stack', 'exception', `:${port}`]) t.notOk(recorded.includes(leak), `no "${leak}" in the spans`)
})

t.test('an upstream 5xx answer and a failing middleware mark their spans', async (t) => {
  const { provider, spans } = recorder(t)
  const upstream = await upstreamFor(t, (_req, res) => { res.writeHead(503).end() })
  const app = await gateway(t, [{
    prefix: '/api',
    upstream: upstream.url,
    middleware: [async (ctx, next) => {
      await next()
      if (ctx.fastifyRequest.url.endsWith('/boom')) throw new Error('middleware bug at 10.1.2.3')
    }]
  }], { tracerProvider: provider })
  t.equal((await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })).statusCode, 503)
  const client = one(t, spans(), 'gatehouse.upstream')
  t.equal(client.status.code, SpanStatusCode.ERROR)
  t.equal(client.attributes['error.type'], '503')
  t.equal(client.attributes['http.response.status_code'], 503)

  t.equal((await app.inject({ url: '/api/boom', headers: bearer(tokenFor(app)) })).statusCode, 500)
  const middleware = named(spans(), 'gatehouse.middleware')[1] as ReadableSpan
  t.equal(middleware.status.code, SpanStatusCode.ERROR)
  t.equal(middleware.status.message, '_OTHER', 'an error without a gateway code: no message recorded')
  t.same(named(spans(), 'request')[1]?.status, { code: SpanStatusCode.ERROR, message: '_OTHER' })
  t.notOk(everything(spans()).includes('10.1.2.3'))
})

t.test('a middleware that answers itself: no upstream span, no traceparent anywhere', async (t) => {
  const { provider, spans } = recorder(t)
  const upstream = await upstreamFor(t)
  const app = await gateway(t, [{
    prefix: '/api',
    upstream: upstream.url,
    middleware: [async (ctx, next) => { ctx.respond(204); await next() }]
  }], { tracerProvider: provider })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 204)
  t.equal(named(spans(), 'gatehouse.upstream').length, 0)
  t.equal(named(spans(), 'gatehouse.middleware').length, 1)
  t.equal(upstream.seen.length, 0)
})

t.test('tracing: true uses the global provider; a host that registered @fastify/otel keeps its own server span', async (t) => {
  const { spans } = recorder(t)
  const upstream = await upstreamFor(t)
  const app = await gateway(t, [{ prefix: '/api', upstream: upstream.url, public: true }], true, async (host) => {
    await host.register(new FastifyOtelInstrumentation().plugin())
  })
  const res = await app.inject({ url: '/api/x' })
  t.equal(res.statusCode, 200)
  const all = spans()
  const server = one(t, all, 'request')
  t.equal(parentOf(one(t, all, 'gatehouse.admission')), server.spanContext().spanId)
  t.equal(upstream.seen[0]?.headers.traceparent, `00-${server.spanContext().traceId}-${one(t, all, 'gatehouse.upstream').spanContext().spanId}-01`)
})

t.test('tracing off: no spans even with a provider registered, and the caller\'s traceparent passes as any header', async (t) => {
  const { spans } = recorder(t)
  const upstream = await upstreamFor(t)
  const app = await gateway(t, [{ prefix: '/api', upstream: upstream.url }], false)
  const traceparent = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app)), traceparent } })
  t.equal(res.statusCode, 200)
  t.equal(spans().length, 0)
  t.equal(upstream.seen[0]?.headers.traceparent, traceparent)
})

t.test('invalid tracing options fail at register with the option path', async (t) => {
  for (const [tracing, message] of [
    ['yes', /tracing/],
    [{ tracerProvider: {} }, /tracing\.tracerProvider/],
    [{ provider: {} }, /tracing.*provider/]
  ] as const) {
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    app.register(gatehouse, { auth: { secret: SECRET, login: false }, targets: [], tracing: tracing as any })
    await t.rejects(async () => { await app.ready() }, { code: 'FST_GATEHOUSE_INVALID_OPTION', message })
  }
})

t.test('a path refused before the token check: the server span fails with the code, nothing else', async (t) => {
  const { provider, spans } = recorder(t)
  const upstream = await upstreamFor(t)
  const app = await gateway(t, [{ prefix: '/api', upstream: upstream.url }], { tracerProvider: provider })
  const res = await app.inject({ url: '/api/a%2fb', headers: bearer(tokenFor(app)) })
  t.equal(res.json().code, 'FST_GATEHOUSE_PATH_NOT_ALLOWED')
  const all = spans()
  t.same(all.map((span) => span.name), ['request'])
  t.same(all[0]?.status, { code: SpanStatusCode.ERROR, message: res.json().code })
})

t.test('a WebSocket handshake gets the middleware and upstream spans and sends traceparent upstream', async (t) => {
  const { provider, spans } = recorder(t)
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const app = await gateway(t, [{
    prefix: '/live',
    upstream: upstream.url,
    websocket: true,
    middleware: [async (_ctx, next) => { await next() }]
  }], { tracerProvider: provider })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  const client = await openClient(wsUrl(base, '/live/feed'), [], { headers: bearer(tokenFor(app)) })
  t.teardown(() => client.terminate())
  const all = spans()
  const client101 = one(t, all, 'gatehouse.upstream')
  const middleware = one(t, all, 'gatehouse.middleware')
  t.equal(parentOf(client101), middleware.spanContext().spanId)
  t.equal(client101.attributes['http.response.status_code'], 101)
  t.equal(upstream.handshakes[0]?.headers.traceparent, `00-${client101.spanContext().traceId}-${client101.spanContext().spanId}-01`)
})

t.test('the OpenTelemetry packages are never imported statically: with tracing off they are not loaded', async (t) => {
  const { readdir, readFile } = await import('node:fs/promises')
  const files = (await readdir(new URL('../lib', import.meta.url), { recursive: true })).filter((file) => file.endsWith('.ts'))
  t.ok(files.length > 20)
  const statics: string[] = []
  for (const file of files) {
    const text = await readFile(new URL(`../lib/${file}`, import.meta.url), 'utf8')
    // Each import statement up to its `from '...'`, single- or multi-line.
    for (const match of text.matchAll(/^import (?!type )[\s\S]*?from '([^']+)'/gm)) {
      if (/^(@opentelemetry\/|@fastify\/otel$)/.test(match[1] as string)) statics.push(`${file}: ${match[0]}`)
    }
  }
  t.same(statics, [], 'only `import type` (erased) and `await import()` at register')
})
