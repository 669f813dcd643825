import t from 'tap'
import type { Test } from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { request } from 'undici'
import { context, propagation, trace } from '@opentelemetry/api'
import { loadConfig } from '../lib/cli/config.js'
import { startTracing } from '../lib/cli/tracing.js'
import { serveCli } from './helpers/cli.js'
import { upstreamFor } from './helpers/upstream.js'

/*
 * Issue 16 section 3, tracing from the command: `gatehouse serve` with a
 * `tracing.otlp.url` exports its spans over OTLP/HTTP (JSON) to a receiver
 * this test runs, and flushes them when SIGTERM drains it.
 */

t.setTimeout(120_000)

const SECRET = 'a-tracing-test-secret-of-32-bytes-or-more'

interface OtlpSpan { name: string, traceId: string, spanId: string, parentSpanId?: string, kind: number }
interface OtlpExport {
  resourceSpans: Array<{
    resource: { attributes: Array<{ key: string, value: { stringValue?: string } }> }
    scopeSpans: Array<{ spans: OtlpSpan[] }>
  }>
}

/** An OTLP/HTTP traces receiver on 127.0.0.1:0 keeping every export it is sent. */
async function receiver (t: Test): Promise<{ url: string, exports: Array<{ type: string | undefined, body: OtlpExport }> }> {
  const exports: Array<{ type: string | undefined, body: OtlpExport }> = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/v1/traces') exports.push({ type: req.headers['content-type'], body: JSON.parse(Buffer.concat(chunks).toString('utf8')) })
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`, exports }
}

function config (upstream: string, tracing: string): string {
  return [
    'listen: { host: 127.0.0.1, port: 0 }',
    'logging: { level: warn }',
    // The file's own ${NAME} interpolation, not JavaScript's.
    'auth: { secret: \'${JWT_SECRET}\', login: false }', // eslint-disable-line no-template-curly-in-string
    'targets:',
    `  - { name: orders, prefix: /api, upstream: '${upstream}', public: true }`,
    tracing
  ].join('\n') + '\n'
}

t.test('gatehouse serve exports its spans to the OTLP endpoint of the file, flushed on SIGTERM', async (t) => {
  const upstream = await upstreamFor(t)
  const otlp = await receiver(t)
  const root = t.testdir({ 'gateway.yaml': config(upstream.url, `tracing: { serviceName: edge-gateway, otlp: { url: '${otlp.url}' } }`) })
  const cli = await serveCli(t, join(root, 'gateway.yaml'), { JWT_SECRET: SECRET })
  const res = await request(`${cli.url}/api/items?q=secret-query`)
  t.equal(res.statusCode, 200)
  await res.body.text()

  cli.child.kill('SIGTERM')
  t.equal(await cli.exit, 0)
  t.ok(otlp.exports.length > 0, 'spans were exported before the process ended')
  t.match(otlp.exports[0]?.type, /^application\/json/)
  const batches = otlp.exports.flatMap((entry) => entry.body.resourceSpans)
  const names = batches.map((batch) => batch.resource.attributes.find((attribute) => attribute.key === 'service.name')?.value.stringValue)
  t.same([...new Set(names)], ['edge-gateway'])
  const spans = batches.flatMap((batch) => batch.scopeSpans.flatMap((scope) => scope.spans))
  const server = spans.find((span) => span.name === 'request')
  const admission = spans.find((span) => span.name === 'gatehouse.admission')
  const client = spans.find((span) => span.name === 'gatehouse.upstream')
  t.ok(server !== undefined && admission !== undefined && client !== undefined, 'server, admission and upstream spans')
  t.equal(admission?.parentSpanId, server?.spanId)
  t.equal(client?.parentSpanId, server?.spanId)
  t.equal(upstream.seen[0]?.headers.traceparent, `00-${server?.traceId}-${client?.spanId}-01`, 'the upstream continues the exported trace')
  t.notOk(JSON.stringify(otlp.exports).includes('secret-query'))
})

t.test('the tracing section is checked like the rest of the file', async (t) => {
  const root = t.testdir({
    'no-url.yaml': config('http://127.0.0.1:9', 'tracing: { otlp: {} }'),
    'bad-url.yaml': config('http://127.0.0.1:9', "tracing: { otlp: { url: 'collector:4318' } }"),
    'typo.yaml': config('http://127.0.0.1:9', "tracing: { serviceNam: x, otlp: { url: 'http://127.0.0.1:4318/v1/traces' } }"),
    'ok.yaml': config('http://127.0.0.1:9', "tracing: { otlp: { url: 'http://127.0.0.1:4318/v1/traces' } }")
  })
  const env = { JWT_SECRET: SECRET }
  await t.rejects(loadConfig(join(root, 'no-url.yaml'), env), { code: 'FST_GATEHOUSE_INVALID_OPTION', message: /no-url\.yaml: .*"tracing\.otlp\.url": expected the http:\/\/ or https:\/\/ URL/ })
  await t.rejects(loadConfig(join(root, 'bad-url.yaml'), env), { message: /"tracing\.otlp\.url"/ })
  await t.rejects(loadConfig(join(root, 'typo.yaml'), env), { message: /"tracing\.serviceNam".*did you mean "serviceName"/ })
  const ok = await loadConfig(join(root, 'ok.yaml'), env)
  t.same(ok.settings.tracing, { serviceName: 'gatehouse', url: 'http://127.0.0.1:4318/v1/traces' })
  t.equal(ok.options.tracing, true, 'the plugin uses the provider the command registers')
})

t.test('startTracing registers a provider globally and its stop flushes the batch to the endpoint', async (t) => {
  const otlp = await receiver(t)
  const stop = await startTracing({ serviceName: 'in-process', url: otlp.url })
  t.teardown(() => {
    trace.disable()
    context.disable()
    propagation.disable()
  })
  trace.getTracer('test').startSpan('unit').end()
  t.equal(otlp.exports.length, 0, 'batched, not sent span by span')
  await stop()
  const spans = otlp.exports.flatMap((entry) => entry.body.resourceSpans.flatMap((batch) => batch.scopeSpans.flatMap((scope) => scope.spans)))
  t.same(spans.map((span) => span.name), ['unit'])
})
