import t from 'tap'
import type { Test } from 'tap'
import { connect } from 'node:net'
import Fastify from 'fastify'
import type { FastifyServerOptions } from 'fastify'
import gatehouse, { redisStore } from '../lib/index.js'
import type { GatehouseOptions, HealthOptions, TargetOptions } from '../lib/index.js'
import { SECRET, bearer, listen, testUsers, tokenFor } from './helpers/app.js'
import { redisSkip, startRedis } from './helpers/redis.js'
import { closedPort, startUpstream, upstreamFor } from './helpers/upstream.js'
import { signal, waitFor } from './helpers/wait.js'

interface Readiness { status: string, reasons?: string[] }

async function gateway (t: Test, health: HealthOptions | boolean | undefined, targets: TargetOptions[], extra: Omit<Partial<GatehouseOptions>, 'auth'> & { auth?: Partial<GatehouseOptions['auth']> } = {}, server: FastifyServerOptions = {}) {
  const app = Fastify(server)
  t.teardown(() => app.close())
  await app.register(gatehouse, {
    ...extra,
    auth: { secret: SECRET, ...extra.auth, login: { verify: await testUsers() } },
    targets,
    ...(health === undefined ? {} : { health })
  })
  await app.ready()
  return app
}

async function ready (base: string): Promise<{ status: number, body: Readiness, headers: Headers }> {
  const res = await fetch(`${base}/readyz`)
  return { status: res.status, body: await res.json() as Readiness, headers: res.headers }
}

t.test('off by default', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await gateway(t, undefined, [{ prefix: '/api', upstream: upstream.url }])
  t.equal((await app.inject('/healthz')).statusCode, 404)
  t.equal((await app.inject('/readyz')).statusCode, 404)
})

t.test('/healthz answers without a token; /readyz is ready once listening', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await gateway(t, true, [{ prefix: '/api', upstream: upstream.url }])
  const alive = await app.inject('/healthz')
  t.equal(alive.statusCode, 200)
  t.same(alive.json(), { status: 'ok' })
  t.equal(alive.headers['cache-control'], 'no-store')
  t.match(alive.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'health answers carry the request id too')
  const before = await app.inject('/readyz')
  t.equal(before.statusCode, 503, 'not ready before listening')
  t.same(before.json(), { status: 'unavailable', reasons: ['not listening'] })
  const base = await listen(app)
  const after = await ready(base)
  t.equal(after.status, 200)
  t.same(after.body, { status: 'ok' })
  t.equal(upstream.seen.length, 0, 'no upstream was asked')
  t.equal((await fetch(`${base}/api/x`, { headers: bearer(tokenFor(app)) })).status, 200, 'the target still works')
})

t.test('a target with active health checks and its upstream down: 503 naming the target, not the upstream', async (t) => {
  const up = await upstreamFor(t)
  const port = await closedPort()
  const app = await gateway(t, { maxEventLoopDelay: 0 }, [
    { name: 'inventory', prefix: '/inventory', upstream: `http://127.0.0.1:${port}`, transport: { activeHealth: { path: '/health', interval: 50, unhealthyThreshold: 1 } } },
    { name: 'orders', prefix: '/orders', upstream: up.url, transport: { activeHealth: { path: '/health', interval: 50 } } },
    // No active checks: its state never counts.
    { name: 'plain', prefix: '/plain', upstream: `http://127.0.0.1:${port}` }
  ])
  const base = await listen(app)
  const res = await waitFor(async () => {
    const answer = await ready(base)
    return answer.status === 503 ? answer : undefined
  }, { message: 'readiness to notice the failed health checks' })
  t.same(res.body, { status: 'unavailable', reasons: ['target "inventory": no healthy upstream'] })
  t.equal(res.headers.get('retry-after'), '1')
  t.notMatch(JSON.stringify(res.body), String(port), 'no upstream address in the body')
})

