#!/usr/bin/env node
import cluster from 'node:cluster'
import { realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import Fastify, { LogController } from 'fastify'
import type { FastifyInstance } from 'fastify'
import type { Server } from 'node:http'
import gatehouse, { gatehouseFrameworkErrors, gatehouseLogging, gatehouseNotFound, gatehouseRequestId } from '../index.js'
import { loadConfig } from './config.js'
import type { CliSettings, GatewayConfig } from './config.js'
import { checkWorkers, listenMetrics, reportListening, reportMetrics, runPrimary, workerCount } from './workers.js'
import { main as hashPasswordMain } from './hash-password.js'
import { startTracing } from './tracing.js'
import type { CliIo } from './hash-password.js'

/*
 * `gatehouse serve | check | hash-password`: the gateway run from a config
 * file, without writing code.
 */

export const USAGE = `Usage: gatehouse <command> [options]

Commands:
  serve --config FILE    run the gateway described by FILE (YAML or JSON)
  check --config FILE    validate FILE without serving; exit 1 on an error
  hash-password          print a scrypt hash of a password read from standard input

Options:
  -c, --config FILE      the gateway config file
  -w, --workers N|auto   serve: N worker processes on one port (auto: one per CPU);
                         overrides \`workers\` in the file
  -h, --help             show this help and exit

Secrets come from the environment: \${NAME} in the file reads NAME, or the
file named by NAME_FILE. See the README's "Deploying" section.
`

// Set on SIGTERM: the worker's lame-duck period has begun (see stop()).
let retiring = false
// How long a worker that stopped listening serves the connections it already
// accepted, every answer with `Connection: close`, before the drain: a short
// form of Envoy's drain period.
const LAME_DUCK_MS = 500

/** A Fastify server with the gateway of `config` registered, not listening yet. */
export async function buildServer (config: GatewayConfig): Promise<FastifyInstance> {
  const { settings, options } = config
  const requestId = options.requestId
  const app = Fastify({
    // Secrets redacted wherever headers are logged, token query parameters hidden in URLs.
    logger: settings.logging.level === 'silent' ? false : { level: settings.logging.level, ...gatehouseLogging(options) },
    // reqId in every log line is the x-request-id the gateway sends upstream
    // and back; Fastify's requestIdHeader would take the caller's unchecked.
    requestIdHeader: false,
    ...(requestId === false ? {} : { genReqId: gatehouseRequestId(requestId) }),
    logController: new LogController({ disableRequestLogging: !settings.logging.requests }),
    // Fastify takes a number of hops too (proxy-addr); only its types leave numbers out.
    trustProxy: settings.server.trustProxy as boolean | string | string[],
    requestTimeout: settings.server.requestTimeout,
    ...(settings.server.bodyLimit === undefined ? {} : { bodyLimit: settings.server.bodyLimit }),
    ...(settings.server.keepAliveTimeout === undefined ? {} : { keepAliveTimeout: settings.server.keepAliveTimeout }),
    frameworkErrors: gatehouseFrameworkErrors
  })
  const redis = config.redis
  if (redis !== undefined) {
    // ioredis keeps retrying a first connection that fails; the store answers 503 meanwhile.
    redis.connect().catch(() => {})
    // Without a listener ioredis prints every failed reconnection itself;
    // one line per outage here, with the error code only (never the URL).
    let down = false
    redis.on('error', (err: Error & { code?: string }) => {
      if (down) return
      down = true
      app.log.warn({ code: err.code ?? err.name }, 'redis store connection failed; retrying')
    })
    redis.on('ready', () => {
      if (down) app.log.info('redis store connected again')
      down = false
    })
    // disconnect, not quit: quit waits for a Redis that may be gone.
    app.addHook('onClose', async () => redis.disconnect())
  }
  if (!cluster.isPrimary) {
    // A retiring worker's answers say `Connection: close`, so keep-alive
    // clients reconnect (to a live worker) instead of sending their next
    // request into the close, which Fastify would refuse with 503.
    app.addHook('onSend', (_request, reply, payload, done) => {
      if (retiring) reply.header('connection', 'close')
      done(null, payload)
    })
  }
  await app.register(gatehouse, options)
  // The whole server is the gateway's: unknown paths get its error shape too.
  app.setNotFoundHandler(gatehouseNotFound)
  const registry = app.gatehouse.metrics
  if (registry !== undefined && !cluster.isPrimary) reportMetrics(registry)
  return app
}

/** Starts the gateway; resolves once listening, with its address. Closes on SIGTERM or SIGINT. */
async function serve (config: GatewayConfig, io: CliIo): Promise<number> {
  // Before the server: the plugin takes the tracer provider registered globally.
  const stopTracing = config.settings.tracing === undefined ? undefined : await startTracing(config.settings.tracing)
  const app = await buildServer(config)
  const address = await app.listen({ host: config.settings.listen.host, port: config.settings.listen.port })
  const registry = app.gatehouse.metrics
  const metrics = config.settings.metrics
  let metricsServer: Server | undefined
  if (cluster.isPrimary && metrics !== undefined && registry !== undefined) {
    // One process: its own registry on the metrics listener.
    const served = await listenMetrics(metrics, async () => ({ text: await registry.metrics(), contentType: registry.contentType }),
      (err) => app.log.error({ err }, 'metrics scrape failed'))
    metricsServer = served.server
    io.output.write(`gatehouse metrics on ${served.url}\n`)
  }
  // One plain line, whatever the log level: scripts and tests read the bound port from it.
  if (cluster.isPrimary) io.output.write(`gatehouse listening on ${address}\n`)
  else reportListening(address)
  return await new Promise<number>((resolve) => {
    let stopping = false
    // Listeners stay: a second signal (Ctrl-C reaches a whole process group) must not kill a drain.
    const stop = (): void => {
      if (stopping) return
      stopping = true
      metricsServer?.close()
      metricsServer?.closeAllConnections()
      retiring = true
      // A worker stops listening before anything else: connections the
      // primary is handing over bounce back to a live worker, and those
      // already accepted are served (their answers say `Connection: close`)
      // instead of meeting Fastify's 503 for requests that arrive once it
      // closes. One process alone has nowhere to send them: it closes at once.
      let lameDuck: Promise<unknown> = Promise.resolve()
      if (!cluster.isPrimary) {
        app.server.close()
        lameDuck = new Promise((resolve) => setTimeout(resolve, LAME_DUCK_MS))
      }
      // The plugin's graceful shutdown drains proxied requests within shutdown.drainTimeout.
      lameDuck.then(async () => await app.close()).then(async () => {
        // After the drain, so the drained requests' spans go out too.
        await stopTracing?.().catch((err: unknown) => {
          io.errors.write(`gatehouse: flushing spans failed: ${err instanceof Error ? err.message : String(err)}\n`)
        })
        resolve(0)
      }, (err: unknown) => {
        io.errors.write(`gatehouse: close failed: ${err instanceof Error ? err.message : String(err)}\n`)
        resolve(1)
      })
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
    // SIGHUP would end the process; reloads are the primary's job (with --workers).
    process.on('SIGHUP', () => {
      if (cluster.isPrimary) app.log.warn('SIGHUP ignored: reloading the config needs --workers (the primary replaces workers one by one)')
    })
  })
}

/** The command; resolves the exit code. `env` is where `${NAME}` in the file is read. */
export async function main (args: string[], io: CliIo, env: Record<string, string | undefined> = process.env): Promise<number> {
  const [command, ...rest] = args
  if (command === 'hash-password') return await hashPasswordMain(rest, io)
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    io.output.write(USAGE)
    return command === undefined ? 2 : 0
  }
  if (command !== 'serve' && command !== 'check') {
    io.errors.write(`gatehouse: unknown command ${command}\n\n${USAGE}`)
    return 2
  }
  let file: string | undefined
  let workers: CliSettings['workers'] | undefined
  try {
    const { values } = parseArgs({
      args: rest,
      options: { config: { type: 'string', short: 'c' }, workers: { type: 'string', short: 'w' }, help: { type: 'boolean', short: 'h' } },
      strict: true
    })
    if (values.help === true) {
      io.output.write(USAGE)
      return 0
    }
    file = values.config
    if (values.workers !== undefined) {
      if (values.workers !== 'auto' && !/^[1-9]\d{0,3}$/.test(values.workers)) throw new TypeError(`--workers takes a number from 1 to 9999 or "auto", not "${values.workers}"`)
      workers = values.workers === 'auto' ? 'auto' : Number(values.workers)
    }
  } catch (err) {
    io.errors.write(`gatehouse ${command}: ${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  if (file === undefined) {
    io.errors.write(`gatehouse ${command}: --config FILE is required\n\n${USAGE}`)
    return 2
  }
  let config: GatewayConfig
  let count: number
  try {
    config = await loadConfig(file, env)
    count = workerCount(workers ?? config.settings.workers)
    checkWorkers(config, count)
  } catch (err) {
    io.errors.write(`gatehouse ${command}: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
  if (command === 'check') {
    const targets = config.options.targets.length
    io.output.write(`${file}: ok (${targets} target${targets === 1 ? '' : 's'}, listen ${config.settings.listen.host}:${config.settings.listen.port})\n`)
    return 0
  }
  if (count > 1 && cluster.isPrimary) return await runPrimary(config, count, io, env)
  const code = await serve(config, io)
  // A worker's IPC channel would keep it alive after its server closed.
  if (!cluster.isPrimary) process.exit(code)
  return code
}

const entry = process.argv[1]
/* c8 ignore start -- the process entry point; tests spawn the file */
if (entry !== undefined && import.meta.url === pathToFileURL(realpathSync(entry)).href) {
  main(process.argv.slice(2), { input: process.stdin, output: process.stdout, errors: process.stderr }).then((code) => {
    process.exitCode = code
  }, (err: unknown) => {
    process.stderr.write(`gatehouse: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
/* c8 ignore stop */
