import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, extname, isAbsolute, resolve as resolvePath } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { redisStore } from '../store/redis.js'
import { isPasswordHash, staticUsers } from '../auth/password.js'
import type { StaticUser } from '../auth/password.js'
import { ConfigFileError } from '../errors.js'
import { OPTION_KEYS, resolveOptions } from '../options/resolve.js'
import { resolveScrapeAccess } from '../observe/options.js'
import type { ResolvedScrapeAccess } from '../observe/options.js'
import { boolean, fail, integer, isObject, knownKeys, milliseconds, object, optionalString } from '../options/validate.js'
import type { GatehouseOptions, GatehouseStore } from '../types.js'
import type { TracingSettings } from './tracing.js'

/*
 * A gateway config file (YAML or JSON) becomes the plugin's own options,
 * which then go through the plugin's resolver: one set of checks and messages
 * for code and files alike. Only what the plugin does not know (where to
 * listen, server limits, logging, workers) is checked here, with the same
 * helpers, so unknown keys get the same "did you mean" hints.
 */

/** Top-level keys of a config file that belong to the command, not the plugin. */
export const CLI_KEYS = ['listen', 'server', 'logging', 'workers'] as const
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
export const DEFAULT_PORT = 8080
/** As nginx and Kong: every interface unless the file says otherwise. */
export const DEFAULT_HOST = '0.0.0.0'
/** Fastify's default is no limit on slow request bodies; nginx gives 60 s. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000
/** The OpenTelemetry `service.name` of the gateway's spans unless `tracing.serviceName` says otherwise. */
export const DEFAULT_SERVICE_NAME = 'gatehouse'

// `${NAME}` or `${NAME:-fallback}`; NAME_FILE names a file holding the value.
const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g
// Module references are paths, resolved from the config file's directory.
const MODULE_REFERENCE = /^(\.{1,2}\/|\/|file:)/

/** What the command itself needs from the file. */
export interface CliSettings {
  readonly listen: { readonly host: string, readonly port: number }
  readonly server: {
    readonly trustProxy: boolean | string | number | string[]
    readonly requestTimeout: number
    readonly bodyLimit: number | undefined
    readonly keepAliveTimeout: number | undefined
  }
  readonly logging: { readonly level: string, readonly requests: boolean }
  /** Worker processes; `'auto'` is one per CPU. */
  readonly workers: number | 'auto'
  /** How `auth.store` was given: with several workers a per-process memory store must be accepted explicitly. */
  readonly store: 'memory' | 'memory-per-worker' | 'redis'
  /** `tracing`: the OpenTelemetry SDK each serving process sets up, `undefined` when off. */
  readonly tracing?: TracingSettings
  /** `metrics.listen`: the scrape on a listener of its own (with workers, the primary's, summing them); `undefined` otherwise. */
  readonly metrics: { readonly listen: { readonly host: string, readonly port: number }, readonly access: ResolvedScrapeAccess } | undefined
  /** Whether `metrics` is on at all (on the gateway's own port or on `metrics.listen`). */
  readonly metricsOn: boolean
}

/** A loaded and validated config file. */
export interface GatewayConfig {
  readonly file: string
  readonly settings: CliSettings
  /** The plugin's options, functions and modules loaded, already validated by the plugin's resolver. */
  readonly options: GatehouseOptions
  /** The Redis client of `auth.store.redis`, not yet connected: `serve` connects it and disconnects it on close. */
  readonly redis?: RedisConnection
}

/** What the command does with the Redis client it made. */
export interface RedisConnection {
  connect: () => Promise<void>
  disconnect: () => void
  on: ((event: 'error', listener: (err: Error) => void) => unknown) & ((event: 'ready', listener: () => void) => unknown)
}

type Env = Record<string, string | undefined>

/**
 * Reads, interpolates and validates a config file. Errors are
 * `FST_GATEHOUSE_CONFIG_FILE` (unreadable or not YAML/JSON) or the plugin's
 * `FST_GATEHOUSE_INVALID_OPTION`, their message prefixed with the file name.
 */
export async function loadConfig (file: string, env: Env = process.env): Promise<GatewayConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigFileError(file, (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message)
  }
  const parsed = parseDocument(text, file)
  try {
    if (!isObject(parsed)) fail('(top level)', `a mapping { ${[...CLI_KEYS, ...OPTION_KEYS].join(', ')} }`)
    const top = interpolate(parsed, '', env) as Record<string, unknown>
    knownKeys(top, '', [...CLI_KEYS, ...OPTION_KEYS])
    const dir = dirname(resolvePath(file))
    const { store, options, redis } = await pluginOptions(top, dir)
    const settings = resolveSettings(top, store)
    cliDefaults(options, top, settings)
    // The command logs every proxied request unless the file says otherwise (nginx, Envoy and Kong all do).
    options.accessLog ??= true
    resolveOptions(options)
    return { file, settings, options, ...(redis === undefined ? {} : { redis }) }
  } catch (err) {
    if (typeof (err as { code?: unknown }).code === 'string' && String((err as { code: string }).code).startsWith('FST_GATEHOUSE_')) {
      (err as Error).message = `${file}: ${(err as Error).message}`
    }
    throw err
  }
}

