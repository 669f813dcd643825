import type { ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import type { ClientCommand, ClientReport } from './clients.js'
import type { ContenderName } from './contender.js'
import { fetchRaw } from './http-client.js'
import type { LoadGenerator } from './load.js'
import { fdLimit, killPid, ServerProcess, spawnTracked } from './processes.js'
import type { Pinning } from './processes.js'
import { ROUTES } from './shared.js'
import type { LastSeen } from './shared.js'

/*
 * Issue 18's scale scenarios: many connections held at once. Each measured
 * gateway is a fresh process (its RSS is then the connections' cost, not a
 * previous scenario's heap), checked before its numbers count, and stopped
 * with its clients afterwards.
 */

const HERE = fileURLToPath(new URL('.', import.meta.url))
const KIB = 1024
export const SCALE_SCENARIOS = ['ws-tunnels', 'idle-keepalive'] as const
export type ScaleScenario = typeof SCALE_SCENARIOS[number]
/** Who is compared: the hand-assembled gateway and gatehouse (the floor has no auth to hold tunnels with). */
export const SCALE_CONTENDERS: readonly ContenderName[] = ['baseline', 'gatehouse']

export const SCALE_COUNTS: Readonly<Record<ScaleScenario, { full: number, quick: number }>> = {
  'ws-tunnels': { full: 5_000, quick: 500 },
  'idle-keepalive': { full: 10_000, quick: 1_000 }
}
// Echo latency is measured under this steady trickle (messages a second over all tunnels).
const TRICKLE_PER_SEC = { full: 200, quick: 100 }
// The idle scenario's probe: few connections, so it measures latency, not the gateway's saturation.
const PROBE_CONNECTIONS = 4
// RSS is read this long after the last connection opened (allocation settles, sockets idle).
const RSS_SETTLE_MS = 1_000
// Spare descriptors beyond the connections (pools, listeners, stdio, the module loader).
const FD_SPARE = 1_024
const CLOSE_TIMEOUT_MS = 15_000

/** Everything a scale scenario needs from the runner. */
export interface ScaleContext {
  loader: LoadGenerator
  upstream: ServerProcess
  /** The runner's environment for gateways (secret, key, gzip level). */
  env: NodeJS.ProcessEnv
  /** Authenticates a client at every gateway. */
  credentials: Record<string, string>
  /** Must be refused at the upgrade. */
  refused: Array<{ label: string, headers: Record<string, string> }>
  pinning: Pinning | undefined
  quick: boolean
  durationSec: number
  warmupSec: number
}

/** One scale run of one contender. */
export interface ScaleMeasurement {
  scenario: ScaleScenario
  contender: ContenderName
  round: number
  /** Connections asked for, and how many were established and checked. */
  count: number
  established: number
  /** Time to establish them all, in ms (OPEN_CONCURRENCY at a time). */
  openMs: number
  rssBeforeBytes: number | null
  rssAfterBytes: number | null
  /** Gateway RSS growth per connection held, KiB. */
  kibPerConnection: number | null
  /** ws-tunnels: echo latency under the trickle. idle-keepalive: the probe with the idle connections held. */
  p50Ms: number
  p99Ms: number
  /** idle-keepalive: the same probe, no idle connections. */
  aloneP50Ms: number | null
  aloneP99Ms: number | null
  /** What failed the checks; the numbers count only when empty. */
  failures: string[]
  ok: boolean
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function errorText (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** The clients child (`clients.ts`), driven over IPC. */
class ClientProcess {
  private constructor (readonly child: ChildProcess) {}

  static start (env: NodeJS.ProcessEnv, nofile: number | undefined, cpu: number | undefined): ClientProcess {
    const child = spawnTracked(process.execPath, ['--import', import.meta.resolve('tsx'), `${HERE}clients.ts`], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env,
      ...(nofile === undefined ? {} : { nofile }),
      ...(cpu === undefined ? {} : { cpu })
    })
    return new ClientProcess(child)
  }

  /** The next report of `type`, or an error when the child exits or `ms` pass first. */
  next<T extends ClientReport['type']> (type: T, ms: number): Promise<Extract<ClientReport, { type: T }>> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer)
        this.child.off('message', onMessage)
        this.child.off('exit', onExit)
      }
      const onMessage = (report: ClientReport): void => {
        if (report.type !== type) return
        done()
        resolve(report as Extract<ClientReport, { type: T }>)
      }
      const onExit = (code: number | null): void => {
        done()
        reject(new Error(`clients exited with code ${code} before reporting ${type}`))
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`clients did not report ${type} within ${Math.round(ms / 1000)} s`))
      }, ms)
      this.child.on('message', onMessage)
      this.child.once('exit', onExit)
    })
  }

  send (command: ClientCommand): void {
    if (this.child.connected) this.child.send(command)
  }

  async ask<T extends ClientReport['type']> (command: ClientCommand, type: T, ms: number): Promise<Extract<ClientReport, { type: T }>> {
    const answer = this.next(type, ms)
    this.send(command)
    return answer
  }

  /** Closes every connection it holds and exits; killed by PID if it does not. */
  async stop (): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    this.send({ type: 'stop' })
    const timer = setTimeout(() => killPid(this.child.pid as number), CLOSE_TIMEOUT_MS)
    await exited
    clearTimeout(timer)
  }
}

