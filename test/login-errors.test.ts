import t from 'tap'
import { request } from 'undici'
import Fastify from 'fastify'
import gatehouse, { gatehouseNotFound } from '../lib/index.js'
import { SECRET, buildApp, listen } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'

/*
 * Issue 14 item 14, over real sockets: malformed JSON on the token routes says
 * what is wrong, and unknown paths and GET on a POST-only route answer in the
 * gatehouse error shape with a code.
 */

async function answer (url: string, opts: Parameters<typeof request>[1] = {}) {
  const res = await request(url, opts)
  return { status: res.statusCode, headers: res.headers, body: await res.body.json() as Record<string, unknown> }
}

t.test('malformed JSON on /login, /token/refresh and /logout says so, without parser detail', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { refresh: true } })
  const url = await listen(app)
  const token = app.gatehouse.signToken({ sub: 'alice' })
  for (const [path, what, headers] of [['/login', 'login', {}], ['/token/refresh', 'refresh', {}], ['/logout', 'logout', { authorization: `Bearer ${token}` }]] as const) {
    const res = await answer(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"username": "alice", ' })
    t.equal(res.status, 400, path)
    t.strictSame(res.body, { statusCode: 400, code: 'FST_GATEHOUSE_BAD_REQUEST', error: 'Bad Request', message: `Invalid ${what} body: not valid JSON` })
  }
  t.equal(upstream.seen.length, 0)
})

t.test('GET /login answers 405 with Allow: POST in the gatehouse shape', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }], auth: { refresh: true } })
  const url = await listen(app)
  for (const path of ['/login', '/token/refresh', '/logout']) {
    const res = await answer(`${url}${path}`)
    t.equal(res.status, 405, path)
    t.equal(res.headers.allow, 'POST')
    t.strictSame(res.body, { statusCode: 405, code: 'FST_GATEHOUSE_METHOD_NOT_ALLOWED', error: 'Method Not Allowed', message: 'This route only answers POST' })
  }
})

t.test('an unknown path answers 404 in the gatehouse shape when the host opts in, without echoing the path', async (t) => {
  const upstream = await upstreamFor(t)
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(gatehouse, { auth: { secret: SECRET, login: false }, targets: [{ prefix: '/api', upstream: upstream.url }] })
  // The host owns the root not-found handler; the gatehouse only offers its shape.
  app.setNotFoundHandler(gatehouseNotFound)
  const url = await listen(app)
  const res = await answer(`${url}/nowhere/<script>`)
  t.equal(res.status, 404)
  t.strictSame(res.body, { statusCode: 404, code: 'FST_GATEHOUSE_NOT_FOUND', error: 'Not Found', message: 'No route for this method and path' })
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(upstream.seen.length, 0)
})

t.test('a host sets its own not-found handler after registering the gatehouse', async (t) => {
  const upstream = await upstreamFor(t)
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(gatehouse, { auth: { secret: SECRET, login: false }, targets: [{ prefix: '/api', upstream: upstream.url }] })
  app.setNotFoundHandler((_request, reply) => { void reply.code(404).send({ host: 'not found' }) })
  const url = await listen(app)
  const res = await answer(`${url}/nowhere`)
  t.equal(res.status, 404)
  t.strictSame(res.body, { host: 'not found' })
})
