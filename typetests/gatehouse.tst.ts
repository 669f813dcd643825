import Fastify from 'fastify'
import { describe, expect, test } from 'tstyche'
import gatehouse, { Phase, gatehouseFrameworkErrors, staticUsers } from 'fastify-gatehouse'
import type {
  GatehouseClaims, GatehouseContext, GatehouseOptions, Middleware, MiddlewareEntry, RewriteFunction, TargetOptions,
  TenantRule, UpstreamErrorHandler
} from 'fastify-gatehouse'

const app = Fastify({ frameworkErrors: gatehouseFrameworkErrors })

// Claims as a type alias, or as an interface extending GatehouseClaims.
type ShopClaims = { sub: string, role: 'shop' | 'admin', shopId: string }
interface StaffClaims extends GatehouseClaims { sub: string, roles: string[] }
// State as an interface, or as a type alias.
interface AuditState { startedAt: number }
type Counter = { hits: number }

describe('README: Usage', () => {
  test('the register example compiles', () => {
    expect(app.register(gatehouse, {
      auth: {
        secret: process.env.GATEHOUSE_JWT_SECRET!,
        login: {
          verify: staticUsers({
            WAL001: { passwordHash: 'scrypt$16384$8$1$...', claims: { sub: 'WAL001', role: 'shop' } }
          })
        }
      },
      targets: [
        {
          prefix: '/shops/:shopId/transactions',
          upstream: 'http://127.0.0.1:8001',
          credentials: { header: 'X-API-Key', value: process.env.TRANSACTIONS_API_KEY! },
          authorize: (ctx) => ctx.params.shopId === ctx.user?.sub
        },
        {
          prefix: '/shops/:shopId/inventory',
          upstream: 'http://127.0.0.1:8002',
          credentials: { header: 'X-API-Key', value: process.env.INVENTORY_API_KEY! },
          authorize: (ctx) => ctx.params.shopId === ctx.user?.sub
        }
      ]
    })).type.not.toRaiseError()
  })

  test('a target checked with `satisfies TargetOptions` gets a typed ctx inline', () => {
    app.register(gatehouse, {
      auth: { secret: 'x'.repeat(32), login: false },
      targets: [{
        prefix: '/a',
        upstream: 'http://127.0.0.1:1',
        authorize: (ctx) => {
          expect(ctx.user).type.toBe<GatehouseClaims | null>()
          expect(ctx.state).type.toBe<Record<string, unknown>>()
          return true
        }
      } satisfies TargetOptions]
    })
  })

  test('wrong option types are refused', () => {
    expect(app.register(gatehouse, {
      auth: { secret: 'x'.repeat(32), login: false },
      targets: [{ prefix: '/a', upstream: 8001 }]
    })).type.toRaiseError("Type 'number' is not assignable to type 'string | string[]'")
    expect(app.register(gatehouse, {
      auth: { secret: 'x'.repeat(32), login: false, algorithm: 'HS1' },
      targets: []
    })).type.toRaiseError("Type '\"HS1\"' is not assignable to type 'TokenAlgorithm")
    expect(app.register(gatehouse, {
      auth: { secret: 'x'.repeat(32) },
      targets: []
    })).type.toRaiseError("Property 'login' is missing")
    expect(app.register(gatehouse, {
      auth: { secret: 'x'.repeat(32), login: false },
      targets: [],
      compres: false
    })).type.toRaiseError("'compres' does not exist")
  })
})