async function upstreamSeen (upstream: ServerProcess): Promise<LastSeen> {
  return JSON.parse((await fetchRaw(upstream.url + ROUTES.debug)).body.toString('utf8')) as LastSeen
}

/** What the upstream saw once its open tunnels are down to `open` (closes travel through the gateway), or the timeout passed. */
async function upstreamSettled (upstream: ServerProcess, open: number): Promise<LastSeen> {
  const deadline = Date.now() + CLOSE_TIMEOUT_MS
  let seen = await upstreamSeen(upstream)
  while (seen.ws.open > open && Date.now() < deadline) {
    await sleep(100)
    seen = await upstreamSeen(upstream)
  }
  return seen
}

/**
 * The status an upgrade gets: 101 when it opens and echoes a message (then it
 * is closed), the HTTP status otherwise. Waiting for the echo matters: the
 * hand-assembled gateway answers 101 before its upstream handshake, and a
 * tunnel closed before that handshake stays open at the upstream.
 */
async function upgradeStatus (url: string, headers: Record<string, string>): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false, handshakeTimeout: 10_000 })
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0)
      res.resume()
      ws.terminate()
    })
    ws.once('open', () => ws.send('check'))
    ws.once('message', () => {
      resolve(101)
      ws.close(1000)
    })
    ws.on('error', reject)
  })
}

async function startGateway (name: ContenderName, ctx: ScaleContext, scenario: ScaleScenario, connections: number): Promise<{ gateway: ServerProcess, fdNote: string | null }> {
  // A tunnel holds two descriptors in the gateway (caller and upstream), an idle client one.
  const wanted = (scenario === 'ws-tunnels' ? 2 : 1) * connections + FD_SPARE
  const nofile = fdLimit(wanted)
  const gateway = await ServerProcess.start(name, `${HERE}gateway.ts`, [name], {
    env: { ...ctx.env, BENCH_UPSTREAM: ctx.upstream.url, BENCH_WEBSOCKET: scenario === 'ws-tunnels' ? '1' : '' },
    ...(nofile === undefined ? {} : { nofile }),
    ...(ctx.pinning === undefined ? {} : { cpu: ctx.pinning.serverCpu })
  })
  const fdNote = nofile !== undefined && nofile < wanted ? `open-files limit ${nofile} is below the ${wanted} needed (run as root, or raise the hard limit)` : null
  return { gateway, fdNote }
}

function clientEnv (ctx: ScaleContext, mode: 'ws' | 'idle', url: string, count: number): NodeJS.ProcessEnv {
  return {
    ...process.env,
    BENCH_CLIENT_MODE: mode,
    BENCH_CLIENT_URL: url,
    BENCH_CLIENT_COUNT: String(count),
    BENCH_CLIENT_PATH: ROUTES.small,
    BENCH_CLIENT_HEADERS: JSON.stringify(ctx.credentials)
  }
}

/** Generous: a loaded machine establishes a few hundred connections a second at worst. */
function openTimeoutMs (count: number): number {
  return 60_000 + count * 20
}

