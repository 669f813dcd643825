import t from 'tap'
import { setTimeout as delay } from 'node:timers/promises'
import { request } from 'undici'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { echo, upstreamFor } from './helpers/upstream.js'
import type { GatehouseContext, Middleware, MiddlewareEntry, Next } from '../lib/index.js'

interface Traced { trace: string[] }

/** A middleware that records its name before and after `next()` in `ctx.state.trace`. */
function tracer (name: string): Middleware<Traced> {
  return async (ctx, next) => {
    ctx.state.trace.push(`${name}>`)
    await next()
    ctx.state.trace.push(`<${name}`)
  }
}

t.test('phases run as an onion: lower phases first before next() and last after it', async (t) => {
  const upstream = await upstreamFor(t)
  // The reporter is the first clientEdge entry, so it is the outermost layer.
  const reporter: MiddlewareEntry<Traced> = {
    phase: 'clientEdge',
    handler: async (ctx, next) => {
      ctx.state.trace = ['report>']
      await next()
      ctx.state.trace.push('<report')
      if (ctx.response !== undefined) ctx.response.headers['x-trace'] = ctx.state.trace.join(' ')
    }
  }
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [
        { phase: 'targetEdge', handler: tracer('target1') },
        tracer('proxy1'),
        { phase: 250, handler: tracer('n250') },
        reporter,
        { phase: 'proxy', handler: tracer('proxy2') },
        { phase: 0, handler: tracer('edge2') },
        { phase: 1000, handler: tracer('target2') },
        { phase: 999.5, handler: tracer('n999.5') }
      ]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-trace'], [
    'report>', 'edge2>', 'n250>', 'proxy1>', 'proxy2>', 'n999.5>', 'target1>', 'target2>',
    '<target2', '<target1', '<n999.5', '<proxy2', '<proxy1', '<n250', '<edge2', '<report'
  ].join(' '))
  t.equal(upstream.seen.length, 1)
})

t.test('the upstream is called once, after every middleware ran before next()', async (t) => {
  const events: string[] = []
  const upstream = await upstreamFor(t, (req, res, seen) => {
    events.push('upstream')
    echo(req, res, seen)
  })
  const mark = (name: string): Middleware => async (_ctx, next) => {
    events.push(`${name}>`)
    await next()
    events.push(`<${name}`)
  }
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url, middleware: [{ phase: 'targetEdge', handler: mark('b') }, { phase: 'clientEdge', handler: mark('a') }] }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.same(events, ['a>', 'b>', 'upstream', '<b', '<a'])
})

t.test('mutations of ctx.request before next() reach the upstream', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (ctx, next) => {
        ctx.request.method = 'PUT'
        ctx.request.path = '/api/rewritten/by/middleware'
        ctx.request.query = 'page=2&q=a+b'
        ctx.request.headers['x-added'] = 'by-middleware'
        ctx.request.headers['x-multi'] = ['one', 'two']
        delete ctx.request.headers['x-remove-me']
        await next()
      }]
    }]
  })
  const res = await app.inject({ url: '/api/original?page=1', headers: { ...bearer(tokenFor(app)), 'x-remove-me': 'please' } })
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  const seen = upstream.seen[0]
  t.equal(seen?.method, 'PUT')
  t.equal(seen?.url, '/api/rewritten/by/middleware?page=2&q=a+b')
  t.equal(seen?.headers['x-added'], 'by-middleware')
  t.equal(seen?.headers['x-multi'], 'one, two')
  t.notOk('x-remove-me' in (seen?.headers ?? {}))
})

t.test('the path middleware set before next() is checked against traversal too', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: `${upstream.url}/base`,
      middleware: [async (ctx, next) => {
        ctx.request.path = '/base/../admin'
        await next()
      }]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'FST_GATEHOUSE_PATH_NOT_ALLOWED')
  t.equal(upstream.seen.length, 0)
})

t.test('mutations of ctx.response after next() reach the client', async (t) => {
  const upstream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-remove-me': 'secret', 'x-keep': 'kept' })
    res.end('{"from":"upstream"}')
  })
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (ctx, next) => {
        await next()
        if (ctx.response === undefined) return
        ctx.response.status = 201
        ctx.response.headers['x-added'] = 'after'
        delete ctx.response.headers['x-remove-me']
      }]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 201)
  t.equal(res.headers['x-added'], 'after')
  t.equal(res.headers['x-keep'], 'kept')
  t.notOk('x-remove-me' in res.headers)
  t.equal(res.body, '{"from":"upstream"}')
  t.equal(upstream.seen.length, 1)
})

interface Counter { count: number, tag: string, extra?: string }

