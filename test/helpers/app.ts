import Fastify from 'fastify'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import type { Test } from 'tap'
import gatehouse, { gatehouseFrameworkErrors, hashPassword, staticUsers } from '../../lib/index.js'
import type { GatehouseOptions, TargetOptions } from '../../lib/index.js'

/** A 32-byte HS256 secret for tests. */
export const SECRET = 'test-secret-that-is-at-least-32-bytes-long!'

// Cheap scrypt cost for tests only: the format and code path are the same.
const TEST_COST = { N: 1024, r: 8, p: 1 }

/** Password hash made with a cheap cost, for fast tests. */
export function testHash (password: string): Promise<string> {
  return hashPassword(password, TEST_COST)
}

/** `alice`/`alice-pw` with claims { sub: 'alice', role: 'admin' }, `bob`/`bob-pw` with role 'clerk'. */
export async function testUsers () {
  return staticUsers({
    alice: { passwordHash: await testHash('alice-pw'), claims: { sub: 'alice', role: 'admin' } },
    bob: { passwordHash: await testHash('bob-pw'), claims: { sub: 'bob', role: 'clerk' } }
  })
}

export interface BuildOptions {
  targets: TargetOptions<any>[]
  auth?: Partial<GatehouseOptions['auth']>
  compress?: GatehouseOptions['compress']
  /** Fastify server options for the host app. */
  server?: FastifyServerOptions
}

/**
 * A host app with the gatehouse registered (HS256, login with the test users
 * unless `auth.login` is given), closed on teardown.
 */
export async function buildApp (t: Test, opts: BuildOptions): Promise<FastifyInstance> {
  // As the README recommends: the host maps Fastify's own URL errors to the gatehouse shape.
  const app = Fastify({ logger: false, frameworkErrors: gatehouseFrameworkErrors, ...opts.server })
  t.teardown(() => app.close())
  await app.register(gatehouse, {
    auth: { secret: SECRET, login: { verify: await testUsers() }, ...opts.auth },
    targets: opts.targets,
    ...(opts.compress === undefined ? {} : { compress: opts.compress })
  })
  await app.ready()
  return app
}

/** Starts the app on 127.0.0.1:0 and returns its base URL. */
export async function listen (app: FastifyInstance): Promise<string> {
  return app.listen({ port: 0, host: '127.0.0.1' })
}

/** A token for claims, signed by the app's own key. */
export function tokenFor (app: FastifyInstance, claims: Record<string, unknown> = { sub: 'alice', role: 'admin' }): string {
  return app.gatehouse.signToken(claims)
}

export function bearer (token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` }
}