/**
 * What the command turns on that the plugin leaves off: health routes (a
 * probe needs them from the first deployment), and a request id that trusts
 * the caller's copy exactly as far as `server.trustProxy` trusts the peer
 * (as Envoy keeps an internal caller's id and replaces an external one).
 */
function cliDefaults (options: GatehouseOptions, top: Record<string, unknown>, settings: CliSettings): void {
  if (top.health === undefined) options.health = true
  if (top.requestId === undefined) {
    const proxy = settings.server.trustProxy
    options.requestId = { trust: typeof proxy === 'number' ? proxy > 0 : proxy }
  }
}

function parseDocument (text: string, file: string): unknown {
  try {
    return extname(file) === '.json' ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new ConfigFileError(file, (err as Error).message.split('\n')[0] as string)
  }
}

/** Replaces `${NAME}` in every string of the tree; `at` is the option path, for errors. */
function interpolate (value: unknown, at: string, env: Env): unknown {
  if (typeof value === 'string') {
    return value.replace(VARIABLE, (_match, name: string, fallback: string | undefined) => variable(name, fallback, at, env))
  }
  if (Array.isArray(value)) return value.map((item, index) => interpolate(item, `${at}[${index}]`, env))
  if (isObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, interpolate(item, at === '' ? key : `${at}.${key}`, env)]))
  }
  return value
}

function variable (name: string, fallback: string | undefined, at: string, env: Env): string {
  const direct = env[name]
  if (direct !== undefined && direct !== '') return direct
  const file = env[`${name}_FILE`]
  if (file !== undefined && file !== '') {
    try {
      // Secret files usually end with a newline that is not part of the secret.
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '')
    } catch (err) {
      fail(at, `${name}_FILE to name a readable file (${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`)
    }
  }
  if (fallback !== undefined) return fallback
  fail(at, `environment variable ${name} to be set (or ${name}_FILE naming a file that holds it)`)
}

/** A port: an integer, or digits (what `${PORT}` gives). */
function port (value: unknown, option: string, fallback: number): number {
  return integer(typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value, option, fallback, { min: 0, max: 65535 })
}

function resolveSettings (top: Record<string, unknown>, store: CliSettings['store']): CliSettings {
  const listen = object(top.listen, 'listen', ['host', 'port'])
  const server = object(top.server, 'server', ['trustProxy', 'requestTimeout', 'bodyLimit', 'keepAliveTimeout'])
  const logging = object(top.logging, 'logging', ['level', 'requests'])

  const { trustProxy = false } = server
  if (!(typeof trustProxy === 'boolean' || (typeof trustProxy === 'string' && trustProxy !== '') ||
      (typeof trustProxy === 'number' && Number.isSafeInteger(trustProxy) && trustProxy >= 0) ||
      (Array.isArray(trustProxy) && trustProxy.every((item) => typeof item === 'string' && item !== '')))) {
    fail('server.trustProxy', 'a boolean, a number of hops, or addresses/CIDRs ("10.0.0.0/8" or a list)')
  }
  const level = logging.level ?? 'info'
  if (typeof level !== 'string' || !LOG_LEVELS.includes(level)) fail('logging.level', `one of ${LOG_LEVELS.join(', ')}`)

  let workers: number | 'auto' = 1
  if (top.workers === 'auto') workers = 'auto'
  else if (top.workers !== undefined) workers = integer(typeof top.workers === 'string' && /^\d+$/.test(top.workers) ? Number(top.workers) : top.workers, 'workers', 1, { min: 1, max: 1024 })

  return {
    listen: { host: optionalString(listen.host, 'listen.host') ?? DEFAULT_HOST, port: port(listen.port, 'listen.port', DEFAULT_PORT) },
    server: {
      trustProxy: trustProxy as CliSettings['server']['trustProxy'],
      requestTimeout: milliseconds(server.requestTimeout, 'server.requestTimeout', DEFAULT_REQUEST_TIMEOUT_MS, 0),
      bodyLimit: server.bodyLimit === undefined ? undefined : integer(server.bodyLimit, 'server.bodyLimit', 0, { min: 1 }),
      keepAliveTimeout: server.keepAliveTimeout === undefined ? undefined : milliseconds(server.keepAliveTimeout, 'server.keepAliveTimeout', 0)
    },
    logging: { level, requests: boolean(logging.requests, 'logging.requests', true) },
    workers,
    store,
    ...(top.tracing === undefined ? {} : { tracing: tracingSettings(top.tracing) }),
    metrics: metricsListen(top.metrics),
    metricsOn: top.metrics !== undefined && top.metrics !== false
  }
}

