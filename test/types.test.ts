import t from 'tap'
import type {
  GatehouseClaims, GatehouseContext, GatehouseOptions, Middleware, MiddlewareEntry, RewriteFunction, TargetOptions, TenantRule
} from '../lib/index.js'

/*
 * Compile-time only: `npx tsc --noEmit -p tsconfig.json` checks this file.
 * Each `@ts-expect-error` proves a misuse is rejected; if it ever compiled,
 * tsc would fail with "Unused '@ts-expect-error' directive".
 */

// Claims as a type alias (gets an implicit index signature)...
type ShopClaims = { sub: string, role: 'shop' | 'admin', shopId: string }
// ...or as an interface extending GatehouseClaims.
interface StaffClaims extends GatehouseClaims { sub: string, roles: string[] }
type Counter = { hits: number }
interface PlainInterface { hits: number }

const logged: Middleware = async (ctx, next) => {
  ctx.log.info({ sub: ctx.user?.sub })
  await next()
}

const shops: TargetOptions<Counter, ShopClaims> = {
  prefix: '/shops/:shopId/transactions',
  upstream: 'http://127.0.0.1:8001',
  tenant: { param: 'shopId', claim: 'shopId' },
  allow: { anyRole: ['shop'] },
  rewrite: (ctx) => `/v2/${encodeURIComponent(ctx.user?.shopId ?? '')}`,
  authorize: (ctx) => {
    const role: 'shop' | 'admin' | undefined = ctx.user?.role
    ctx.state.hits++
    return role === 'shop'
  },
  middleware: [
    // A middleware written for any claims fits a typed target.
    logged,
    async (ctx, next) => {
      const shop: string | undefined = ctx.user?.shopId
      ctx.state.hits += shop === undefined ? 0 : 1
      await next()
    },
    { phase: 'targetEdge', handler: async (ctx, next) => { ctx.user?.role.toUpperCase(); await next() } }
  ],
  state: { hits: 0 }
}

const staff: TargetOptions<Record<string, unknown>, StaffClaims> = {
  prefix: '/staff',
  upstream: 'http://127.0.0.1:8002',
  rewrite: '/people/{claims.sub}',
  authorize: (ctx) => ctx.user?.roles.includes('manager') === true
}

// Existing code with one type argument (or none) still compiles.
const untyped: TargetOptions = { prefix: '/a', upstream: 'http://127.0.0.1:1', authorize: (ctx) => ctx.user?.sub === 'x' }
const stateOnly: TargetOptions<Counter> = { prefix: '/b', upstream: 'http://127.0.0.1:1', state: { hits: 0 }, authorize: (ctx) => ctx.state.hits >= 0 }

// Typed targets of different claims sit in one options object.
export const options: GatehouseOptions = {
  auth: { secret: 'x'.repeat(32), login: false },
  targets: [shops, staff, untyped, stateOnly]
}

// Reusable typed pieces.
const rewriteToShop: RewriteFunction<Record<string, unknown>, ShopClaims> = (ctx) => `/shops/${ctx.user?.shopId ?? ''}`
const entry: MiddlewareEntry<Record<string, unknown>, ShopClaims> = { handler: async (ctx, next) => { void ctx.user?.shopId; await next() } }
const binding: TenantRule<ShopClaims> = { param: 'shopId', claim: 'sub' }
export const reusable = [rewriteToShop, entry, binding]

export function userOf (ctx: GatehouseContext<Counter, ShopClaims>): ShopClaims | null {
  return ctx.user
}

// Misuse

export const wrongClaim: TargetOptions<Counter, ShopClaims> = {
  prefix: '/x',
  upstream: 'http://127.0.0.1:1',
  // @ts-expect-error ShopClaims has no `tenant` claim
  tenant: { param: 'x', claim: 'tenant' }
}

export const wrongField: TargetOptions<Counter, ShopClaims> = {
  prefix: '/x',
  upstream: 'http://127.0.0.1:1',
  // @ts-expect-error ShopClaims has no `email`
  authorize: (ctx) => ctx.user?.email === 'a'
}

export const wrongRoleValue: TargetOptions<Counter, ShopClaims> = {
  prefix: '/x',
  upstream: 'http://127.0.0.1:1',
  // @ts-expect-error 'clerk' is not a ShopClaims role
  authorize: (ctx) => ctx.user?.role === 'clerk'
}

export const nullableUser: TargetOptions<Counter, ShopClaims> = {
  prefix: '/x',
  upstream: 'http://127.0.0.1:1',
  // @ts-expect-error ctx.user may be null (public targets, no token)
  authorize: (ctx) => ctx.user.role === 'shop'
}

export const wrongState: TargetOptions<Counter, ShopClaims> = {
  prefix: '/x',
  upstream: 'http://127.0.0.1:1',
  // @ts-expect-error hits is a number
  middleware: [async (ctx, next) => { ctx.state.hits = 'many'; await next() }]
}

export const wrongRewrite: TargetOptions<Counter, ShopClaims> = {
  prefix: '/x',
  upstream: 'http://127.0.0.1:1',
  // @ts-expect-error a rewrite returns a string prefix
  rewrite: () => 42
}

export const wrongAllow: TargetOptions = {
  prefix: '/x',
  upstream: 'http://127.0.0.1:1',
  // @ts-expect-error `roles` is spelled anyRole: any or all must be explicit
  allow: { roles: ['admin'] }
}

export const wrongScopes: TargetOptions = {
  prefix: '/x',
  upstream: 'http://127.0.0.1:1',
  // @ts-expect-error allScopes takes strings
  allow: { allScopes: [1] }
}

// @ts-expect-error claims must be an object type
export type NotClaims = TargetOptions<Counter, string>

// @ts-expect-error a plain interface does not satisfy GatehouseClaims: extend it
export type PlainClaims = TargetOptions<Counter, PlainInterface>

t.pass('types only: checked by tsc')
