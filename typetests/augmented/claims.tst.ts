import { expect, test } from 'tstyche'
import type { CredentialsVerifier, GatehouseClaims, Middleware, TargetOptions } from 'fastify-gatehouse'

// The README's augmentation, verbatim. It lives in its own tsconfig project
// so that it types only the tests of this folder.
declare module 'fastify-gatehouse' {
  interface GatehouseClaims {
    sub: string
    role: 'shop' | 'admin'
  }
}

test('the augmentation types ctx.user on every target', () => {
  const target: TargetOptions = {
    prefix: '/x',
    upstream: 'http://127.0.0.1:1',
    authorize: (ctx) => {
      expect(ctx.user?.sub).type.toBe<string | undefined>()
      expect(ctx.user?.role).type.toBe<'shop' | 'admin' | undefined>()
      return ctx.user?.role === 'admin'
    }
  }
  const shared: Middleware = async (ctx, next) => {
    expect(ctx.user).type.toBe<GatehouseClaims | null>()
    await next()
  }
  expect(target).type.toBeAssignableTo<TargetOptions>()
  expect(shared).type.toBeAssignableTo<Middleware>()
})

test('verify must return the augmented claims', () => {
  expect<CredentialsVerifier>().type.toBeAssignableWith(() => ({ sub: 'WAL001', role: 'shop' as const }))
  expect<CredentialsVerifier>().type.not.toBeAssignableWith(() => ({ sub: 'WAL001' }))
  expect<CredentialsVerifier>().type.not.toBeAssignableWith(() => ({ sub: 'WAL001', role: 'clerk' as const }))
})

test('a role outside the union is an error', () => {
  expect(() => {
    const t: TargetOptions = { prefix: '/x', upstream: 'http://127.0.0.1:1', authorize: (ctx) => ctx.user?.role === 'clerk' }
    return t
  }).type.toRaiseError('no overlap')
})
