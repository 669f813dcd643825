import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import { createSigner } from 'fast-jwt'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { WebSocket } from 'ws'
import gatehouse, { gatehouseFrameworkErrors } from '../lib/index.js'
import { main } from '../lib/cli/gatehouse.js'
import { listenMetrics } from '../lib/cli/workers.js'
import { Exchange } from '../lib/observe/exchange.js'
import { methodLabel, statusClass } from '../lib/observe/metrics.js'
import { loginOutcome } from '../lib/observe/observer.js'
import { resolveAccessLog, resolveScrapeAccess } from '../lib/observe/options.js'
import type { GatehouseOptions, TargetOptions } from '../lib/index.js'
import { SECRET, bearer, testUsers, tokenFor } from './helpers/app.js'
import { serveCli } from './helpers/cli.js'
import { closedPort, upstreamFor } from './helpers/upstream.js'
import { startWsUpstream } from './helpers/ws-upstream.js'
import { nextEvent, waitFor } from './helpers/wait.js'

/*
 * Issue 16 section 3: Prometheus metrics after real traffic through a real
 * listening gateway, read back by parsing the exposition text: exact names,
 * label sets and values; who may scrape; where the scrape may live.
 */

// What the config files say, for the command to read from the environment.
const SECRET_VARIABLE = '$' + '{JWT_SECRET}'

interface Sample { name: string, labels: Record<string, string>, value: number }

/** The samples of an exposition text (`# HELP` / `# TYPE` lines skipped). */
export function parseExposition (text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null) throw new Error(`not an exposition line: ${line}`)
    const labels: Record<string, string> = {}
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1] as string] = pair[2] as string
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) })
  }
  return samples
}

/** The value of the sample with exactly these labels; `undefined` when absent. */
function valueOf (samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort())
  return samples.find((sample) => sample.name === name && JSON.stringify(Object.entries(sample.labels).sort()) === want)?.value
}

function labelSets (samples: Sample[], name: string): Array<Record<string, string>> {
  return samples.filter((sample) => sample.name === name).map((sample) => sample.labels)
}

async function gateway (t: Test, targets: Array<TargetOptions<any>>, extra: Partial<GatehouseOptions> = {}, auth: Partial<GatehouseOptions['auth']> = {}): Promise<{ app: FastifyInstance, base: string }> {
  const app = Fastify({ logger: false, frameworkErrors: gatehouseFrameworkErrors })
  t.teardown(() => app.close())
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: { verify: await testUsers() }, ...auth },
    targets,
    metrics: true,
    ...extra
  })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, base }
}

async function scrape (base: string, headers: Record<string, string> = {}): Promise<{ status: number, type: string, text: string }> {
  const res = await request(`${base}/metrics`, { headers })
  return { status: res.statusCode, type: String(res.headers['content-type']), text: await res.body.text() }
}

async function call (url: string, opts: Parameters<typeof request>[1] = {}): Promise<{ status: number, body: string }> {
  const res = await request(url, opts)
  return { status: res.statusCode, body: await res.body.text() }
}

