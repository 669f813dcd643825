import { connect } from 'node:net'
import type { Socket } from 'node:net'
import WebSocket from 'ws'
import { requireEnv } from './ipc.js'

/*
 * Child entry for the scale scenarios: holds many client connections to one
 * gateway, in its own process (its own file-descriptor limit, and its memory
 * and CPU apart from the runner's).
 *
 *   ws    N authenticated WebSocket tunnels, each checked to echo; then, on
 *         request, a steady trickle of messages with their echo latency.
 *   idle  N keep-alive HTTP connections, each makes one authenticated request
 *         (checked 200) and then stays idle.
 *
 * Configured from the environment (BENCH_CLIENT_*), driven over IPC.
 */

/** Runner -> clients. */
export type ClientCommand =
  | { type: 'trickle', durationMs: number, perSec: number }
  | { type: 'count' }
  | { type: 'stop' }

/** Clients -> runner. */
export type ClientReport =
  | { type: 'opened', ok: number, failed: number, ms: number, errors: string[] }
  | { type: 'latency', sent: number, answered: number, p50Ms: number, p99Ms: number }
  | { type: 'count', open: number }

// Handshakes in flight at once: a burst of thousands would measure the
// listen backlog, not the gateway.
const OPEN_CONCURRENCY = 100
const OPEN_TIMEOUT_MS = 30_000
// Echoes still missing this long after the trickle ends count as lost.
const TRICKLE_GRACE_MS = 5_000
const MAX_ERRORS_REPORTED = 5

function send (report: ClientReport): void {
  process.send?.(report)
}

function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] as number
}

/** Runs `open(i)` for i in [0, count) with at most OPEN_CONCURRENCY at once. */
async function openAll (count: number, open: (i: number) => Promise<void>): Promise<{ ok: number, failed: number, errors: string[] }> {
  let next = 0
  let ok = 0
  const errors: string[] = []
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      try {
        await open(i)
        ok++
      } catch (err) {
        errors.push(err instanceof Error ? err.message : String(err))
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, count) }, worker))
  const distinct = [...new Set(errors)].slice(0, MAX_ERRORS_REPORTED)
  return { ok, failed: count - ok, errors: distinct.map((e) => `${errors.filter((x) => x === e).length}x ${e}`) }
}

function withTimeout<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms) })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

interface Held {
  /** Connections (tunnels) open now. */
  open: () => number
  trickle?: (durationMs: number, perSec: number) => Promise<ClientReport>
  close: () => Promise<void>
}

