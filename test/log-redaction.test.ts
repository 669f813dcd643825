/* eslint-disable no-template-curly-in-string -- the config files under test hold ${NAME} references on purpose */
import { join } from 'node:path'
import { Writable } from 'node:stream'
import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import gatehouse, { gatehouseFrameworkErrors, gatehouseLogging, gatehouseRequestId, staticUsers } from '../lib/index.js'
import type { GatehouseOptions } from '../lib/index.js'
import { testHash } from './helpers/app.js'
import { serveCli } from './helpers/cli.js'
import { closedPort, upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'

/*
 * Issue 16 section 3: no secret reaches a log line, at the most verbose
 * level, whatever the gateway does: logins (good and bad), proxied requests
 * with bearer tokens, cookies and tokens in the query, injected credentials,
 * an upstream that set cookies, an upstream that is down, a Redis store
 * whose URL holds a password. Checked in the plugin with a capturing logger
 * and in the CLI as a real process.
 */

t.setTimeout(180_000)

const JWT_SECRET = 'log-redaction-jwt-secret-of-32-bytes-min'
const PASSWORD = 'hunter2-correct-horse-battery'
const API_KEY = 'inventory-api-key-6f1d0c9b'
const UPSTREAM_BEARER = 'orders-upstream-bearer-4e2a'
const COOKIE_VALUE = 'cookie-session-secret-77ab'
const SET_COOKIE_VALUE = 'upstream-set-cookie-secret-91cd'
const REDIS_PASSWORD = 'redis-url-password-3c5e'

/** Upstreams: one that echoes what it got and sets a cookie; the second address is closed. */
async function upstreams (t: Test): Promise<{ upstream: Upstream, down: string }> {
  const upstream = await upstreamFor(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'set-cookie': `sid=${SET_COOKIE_VALUE}; HttpOnly` }).end('ok')
  })
  return { upstream, down: `http://127.0.0.1:${await closedPort()}` }
}

/** Drives every flow against `base`; returns the tokens it saw, which must not be logged either. */
async function drive (t: Test, base: string, upstream: Upstream): Promise<string[]> {
  const failed = await fetch(`${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'ann', password: `${PASSWORD}-wrong` }) })
  t.equal(failed.status, 401, 'failed login')
  const login = await fetch(`${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'ann', password: PASSWORD }) })
  t.equal(login.status, 200, 'login')
  const { token } = await login.json() as { token: string }
  const headers = { authorization: `Bearer ${token}`, cookie: `session=${COOKIE_VALUE}` }
  const inventory = await fetch(`${base}/inventory/items?page=2&access_token=${token}`, { headers })
  t.equal(inventory.status, 200, 'proxied with a bearer token, a cookie and a token in the query')
  t.match(inventory.headers.get('set-cookie'), SET_COOKIE_VALUE, 'the client still gets the cookie')
  t.equal(upstream.seen[0]?.headers['x-api-key'], API_KEY, 'the credential was injected')
  t.equal((await fetch(`${base}/orders/1`, { headers })).status, 200)
  t.equal(upstream.seen[1]?.headers.authorization, `Bearer ${UPSTREAM_BEARER}`)
  t.equal((await fetch(`${base}/down/x`, { headers })).status, 502, 'upstream error')
  t.equal((await fetch(`${base}/inventory/x`, { headers: { authorization: 'Bearer not.a.token' } })).status, 401, 'bad token')
  return [token]
}

function assertNoSecret (t: Test, output: string, extra: string[]): void {
  for (const secret of [PASSWORD, JWT_SECRET, API_KEY, UPSTREAM_BEARER, COOKIE_VALUE, SET_COOKIE_VALUE, REDIS_PASSWORD, ...extra]) {
    t.notOk(output.includes(secret), `the logs never hold ${secret.slice(0, 12)}...`)
  }
  // The token's signature alone is a secret too (header and claims are not).
  for (const token of extra) t.notOk(output.includes(token.split('.')[2] as string), 'nor a token signature')
}

t.test('plugin: a host logger with gatehouseLogging() at trace level', async (t) => {
  const { upstream, down } = await upstreams(t)
  let output = ''
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { output += chunk.toString(); done() } })
  const options: GatehouseOptions = {
    auth: { secret: JWT_SECRET, login: { verify: staticUsers({ ann: { passwordHash: await testHash(PASSWORD) } }) } },
    targets: [
      {
        prefix: '/inventory',
        upstream: upstream.url,
        credentials: { header: 'x-api-key', value: API_KEY },
        // A middleware that logs what it sees, as an audit hook would.
        middleware: [async (ctx, next) => {
          ctx.log.info({ headers: ctx.request.headers, request: { headers: ctx.fastifyRequest.headers } }, 'audit')
          await next()
          ctx.log.info({ response: { headers: ctx.response?.headers } }, 'audit response')
        }]
      },
      { prefix: '/orders', upstream: upstream.url, credentials: { bearer: UPSTREAM_BEARER } },
      { prefix: '/down', upstream: down }
    ]
  }
  const app = Fastify({ logger: { level: 'trace', stream, ...gatehouseLogging(options) }, genReqId: gatehouseRequestId(), frameworkErrors: gatehouseFrameworkErrors })
  t.teardown(() => app.close())
  await app.register(gatehouse, options)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const tokens = await drive(t, base, upstream)
  await app.close()
  // The lines are there, with the headers censored in place.
  t.match(output, /"authorization":"\[Redacted\]"/)
  t.match(output, /"cookie":"\[Redacted\]"/)
  t.match(output, /"set-cookie":"\[Redacted\]"/)
  t.match(output, /"url":"\/inventory\/items\?page=2&access_token=\[Redacted\]"/)
  t.match(output, /"msg":"gatehouse request failed"/, 'the upstream error was logged')
  assertNoSecret(t, output, tokens)
})