t.test('ctx.state is seeded from the target state and fresh for every request', async (t) => {
  const upstream = await upstreamFor(t)
  const seed: Counter = { count: 0, tag: 'seed' }
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      state: seed,
      middleware: [async (ctx: GatehouseContext<Counter>, next: Next) => {
        const before = JSON.stringify(ctx.state)
        ctx.state.count++
        ctx.state.extra = 'set by this request'
        await next()
        if (ctx.response !== undefined) {
          ctx.response.headers['x-state-before'] = before
          ctx.response.headers['x-state-after'] = JSON.stringify(ctx.state)
        }
      }]
    }]
  })
  const headers = bearer(tokenFor(app))
  const first = await app.inject({ url: '/api/x', headers })
  const second = await app.inject({ url: '/api/x', headers })
  for (const res of [first, second]) {
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-state-before'], '{"count":0,"tag":"seed"}', 'no leak from an earlier request')
    t.equal(res.headers['x-state-after'], '{"count":1,"tag":"seed","extra":"set by this request"}')
  }
  t.same(seed, { count: 0, tag: 'seed' }, 'the seed object itself is never mutated')
})

t.test('ctx.state is fresh per request even when a middleware replaces it', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      state: { n: 1 },
      middleware: [async (ctx: GatehouseContext<{ n: number }>, next: Next) => {
        const seen = ctx.state.n
        ctx.state = { n: 99 }
        await next()
        if (ctx.response !== undefined) ctx.response.headers['x-n'] = String(seen)
      }]
    }]
  })
  const headers = bearer(tokenFor(app))
  t.equal((await app.inject({ url: '/api/x', headers })).headers['x-n'], '1')
  t.equal((await app.inject({ url: '/api/x', headers })).headers['x-n'], '1')
})

interface PerRequest { sub?: string, id?: string }

t.test('50 concurrent requests never see each other\'s ctx, state or user', async (t) => {
  const upstream = await upstreamFor(t, (req, res, seen) => {
    // Random small latencies so that responses come back out of order.
    setTimeout(() => echo(req, res, seen), Math.floor(Math.random() * 25))
  })
  const contexts = new Set<GatehouseContext<PerRequest>>()
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      state: {},
      middleware: [
        {
          phase: 'clientEdge',
          handler: async (ctx: GatehouseContext<PerRequest>, next: Next) => {
            contexts.add(ctx)
            t.same(ctx.state, {}, 'state starts from the seed')
            ctx.state.sub = String(ctx.user?.sub)
            ctx.state.id = String(ctx.request.headers['x-test-marker'])
            await delay(Math.floor(Math.random() * 10))
            await next()
            if (ctx.response === undefined) return
            ctx.response.headers['x-seen'] = [ctx.state.sub, ctx.state.id, String(ctx.user?.sub), String(ctx.request.headers['x-user'])].join('|')
          }
        },
        {
          phase: 'targetEdge',
          handler: async (ctx: GatehouseContext<PerRequest>, next: Next) => {
            await delay(Math.floor(Math.random() * 10))
            ctx.request.headers['x-user'] = ctx.state.sub
            await next()
          }
        }
      ]
    }]
  })
  const base = await listen(app)
  const results = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
    const sub = `user-${i}`
    const res = await request(`${base}/api/item/${i}`, {
      headers: { ...bearer(tokenFor(app, { sub })), 'x-test-marker': `req-${i}` }
    })
    const body = await res.body.json() as { url: string, headers: Record<string, string> }
    return { i, sub, status: res.statusCode, seen: res.headers['x-seen'], body }
  }))
  t.equal(contexts.size, 50, 'one context object per request')
  t.equal(upstream.seen.length, 50)
  for (const { i, sub, status, seen, body } of results) {
    t.equal(status, 200)
    t.equal(seen, `${sub}|req-${i}|${sub}|${sub}`, `request ${i} saw only its own context`)
    t.equal(body.url, `/api/item/${i}`)
    t.equal(body.headers['x-user'], sub, `upstream got request ${i}'s user`)
    t.equal(body.headers['x-test-marker'], `req-${i}`)
  }
})

t.test('ctx.respond() without next() answers without the upstream; outer layers still see it', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [
        { phase: 'targetEdge', handler: tracer('never') as Middleware<any> },
        async (ctx) => {
          ctx.respond(200, { cached: true }, { 'x-cache': 'hit' })
        },
        {
          phase: 'clientEdge',
          handler: async (ctx, next) => {
            await next()
            if (ctx.response !== undefined) ctx.response.headers['x-outer-saw'] = String(ctx.response.status)
          }
        }
      ]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { cached: true })
  t.equal(res.headers['x-cache'], 'hit')
  t.equal(res.headers['x-outer-saw'], '200')
  t.equal(upstream.seen.length, 0, 'the upstream was never contacted')
})

