import { boolean, fail, isObject, knownKeys, milliseconds, path } from '../options/validate.js'

/*
 * The `health` option, resolved once at register. The routes' clash with
 * the targets and token routes is checked by lib/options/resolve.ts, which
 * knows them all.
 */

export const DEFAULT_HEALTH = Object.freeze({
  path: '/healthz',
  readyPath: '/readyz',
  // As @fastify/under-pressure's documented example; a loop lagging a whole
  // second serves every request a second late.
  maxEventLoopDelay: 1000,
  sampleInterval: 1000,
  storeTimeout: 500,
  upstreams: true
})

const HEALTH_KEYS = ['path', 'readyPath', 'maxEventLoopDelay', 'sampleInterval', 'storeTimeout', 'upstreams']

export interface ResolvedHealth {
  readonly path: string
  readonly readyPath: string
  /** Milliseconds; 0 when off. */
  readonly maxEventLoopDelay: number
  readonly sampleInterval: number
  readonly storeTimeout: number
  readonly upstreams: boolean
}

/** Validates `health`; `undefined` when off (the default). */
export function resolveHealth (value: unknown, at = 'health'): ResolvedHealth | undefined {
  if (value === undefined || value === false) return undefined
  if (value !== true && !isObject(value)) fail(at, `a boolean or an object { ${HEALTH_KEYS.map((key) => `${key}?`).join(', ')} }`)
  const opts = value === true ? {} : value
  knownKeys(opts, at, HEALTH_KEYS)
  const health = {
    path: opts.path === undefined ? DEFAULT_HEALTH.path : path(opts.path, `${at}.path`, DEFAULT_HEALTH.path),
    readyPath: opts.readyPath === undefined ? DEFAULT_HEALTH.readyPath : path(opts.readyPath, `${at}.readyPath`, DEFAULT_HEALTH.readyPath),
    maxEventLoopDelay: milliseconds(opts.maxEventLoopDelay, `${at}.maxEventLoopDelay`, DEFAULT_HEALTH.maxEventLoopDelay, 0),
    // under-pressure measures at 10 ms resolution: a shorter interval means nothing.
    sampleInterval: milliseconds(opts.sampleInterval, `${at}.sampleInterval`, DEFAULT_HEALTH.sampleInterval, 10),
    storeTimeout: milliseconds(opts.storeTimeout, `${at}.storeTimeout`, DEFAULT_HEALTH.storeTimeout),
    upstreams: boolean(opts.upstreams, `${at}.upstreams`, DEFAULT_HEALTH.upstreams)
  }
  if (health.path === health.readyPath) fail(`${at}.readyPath`, `a path other than ${at}.path (${health.path})`)
  return health
}