/** A config file for `gatehouse serve` at log level trace, user ann, with these extra auth lines and targets. */
async function traceConfig (t: Test, auth: string[], targets: string[]): Promise<string> {
  const root = t.testdir({
    'users.yaml': `ann:\n  passwordHash: '${await testHash(PASSWORD)}'\n`,
    'gateway.yaml': [
      'listen: { host: 127.0.0.1, port: 0 }',
      'logging: { level: trace }',
      'auth:',
      '  secret: ${JWT_SECRET}',
      '  login: { users: ./users.yaml }',
      ...auth,
      'targets:',
      ...targets
    ].join('\n') + '\n'
  })
  return join(root, 'gateway.yaml')
}

t.test('CLI: `gatehouse serve` at logging level trace', async (t) => {
  const { upstream, down } = await upstreams(t)
  const file = await traceConfig(t, [], [
    `  - { prefix: /inventory, upstream: '${upstream.url}', credentials: { header: x-api-key, value: '\${API_KEY}' } }`,
    `  - { prefix: /orders, upstream: '${upstream.url}', credentials: { bearer: '\${ORDERS_BEARER}' } }`,
    `  - { prefix: /down, upstream: '${down}' }`
  ])
  const cli = await serveCli(t, file, { JWT_SECRET, API_KEY, ORDERS_BEARER: UPSTREAM_BEARER })
  const tokens = await drive(t, cli.url, upstream)
  // Health is on by default in the CLI.
  t.equal((await fetch(`${cli.url}/readyz`)).status, 200)
  const proxied = await fetch(`${cli.url}/orders/2`, { headers: { authorization: `Bearer ${tokens[0] as string}`, 'x-request-id': 'untrusted-caller-id' } })
  const id = proxied.headers.get('x-request-id') as string
  t.not(id, 'untrusted-caller-id', 'no trustProxy: the caller\'s id is replaced')
  t.equal(upstream.seen.at(-1)?.headers['x-request-id'], id)
  cli.child.kill('SIGTERM')
  t.equal(await cli.exit, 0)
  const output = cli.stdout() + cli.stderr()
  t.ok(output.includes(`"reqId":"${id}"`), 'the request logged under the id the client got')
  t.match(output, /"url":"\/inventory\/items\?page=2&access_token=\[Redacted\]"/)
  assertNoSecret(t, output, tokens)
})

t.test('CLI: a Redis store URL with a password that cannot connect', async (t) => {
  const { upstream } = await upstreams(t)
  const port = await closedPort()
  const file = await traceConfig(t, [
    '  refresh: true',
    `  store: { redis: { url: 'redis://:\${REDIS_PASSWORD}@127.0.0.1:${port}/0' } }`
  ], [`  - { prefix: /inventory, upstream: '${upstream.url}' }`])
  const cli = await serveCli(t, file, { JWT_SECRET, REDIS_PASSWORD })
  const readiness = await fetch(`${cli.url}/readyz`)
  t.equal(readiness.status, 503)
  t.same(await readiness.json(), { status: 'unavailable', reasons: ['store unreachable'] })
  const login = await fetch(`${cli.url}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'ann', password: PASSWORD }) })
  t.equal(login.status, 503, 'login needs the store')
  cli.child.kill('SIGTERM')
  await cli.exit
  const output = cli.stdout() + cli.stderr()
  t.match(output, /"code":"ECONNREFUSED","msg":"redis store connection failed; retrying"/, 'the outage logged once, by its code')
  t.notMatch(output, /\[ioredis\] Unhandled error event/, 'ioredis does not print its own errors')
  assertNoSecret(t, output, [])
})

t.test('gatehouseLogging: computed credential names, WebSocket token parameters, odd query pairs, other `req` objects', async (t) => {
  const logging = gatehouseLogging({
    auth: { secret: JWT_SECRET, login: false },
    targets: [
      { prefix: '/a', upstream: 'http://127.0.0.1:9', credentials: { headers: ['X-Signature'], compute: () => ({ 'x-signature': 's' }) } },
      { prefix: '/b', upstream: 'http://127.0.0.1:9', websocket: { token: { queryParameter: 'Ticket' } } }
    ]
  })
  t.ok(logging.redact.paths.includes('req.headers["x-signature"]'))
  t.ok(logging.redact.paths.includes('res.headers["set-cookie"]'))
  const url = (value: string): unknown => logging.serializers.req({ url: value, raw: {}, method: 'GET', headers: {}, socket: undefined } as never).url
  t.equal(url('/b/feed?ticket=abc&x=1&flag&Access%5Ftoken=t&bad=%E0%A4%A'), '/b/feed?ticket=[Redacted]&x=1&flag&Access%5Ftoken=[Redacted]&bad=%E0%A4%A')
  t.equal(url('/b/feed?%E0%A4%A=1&access_token'), '/b/feed?%E0%A4%A=1&access_token=[Redacted]')
  t.equal(url('/plain'), '/plain')
  const own = { headers: { a: 1 } }
  t.equal(logging.serializers.req(own as never), own, 'a middleware\'s own `req` object passes as it is')
})
