import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { waitFor } from './helpers/wait.js'

// Long enough that the fast-failure checks made right after the circuit opens
// cannot outlive it on a loaded machine; the probes are awaited, not slept for.
const COOL_DOWN = 1000
const FAST_FAILURE = '503 FST_GATEHOUSE_CIRCUIT_OPEN retry-after 1'

/**
 * Sends requests until one reaches the upstream (the half-open probe) and
 * returns its status and when the upstream saw it; every request before it
 * must have failed fast with the circuit-open answer.
 */
async function nextProbe (app: FastifyInstance, upstream: Upstream, seenAt: number[], name: string): Promise<{ status: number, at: number, fastFailures: string[] }> {
  const headers = bearer(tokenFor(app))
  const before = upstream.seen.length
  const fastFailures: string[] = []
  let i = 0
  const status = await waitFor(async () => {
    const res = await app.inject({ url: `/api/${name}-${i++}`, headers })
    if (upstream.seen.length > before) return res.statusCode
    fastFailures.push(`${res.statusCode} ${String(res.json().code)} retry-after ${String(res.headers['retry-after'])}`)
    return undefined
  }, { message: `the ${name} request reached the upstream after the cool-down`, interval: 50 })
  return { status, at: seenAt[before] as number, fastFailures }
}

t.test('the circuit opens on a failure rate, fails fast, then closes after a good half-open probe', async (t) => {
  let failing = true
  const seenAt: number[] = []
  const upstream = await startUpstream((_req, res) => {
    seenAt.push(Date.now())
    res.writeHead(failing ? 502 : 200, { 'content-length': 2 }).end(failing ? 'no' : 'ok')
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url, transport: { circuitBreaker: { window: 10_000, minRequests: 4, failureRate: 0.5, coolDown: COOL_DOWN } } }]
  })
  const headers = bearer(tokenFor(app))
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: `/api/${i}`, headers })).statusCode, 502)
  // The circuit opens while the fourth failure is recorded, so not before this.
  const beforeOpen = Date.now()
  t.equal((await app.inject({ url: '/api/3', headers })).statusCode, 502)
  const open = await app.inject({ url: '/api/open', headers })
  t.equal(open.statusCode, 503)
  t.equal(open.json().code, 'FST_GATEHOUSE_CIRCUIT_OPEN')
  t.equal(open.headers['retry-after'], '1')
  t.equal(upstream.seen.length, 4, 'the upstream was not contacted while open')

  // Half-open: one probe fails, the circuit opens again.
  const probe1 = await nextProbe(app, upstream, seenAt, 'probe1')
  t.equal(probe1.status, 502)
  t.ok(probe1.at - beforeOpen >= COOL_DOWN, `no probe before the cool-down (${probe1.at - beforeOpen} ms after opening)`)
  t.same(probe1.fastFailures.filter((f) => f !== FAST_FAILURE), [], 'every request before the probe failed fast')
  const beforeReopen = seenAt[4] as number
  t.equal((await app.inject({ url: '/api/after1', headers })).statusCode, 503)
  t.equal(upstream.seen.length, 5)

  failing = false
  const probe2 = await nextProbe(app, upstream, seenAt, 'probe2')
  t.equal(probe2.status, 200, 'probe succeeds')
  t.ok(probe2.at - beforeReopen >= COOL_DOWN, `the failed probe restarted the cool-down (${probe2.at - beforeReopen} ms)`)
  t.same(probe2.fastFailures.filter((f) => f !== FAST_FAILURE), [], 'every request before the probe failed fast')
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: `/api/ok${i}`, headers })).statusCode, 200, 'closed again')
  t.equal(upstream.seen.length, 9)
})