t.test('{ upstreams: false } ignores upstream health', async (t) => {
  const port = await closedPort()
  const app = await gateway(t, { upstreams: false, maxEventLoopDelay: 0 }, [
    { name: 'inventory', prefix: '/inventory', upstream: `http://127.0.0.1:${port}`, transport: { activeHealth: { path: '/health', interval: 50, unhealthyThreshold: 1 } } }
  ])
  const base = await listen(app)
  await waitFor(async () => (await fetch(`${base}/inventory/x`, { headers: bearer(tokenFor(app)) })).status === 503, { message: 'the upstream marked down' })
  t.equal((await ready(base)).status, 200)
})

t.test('draining: /readyz says so while in-flight requests finish', async (t) => {
  const first = signal()
  const second = signal()
  const upstream = await startUpstream((req, res) => {
    void (req.url?.includes('first') === true ? first : second).promise.then(() => res.end('done'))
  })
  t.teardown(upstream.close)
  const app = await gateway(t, true, [{ prefix: '/api', upstream: upstream.url }], {}, { return503OnClosing: false })
  const base = await listen(app)
  t.equal((await ready(base)).status, 200)
  const token = tokenFor(app)
  // Node's server.close() ends idle connections: only a busy one still gets
  // answers during the drain. This one holds a request, then sends two probes.
  const socket = connect(Number(new URL(base).port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  let received = ''
  socket.setEncoding('utf8').on('data', (chunk: string) => { received += chunk })
  socket.write(`GET /api/first HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer ${token}\r\n\r\n`)
  // A second request keeps the drain going once the first is released.
  const inFlight = fetch(`${base}/api/second`, { headers: bearer(token) })
  await waitFor(() => upstream.seen.length === 2, { message: 'both requests reached the upstream' })
  const closing = app.close()
  await waitFor(() => !app.server.listening, { message: 'the drain started' })
  await t.rejects(fetch(`${base}/readyz`), 'new connections are refused')
  socket.write('GET /readyz HTTP/1.1\r\nhost: gw\r\n\r\n')
  first.resolve()
  await waitFor(() => /\]\}$/.test(received), { message: 'the probe was answered' })
  const [held, readiness] = received.split(/(?=HTTP\/1\.1 )/)
  t.match(held, /^HTTP\/1\.1 200 /)
  t.match(readiness, /^HTTP\/1\.1 503 /)
  t.match(readiness, /\r\n\r\n\{"status":"unavailable","reasons":\["not listening","draining"\]\}$/)
  second.resolve()
  t.equal((await inFlight).status, 200)
  await closing
})

t.test('a blocked event loop makes the gateway not ready, and ready again after', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await gateway(t, { maxEventLoopDelay: 50, sampleInterval: 100 }, [{ prefix: '/api', upstream: upstream.url }])
  const base = await listen(app)
  t.equal((await ready(base)).status, 200)
  // Busy loops in a timer: the loop lags about 150 ms each turn.
  const busy = setInterval(() => {
    const until = Date.now() + 150
    while (Date.now() < until) { /* busy */ }
  }, 1)
  t.teardown(() => clearInterval(busy))
  const lagging = await waitFor(async () => {
    const answer = await ready(base)
    return answer.status === 503 ? answer : undefined
  }, { message: 'readiness to report the event-loop delay' })
  t.match(lagging.body.reasons, [/^event loop delay (\d+ ms|unmeasurable) over 50 ms$/])
  t.equal((await fetch(`${base}/healthz`)).status, 200, 'liveness is not affected')
  clearInterval(busy)
  await waitFor(async () => (await ready(base)).status === 200, { message: 'ready again once the loop is free' })
})

t.test('a host that registered @fastify/under-pressure keeps it; its measurement is read', async (t) => {
  const upstream = await upstreamFor(t)
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(import('@fastify/under-pressure'), { sampleInterval: 100 })
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: false },
    targets: [{ prefix: '/api', upstream: upstream.url }],
    health: { maxEventLoopDelay: 1000 }
  })
  const base = await listen(app)
  t.equal((await ready(base)).status, 200)
})

