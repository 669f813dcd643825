import t from 'tap'
import type { Test } from 'tap'
import { connect } from 'node:net'
import Fastify from 'fastify'
import gatehouse, { gatehouseFrameworkErrors } from '../lib/index.js'
import { SECRET, listen, testUsers } from './helpers/app.js'
import { parseResponse } from './helpers/raw-request.js'
import type { RawResponse } from './helpers/raw-request.js'
import { startUpstream } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { within } from './helpers/wait.js'

interface Gateway { base: string, admin: string, clerk: string, upstream: Upstream }

async function gateway (t: Test): Promise<Gateway> {
  const upstream = await startUpstream()
  t.teardown(upstream.close)
  const app = Fastify({ logger: false, frameworkErrors: gatehouseFrameworkErrors })
  t.teardown(() => app.close())
  app.post('/host/echo', async (request) => ({ body: request.body }))
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: { verify: await testUsers() } },
    targets: [{ prefix: '/orders', upstream: upstream.url, authorize: (ctx) => ctx.user?.role === 'admin' }]
  })
  const base = await listen(app)
  return {
    base,
    admin: app.gatehouse.signToken({ sub: 'alice', role: 'admin' }),
    clerk: app.gatehouse.signToken({ sub: 'bob', role: 'clerk' }),
    upstream
  }
}

interface Exchange {
  /** The first response the gateway sent, before any body byte left the client. */
  first: RawResponse
  /** The final response after the body was sent, when the first one was 100. */
  final?: RawResponse
}

/**
 * Sends a request with `Expect: 100-continue` and no body, as a careful
 * client does, and waits for the gateway's first answer. Only on a 100 does
 * it send the body and read the final response.
 */
function expectContinue (g: Gateway, path: string, headers: string[], body: string): Promise<Exchange> {
  const socket = connect(Number(new URL(g.base).port), '127.0.0.1')
  return within(new Promise<Exchange>((resolve, reject) => {
    let raw = Buffer.alloc(0)
    let first: RawResponse | undefined
    socket.on('error', reject)
    socket.on('data', (chunk: Buffer) => {
      raw = Buffer.concat([raw, chunk])
      if (first !== undefined) return
      const end = raw.indexOf('\r\n\r\n')
      if (end === -1) return
      first = parseResponse(raw.subarray(0, end + 4))
      if (first.status === 100) {
        raw = raw.subarray(end + 4)
        socket.write(body)
      }
    })
    socket.on('end', () => {
      if (first?.status === 100) resolve({ first, final: parseResponse(raw) })
      else resolve({ first: parseResponse(raw) })
    })
    const head = [`POST ${path} HTTP/1.1`, `Host: ${new URL(g.base).host}`, 'Connection: close', 'Content-Type: application/json',
      `Content-Length: ${Buffer.byteLength(body)}`, 'Expect: 100-continue', ...headers]
    socket.write(head.join('\r\n') + '\r\n\r\n')
  }), { message: `the answers to POST ${path}` }).finally(() => socket.destroy())
}

t.test('a caller without a token gets 401 instead of 100 and never uploads', async (t) => {
  const g = await gateway(t)
  const { first, final } = await expectContinue(g, '/orders', [], '{"n":1}')
  t.equal(first.status, 401)
  t.equal(final, undefined)
  t.equal(g.upstream.seen.length, 0)
})

t.test('a caller that authorize refuses gets 403 instead of 100', async (t) => {
  const g = await gateway(t)
  const { first, final } = await expectContinue(g, '/orders', [`Authorization: Bearer ${g.clerk}`], '{"n":1}')
  t.equal(first.status, 403)
  t.equal(final, undefined)
  t.equal(g.upstream.seen.length, 0)
})

t.test('an admitted caller gets 100, then its body streams upstream', async (t) => {
  const g = await gateway(t)
  const { first, final } = await expectContinue(g, '/orders', [`Authorization: Bearer ${g.admin}`], '{"n":2}')
  t.equal(first.status, 100)
  t.equal(final?.status, 200)
  t.equal(g.upstream.seen.length, 1)
  t.equal(g.upstream.seen[0]?.body.toString('utf8'), '{"n":2}')
  t.notOk(g.upstream.seen[0]?.headers.expect, 'Expect stays on the caller\'s hop')
})

t.test('a host route gets 100 when its body is read', async (t) => {
  const g = await gateway(t)
  const { first, final } = await expectContinue(g, '/host/echo', [], '{"n":3}')
  t.equal(first.status, 100)
  t.equal(final?.status, 200)
  t.same(JSON.parse(final?.body ?? ''), { body: { n: 3 } })
})

t.test('a host app that listens for checkContinue itself keeps it', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  app.server.on('checkContinue', (_request, response) => {
    response.writeHead(417, { 'content-length': 0 }).end()
  })
  await app.register(gatehouse, { auth: { secret: SECRET, login: { verify: await testUsers() } }, targets: [] })
  const base = await listen(app)
  const { first } = await expectContinue({ base } as unknown as Gateway, '/login', [], '{}')
  t.equal(first.status, 417)
  t.equal(app.server.listenerCount('checkContinue'), 1)
})