t.test('ctx.respond() before next() skips the upstream even if next() is called', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (ctx, next) => {
        ctx.respond(418, 'short and stout', { 'content-type': 'text/plain' })
        await next()
      }]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 418)
  t.equal(res.body, 'short and stout')
  t.equal(upstream.seen.length, 0)
})

t.test('a thrown error with a 4xx statusCode and its own code becomes that response', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async () => {
        throw Object.assign(new Error('Slow down'), { statusCode: 429, code: 'RATE_LIMITED' })
      }]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 429)
  t.same(res.json(), { statusCode: 429, code: 'RATE_LIMITED', error: 'Too Many Requests', message: 'Slow down' })
  t.equal(upstream.seen.length, 0)
})

t.test('a thrown plain Error gives 500 without leaking its message', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [() => {
        throw new Error('db password is hunter2')
      }]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 500)
  t.same(res.json(), { statusCode: 500, code: 'FST_GATEHOUSE_INTERNAL', error: 'Internal Server Error', message: 'Internal Server Error' })
  t.notOk(res.body.includes('hunter2'))
  t.equal(upstream.seen.length, 0)
})

t.test('a middleware that neither answers nor calls next() gives 500', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, middleware: [async () => {}] }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 500)
  t.match(res.json(), { statusCode: 500, code: /^FST_GATEHOUSE_/ })
  t.equal(upstream.seen.length, 0)
})

t.test('authorize returning false gives 403 with zero upstream hits', async (t) => {
  const upstream = await upstreamFor(t)
  let middlewareRan = false
  const app = await buildApp(t, {
    targets: [{
      prefix: '/shops/:shopId/tx',
      upstream: upstream.url,
      authorize: (ctx) => ctx.user?.sub === ctx.params.shopId,
      middleware: [async (_ctx, next) => { middlewareRan = true; await next() }]
    }]
  })
  const denied = await app.inject({ url: '/shops/BBY001/tx', headers: bearer(tokenFor(app, { sub: 'WAL001' })) })
  t.equal(denied.statusCode, 403)
  t.same(denied.json(), { statusCode: 403, code: 'FST_GATEHOUSE_FORBIDDEN', error: 'Forbidden', message: 'Access to this resource is forbidden' })
  t.equal(upstream.seen.length, 0)
  t.notOk(middlewareRan, 'no middleware runs for a refused request')
  const allowed = await app.inject({ url: '/shops/WAL001/tx', headers: bearer(tokenFor(app, { sub: 'WAL001' })) })
  t.equal(allowed.statusCode, 200)
  t.equal(upstream.seen.length, 1)
})

t.test('authorize returning a truthy non-true value is not taken as consent', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url, authorize: (() => 'yes') as unknown as () => boolean }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 403)
  t.equal(upstream.seen.length, 0)
})

t.test('authorize throwing a 418 error gives 418', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      authorize: async () => {
        throw Object.assign(new Error('I am a teapot'), { statusCode: 418, code: 'TEAPOT' })
      }
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 418)
  t.same(res.json(), { statusCode: 418, code: 'TEAPOT', error: "I'm a Teapot", message: 'I am a teapot' })
  t.equal(upstream.seen.length, 0)
})

t.test('authorize runs after the token check', async (t) => {
  const upstream = await upstreamFor(t)
  let calls = 0
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url, authorize: () => { calls++; return true } }]
  })
  const res = await app.inject({ url: '/api/x' })
  t.equal(res.statusCode, 401)
  t.equal(calls, 0)
  t.equal(upstream.seen.length, 0)
})

// The cases below drop an upstream body that is already flowing; they come last so
// that a failure to clean it up cannot stop the cases above from running.

t.test('a middleware may replace the response body after next()', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (ctx, next) => {
        await next()
        ctx.respond(202, { replaced: true }, { 'x-replaced': '1' })
      }]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 202)
  t.same(res.json(), { replaced: true })
  t.equal(res.headers['x-replaced'], '1')
  t.equal(upstream.seen.length, 1)
})

t.test('an error thrown after next() replaces the upstream response', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (_ctx, next) => {
        await next()
        throw Object.assign(new Error('Nope'), { statusCode: 409, code: 'CONFLICT_FOUND' })
      }]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 409)
  t.same(res.json(), { statusCode: 409, code: 'CONFLICT_FOUND', error: 'Conflict', message: 'Nope' })
  t.equal(upstream.seen.length, 1)
})

t.test('calling next() twice gives 500', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{
      prefix: '/api',
      upstream: upstream.url,
      middleware: [async (_ctx, next) => {
        await next()
        await next()
      }]
    }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 500)
  t.same(res.json(), { statusCode: 500, code: 'FST_GATEHOUSE_INTERNAL', error: 'Internal Server Error', message: 'Internal Server Error' })
  t.equal(upstream.seen.length, 1, 'the upstream was called once only')
})
