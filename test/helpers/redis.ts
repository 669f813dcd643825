import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { Redis } from 'ioredis'
import type { RedisOptions } from 'ioredis'
import type { Test } from 'tap'
import { closedPort } from './upstream.js'
import { DEFAULT_DEADLINE } from './wait.js'

/*
 * A throw-away redis-server per test file: a free port on 127.0.0.1, no
 * persistence, killed at teardown. Tests never touch a Redis they did not start.
 */

const REDIS_SERVER = 'redis-server'
const INSTALL_HINT = 'redis-server not found: install it (Debian/Ubuntu: apt-get install -y redis-server) to run the Redis tests'

/** True when redis-server can run here. */
export const hasRedisServer = spawnSync(REDIS_SERVER, ['--version']).status === 0

/**
 * The skip option for Redis tests: skipped with an install hint when
 * redis-server is missing, unless GATEHOUSE_REQUIRE_REDIS=1 (CI), where the
 * tests run and fail.
 */
export const redisSkip: string | false = hasRedisServer || process.env.GATEHOUSE_REQUIRE_REDIS === '1' ? false : INSTALL_HINT

export interface RedisServer {
  readonly port: number
  readonly url: string
  /** Kills the server (SIGKILL: no goodbye to clients) and waits for it to exit. */
  kill: () => Promise<void>
  /** Starts it again on the same port, empty. */
  restart: () => Promise<void>
  /** A new ioredis client on this server, disconnected at teardown. */
  client: (opts?: RedisOptions) => Redis
}

async function startProcess (port: number): Promise<ChildProcess> {
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  // Wait for an answered PING rather than a log line, which differs between
  // versions; the probe retries until the server listens.
  const probe = new Redis({ port, host: '127.0.0.1', retryStrategy: () => 20, maxRetriesPerRequest: null })
  probe.on('error', () => {})
  const exited = once(child, 'exit').then(([code]) => { throw new Error(`redis-server exited with ${String(code)}: ${output}`) })
  exited.catch(() => {})
  const timer = setTimeout(() => child.kill('SIGKILL'), DEFAULT_DEADLINE)
  try {
    await Promise.race([probe.ping(), exited])
  } catch (err) {
    child.kill('SIGKILL')
    throw err
  } finally {
    clearTimeout(timer)
    probe.disconnect()
  }
  return child
}

/** Starts redis-server on a free port; stopped and its clients disconnected at teardown. */
export async function startRedis (t: Test): Promise<RedisServer> {
  const port = await closedPort()
  let child: ChildProcess | undefined = await startProcess(port)
  const clients: Redis[] = []
  const stop = async (): Promise<void> => {
    const running = child
    child = undefined
    if (running === undefined || running.exitCode !== null) return
    const exit = once(running, 'exit')
    running.kill('SIGKILL')
    await exit
  }
  t.teardown(async () => {
    for (const client of clients) client.disconnect()
    await stop()
  })
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill: stop,
    restart: async () => {
      await stop()
      child = await startProcess(port)
    },
    client: (opts = {}) => {
      const client = new Redis({ port, host: '127.0.0.1', retryStrategy: () => 50, ...opts })
      // A killed server makes the client emit errors; the tests watch the answers instead.
      client.on('error', () => {})
      clients.push(client)
      return client
    }
  }
}

/** Waits until the client is connected and ready. */
export async function ready (client: Redis): Promise<void> {
  if (client.status !== 'ready') await once(client, 'ready')
}

/**
 * A TCP server that accepts connections and never answers: a hung Redis.
 * Closed, with its sockets, at teardown.
 */
export async function silentServer (t: Test): Promise<{ port: number, connections: () => number }> {
  const sockets = new Set<Socket>()
  let accepted = 0
  const server: Server = createServer((socket) => {
    accepted++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    server.close()
    await once(server, 'close')
  })
  return { port: (server.address() as AddressInfo).port, connections: () => accepted }
}