/** A run before anything was measured: failed until its checks pass. */
function emptyMeasurement (scenario: ScaleScenario, contender: ContenderName, round: number, count: number, failures: string[]): ScaleMeasurement {
  return {
    scenario,
    contender,
    round,
    count,
    established: 0,
    openMs: 0,
    rssBeforeBytes: null,
    rssAfterBytes: null,
    kibPerConnection: null,
    p50Ms: 0,
    p99Ms: 0,
    aloneP50Ms: null,
    aloneP99Ms: null,
    failures,
    ok: false
  }
}

function perConnection (before: number | undefined, after: number | undefined, count: number): number | null {
  return before === undefined || after === undefined || count === 0 ? null : (after - before) / KIB / count
}

/**
 * `ws-tunnels`: N authenticated tunnels through a fresh gateway to the
 * upstream's echo, all established and echoing; echo latency under a steady
 * trickle; gateway RSS growth per tunnel.
 */
export async function measureTunnels (name: ContenderName, ctx: ScaleContext, round: number): Promise<ScaleMeasurement> {
  const count = ctx.quick ? SCALE_COUNTS['ws-tunnels'].quick : SCALE_COUNTS['ws-tunnels'].full
  const failures: string[] = []
  const expect = (ok: boolean, what: string): void => { if (!ok) failures.push(what) }
  const { gateway, fdNote } = await startGateway(name, ctx, 'ws-tunnels', count)
  const url = gateway.url.replace(/^http/, 'ws') + ROUTES.ws
  let clients: ClientProcess | undefined
  const result = emptyMeasurement('ws-tunnels', name, round, count, failures)
  try {
    if (fdNote !== null) failures.push(fdNote)
    // Refused callers never reach the upstream; one accepted tunnel also warms the path up.
    const seen0 = await upstreamSeen(ctx.upstream)
    expect(await upgradeStatus(url, {}) === 401, 'upgrade without a token was not refused with 401')
    for (const { label, headers } of ctx.refused) {
      const status = await upgradeStatus(url, headers)
      expect(status === 401, `upgrade with ${label}: status ${status}, expected 401`)
    }
    expect(await upgradeStatus(url, ctx.credentials) === 101, 'an authenticated upgrade did not open')
    const seen1 = await upstreamSettled(ctx.upstream, seen0.ws.open)
    expect(seen1.ws.open === seen0.ws.open, 'the checked tunnel did not close at the upstream')
    expect(seen1.ws.refused === seen0.ws.refused, `the upstream saw ${seen1.ws.refused - seen0.ws.refused} upgrade(s) without the key or with Authorization`)
    expect(seen1.ws.accepted - seen0.ws.accepted === 1, `refused upgrades reached the upstream (${seen1.ws.accepted - seen0.ws.accepted - 1} of them)`)
    await sleep(RSS_SETTLE_MS)

    const before = await gateway.rssBytes()
    clients = ClientProcess.start(clientEnv(ctx, 'ws', url, count), fdLimit(count + FD_SPARE), ctx.pinning?.loaderCpu)
    const opened = await clients.next('opened', openTimeoutMs(count))
    result.established = opened.ok
    result.openMs = opened.ms
    expect(opened.failed === 0, `${opened.failed} of ${count} tunnels failed: ${opened.errors.join('; ')}`)
    await sleep(RSS_SETTLE_MS)
    const after = await gateway.rssBytes()
    result.rssBeforeBytes = before ?? null
    result.rssAfterBytes = after ?? null
    result.kibPerConnection = perConnection(before, after, opened.ok)
    const seen2 = await upstreamSeen(ctx.upstream)
    expect(seen2.ws.open - seen1.ws.open === opened.ok, `the upstream holds ${seen2.ws.open - seen1.ws.open} tunnels, ${opened.ok} were established`)
    expect(seen2.ws.refused === seen1.ws.refused, 'the upstream refused some tunnels (key missing or Authorization forwarded)')

    const trickle = await clients.ask({ type: 'trickle', durationMs: ctx.durationSec * 1000, perSec: ctx.quick ? TRICKLE_PER_SEC.quick : TRICKLE_PER_SEC.full }, 'latency', ctx.durationSec * 1000 + 30_000)
    result.p50Ms = trickle.p50Ms
    result.p99Ms = trickle.p99Ms
    expect(trickle.sent > 0 && trickle.answered === trickle.sent, `${trickle.sent - trickle.answered} of ${trickle.sent} trickle messages got no echo`)
    const still = await clients.ask({ type: 'count' }, 'count', 10_000)
    expect(still.open === opened.ok, `${opened.ok - still.open} tunnels closed during the run`)

    // Cleanup is checked too: every tunnel closed at the upstream as well.
    await clients.stop()
    const seen3 = await upstreamSettled(ctx.upstream, seen0.ws.open)
    expect(seen3.ws.open === seen0.ws.open, `${seen3.ws.open - seen0.ws.open} tunnels still open at the upstream after the clients closed`)
  } catch (err) {
    failures.push(errorText(err))
  } finally {
    await clients?.stop()
    await gateway.stop()
  }
  result.ok = failures.length === 0
  return result
}

