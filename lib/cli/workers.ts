import cluster from 'node:cluster'
import type { Worker } from 'node:cluster'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { availableParallelism } from 'node:os'
import { AggregatorRegistry } from 'prom-client'
import type { Registry } from 'prom-client'
import type { CliIo } from './hash-password.js'
import { loadConfig } from './config.js'
import type { CliSettings, GatewayConfig } from './config.js'
import { fail } from '../options/validate.js'
import { scrapeServer } from '../observe/scrape.js'

/*
 * `--workers N` / `workers:` in the file: a node:cluster primary that only
 * supervises. Workers re-read the file themselves and serve on the shared
 * port. A dead worker is replaced after a backoff; SIGTERM drains them all;
 * SIGHUP validates the file again and replaces the workers one at a time, each
 * old one closing (and draining) only once its replacement listens.
 */

/** First replacement delay after a worker dies; doubled per death in a row, capped. */
export const RESTART_DELAY_MS = 100
export const MAX_RESTART_DELAY_MS = 10_000
/** A worker that lived this long resets the backoff. */
const STABLE_MS = 10_000

type Env = Record<string, string | undefined>

/** What a worker tells the primary once it listens. */
interface ListeningMessage { gatehouse: 'listening', address: string }

/** The number of workers `workers` asks for. */
export function workerCount (workers: CliSettings['workers']): number {
  return workers === 'auto' ? availableParallelism() : workers
}

/**
 * Several workers share no memory: the in-memory store would count logins,
 * keep refresh tokens and revocations per worker. Refused unless the file
 * says so; the option path and the way out are in the message.
 */
export function checkWorkers (config: GatewayConfig, count: number): void {
  if (count <= 1) return
  try {
    if (config.settings.store === 'memory') {
      fail('auth.store', `a store the ${count} workers share ({ redis: { url } }), or { memory: { perWorker: true } } to accept ` +
        'per-worker state (refresh tokens, revocations and login throttling each seen by one worker only)')
    }
    // A scrape through the shared port would reach one worker at random: the primary serves the sum instead.
    if (config.settings.metricsOn && config.settings.metrics === undefined) {
      fail('metrics.listen', `{ host?, port } with ${count} workers: the primary serves one scrape there, summed over every worker`)
    }
  } catch (err) {
    (err as Error).message = `${config.file}: ${(err as Error).message}`
    throw err
  }
}

/**
 * In a worker: answers the primary's scrape requests (prom-client's cluster
 * messages) with this gateway's registry.
 */
export function reportMetrics (registry: Registry): void {
  // The constructor installs the worker's message listener; the instance itself is not needed.
  new AggregatorRegistry() // eslint-disable-line no-new
  AggregatorRegistry.setRegistries([registry])
}

/**
 * Serves the scrape on `metrics.listen` with `scrape` as its text; resolves
 * with the server and its URL once it listens.
 */
export async function listenMetrics (
  metrics: NonNullable<GatewayConfig['settings']['metrics']>,
  scrape: () => Promise<{ text: string, contentType: string }>,
  onError: (err: unknown) => void
): Promise<{ server: Server, url: string }> {
  const server = scrapeServer(metrics.access, scrape, onError)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(metrics.listen.port, metrics.listen.host, () => {
      server.removeListener('error', reject)
      resolve()
    })
  })
  const { address, port } = server.address() as AddressInfo
  return { server, url: `http://${address.includes(':') ? `[${address}]` : address}:${port}/metrics` }
}

/** One JSON log line, as pino writes them, so the primary's lines sit with the workers' in one stream. */
function log (io: CliIo, level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  const levels = { info: 30, warn: 40, error: 50 }
  io.output.write(JSON.stringify({ level: levels[level], time: Date.now(), pid: process.pid, role: 'primary', ...fields, msg }) + '\n')
}

/** Tells the primary this worker listens (a no-op outside a cluster). */
export function reportListening (address: string): void {
  const message: ListeningMessage = { gatehouse: 'listening', address }
  process.send?.(message)
}