/** `metrics.listen` of the file: where the command serves the scrape itself; `undefined` for none. */
function metricsListen (value: unknown): CliSettings['metrics'] {
  if (!isObject(value) || value.listen === undefined) return undefined
  const listen = object(value.listen, 'metrics.listen', ['host', 'port'])
  if (value.path !== undefined) fail('metrics.path', 'no path with metrics.listen (its listener serves only the metrics)')
  if (listen.port === undefined) fail('metrics.listen.port', 'a port for the metrics listener')
  return {
    // Loopback unless the file says otherwise: the scrape is for this machine's agent by default.
    listen: { host: optionalString(listen.host, 'metrics.listen.host') ?? '127.0.0.1', port: port(listen.port, 'metrics.listen.port', 0) },
    access: resolveScrapeAccess(value, 'metrics')
  }
}

/** `tracing: { serviceName?, otlp: { url } }`: the file names an exporter, the plugin gets `tracing: true`. */
function tracingSettings (value: unknown): TracingSettings {
  const tracing = object(value, 'tracing', ['serviceName', 'otlp'], '{ serviceName?, otlp: { url } }')
  const otlp = object(tracing.otlp, 'tracing.otlp', ['url'])
  const url = optionalString(otlp.url, 'tracing.otlp.url')
  if (url === undefined || !/^https?:\/\/[^/]/.test(url)) fail('tracing.otlp.url', 'the http:// or https:// URL of an OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces)')
  return { serviceName: optionalString(tracing.serviceName, 'tracing.serviceName') ?? DEFAULT_SERVICE_NAME, url }
}

/** The plugin's options from the file: users, store and module references turned into what the plugin takes. */
async function pluginOptions (top: Record<string, unknown>, dir: string): Promise<{ store: CliSettings['store'], options: GatehouseOptions, redis?: RedisConnection }> {
  const options: Record<string, unknown> = {}
  for (const key of OPTION_KEYS) if (top[key] !== undefined) options[key] = top[key]
  // The file's `tracing` configures the SDK (resolveSettings); the plugin uses the provider it registers.
  if (top.tracing !== undefined) options.tracing = true
  if (isObject(top.metrics) && top.metrics.listen !== undefined) {
    // The command's own listener serves the scrape: the gateway only collects.
    const { listen, ...rest } = top.metrics
    options.metrics = { ...rest, path: false }
  }
  let store: CliSettings['store'] = 'memory'
  let redis: RedisConnection | undefined
  if (isObject(top.auth)) {
    const auth: Record<string, unknown> = { ...top.auth }
    if (isObject(auth.login)) auth.login = await login(auth.login, dir)
    const chosen = await storeFrom(auth.store)
    store = chosen.kind
    redis = chosen.redis
    if (chosen.store === undefined) delete auth.store
    else auth.store = chosen.store
    options.auth = auth
  }
  if (Array.isArray(top.targets)) {
    options.targets = await Promise.all(top.targets.map((target: unknown, index) => targetFrom(target, `targets[${index}]`, dir)))
  }
  return { store, options: options as unknown as GatehouseOptions, ...(redis === undefined ? {} : { redis }) }
}

async function login (value: Record<string, unknown>, dir: string): Promise<Record<string, unknown>> {
  const { users, ...rest } = value
  const shape = 'false (verify-only), { users: a file or table of scrypt hashes } or { verify: "./verify.js" }'
  if ((users === undefined) === (rest.verify === undefined)) fail('auth.login', shape)
  if (users !== undefined) return { ...rest, verify: staticUsers(await userTable(users, 'auth.login.users', dir)) }
  return { ...rest, verify: await moduleExport(rest.verify, 'auth.login.verify', dir) }
}