async function holdTunnels (url: string, count: number, headers: Record<string, string>): Promise<Held> {
  const sockets: WebSocket[] = []
  // seq -> send time, for the trickle's echoes.
  const pending = new Map<string, number>()
  const rtts: number[] = []
  let open = 0
  const started = performance.now()
  const result = await openAll(count, (i) => withTimeout(new Promise<void>((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false })
    const hello = `hello ${i}`
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade answered ${res.statusCode ?? 0}`)))
    // Kept after the open: a later error must not crash the process (close follows it).
    ws.on('error', (err) => reject(err))
    ws.once('open', () => {
      open++
      ws.once('close', () => { open-- })
      ws.send(hello)
    })
    ws.on('message', (data) => {
      const text = data.toString()
      if (text === hello) {
        sockets.push(ws)
        resolve()
        return
      }
      const sentAt = pending.get(text)
      if (sentAt === undefined) return
      pending.delete(text)
      rtts.push(performance.now() - sentAt)
    })
  }), OPEN_TIMEOUT_MS, 'tunnel'))
  send({ type: 'opened', ...result, ms: performance.now() - started })

  const trickle = async (durationMs: number, perSec: number): Promise<ClientReport> => {
    rtts.length = 0
    const gapMs = 1000 / perSec
    const start = performance.now()
    let sent = 0
    // Sends on an absolute schedule, so a late timer does not slow the rate.
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const elapsed = performance.now() - start
        const due = elapsed < durationMs ? Math.floor(elapsed / gapMs) + 1 : sent
        while (sent < due) {
          const ws = sockets[sent % sockets.length]
          const seq = `m${sent}`
          sent++
          if (ws === undefined || ws.readyState !== WebSocket.OPEN) continue
          pending.set(seq, performance.now())
          ws.send(seq)
        }
        if (elapsed >= durationMs) resolve()
        else setTimeout(tick, Math.max(1, gapMs / 2))
      }
      tick()
    })
    const deadline = performance.now() + TRICKLE_GRACE_MS
    while (pending.size > 0 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
    pending.clear()
    const sorted = [...rtts].sort((a, b) => a - b)
    return { type: 'latency', sent, answered: rtts.length, p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99) }
  }

  const close = async (): Promise<void> => {
    const closed = sockets.map((ws) => new Promise<void>((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) return resolve()
      ws.once('close', () => resolve())
      ws.close(1000)
    }))
    await withTimeout(Promise.all(closed), 10_000, 'closing tunnels').catch(() => {
      for (const ws of sockets) ws.terminate()
    })
  }
  return { open: () => open, trickle, close }
}

/** Reads one HTTP/1.1 response (content-length or chunked) and resolves with its status. */
function readResponse (socket: Socket): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let buffer = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      buffer = Buffer.concat([buffer, chunk])
      const end = buffer.indexOf('\r\n\r\n')
      if (end === -1) return
      const head = buffer.subarray(0, end).toString('latin1')
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0)
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head)
      const body = buffer.subarray(end + 4)
      const complete = length !== null
        ? body.length >= Number(length[1])
        : /\r\ntransfer-encoding:\s*chunked/i.test(head) && body.subarray(-5).toString('latin1') === '0\r\n\r\n'
      if (!complete) return
      socket.off('data', onData)
      socket.off('close', onClose)
      resolve(status)
    }
    const onClose = (): void => reject(new Error('connection closed before the response ended'))
    socket.on('data', onData)
    socket.once('close', onClose)
  })
}

async function holdIdle (url: string, path: string, count: number, headers: Record<string, string>): Promise<Held> {
  const { hostname, port, host } = new URL(url)
  const head = `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n` + Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n'
  const sockets: Socket[] = []
  let open = 0
  const started = performance.now()
  const result = await openAll(count, (i) => withTimeout(new Promise<void>((resolve, reject) => {
    const socket = connect(Number(port), hostname)
    socket.on('error', reject)
    socket.once('connect', () => {
      open++
      socket.once('close', () => { open-- })
      socket.write(head)
      readResponse(socket).then((status) => {
        if (status !== 200) reject(new Error(`connection ${i}: status ${status}`))
        else {
          sockets.push(socket)
          resolve()
        }
      }, reject)
    })
  }), OPEN_TIMEOUT_MS, 'keep-alive request'))
  send({ type: 'opened', ...result, ms: performance.now() - started })
  const close = async (): Promise<void> => {
    for (const socket of sockets) socket.destroy()
  }
  return { open: () => open, close }
}

async function main (): Promise<void> {
  const mode = requireEnv('BENCH_CLIENT_MODE')
  const url = requireEnv('BENCH_CLIENT_URL')
  const count = Number(requireEnv('BENCH_CLIENT_COUNT'))
  const headers = JSON.parse(requireEnv('BENCH_CLIENT_HEADERS')) as Record<string, string>
  const held = mode === 'ws'
    ? await holdTunnels(url, count, headers)
    : await holdIdle(url, requireEnv('BENCH_CLIENT_PATH'), count, headers)
  process.on('message', (command: ClientCommand) => {
    if (command.type === 'count') send({ type: 'count', open: held.open() })
    else if (command.type === 'trickle' && held.trickle !== undefined) {
      held.trickle(command.durationMs, command.perSec).then(send, () => {})
    } else if (command.type === 'stop') {
      held.close().finally(() => process.exit(0))
    }
  })
  // No client outlives the runner.
  process.on('disconnect', () => { held.close().finally(() => process.exit(0)) })
}

await main()
