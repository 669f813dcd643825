import t from 'tap'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'
import { rawUpstream } from './helpers/faulty-upstream.js'
import { signal, within } from './helpers/wait.js'
import { DEFAULT_BUFFER_RESPONSES } from '../lib/transport/options.js'

// Over bufferResponses and over what socket buffers absorb: unread, it pins the upstream connection.
const LARGE = 8 * 1024 * 1024 + DEFAULT_BUFFER_RESPONSES

t.test('a middleware answering through ctx.fastifyReply after next() releases the unread upstream body', async (t) => {
  const ended: Array<Promise<void>> = []
  const upstream = await startUpstream((_req, res) => {
    const done = signal()
    ended.push(done.promise)
    res.on('close', () => done.resolve())
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': LARGE })
    res.end(Buffer.alloc(LARGE))
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      // One connection: a leaked one would leave nothing for the next request.
      transport: { pool: { connections: 1 } },
      middleware: [async (ctx, next) => {
        await next()
        if (ctx.request.path.endsWith('/own')) await ctx.fastifyReply.code(200).send('own answer')
      }]
    }],
    compress: false
  })
  const base = await listen(app)
  const headers = bearer(tokenFor(app))
  const res = await within(fetch(`${base}/api/own`, { headers }), { message: 'the middleware answer' })
  t.equal(res.status, 200)
  t.equal(await res.text(), 'own answer')
  await within(ended[0] as Promise<void>, { message: 'the upstream response was ended (body read or connection closed)' })
  // The pool's only connection is free again: the next request is served.
  const next = await within(fetch(`${base}/api/again`, { headers }), { message: 'a second request through the single-connection pool' })
  t.equal(next.status, 200)
  t.equal((await next.arrayBuffer()).byteLength, LARGE)
  t.equal(upstream.seen.length, 2)
})

t.test('a middleware that answers while the upstream fails is not left hanging: its finally runs', async (t) => {
  // The upstream takes the request, then resets: reply-from skips onError once the reply is sent.
  const gotRequest = signal()
  const replySent = signal()
  const upstream = await rawUpstream(t, (socket) => {
    gotRequest.resolve()
    void replySent.promise.then(() => socket.resetAndDestroy())
  })
  const finallyRan = signal<string>()
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (ctx, next) => {
        const pending = next()
        try {
          await gotRequest.promise
          await ctx.fastifyReply.code(202).send('answered early')
          replySent.resolve()
          await pending
          finallyRan.resolve('settled')
        } catch (err) {
          finallyRan.resolve(`threw ${(err as Error).message}`)
        } finally {
          finallyRan.resolve('finally')
        }
      }]
    }]
  })
  const base = await listen(app)
  const res = await within(fetch(`${base}/api/x`, { headers: bearer(tokenFor(app)) }), { message: 'the early answer' })
  t.equal(res.status, 202)
  t.equal(await res.text(), 'answered early')
  const how = await within(finallyRan.promise, { message: 'the middleware chain settled after the upstream reset' })
  t.equal(how, 'settled', 'next() resolves: the reply was already sent, the upstream failure is moot')
})

t.test('a client that leaves before the upstream answers settles the chain and frees the connection', async (t) => {
  const gotRequest = signal()
  let answer: (() => void) | undefined
  const closed = signal()
  const upstream = await startUpstream((_req, res) => {
    res.on('close', () => closed.resolve())
    answer = () => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': LARGE })
      res.end(Buffer.alloc(LARGE))
    }
    gotRequest.resolve()
  })
  t.teardown(upstream.close)
  const finallyRan = signal()
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (_ctx, next) => {
        try {
          await next()
        } finally {
          finallyRan.resolve()
        }
      }]
    }],
    compress: false
  })
  const base = await listen(app)
  const controller = new AbortController()
  const outcome = fetch(`${base}/api/x`, { headers: bearer(tokenFor(app)), signal: controller.signal }).then(() => 'answered', () => 'aborted')
  await within(gotRequest.promise, { message: 'the upstream got the request' })
  controller.abort()
  t.equal(await outcome, 'aborted')
  answer?.()
  await within(finallyRan.promise, { message: 'the middleware chain settled after the client left' })
  await within(closed.promise, { message: 'the upstream response was ended' })
})