/** Users from a YAML/JSON file (relative to the config file) or inline: `name: { passwordHash, claims? }`. */
async function userTable (value: unknown, at: string, dir: string): Promise<Record<string, StaticUser>> {
  let table = value
  let where = at
  if (typeof value === 'string') {
    const file = resolvePath(dir, value)
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (err) {
      fail(at, `a readable users file (${value}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`)
    }
    table = parseDocument(text, file)
    where = `${at}(${value})`
  }
  if (!isObject(table)) fail(where, 'a users file or table { name: { passwordHash, claims? } }')
  for (const [name, user] of Object.entries(table)) {
    const key = `${where}.${name}`
    if (!isObject(user)) fail(key, '{ passwordHash, claims? }')
    knownKeys(user, key, ['passwordHash', 'claims'])
    if (!isPasswordHash(user.passwordHash)) fail(`${key}.passwordHash`, 'a scrypt hash from `gatehouse hash-password`')
    if (user.claims !== undefined && !isObject(user.claims)) fail(`${key}.claims`, 'a mapping of claims')
  }
  try {
    staticUsers(table as Record<string, StaticUser>)
  } catch (err) {
    fail(where, `users hashed with one scrypt cost (${(err as Error).message})`)
  }
  return table as Record<string, StaticUser>
}

async function storeFrom (value: unknown): Promise<{ kind: CliSettings['store'], store?: GatehouseStore, redis?: RedisConnection }> {
  if (value === undefined || value === 'memory') return { kind: 'memory' }
  const shape = '"memory", { memory: { perWorker: true } } or { redis: { url } }'
  if (!isObject(value)) fail('auth.store', shape)
  knownKeys(value, 'auth.store', ['memory', 'redis'])
  if (value.memory !== undefined && value.redis === undefined) {
    const memory = object(value.memory, 'auth.store.memory', ['perWorker'])
    return { kind: boolean(memory.perWorker, 'auth.store.memory.perWorker', false) ? 'memory-per-worker' : 'memory' }
  }
  if (value.redis === undefined || value.memory !== undefined) fail('auth.store', shape)
  const redis = object(value.redis, 'auth.store.redis', ['url'])
  const url = optionalString(redis.url, 'auth.store.redis.url')
  if (url === undefined || !/^rediss?:\/\//.test(url)) fail('auth.store.redis.url', 'a redis:// or rediss:// URL')
  // ioredis is an optional peer dependency: only a Redis config needs it.
  let Redis: typeof import('ioredis').Redis
  try {
    ({ Redis } = await import('ioredis'))
  } catch {
    fail('auth.store.redis', 'ioredis installed beside fastify-gatehouse (npm install ioredis)')
  }
  // Connected by `serve` only, so `check` never opens a connection.
  const client = new Redis(url, { lazyConnect: true })
  return { kind: 'redis', store: redisStore({ client }), redis: client }
}

/** A target with its module references (`authorize`, `credentials`, `onUpstreamError`, `middleware`) loaded. */
async function targetFrom (value: unknown, at: string, dir: string): Promise<unknown> {
  if (!isObject(value)) return value
  const target: Record<string, unknown> = { ...value }
  for (const key of ['authorize', 'credentials', 'onUpstreamError']) {
    if (typeof target[key] === 'string') target[key] = await moduleExport(target[key], `${at}.${key}`, dir)
  }
  const { middleware } = target
  if (typeof middleware === 'string' || Array.isArray(middleware)) {
    const list: unknown[] = []
    for (const [index, item] of (Array.isArray(middleware) ? middleware : [middleware]).entries()) {
      const where = Array.isArray(middleware) ? `${at}.middleware[${index}]` : `${at}.middleware`
      if (typeof item === 'string') {
        const loaded = await moduleExport(item, where, dir)
        list.push(...(Array.isArray(loaded) ? loaded : [loaded]))
      } else if (isObject(item) && typeof item.handler === 'string') {
        list.push({ ...item, handler: await moduleExport(item.handler, `${where}.handler`, dir) })
      } else {
        list.push(item)
      }
    }
    target.middleware = list
  }
  return target
}

/**
 * The export named after `#` (default: the default export) of a module given
 * by path, relative to the config file: `./audit.js`, `./hooks.js#authorize`.
 */
async function moduleExport (value: unknown, at: string, dir: string): Promise<unknown> {
  const expected = 'a module path such as "./audit.js" or "./hooks.js#name" (relative to the config file)'
  if (typeof value !== 'string') fail(at, expected)
  const hash = value.lastIndexOf('#')
  const spec = hash === -1 ? value : value.slice(0, hash)
  const name = hash === -1 ? 'default' : value.slice(hash + 1)
  if (!MODULE_REFERENCE.test(spec) || name === '') fail(at, expected)
  const url = spec.startsWith('file:') ? spec : pathToFileURL(isAbsolute(spec) ? spec : resolvePath(dir, spec)).href
  let loaded: Record<string, unknown>
  try {
    loaded = await import(url) as Record<string, unknown>
  } catch (err) {
    fail(at, `a module that loads (${spec}: ${(err as Error).message.split('\n')[0] as string})`)
  }
  if (loaded[name] === undefined) fail(at, `a module with ${name === 'default' ? 'a default export' : `an export "${name}"`} (${spec})`)
  return loaded[name]
}