describe('README: Middleware', () => {
  test('the phases example compiles', () => {
    const timing: Middleware = async (ctx, next) => {
      const started = performance.now()
      await next()
      ctx.response!.headers['server-timing'] = `upstream;dur=${(performance.now() - started).toFixed(1)}`
    }
    const target: TargetOptions = {
      prefix: '/inventory',
      upstream: 'http://127.0.0.1:8002',
      middleware: [
        { phase: 'clientEdge', handler: timing },
        async (ctx, next) => {
          ctx.request.headers['x-shop'] = String(ctx.user?.sub)
          await next()
        },
        {
          phase: Phase.targetEdge,
          handler: async (ctx, next) => {
            if (ctx.request.method === 'DELETE' && ctx.user?.role !== 'admin') {
              return ctx.respond(403, { message: 'read only' })
            }
            await next()
          }
        }
      ]
    }
    expect(target).type.toBeAssignableTo<GatehouseOptions['targets'][number]>()
  })

  test('Phase keeps its literal values and names', () => {
    expect(Phase.clientEdge).type.toBe<0>()
    expect(Phase.proxy).type.toBe<500>()
    expect(Phase.targetEdge).type.toBe<1000>()
    expect<MiddlewareEntry>().type.toBeAssignableWith({ phase: 250, handler: async () => {} })
    expect<MiddlewareEntry>().type.not.toBeAssignableWith({ phase: 'edge', handler: async () => {} })
  })

  test('the bodies example compiles', () => {
    const hidePrices: Middleware = async (ctx, next) => {
      const order = await ctx.request.json<{ item: string, note?: string }>()
      expect(order).type.toBe<{ item: string, note?: string }>()
      ctx.request.body = { item: order.item, shop: ctx.user?.sub }
      await next()
      const data = await ctx.response!.json<Array<{ id: number, cost?: number }>>()
      ctx.response!.body = data.map(({ cost, ...rest }) => rest)
    }
    expect(hidePrices).type.toBeAssignableTo<Middleware<AuditState, ShopClaims>>()
  })

  test('the onUpstreamError example compiles', () => {
    const target: TargetOptions = {
      prefix: '/inventory',
      upstream: 'http://127.0.0.1:8002',
      onUpstreamError: async (error, ctx) => {
        expect(error.statusCode).type.toBe<number>()
        if (error.statusCode === 503) {
          const { retryIn } = await ctx.response!.json<{ retryIn: number }>()
          return { status: 503, body: { message: 'Inventory is in maintenance' }, headers: { 'retry-after': String(retryIn) } }
        }
      }
    }
    expect(target.onUpstreamError).type.toBeAssignableTo<UpstreamErrorHandler<Record<string, unknown>> | undefined>()
  })
})

describe('README: TypeScript', () => {
  test('claims typed per target', () => {
    const shops: TargetOptions<Record<string, unknown>, ShopClaims> = {
      prefix: '/shops/:shopId/transactions',
      upstream: 'http://127.0.0.1:8001',
      tenant: { param: 'shopId', claim: 'sub' },
      authorize: (ctx) => {
        expect(ctx.user).type.toBe<ShopClaims | null>()
        return ctx.user?.role === 'shop'
      },
      middleware: [async (ctx, next) => { ctx.log.info({ shop: ctx.user?.sub }); await next() }]
    }
    const staff: TargetOptions<object, StaffClaims> = {
      prefix: '/staff',
      upstream: 'http://127.0.0.1:8002',
      rewrite: '/people/{claims.sub}',
      authorize: (ctx) => {
        expect(ctx.user).type.toBe<StaffClaims | null>()
        return ctx.user?.roles.includes('manager') === true
      }
    }
    // Targets of different state and claims sit in one options object.
    expect<GatehouseOptions>().type.toBeAssignableWith({ auth: { secret: 'x'.repeat(32), login: false as const }, targets: [shops, staff] })
  })

  test('state typed by an interface or a type alias, with shared middleware', () => {
    const audit: Middleware<AuditState> = async (ctx, next) => {
      ctx.state.startedAt = Date.now()
      await next()
    }
    const logged: Middleware = async (ctx, next) => {
      expect(ctx.state).type.toBe<object>()
      ctx.log.info({ path: ctx.request.path })
      await next()
    }
    const isAdmin = (ctx: GatehouseContext): boolean => ctx.user?.role === 'admin'
    const onError: UpstreamErrorHandler = () => undefined

    const target: TargetOptions<AuditState> = {
      prefix: '/audit',
      upstream: 'http://127.0.0.1:9000',
      state: { startedAt: 0 },
      middleware: [audit, logged, { phase: 'clientEdge', handler: logged }],
      authorize: isAdmin,
      onUpstreamError: onError
    }
    const counted: TargetOptions<Counter, ShopClaims> = {
      prefix: '/count',
      upstream: 'http://127.0.0.1:9000',
      state: { hits: 0 },
      middleware: [logged, async (ctx, next) => { ctx.state.hits++; await next() }],
      authorize: isAdmin,
      onUpstreamError: onError
    }
    expect(target.middleware).type.not.toBe<undefined>()
    expect(counted.state).type.toBe<Counter | undefined>()
  })

  test('reusable typed pieces', () => {
    const rewriteToShop: RewriteFunction<object, ShopClaims> = (ctx) => `/shops/${ctx.user?.shopId ?? ''}`
    const binding: TenantRule<ShopClaims> = { param: 'shopId', claim: 'shopId' }
    expect<TargetOptions<Counter, ShopClaims>>().type.toBeAssignableWith({
      prefix: '/x', upstream: 'http://127.0.0.1:1', rewrite: rewriteToShop, tenant: binding
    })
  })
})

