import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { request } from 'undici'
import { redisStore } from '../../lib/index.js'
import type { GatehouseOptions, RedisStoreClient } from '../../lib/index.js'
import { bearer, buildApp, listen } from './app.js'
import type { Upstream } from './upstream.js'

/*
 * Gateway instances of one fleet: separate Fastify apps, each listening on its
 * own port with its own Redis client, in front of one upstream.
 */

export interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Record<string, unknown>
}

export interface Tokens { token: string, refreshToken: string }

async function send (method: 'GET' | 'POST', url: string, headers: Record<string, string>, body?: unknown): Promise<Reply> {
  const res = await request(url, {
    method,
    headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, body: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
}

export function post (url: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  return send('POST', url, headers, body)
}

export function get (url: string, token?: string): Promise<Reply> {
  return send('GET', url, token === undefined ? {} : bearer(token))
}

export async function login (base: string, username = 'alice', password = `${username}-pw`): Promise<Tokens> {
  const res = await post(`${base}/login`, { username, password })
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body as unknown as Tokens
}

export interface Instance { app: FastifyInstance, url: string }

/** One gateway instance on `client`, listening; closed at teardown (the client is not). */
export async function instance (
  t: Test, upstream: Upstream, client: RedisStoreClient, auth: Partial<GatehouseOptions['auth']>, prefix: string, commandTimeout = 300
): Promise<Instance> {
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: { ...auth, store: redisStore({ client, prefix, commandTimeout }) }
  })
  return { app, url: await listen(app) }
}