/**
 * `idle-keepalive`: the probe's latency through a fresh gateway alone, then
 * with N idle keep-alive connections held (each made one checked request);
 * gateway RSS growth per idle connection.
 */
export async function measureIdle (name: ContenderName, ctx: ScaleContext, round: number): Promise<ScaleMeasurement> {
  const count = ctx.quick ? SCALE_COUNTS['idle-keepalive'].quick : SCALE_COUNTS['idle-keepalive'].full
  const failures: string[] = []
  const expect = (ok: boolean, what: string): void => { if (!ok) failures.push(what) }
  const { gateway, fdNote } = await startGateway(name, ctx, 'idle-keepalive', count)
  let clients: ClientProcess | undefined
  const result = emptyMeasurement('idle-keepalive', name, round, count, failures)
  const probe = async (): Promise<{ p50Ms: number, p99Ms: number }> => {
    const run = await ctx.loader.run({
      url: gateway.url + ROUTES.small,
      headers: ctx.credentials,
      connections: PROBE_CONNECTIONS,
      durationSec: ctx.durationSec,
      ...(ctx.pinning === undefined ? {} : { cpu: ctx.pinning.loaderCpu })
    })
    expect(run.requests > 0 && run.non2xx + run.errors === 0, `probe: ${run.non2xx} non-2xx and ${run.errors} errors in ${run.requests} responses`)
    return run
  }
  try {
    if (fdNote !== null) failures.push(fdNote)
    const refused = await fetchRaw(gateway.url + ROUTES.small)
    expect(refused.status === 401, `GET without a token: status ${refused.status}, expected 401`)
    await ctx.loader.run({
      url: gateway.url + ROUTES.small,
      headers: ctx.credentials,
      connections: PROBE_CONNECTIONS,
      durationSec: ctx.warmupSec,
      ...(ctx.pinning === undefined ? {} : { cpu: ctx.pinning.loaderCpu })
    })
    const alone = await probe()
    result.aloneP50Ms = alone.p50Ms
    result.aloneP99Ms = alone.p99Ms
    await sleep(RSS_SETTLE_MS)

    const before = await gateway.rssBytes()
    clients = ClientProcess.start(clientEnv(ctx, 'idle', gateway.url, count), fdLimit(count + FD_SPARE), ctx.pinning?.loaderCpu)
    const opened = await clients.next('opened', openTimeoutMs(count))
    result.established = opened.ok
    result.openMs = opened.ms
    expect(opened.failed === 0, `${opened.failed} of ${count} keep-alive connections failed: ${opened.errors.join('; ')}`)
    await sleep(RSS_SETTLE_MS)
    const after = await gateway.rssBytes()
    result.rssBeforeBytes = before ?? null
    result.rssAfterBytes = after ?? null
    result.kibPerConnection = perConnection(before, after, opened.ok)

    const held = await probe()
    result.p50Ms = held.p50Ms
    result.p99Ms = held.p99Ms
    const still = await clients.ask({ type: 'count' }, 'count', 10_000)
    expect(still.open === opened.ok, `${opened.ok - still.open} idle connections were closed during the run (keepAliveTimeout?)`)
  } catch (err) {
    failures.push(errorText(err))
  } finally {
    await clients?.stop()
    await gateway.stop()
  }
  result.ok = failures.length === 0
  return result
}
