import t from 'tap'
import type { Test } from 'tap'
import { PassThrough, Readable } from 'node:stream'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import replyFrom from '@fastify/reply-from'
import type { FastifyReplyFromOptions } from '@fastify/reply-from'

/*
 * The reply-from behaviours lib/proxy/target.ts, lib/proxy/context.ts and
 * lib/transport/dispatcher.ts rely on, each pinned here so that an upgrade
 * of @fastify/reply-from that changes one fails this file, not production.
 * The gateway registers reply-from with `undici` set to its own transport
 * (an object with `request(opts, callback)`); so does this file, with a fake
 * that records what reply-from hands over and answers as told.
 */

interface Seen { headers: Record<string | symbol, unknown>, body: unknown, method: string, path: string }

const MARK = Symbol('contract.mark')

async function gateway (t: Test, answer: (opts: Seen, callback: (err: Error | null, res?: unknown) => void) => void, route: (app: FastifyInstance) => void): Promise<{ app: FastifyInstance, seen: Seen[] }> {
  const seen: Seen[] = []
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  const undici = {
    request (opts: Seen, callback: (err: Error | null, res?: unknown) => void): void {
      seen.push(opts)
      answer(opts, callback)
    }
  }
  await app.register(replyFrom, { base: 'http://127.0.0.1:9', undici: undici as unknown as FastifyReplyFromOptions['undici'], disableRequestLogging: true })
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, payload, done) => { done(null, payload) })
  route(app)
  return { app, seen }
}

function ok (_opts: Seen, callback: (err: Error | null, res?: unknown) => void): void {
  callback(null, { statusCode: 200, headers: {}, body: Readable.from([Buffer.from('ok')]) })
}

t.test('the headers object reaches the dispatcher as a copy with its symbol keys (dispatcher.ts bindReply)', async (t) => {
  const { app, seen } = await gateway(t, ok, (app) => {
    app.get('/', (_request, reply) => {
      const headers = { 'x-a': '1', [MARK]: 'the reply' }
      reply.from('/', { rewriteRequestHeaders: () => headers as unknown as Record<string, string> })
    })
  })
  const res = await app.inject('/')
  t.equal(res.statusCode, 200)
  t.equal(seen.length, 1)
  t.equal(seen[0]?.headers[MARK], 'the reply', 'Object.assign in reply-from lib/request.js copies symbol keys')
  t.equal(seen[0]?.headers['x-a'], '1')
})

t.test('a dispatcher error reaches onError wrapped, the original as its cause (dispatcher.ts transportError)', async (t) => {
  const original = Object.assign(new Error('no upstream'), { code: 'FST_GATEHOUSE_NO_HEALTHY_UPSTREAM' })
  let received: unknown
  const { app } = await gateway(t, (_opts, callback) => callback(original), (app) => {
    app.get('/', (_request, reply) => {
      reply.from('/', {
        onError (reply, { error }) {
          received = error
          void reply.code(503).send('handled')
        }
      })
    })
  })
  const res = await app.inject('/')
  t.equal(res.statusCode, 503)
  t.not(received, original, 'reply-from does not pass the error as it is')
  t.equal((received as { cause?: unknown }).cause, original, 'but keeps it as the cause')
})

t.test('a new body cannot be passed as a stream in `body` (context.ts replyFromBody)', async (t) => {
  let thrown: unknown
  const { app } = await gateway(t, ok, (app) => {
    app.post('/', (_request, reply) => {
      try {
        reply.from('/', { body: new PassThrough() as never })
      } catch (err) {
        thrown = err
        void reply.code(500).send()
      }
    })
  })
  await app.inject({ method: 'POST', url: '/', payload: 'x' })
  t.match(thrown, { message: /stream is not supported/ }, 'reply-from throws on a stream body')
})

t.test('a stream in request.body is piped to the dispatcher as it is (context.ts replyFromBody)', async (t) => {
  const replacement = Readable.from([Buffer.from('replaced')])
  const { app, seen } = await gateway(t, ok, (app) => {
    app.post('/', (request, reply) => {
      request.body = replacement
      reply.from('/')
    })
  })
  const res = await app.inject({ method: 'POST', url: '/', payload: 'original' })
  t.equal(res.statusCode, 200)
  t.equal(seen[0]?.body, replacement, 'the same stream object reaches the dispatcher')
})

t.test('a truthy body on GET is refused, an empty Buffer included; null sends none (context.ts replyFromBody)', async (t) => {
  const errors: unknown[] = []
  const { app, seen } = await gateway(t, ok, (app) => {
    app.get('/:kind', (request, reply) => {
      const body = (request.params as { kind: string }).kind === 'empty' ? Buffer.alloc(0) : null
      try {
        reply.from('/', { body })
      } catch (err) {
        errors.push(err)
        void reply.code(500).send()
      }
    })
  })
  t.equal((await app.inject('/empty')).statusCode, 500)
  t.match(errors[0], { message: /Rewriting the body when doing a GET is not allowed/ })
  t.equal((await app.inject('/null')).statusCode, 200)
  t.equal(seen.length, 1)
  t.equal(seen[0]?.body, undefined, 'body: null sends no body')
})