/** Runs the primary: forks `count` workers and supervises them; resolves the exit code after SIGTERM/SIGINT. */
export async function runPrimary (config: GatewayConfig, count: number, io: CliIo, env: Env): Promise<number> {
  const live = new Set<Worker>()
  // Workers that are on their way out (reload or shutdown): their exit is expected.
  const retiring = new Set<Worker>()
  let stopping = false
  let deaths = 0
  let reloading: Promise<void> = Promise.resolve()
  // The primary does not listen itself; the workers share the first one's port.
  let address: string | undefined

  const fork = (): Promise<Worker> => new Promise((resolve, reject) => {
    const worker = cluster.fork(env)
    const started = Date.now()
    live.add(worker)
    const onMessage = (message: unknown): void => {
      if ((message as ListeningMessage)?.gatehouse !== 'listening') return
      worker.removeListener('message', onMessage)
      address ??= (message as ListeningMessage).address
      log(io, 'info', 'worker listening', { worker: worker.process.pid, address })
      resolve(worker)
    }
    worker.on('message', onMessage)
    worker.once('exit', (code, signal) => {
      live.delete(worker)
      reject(new Error(`worker ${worker.process.pid ?? '?'} exited (${signal ?? code}) before listening`))
      if (retiring.delete(worker) || stopping) return
      deaths = Date.now() - started > STABLE_MS ? 1 : deaths + 1
      const delayMs = Math.min(RESTART_DELAY_MS * 2 ** (deaths - 1), MAX_RESTART_DELAY_MS)
      log(io, 'warn', 'worker died; replacing it', { worker: worker.process.pid, code, signal, delayMs })
      setTimeout(() => { if (!stopping) fork().catch(() => {}) }, delayMs)
    })
  })

  const retire = (worker: Worker): Promise<void> => new Promise((resolve) => {
    retiring.add(worker)
    if (worker.isDead()) return resolve()
    worker.once('exit', () => resolve())
    // The worker's own SIGTERM handler closes the server and drains proxied requests.
    worker.process.kill('SIGTERM')
  })

  const reload = async (): Promise<void> => {
    let next: GatewayConfig
    try {
      next = await loadConfig(config.file, env)
      checkWorkers(next, count)
    } catch (err) {
      log(io, 'error', 'reload refused; the running workers keep serving', { error: (err as Error).message })
      return
    }
    log(io, 'info', 'reloading: replacing workers one by one', { workers: count })
    for (const old of [...live]) {
      if (stopping) return
      try {
        await fork()
      } catch (err) {
        log(io, 'error', 'reload stopped: a new worker did not start; the others keep serving', { error: (err as Error).message })
        return
      }
      await retire(old)
    }
    log(io, 'info', 'reload complete', { workers: live.size })
  }

  let metricsServer: Server | undefined
  const metrics = config.settings.metrics
  if (metrics !== undefined) {
    const aggregator = new AggregatorRegistry()
    const served = await listenMetrics(metrics, async () => ({ text: await aggregator.clusterMetrics(), contentType: aggregator.contentType }),
      (err) => log(io, 'error', 'metrics scrape failed', { error: (err as Error).message }))
    metricsServer = served.server
    io.output.write(`gatehouse metrics on ${served.url} (sum of ${count} workers)\n`)
  }
  await Promise.all(Array.from({ length: count }, () => fork()))
  io.output.write(`gatehouse listening on ${address ?? ''} (${count} workers)\n`)

  const onHup = (): void => { if (!stopping) reloading = reloading.then(reload) }
  process.on('SIGHUP', onHup)
  return await new Promise<number>((resolve) => {
    // Listeners stay: a second signal (Ctrl-C reaches the workers too) must not kill the primary mid-drain.
    const stop = (): void => {
      if (stopping) return
      stopping = true
      log(io, 'info', 'draining workers', { workers: live.size })
      metricsServer?.close()
      metricsServer?.closeAllConnections()
      Promise.all([...live].map(retire)).then(() => resolve(0), () => resolve(1))
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  })
}
