import { fork } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8'
import WebSocket from 'ws'
import { BUILDERS } from './gateway-apps.js'
import type { GatewayName } from './gateway-apps.js'
import { ROUTES } from './shared.js'
import { signHs256 } from './token.js'

/*
 * What one open, idle, authenticated tunnel keeps alive in a gateway's heap
 * (issue 18), next to the RSS the `ws-tunnels` scenario reads:
 *
 *   node --expose-gc --conditions=fastify-gatehouse-source --import tsx \
 *     bench/heap-tunnels.ts [gatehouse|baseline] [tunnels=1000] [--snapshot]
 *
 * The gateway (the scale scenario's app, from the sources) runs in this
 * process; the upstream echo (upstream.ts) and the clients run in children,
 * so the heap holds the gateway's side only. Garbage is forced out before
 * each reading. `--snapshot` also writes heap snapshots before and after to
 * bench/results/ (open both in Chrome DevTools, Memory, "Comparison").
 */

const HERE = fileURLToPath(new URL('.', import.meta.url))
const CHILD_FLAGS = ['--import', 'tsx']
// Handshakes in flight at once, as clients.ts opens them.
const OPEN_CONCURRENCY = 100
// Lets allocation settle after the last tunnel opened, as the scale scenario does.
const SETTLE_MS = 1_000

type Reply = { type: 'ready', url: string } | { type: 'opened', count: number }

function nextMessage (child: ChildProcess): Promise<Reply> {
  return new Promise((resolve) => child.once('message', (message: Reply) => resolve(message)))
}

/** Child: opens `count` tunnels, each echoing its hello, and holds them until the parent goes. */
async function clients (): Promise<void> {
  const held: WebSocket[] = []
  process.on('disconnect', () => process.exit(0))
  process.on('message', (message: { url: string, token: string, count: number }) => {
    let next = 0
    const start = held.length
    const open = async (): Promise<void> => {
      const ws = new WebSocket(message.url, { headers: { authorization: `Bearer ${message.token}` }, perMessageDeflate: false })
      await new Promise<void>((resolve, reject) => {
        ws.once('open', resolve)
        ws.once('error', reject)
      })
      await new Promise<void>((resolve) => {
        ws.once('message', () => resolve())
        ws.send('hello')
      })
      held.push(ws)
    }
    const worker = async (): Promise<void> => {
      while (next < message.count) {
        next++
        await open()
      }
    }
    Promise.all(Array.from({ length: OPEN_CONCURRENCY }, worker)).then(
      () => process.send?.({ type: 'opened', count: held.length - start }),
      (err: Error) => {
        console.error(`a tunnel failed to open: ${err.message}`)
        process.exit(1)
      }
    )
  })
  process.send?.({ type: 'ready', url: '' })
}

async function collect (): Promise<{ heap: number, external: number, rss: number }> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('run with node --expose-gc')
  // Several rounds: weak maps and finalizers free more on the next one.
  for (let round = 0; round < 4; round++) {
    gc()
    await sleep(50)
  }
  const memory = process.memoryUsage()
  return { heap: getHeapStatistics().used_heap_size, external: memory.external, rss: memory.rss }
}

async function main (): Promise<void> {
  const args = process.argv.slice(2)
  const name = (args.find((arg) => !arg.startsWith('--') && Number.isNaN(Number(arg))) ?? 'gatehouse') as GatewayName
  const count = Number(args.find((arg) => /^\d+$/.test(arg)) ?? 1000)
  const snapshot = args.includes('--snapshot')
  if (name !== 'gatehouse' && name !== 'baseline') throw new Error('usage: heap-tunnels.ts [gatehouse|baseline] [tunnels] [--snapshot]')

  const apiKey = randomBytes(24).toString('hex')
  const jwtSecret = randomBytes(32).toString('hex')
  const upstream = fork(`${HERE}upstream.ts`, [], { execArgv: CHILD_FLAGS, env: { ...process.env, BENCH_API_KEY: apiKey } })
  const peer = fork(fileURLToPath(import.meta.url), ['clients'], { execArgv: CHILD_FLAGS })
  try {
    const [up] = await Promise.all([nextMessage(upstream), nextMessage(peer)])
    if (up.type !== 'ready') throw new Error('the upstream did not start')
    const app = await BUILDERS[name]({ upstream: up.url, jwtSecret, apiKey, websocket: true })
    const url = `${(await app.listen({ port: 0, host: '127.0.0.1' })).replace(/^http/, 'ws')}${ROUTES.ws}`
    const token = signHs256({ sub: 'bench', role: 'reader' }, jwtSecret)
    const open = async (tunnels: number): Promise<void> => {
      peer.send({ url, token, count: tunnels })
      const reply = await nextMessage(peer)
      if (reply.type !== 'opened' || reply.count !== tunnels) throw new Error('the tunnels did not open')
      await sleep(SETTLE_MS)
    }
    const dir = `${HERE}results/`
    if (snapshot) mkdirSync(dir, { recursive: true })
    // One tunnel first: the code paths are compiled and the pools exist before the first reading.
    await open(1)
    const before = await collect()
    if (snapshot) writeHeapSnapshot(`${dir}heap-${name}-before.heapsnapshot`)
    await open(count)
    const after = await collect()
    if (snapshot) writeHeapSnapshot(`${dir}heap-${name}-after.heapsnapshot`)
    const perTunnel = (key: 'heap' | 'external' | 'rss'): string => `${((after[key] - before[key]) / count / 1024).toFixed(2)} KiB`
    console.log(`${name}: ${count} tunnels; per tunnel: heap ${perTunnel('heap')}, external ${perTunnel('external')}, RSS ${perTunnel('rss')} (garbage forced out)`)
    await app.close()
  } finally {
    peer.kill()
    upstream.send({ type: 'stop' })
  }
}

if (process.argv[2] === 'clients') await clients()
else await main()