t.test('a scrape after real traffic counts requests, bytes, durations, retries, logins, token failures and upstream health', async (t) => {
  const upstream = await upstreamFor(t)
  const dead = `http://127.0.0.1:${await closedPort()}`
  const { app, base } = await gateway(t, [
    { name: 'api', prefix: '/api', upstream: upstream.url },
    // Round-robin starts on the dead one: each GET fails once there, then is retried on the live one.
    { name: 'flaky', prefix: '/flaky', upstream: [dead, upstream.url], public: true, transport: { retry: { retries: 1, minDelay: 1, maxDelay: 1 } } },
    { name: 'down', prefix: '/down', upstream: dead, public: true, transport: { passiveHealth: { failures: 1, coolDown: 60_000 }, circuitBreaker: { minRequests: 1, failureRate: 0.5, coolDown: 60_000 } } }
  ], {}, { login: { verify: await testUsers(), throttle: { delayMs: 0, user: { max: 2 } } } })
  const token = tokenFor(app)

  let bytesOut = 0
  for (const path of ['/api/items?secret=q1', '/api/items/7']) {
    const res = await call(`${base}${path}`, { headers: bearer(token) })
    t.equal(res.status, 200)
    bytesOut += Buffer.byteLength(res.body)
  }
  const posted = await call(`${base}/api/items`, { method: 'POST', headers: { ...bearer(token), 'content-type': 'application/json' }, body: '{"n":12345}' })
  t.equal(posted.status, 200)
  bytesOut += Buffer.byteLength(posted.body)
  t.equal(upstream.seen.length, 3)
  t.equal(upstream.seen[2]?.body.toString(), '{"n":12345}', 'the upstream got the body that was counted')

  // Token refusals: none, garbage, expired.
  const expired = createSigner({ key: SECRET })({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 60 })
  t.equal((await call(`${base}/api/x`)).status, 401)
  t.equal((await call(`${base}/api/x`, { headers: bearer('not.a.token') })).status, 401)
  t.equal((await call(`${base}/api/x`, { headers: bearer(expired) })).status, 401)

  // Logins: one success, two bad passwords, then throttled.
  const login = (password: string) => call(`${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'bob', password }) })
  t.equal((await login('bob-pw')).status, 200)
  t.equal((await login('wrong-1')).status, 401)
  t.equal((await login('wrong-2')).status, 401)
  t.equal((await login('wrong-3')).status, 429)

  for (let i = 0; i < 2; i++) t.equal((await call(`${base}/flaky/r${i}`)).status, 200, 'retried on the live upstream')
  t.equal((await call(`${base}/down/x`)).status, 502)
  t.equal((await call(`${base}/down/x`)).status, 503, 'ejected / circuit open')

  const { status, type, text } = await scrape(base)
  t.equal(status, 200)
  t.match(type, /^text\/plain; version=0\.0\.4/)
  const samples = parseExposition(text)
  const requests = (target: string, method: string, statusClass: string) => valueOf(samples, 'gatehouse_requests_total', { target, method, status_class: statusClass })
  t.equal(requests('api', 'GET', '2xx'), 5 - 3, 'two proxied GETs')
  t.equal(requests('api', 'POST', '2xx'), 1)
  t.equal(requests('api', 'GET', '4xx'), 3, 'the three refused tokens')
  t.equal(requests('flaky', 'GET', '2xx'), 2)
  t.equal(requests('down', 'GET', '5xx'), 2)
  t.same(labelSets(samples, 'gatehouse_requests_total').map((labels) => Object.keys(labels).sort()), Array(5).fill(['method', 'status_class', 'target']))

  t.equal(valueOf(samples, 'gatehouse_request_bytes_total', { target: 'api' }), 11)
  t.equal(valueOf(samples, 'gatehouse_response_bytes_total', { target: 'api' }), bytesOut, 'the bytes the client read')
  t.equal(valueOf(samples, 'gatehouse_upstream_retries_total', { target: 'flaky' }), 2)
  t.equal(valueOf(samples, 'gatehouse_upstream_retries_total', { target: 'api' }), 0)
  t.equal(valueOf(samples, 'gatehouse_request_duration_seconds_count', { target: 'api' }), 6)
  t.equal(valueOf(samples, 'gatehouse_upstream_duration_seconds_count', { target: 'api' }), 3, 'only exchanges that reached the upstream')
  t.equal(valueOf(samples, 'gatehouse_upstream_duration_seconds_count', { target: 'down' }), undefined, 'no upstream answer, no upstream latency')
  t.ok((valueOf(samples, 'gatehouse_request_duration_seconds_sum', { target: 'api' }) ?? 0) > 0)
  t.equal(valueOf(samples, 'gatehouse_request_duration_seconds_bucket', { target: 'api', le: '+Inf' }), 6)

  t.equal(valueOf(samples, 'gatehouse_logins_total', { outcome: 'success' }), 1)
  t.equal(valueOf(samples, 'gatehouse_logins_total', { outcome: 'bad_credentials' }), 2)
  t.equal(valueOf(samples, 'gatehouse_logins_total', { outcome: 'throttled' }), 1)
  t.equal(valueOf(samples, 'gatehouse_token_failures_total', { reason: 'missing' }), 1)
  t.equal(valueOf(samples, 'gatehouse_token_failures_total', { reason: 'invalid' }), 1)
  t.equal(valueOf(samples, 'gatehouse_token_failures_total', { reason: 'expired' }), 1)

  t.equal(valueOf(samples, 'gatehouse_upstream_up', { target: 'api', upstream: upstream.url }), 1)
  t.equal(valueOf(samples, 'gatehouse_upstream_up', { target: 'flaky', upstream: dead }), 1, 'two failures, under the ejection threshold')
  t.equal(valueOf(samples, 'gatehouse_upstream_up', { target: 'down', upstream: dead }), 0, 'ejected')
  t.equal(valueOf(samples, 'gatehouse_circuit_state', { target: 'down' }), 2, 'open')
  t.same(labelSets(samples, 'gatehouse_circuit_state'), [{ target: 'down' }], 'only targets with a breaker')
  t.ok(samples.some((sample) => sample.name === 'process_cpu_user_seconds_total'), 'default process metrics')
  t.ok(samples.some((sample) => sample.name === 'nodejs_heap_size_used_bytes'))

  // Bounded labels: no path, query, user or token anywhere in the series.
  const series = text.split('\n').filter((line) => !line.startsWith('#')).join('\n')
  for (const secret of ['/items', 'secret', 'q1', 'alice', 'bob', '/7', token]) t.notOk(series.includes(secret), `no "${secret}" in any series`)
  t.ok(samples.filter((sample) => sample.name.startsWith('gatehouse_')).length > 10)
  t.notOk(samples.some((sample) => !sample.name.startsWith('gatehouse_') && !/^(process_|nodejs_)/.test(sample.name)), 'every other series is a default metric')
})

t.test('open WebSocket tunnels are a gauge per target', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const { base } = await gateway(t, [{ name: 'live', prefix: '/live', upstream: upstream.url, websocket: true, public: true }])
  const client = new WebSocket(`${base.replace('http', 'ws')}/live/feed`)
  await nextEvent(client, 'open', { message: 'the tunnel open' })
  const open = parseExposition((await scrape(base)).text)
  t.equal(valueOf(open, 'gatehouse_websocket_tunnels', { target: 'live' }), 1)
  client.close(1000)
  await nextEvent(client, 'close', { message: 'the tunnel closed' })
  await waitFor(async () => valueOf(parseExposition((await scrape(base)).text), 'gatehouse_websocket_tunnels', { target: 'live' }) === 0, { message: 'the tunnel counted down' })
  t.pass('counted down once closed')
})

t.test('by default only loopback callers may scrape; others get 403 in the gatehouse shape', async (t) => {
  const upstream = await upstreamFor(t)
  const { app, base } = await gateway(t, [{ prefix: '/api', upstream: upstream.url }])
  t.equal((await scrape(base)).status, 200, '127.0.0.1')
  const res = await app.inject({ url: '/metrics', remoteAddress: '203.0.113.9' })
  t.equal(res.statusCode, 403)
  t.same(res.json(), { statusCode: 403, code: 'FST_GATEHOUSE_METRICS_FORBIDDEN', error: 'Forbidden', message: 'This address may not read the metrics' })
  t.equal((await app.inject({ url: '/metrics', remoteAddress: '::1' })).statusCode, 200, 'IPv6 loopback')
  t.equal((await app.inject({ url: '/metrics', remoteAddress: '::ffff:127.0.0.1' })).statusCode, 200, 'IPv4-mapped loopback')
  t.equal(upstream.seen.length, 0)
})

t.test('an allow-list of CIDRs replaces loopback', async (t) => {
  const upstream = await upstreamFor(t)
  const { app, base } = await gateway(t, [{ prefix: '/api', upstream: upstream.url }], { metrics: { allow: ['10.0.0.0/8', '2001:db8::/32'] } })
  t.equal((await scrape(base)).status, 403, 'loopback is no longer allowed')
  t.equal((await app.inject({ url: '/metrics', remoteAddress: '10.1.2.3' })).statusCode, 200)
  t.equal((await app.inject({ url: '/metrics', remoteAddress: '2001:db8::7' })).statusCode, 200)
  t.equal((await app.inject({ url: '/metrics', remoteAddress: '11.0.0.1' })).statusCode, 403)
})

t.test('a token is required from any address when set; wrong or missing gets 401', async (t) => {
  const upstream = await upstreamFor(t)
  const secret = 'metrics-token-0123456789'
  const { app, base } = await gateway(t, [{ prefix: '/api', upstream: upstream.url }], { metrics: { token: secret } })
  const missing = await scrape(base)
  t.equal(missing.status, 401)
  t.same(JSON.parse(missing.text), { statusCode: 401, code: 'FST_GATEHOUSE_METRICS_UNAUTHORIZED', error: 'Unauthorized', message: 'The metrics need a valid bearer token' })
  t.equal((await scrape(base, { authorization: `Bearer ${secret}x` })).status, 401, 'wrong token')
  t.equal((await scrape(base, { authorization: `Bearer ${secret.slice(0, -1)}` })).status, 401, 'a prefix of it')
  t.equal((await scrape(base, { authorization: `Basic ${secret}` })).status, 401, 'not a bearer')
  t.equal((await scrape(base, { authorization: `Bearer ${secret}` })).status, 200)
  t.equal((await app.inject({ url: '/metrics', remoteAddress: '203.0.113.9', headers: bearer(secret) })).statusCode, 200, 'any address with the token')

  const both = await gateway(t, [{ prefix: '/api', upstream: upstream.url }], { metrics: { token: secret, allow: ['10.0.0.0/8'] } })
  t.equal((await both.app.inject({ url: '/metrics', remoteAddress: '203.0.113.9', headers: bearer(secret) })).statusCode, 403, 'allow and token: both needed')
  t.equal((await both.app.inject({ url: '/metrics', remoteAddress: '10.0.0.9' })).statusCode, 401)
  t.equal((await both.app.inject({ url: '/metrics', remoteAddress: '10.0.0.9', headers: bearer(secret) })).statusCode, 200)
})

t.test('the scrape path is refused at register when a target or a token route would own it', async (t) => {
  const targets = [{ prefix: '/api/:tenant', upstream: 'http://127.0.0.1:9' }]
  const register = async (metrics: GatehouseOptions['metrics'], list: Array<TargetOptions<any>> = targets) => {
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    await app.register(gatehouse, { auth: { secret: SECRET, login: { verify: await testUsers() }, refresh: {} }, targets: list, metrics })
    await app.ready()
  }
  const taken = /Invalid fastify-gatehouse option "metrics\.path": expected a path outside every target prefix and other than the login and token routes/
  await t.rejects(register({ path: '/api/x' }), { code: 'FST_GATEHOUSE_INVALID_OPTION', message: taken }, 'under a target prefix (a param matches any segment)')
  await t.rejects(register({ path: '/API/x/metrics' }), { message: taken }, 'case aside')
  await t.rejects(register({ path: '/login' }), { message: taken })
  await t.rejects(register({ path: '/token/refresh' }), { message: taken })
  await t.rejects(register(true, [{ prefix: '/', upstream: 'http://127.0.0.1:9' }]), { message: taken }, 'a root target owns every path')
  await t.resolves(register(true, [{ prefix: '/metrics/v1', upstream: 'http://127.0.0.1:9' }]), 'a target below the scrape path is routed apart')
  await t.resolves(register({ path: false }, [{ prefix: '/', upstream: 'http://127.0.0.1:9' }]), 'collect only: no route to collide')
  await t.resolves(register({ path: '/api' }), '/api itself is not under /api/:tenant')
  await t.rejects(register({ allow: [] }), { message: /"metrics\.allow": expected a non-empty array of IP addresses or CIDRs/ })
  await t.rejects(register({ allow: ['10.0.0.0/33'] }), { message: /"metrics\.allow\[0\]"/ })
  await t.rejects(register({ allow: ['example.com'] }), { message: /"metrics\.allow\[0\]"/ })
  await t.rejects(register({ token: 'short' }), { message: /"metrics\.token": expected a string of at least 16 visible ASCII characters/ })
  await t.rejects(register({ registry: {} as Registry }), { message: /"metrics\.registry": expected a prom-client Registry/ })
  await t.rejects(register({ pth: '/m' } as never), { message: /"metrics\.pth": expected a known option; did you mean "path"\?/ })
  await t.rejects(register('yes' as never), { message: /"metrics": expected a boolean or \{ path\?/ })
})

t.test('two gateways in one process keep their own counts; a given registry is used', async (t) => {
  const upstream = await upstreamFor(t)
  const registry = new Registry()
  const one = await gateway(t, [{ name: 'api', prefix: '/api', upstream: upstream.url, public: true }])
  const two = await gateway(t, [{ name: 'api', prefix: '/api', upstream: upstream.url, public: true }], { metrics: { registry, defaultMetrics: false } })
  t.equal((await call(`${one.base}/api/a`)).status, 200)
  t.equal((await call(`${two.base}/api/a`)).status, 200)
  t.equal((await call(`${two.base}/api/b`)).status, 200)
  const count = (text: string) => valueOf(parseExposition(text), 'gatehouse_requests_total', { target: 'api', method: 'GET', status_class: '2xx' })
  t.equal(count((await scrape(one.base)).text), 1)
  t.equal(count((await scrape(two.base)).text), 2)
  t.equal(count(await registry.metrics()), 2, 'the registry handed in holds them')
  t.equal(two.app.gatehouse.metrics, registry)
  t.notOk((await registry.metrics()).includes('process_cpu'), 'defaultMetrics: false')
})

t.test('metrics off: no route, no registry', async (t) => {
  const upstream = await upstreamFor(t)
  const { app } = await gateway(t, [{ prefix: '/api', upstream: upstream.url }], { metrics: false })
  t.equal(app.gatehouse.metrics, undefined)
  t.equal((await app.inject({ url: '/metrics' })).statusCode, 404)
})

t.test('gatehouse serve --workers 2: one scrape on metrics.listen sums every worker; the shared port serves no scrape', async (t) => {
  t.setTimeout(180_000)
  const upstream = await upstreamFor(t)
  const root = t.testdir({
    'gateway.yaml': [
      'listen: { host: 127.0.0.1, port: 0 }',
      'logging: { level: warn }',
      `auth: { secret: '${SECRET_VARIABLE}', login: false, store: { memory: { perWorker: true } } }`,
      'metrics: { listen: { port: 0 } }',
      'targets:',
      `  - { name: api, prefix: /api, upstream: '${upstream.url}', public: true }`
    ].join('\n') + '\n'
  })
  const cli = await serveCli(t, join(root, 'gateway.yaml'), { JWT_SECRET: 'a-metrics-test-secret-of-32-bytes-or-more' }, ['--workers', '2'])
  const scrapeUrl = (/^gatehouse metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics) \(sum of 2 workers\)$/m.exec(cli.stdout()) ?? [])[1]
  t.ok(scrapeUrl, 'the primary printed its metrics address')
  const sent = 20
  // A fresh connection each: the primary hands connections to the workers in turn.
  for (let i = 0; i < sent; i++) t.equal((await call(`${cli.url}/api/n${i}`, { reset: true })).status, 200)
  t.equal(upstream.seen.length, sent)
  const res = await request(scrapeUrl as string)
  t.equal(res.statusCode, 200)
  const samples = parseExposition(await res.body.text())
  t.equal(valueOf(samples, 'gatehouse_requests_total', { target: 'api', method: 'GET', status_class: '2xx' }), sent, 'the sum over both workers')
  t.equal(valueOf(samples, 'gatehouse_request_duration_seconds_count', { target: 'api' }), sent)
  t.equal(valueOf(samples, 'gatehouse_upstream_up', { target: 'api', upstream: upstream.url }), 1, 'up in every worker (min, not a sum)')
  t.equal((await call(`${cli.url}/metrics`)).status, 404, 'workers do not serve their own scrape')
  t.equal((await call(scrapeUrl as string, { method: 'POST', body: 'x' })).status, 405)
})

t.test('gatehouse check: metrics with several workers need metrics.listen', async (t) => {
  const root = t.testdir({
    'gateway.yaml': [
      `auth: { secret: '${SECRET_VARIABLE}', login: false, store: { memory: { perWorker: true } } }`,
      'metrics: true',
      'targets: [{ prefix: /api, upstream: "http://127.0.0.1:9" }]'
    ].join('\n') + '\n',
    'path.yaml': [
      `auth: { secret: '${SECRET_VARIABLE}', login: false }`,
      'metrics: { listen: { port: 0 }, path: /m }',
      'targets: [{ prefix: /api, upstream: "http://127.0.0.1:9" }]'
    ].join('\n') + '\n'
  })
  const run = async (args: string[]) => {
    const io = { input: new PassThrough(), output: new PassThrough(), errors: new PassThrough() }
    let err = ''
    io.errors.on('data', (chunk: Buffer) => { err += chunk.toString() })
    return { code: await main(args, io, { JWT_SECRET: 'a-metrics-test-secret-of-32-bytes-or-more' }), err }
  }
  t.match(await run(['check', '--config', join(root, 'gateway.yaml'), '--workers', '2']), { code: 1, err: /gateway\.yaml: Invalid fastify-gatehouse option "metrics\.listen": expected \{ host\?, port \} with 2 workers/ })
  t.match(await run(['check', '--config', join(root, 'gateway.yaml')]), { code: 0 }, 'one process: the scrape is on the gateway port')
  t.match(await run(['check', '--config', join(root, 'path.yaml')]), { code: 1, err: /"metrics\.path": expected no path with metrics\.listen/ })
})

t.test('the metrics listener (metrics.listen) refuses with the same codes, serves GET and HEAD only, and hides scrape failures', async (t) => {
  const access = resolveScrapeAccess({ allow: ['127.0.0.1'], token: 'listener-token-0123456789' }, 'metrics')
  let fail = false
  const errors: unknown[] = []
  const { server, url } = await listenMetrics({ listen: { host: '127.0.0.1', port: 0 }, access }, async () => {
    if (fail) throw new Error('worker gone: internal detail')
    return { text: 'gatehouse_x 1\n', contentType: 'text/plain; version=0.0.4; charset=utf-8' }
  }, (err) => errors.push(err))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
  const token = { authorization: 'Bearer listener-token-0123456789' }
  const missing = await call(url)
  t.equal(missing.status, 401)
  t.same(JSON.parse(missing.body), { statusCode: 401, code: 'FST_GATEHOUSE_METRICS_UNAUTHORIZED', error: 'Unauthorized', message: 'The metrics need a valid bearer token' })
  t.same(await call(url, { headers: token }), { status: 200, body: 'gatehouse_x 1\n' })
  t.same(await call(`${url.replace('/metrics', '/any/path')}`, { headers: token }), { status: 200, body: 'gatehouse_x 1\n' }, 'any path')
  t.same(await call(url, { method: 'HEAD', headers: token }), { status: 200, body: '' })
  t.match(await call(url, { method: 'DELETE', headers: token }), { status: 405, body: /"code":"FST_GATEHOUSE_METHOD_NOT_ALLOWED"/ })
  fail = true
  const failed = await call(url, { headers: token })
  t.equal(failed.status, 500)
  t.notOk(failed.body.includes('internal detail'), 'no detail to the client')
  t.equal(errors.length, 1, 'reported to the log')

  const { server: closed, url: other } = await listenMetrics({ listen: { host: '127.0.0.1', port: 0 }, access: resolveScrapeAccess({ allow: ['10.0.0.0/8'] }, 'metrics') }, async () => ({ text: '', contentType: 'text/plain' }), () => {})
  t.teardown(() => new Promise((resolve) => closed.close(resolve)))
  t.match(await call(other), { status: 403, body: /FST_GATEHOUSE_METRICS_FORBIDDEN/ })
  await t.rejects(listenMetrics({ listen: { host: '127.0.0.1', port: new URL(other).port as unknown as number }, access }, async () => ({ text: '', contentType: '' }), () => {}), { code: 'EADDRINUSE' })
})

t.test('label values and outcomes come from fixed sets', async (t) => {
  t.equal(methodLabel('GET'), 'GET')
  t.equal(methodLabel('PROPFIND'), 'OTHER')
  t.equal(statusClass(204), '2xx')
  t.equal(statusClass(499), '4xx')
  t.equal(statusClass(999), 'other')
  t.equal(loginOutcome({ code: 'FST_GATEHOUSE_LOGIN_BUSY' }), 'busy')
  t.equal(loginOutcome({ code: 'FST_GATEHOUSE_STORE_UNAVAILABLE' }), 'store_unavailable')
  t.equal(loginOutcome({ code: 'FST_GATEHOUSE_BAD_REQUEST', statusCode: 400 }), 'bad_request')
  t.equal(loginOutcome({ code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 }), 'bad_request')
  t.equal(loginOutcome({ statusCode: 500 }), 'error')
  t.equal(loginOutcome({}), 'error', 'a plain Error: a bug or a throwing verify')
  const exchange = new Exchange('api', 'POST')
  exchange.countIn('héllo')
  t.equal(exchange.bytesIn, 6, 'a string counts its UTF-8 bytes')
  exchange.countOut(Buffer.from('abc'))
  t.equal(exchange.bytesOut, 3)
  exchange.countOut('ü')
  t.equal(exchange.bytesOut, 2)
  const flowing = new Exchange('api', 'GET')
  const stream = Readable.from(['ab', 'cde'], { objectMode: false })
  const chunks: string[] = []
  stream.on('data', (chunk: Buffer) => chunks.push(chunk.toString()))
  flowing.countOut(stream)
  await nextEvent(stream, 'end', { message: 'the stream read' })
  t.equal(flowing.bytesOut, 5, 'a stream already flowing is counted from then on')
  t.same(chunks, ['ab', 'cde'], 'and its consumer still gets every chunk')
  flowing.countIn(undefined)
  flowing.countIn(12 as unknown)
  t.equal(flowing.bytesIn, 0, 'nothing countable, nothing counted')
  t.throws(() => resolveAccessLog('yes'), { message: /"accessLog": expected a boolean or \{ query\?, user\? \}/ })
  t.throws(() => resolveAccessLog({ qeury: true }), { message: /"accessLog\.qeury": expected a known option; did you mean "query"\?/ })
  t.throws(() => resolveAccessLog({ user: 'yes' }), { message: /"accessLog\.user": expected a boolean/ })
})
