/*
 * What the runner and its child processes agree on: routes, payload sizes,
 * the IPC messages, and the deterministic JSON the upstream serves.
 */

/** Upstream routes; the gateways mount them unchanged under the same prefix. */
export const ROUTES = Object.freeze({
  small: '/api/small',
  large: '/api/large',
  upload: '/api/upload',
  download: '/api/download',
  /** WebSocket echo (upgrade only), behind the key like the rest. */
  ws: '/api/ws',
  /** Not behind the key: what the upstream saw last, for the correctness checks. */
  debug: '/__debug/last'
})

export const PREFIX = '/api'
export const API_KEY_HEADER = 'x-api-key'
export const SMALL_BYTES = 2 * 1024
export const LARGE_BYTES = 200 * 1024

/** Child -> runner. */
export type ChildMessage =
  | { type: 'ready', url: string }
  | { type: 'cpu', userMicros: number, systemMicros: number }
  | { type: 'profiling' }
  | { type: 'profiled', file: string, error?: string }

/**
 * Runner -> child. `profile-start`/`profile-stop` bracket one timed run with
 * the in-process V8 sampling profiler (the stage table, `--stages`).
 */
export type RunnerMessage =
  | { type: 'cpu' }
  | { type: 'stop' }
  | { type: 'profile-start' }
  | { type: 'profile-stop', file: string }

/** What `/__debug/last` answers. */
export interface LastSeen {
  /** Requests the upstream has answered (debug requests excluded). */
  count: number
  method: string | null
  url: string | null
  headers: Record<string, string | string[] | undefined>
  /** TCP connections the upstream accepted (gateways pool theirs: churn must not raise this per request). */
  connections: number
  /** WebSocket upgrades: accepted (key right, no Authorization), refused, and tunnels open now. */
  ws: { accepted: number, refused: number, open: number }
}

// mulberry32: a tiny seeded PRNG, so every process builds the same bytes.
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const WORDS = ['bolt', 'washer', 'hinge', 'bracket', 'panel', 'spring', 'gasket', 'valve', 'clamp', 'rivet', 'flange', 'socket']
const TAGS = ['steel', 'zinc', 'brass', 'm6', 'm8', 'outdoor', 'indoor', 'bulk', 'spare']

/**
 * An inventory page as JSON of at least `minBytes` bytes: realistic enough to
 * compress like an API answer does (repeated keys, varied values).
 */
export function catalogue (minBytes: number, seed = 42): Buffer {
  const random = prng(seed)
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T
  const items: unknown[] = []
  let size = 0
  for (let id = 1; size < minBytes; id++) {
    const item = {
      id,
      sku: `SKU-${(100000 + Math.floor(random() * 900000)).toString(36).toUpperCase()}`,
      name: `${pick(WORDS)} ${pick(WORDS)} ${Math.floor(random() * 100)}`,
      price: Math.round(random() * 100000) / 100,
      quantity: Math.floor(random() * 5000),
      tags: [pick(TAGS), pick(TAGS)],
      updatedAt: new Date(Date.UTC(2024, 0, 1) + Math.floor(random() * 3e10)).toISOString()
    }
    items.push(item)
    size += JSON.stringify(item).length + 1
  }
  return Buffer.from(JSON.stringify({ page: 1, items }))
}