t.test('store: a Redis store that stops answering makes the gateway not ready', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const client = redis.client({ maxRetriesPerRequest: 0 })
  const upstream = await upstreamFor(t)
  const app = await gateway(t, { storeTimeout: 200, maxEventLoopDelay: 0 }, [{ prefix: '/api', upstream: upstream.url }], {
    auth: { refresh: true, store: redisStore({ client, commandTimeout: 150 }) }
  })
  const base = await listen(app)
  t.equal((await ready(base)).status, 200, 'ready while Redis answers')
  await redis.kill()
  const down = await ready(base)
  t.equal(down.status, 503)
  t.same(down.body, { status: 'unavailable', reasons: ['store unreachable'] })
  t.notMatch(JSON.stringify(down.body), String(redis.port))
})

t.test('store: a custom store that never answers is bounded by storeTimeout', async (t) => {
  const never = new Promise<never>(() => {})
  let failing = false
  const store = {
    get: async () => { if (failing) throw new Error('down'); return await never },
    set: async () => {},
    add: async () => true,
    increment: async () => 1,
    delete: async () => {}
  }
  const upstream = await upstreamFor(t)
  const app = await gateway(t, { storeTimeout: 50, maxEventLoopDelay: 0 }, [{ prefix: '/api', upstream: upstream.url }], { auth: { refresh: true, store } })
  const base = await listen(app)
  t.same((await ready(base)).body.reasons, ['store unreachable'], 'a hung store')
  failing = true
  t.same((await ready(base)).body.reasons, ['store unreachable'], 'a failing store')
})

t.test('paths are configurable; clashes are refused at register', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await gateway(t, { path: '/livez', readyPath: '/ops/ready' }, [{ prefix: '/api', upstream: upstream.url }])
  t.equal((await app.inject('/livez')).statusCode, 200)
  t.equal((await app.inject('/ops/ready')).statusCode, 503)
  t.equal((await app.inject('/healthz')).statusCode, 404)

  const bad: Array<[unknown, TargetOptions[], RegExp]> = [
    [{ path: '/api/healthz' }, [{ prefix: '/api', upstream: upstream.url }], /health\.path.*under \/api/],
    [true, [{ prefix: '/', upstream: upstream.url }], /health\.path.*outside every target prefix/],
    [{ readyPath: '/shops/x/readyz' }, [{ prefix: '/shops/:id', upstream: upstream.url }], /health\.readyPath.*under \/shops\/:id/],
    [{ path: '/API/h' }, [{ prefix: '/api', upstream: upstream.url }], /health\.path/],
    [{ path: '/login' }, [], /health\.path.*token routes \/login/],
    [{ readyPath: '/healthz' }, [], /health\.readyPath.*other than health\.path/],
    [{ path: 'healthz' }, [], /health\.path/],
    [{ maxEventLoopDelay: -1 }, [], /health\.maxEventLoopDelay/],
    [{ sampleInterval: 5 }, [], /health\.sampleInterval/],
    [{ upstreams: 'yes' }, [], /health\.upstreams/],
    [{ pathh: '/x' }, [], /did you mean "path"/],
    ['on', [], /^.*health.*a boolean or an object/]
  ]
  for (const [health, targets, message] of bad) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => {
      await app.register(gatehouse, { auth: { secret: SECRET, login: { verify: await testUsers() } }, targets, health: health as HealthOptions })
    }, { code: 'FST_GATEHOUSE_INVALID_OPTION', message }, JSON.stringify(health))
  }
  // A prefix that only starts like the health path does not clash.
  const near = await gateway(t, true, [{ prefix: '/healthz-api', upstream: upstream.url }, { prefix: '/shops/:id', upstream: upstream.url }])
  t.equal((await near.inject('/healthz')).statusCode, 200)
})