describe('errors users get', () => {
  test('a middleware for other state or other claims does not fit', () => {
    const needsAudit: Middleware<AuditState> = async (ctx, next) => { ctx.state.startedAt = 1; await next() }
    const needsStaff: Middleware<object, StaffClaims> = async (ctx, next) => { void ctx.user?.roles; await next() }
    expect<TargetOptions<Counter>>().type.not.toBeAssignableWith({
      prefix: '/x', upstream: 'http://127.0.0.1:1', middleware: [needsAudit]
    })
    expect<TargetOptions<Counter, ShopClaims>>().type.not.toBeAssignableWith({
      prefix: '/x', upstream: 'http://127.0.0.1:1', middleware: [needsStaff]
    })
  })

  test('ctx misuse inside a typed target', () => {
    const base = { prefix: '/x', upstream: 'http://127.0.0.1:1' }
    expect<TargetOptions<Counter, ShopClaims>>().type.not.toBeAssignableWith({ ...base, tenant: { param: 'x', claim: 'tenant' as const } })
    expect(() => {
      const t: TargetOptions<Counter, ShopClaims> = { ...base, authorize: (ctx) => ctx.user?.email === 'a' }
      return t
    }).type.toRaiseError("Property 'email' does not exist")
    expect(() => {
      const t: TargetOptions<Counter, ShopClaims> = { ...base, authorize: (ctx) => ctx.user?.role === 'clerk' }
      return t
    }).type.toRaiseError('no overlap')
    expect(() => {
      const t: TargetOptions<Counter, ShopClaims> = { ...base, authorize: (ctx) => ctx.user.role === 'shop' }
      return t
    }).type.toRaiseError("'ctx.user' is possibly 'null'")
    expect(() => {
      const t: TargetOptions<Counter> = { ...base, middleware: [async (ctx, next) => { ctx.state.hits = 'many'; await next() }] }
      return t
    }).type.toRaiseError("Type 'string' is not assignable to type 'number'")
    expect(() => {
      const m: Middleware = async (ctx, next) => { void ctx.state.hits; await next() }
      return m
    }).type.toRaiseError("Property 'hits' does not exist on type 'object'")
    expect<TargetOptions>().type.not.toBeAssignableWith({ ...base, rewrite: () => 42 })
    expect<TargetOptions>().type.not.toBeAssignableWith({ ...base, allow: { roles: ['admin'] } })
    expect<TargetOptions>().type.not.toBeAssignableWith({ ...base, allow: { allScopes: [1] } })
  })

  test('claims must be an object type, and an interface must extend GatehouseClaims', () => {
    interface PlainClaims { sub: string }
    expect<TargetOptions<Counter, string>>().type.toRaiseError("Type 'string' does not satisfy the constraint 'GatehouseClaims'")
    expect<TargetOptions<Counter, PlainClaims>>().type.toRaiseError('Index signature')
    expect<TargetOptions<string>>().type.toRaiseError("Type 'string' does not satisfy the constraint 'object'")
  })
})

describe('README: tracing', () => {
  test('tracing takes true, false or an OpenTelemetry tracer provider', async () => {
    const { NodeTracerProvider } = await import('@opentelemetry/sdk-trace-node')
    const provider = new NodeTracerProvider()
    const base = { auth: { secret: 's', login: false as const }, targets: [] }
    expect({ ...base, tracing: true }).type.toBeAssignableTo<GatehouseOptions>()
    expect({ ...base, tracing: { tracerProvider: provider } }).type.toBeAssignableTo<GatehouseOptions>()
    expect({ ...base, tracing: { tracerProvider: {} } }).type.not.toBeAssignableTo<GatehouseOptions>()
    expect({ ...base, tracing: 'on' }).type.not.toBeAssignableTo<GatehouseOptions>()
  })
})

describe('README: metrics and accessLog', () => {
  test('the option examples compile', () => {
    expect(app.register(gatehouse, {
      auth: { secret: 's', login: false },
      targets: [{ prefix: '/api', upstream: 'http://127.0.0.1:8001' }],
      metrics: { allow: ['10.0.0.0/8'], token: process.env.METRICS_TOKEN!, path: '/-/metrics', defaultMetrics: false },
      accessLog: { user: true }
    })).type.not.toRaiseError()
    expect(app.register(gatehouse, { auth: { secret: 's', login: false }, targets: [], metrics: true, accessLog: true })).type.not.toRaiseError()
  })

  test('mistyped or misspelled keys do not', () => {
    expect(app.register(gatehouse, { auth: { secret: 's', login: false }, targets: [], metrics: { allow: '10.0.0.0/8' } }))
      .type.toRaiseError("Type 'string' is not assignable to type 'string[]'")
    expect(app.register(gatehouse, { auth: { secret: 's', login: false }, targets: [], accessLog: { qeury: true } }))
      .type.toRaiseError("'qeury' does not exist")
  })

  test('fastify.gatehouse.metrics is a prom-client registry or undefined', () => {
    expect(app.gatehouse.metrics?.metrics()).type.toBe<Promise<string> | undefined>()
  })
})
