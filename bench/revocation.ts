import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import type { Contender } from './contender.js'
import { REVOCATION_CONTENDERS } from './contender.js'
import { REVOCATION_USER } from './gateway-apps.js'
import { fetchRaw } from './http-client.js'
import { hasCommand, spawnTracked } from './processes.js'
import { ROUTES } from './shared.js'

/*
 * Issue 15's scenario: gatehouse with per-request revocation checks, its
 * MemoryStore against Redis. The runner starts its own redis-server (no
 * persistence, a free port on 127.0.0.1), stopped with every other process.
 */

// Sequential requests of the correctness check, each of which must reach the store once.
export const REVOCATION_CHECK_REQUESTS = 200
const REDIS_READY_TIMEOUT_MS = 10_000

export type RevocationName = typeof REVOCATION_CONTENDERS[number]

async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

function redisCli (port: number, ...args: string[]): string {
  const out = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8', timeout: 5_000 })
  return out.status === 0 ? out.stdout : ''
}

/** A redis-server on a free port, tracked (and so stopped) like every child; its URL. */
export async function startRedisServer (cpu: number | undefined): Promise<{ url: string, port: number }> {
  if (!hasCommand('redis-server') || !hasCommand('redis-cli')) throw new Error('the revocation scenario needs redis-server and redis-cli (Debian/Ubuntu: apt-get install redis-server)')
  const port = await freePort()
  const child = spawnTracked('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    ...(cpu === undefined ? {} : { cpu })
  })
  let exited = false
  child.once('exit', () => { exited = true })
  const deadline = Date.now() + REDIS_READY_TIMEOUT_MS
  // An answered PING, not a log line: the log differs between versions.
  while (redisCli(port, 'ping').trim() !== 'PONG') {
    if (exited) throw new Error(`redis-server exited before it answered on port ${port}`)
    if (Date.now() > deadline) throw new Error(`redis-server did not answer on port ${port} within ${REDIS_READY_TIMEOUT_MS} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return { url: `redis://127.0.0.1:${port}`, port }
}

/** GET commands the server has run (INFO commandstats): each revocation check is one. */
export function redisGets (port: number): number {
  const match = /^cmdstat_get:calls=(\d+)/m.exec(redisCli(port, 'info', 'commandstats'))
  return match === null ? 0 : Number(match[1])
}

function claims (token: string): Record<string, unknown> {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>
  } catch {
    return {}
  }
}

/** Logs in through the gateway: the token then names a live session (`sid`) and has a `jti`. */
export async function login (url: string, password: string): Promise<string> {
  const res = await fetchRaw(`${url}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: Buffer.from(JSON.stringify({ username: REVOCATION_USER, password }))
  })
  if (res.status !== 200) throw new Error(`login answered ${res.status}: ${res.body.toString('utf8').slice(0, 200)}`)
  return (JSON.parse(res.body.toString('utf8')) as { token: string }).token
}

/**
 * Before anything is timed: the token carries `sid` and `jti`, every one of
 * `REVOCATION_CHECK_REQUESTS` requests is 200, Redis ran (at least) one GET
 * per request for the Redis contender, and a logged-out token is refused, so
 * the lookup really decides.
 */
export async function checkRevocation (contender: Contender, password: string, redisPort: number | undefined): Promise<string[]> {
  const failures: string[] = []
  const token = contender.credentials.authorization?.replace(/^Bearer /, '') ?? ''
  const { sid, jti } = claims(token)
  if (typeof sid !== 'string' || typeof jti !== 'string') failures.push(`the login token lacks sid or jti: ${JSON.stringify(claims(token))}`)
  const before = redisPort === undefined ? 0 : redisGets(redisPort)
  const statuses = new Map<number, number>()
  for (let i = 0; i < REVOCATION_CHECK_REQUESTS; i++) {
    const { status } = await fetchRaw(contender.url + ROUTES.small, { headers: contender.credentials })
    statuses.set(status, (statuses.get(status) ?? 0) + 1)
  }
  if (statuses.get(200) !== REVOCATION_CHECK_REQUESTS) failures.push(`not every response was 200: ${JSON.stringify(Object.fromEntries(statuses))}`)
  if (redisPort !== undefined) {
    const gets = redisGets(redisPort) - before
    if (gets < REVOCATION_CHECK_REQUESTS) failures.push(`redis ran ${gets} GETs for ${REVOCATION_CHECK_REQUESTS} requests: the store is not looked up per request`)
  }
  const other = await login(contender.url, password)
  const out = await fetchRaw(`${contender.url}/logout`, { method: 'POST', headers: { authorization: `Bearer ${other}`, 'content-type': 'application/json' }, body: Buffer.from('{}') })
  if (out.status >= 300) failures.push(`logout answered ${out.status}`)
  const after = await fetchRaw(contender.url + ROUTES.small, { headers: { authorization: `Bearer ${other}` } })
  if (after.status !== 401) failures.push(`a logged-out token got ${after.status}, not 401`)
  const still = await fetchRaw(contender.url + ROUTES.small, { headers: contender.credentials })
  if (still.status !== 200) failures.push(`the measured session's token got ${still.status} after another session's logout`)
  return failures
}
