import type { ContenderName } from './contender.js'
import type { LoadResult } from './load.js'
import type { ScaleMeasurement } from './scale.js'

/** One timed load run of one contender in one scenario. */
export interface LoadMeasurement extends LoadResult {
  scenario: string
  contender: ContenderName
  /** Which round of the run (0-based): contenders measured in one round ran minutes apart at most. */
  round: number
  /** CPU time of the measured process (the gateway; the upstream for `direct`) per response. */
  cpuMicrosPerRequest: number
  /** CPU time of the upstream per response, for comparison across contenders. */
  upstreamCpuMicrosPerRequest: number
}

/** One streamed transfer of one contender. */
export interface StreamMeasurement {
  scenario: string
  contender: ContenderName
  round: number
  bytes: number
  ms: number
  mibPerSec: number
  /** CPU time of the measured process per MiB moved: steadier than MiB/s on a shared machine. */
  cpuMicrosPerMib: number
  /** RSS of the measured process before the transfer and at its peak during it. */
  rssBeforeBytes: number | null
  rssPeakBytes: number | null
  rssGrowthBytes: number | null
  ok: boolean
  note: string
}

export interface TargetResult {
  target: string
  measured: string
  met: boolean
  /** A ratio printed for reading, with no target attached (met is then meaningless). */
  info?: boolean
}

const MIB = 1024 * 1024

function table (header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((cell, i) => i < 2 ? cell.padEnd(widths[i] as number) : cell.padStart(widths[i] as number)).join('  ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

function ratio (a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`
}

function find<T extends { scenario: string, contender: ContenderName }> (list: T[], scenario: string, contender: ContenderName): T | undefined {
  return list.find((m) => m.scenario === scenario && m.contender === contender)
}

/** req/s, latency, CPU per request and the ratios, one row per contender and scenario. */
export function loadTable (results: LoadMeasurement[], titles: Record<string, string>): string {
  const rows = results.map((m) => {
    const baseline = find(results, m.scenario, 'baseline')
    const direct = find(results, m.scenario, 'direct')
    const floor = find(results, m.scenario, 'floor')
    const flagged = m.non2xx + m.errors > 0 ? ` (!${m.non2xx + m.errors} bad)` : ''
    return [
      titles[m.scenario] ?? m.scenario,
      m.contender,
      m.rps.toFixed(0) + flagged,
      m.p50Ms.toFixed(2),
      m.p99Ms.toFixed(2),
      m.cpuMicrosPerRequest.toFixed(0) + (m.contender === 'direct' ? ' (upstream)' : ''),
      m.contender === 'baseline' ? '' : ratio(m.rps, baseline?.rps),
      m.contender === 'direct' ? '' : ratio(m.rps, direct?.rps),
      // CPU per request moves less than req/s when neighbours steal the core.
      m.contender === 'gatehouse' ? ratio(m.cpuMicrosPerRequest, baseline?.cpuMicrosPerRequest) : '',
      // Issue 18: what gatehouse costs beyond the bare reply-from + compress floor.
      m.contender === 'gatehouse' ? ratio(m.rps, floor?.rps) : '',
      m.contender === 'gatehouse' ? ratio(m.cpuMicrosPerRequest, floor?.cpuMicrosPerRequest) : ''
    ]
  })
  return table(['scenario', 'contender', 'req/s', 'p50 ms', 'p99 ms', 'CPU us/req', 'req/s vs baseline', 'req/s vs direct', 'CPU vs baseline', 'req/s vs floor', 'CPU vs floor'], rows)
}

function mib (bytes: number | null): string {
  return bytes === null ? '-' : (bytes / MIB).toFixed(1)
}

/** Throughput and memory growth of the streamed transfers. */
export function streamTable (results: StreamMeasurement[]): string {
  const rows = results.map((m) => [
    m.scenario,
    m.contender,
    m.ok ? m.mibPerSec.toFixed(0) : `failed: ${m.note}`,
    (m.ms / 1000).toFixed(1),
    m.cpuMicrosPerMib.toFixed(0),
    mib(m.rssBeforeBytes),
    mib(m.rssPeakBytes),
    mib(m.rssGrowthBytes) + (m.contender === 'direct' ? ' (upstream)' : ''),
    m.contender === 'baseline' ? '' : ratio(m.mibPerSec, find(results, m.scenario, 'baseline')?.mibPerSec),
    m.contender === 'direct' ? '' : ratio(m.mibPerSec, find(results, m.scenario, 'direct')?.mibPerSec)
  ])
  return table(['transfer', 'contender', 'MiB/s', 'seconds', 'CPU us/MiB', 'RSS before MiB', 'RSS peak MiB', 'growth MiB', 'vs baseline', 'vs direct'], rows)
}

// gatehouse / baseline req/s at least this, per scenario. Issue 18 set 2 KB
// to "never slower" (1.0) and 200 KB gzip to parity; 2 KB gzip keeps issue
// 6's 2.0 (issue 18 did not revisit it).
// Churn (a new connection per request) is issue 18's: at least the baseline.
const RPS_TARGETS: Record<string, number> = { '2kb': 1.0, '2kb-gzip': 2.0, '200kb-gzip': 1.0, churn: 1.0 }
// Issue 18's stretch: gatehouse's CPU per 2 KB request within this of the floor's.
const FLOOR_CPU_TARGETS: Record<string, number> = { '2kb': 1.1 }
const MAX_STREAM_RSS_GROWTH = 64 * MIB
// Issue 18: against the hand-assembled gateway on the same transfer (no longer half of direct).
const MIN_STREAM_SHARE_OF_BASELINE = 0.9

/**
 * Successful responses a second. Under `Connection: close` the hand-assembled
 * gateway answers `connection: keep-alive` (reply-from copies the upstream's)
 * and then closes: a client that believes it loses its next request, which
 * must not count as served.
 */
function okRps (m: LoadMeasurement): number {
  return m.durationSec > 0 ? (m.requests - m.non2xx) / m.durationSec : 0
}

/** The median of numbers (the mean of the middle two for an even count). */
function middle (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const half = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[half] as number : ((sorted[half - 1] as number) + (sorted[half] as number)) / 2
}

/**
 * `value(a) / value(b)` in every round where both contenders were measured in
 * `scenario`. Pairing by round keeps a slow spell of the shared machine from
 * landing on one contender only.
 */
export function pairedRatios<T extends { scenario: string, contender: ContenderName, round: number }> (
  rounds: T[], scenario: string, a: ContenderName, b: ContenderName, value: (m: T) => number
): number[] {
  const out: number[] = []
  for (const m of rounds) {
    if (m.scenario !== scenario || m.contender !== a) continue
    const other = rounds.find((o) => o.scenario === scenario && o.contender === b && o.round === m.round)
    if (other !== undefined && value(other) > 0) out.push(value(m) / value(other))
  }
  return out
}

function ratios (values: number[]): string {
  const median = `${middle(values).toFixed(2)}x`
  return values.length < 2 ? median : `${median} (median of rounds: ${values.map((v) => `${v.toFixed(2)}x`).join(', ')})`
}

/**
 * The issue's targets, each measured as the median of the per-round ratios
 * (both contenders of a ratio measured in the same round); memory growth from
 * the worst of all rounds.
 */
export function evaluateTargets (loadRounds: LoadMeasurement[], streamRounds: StreamMeasurement[]): TargetResult[] {
  const out: TargetResult[] = []
  for (const [scenario, wanted] of Object.entries(RPS_TARGETS)) {
    const rps = pairedRatios(loadRounds, scenario, 'gatehouse', 'baseline', okRps)
    if (rps.length === 0) continue
    out.push({ target: `${scenario}: gatehouse/baseline successful req/s >= ${wanted}x`, measured: ratios(rps), met: middle(rps) >= wanted })
    const p99 = pairedRatios(loadRounds, scenario, 'gatehouse', 'baseline', (m) => m.p99Ms)
    out.push({ target: `${scenario}: gatehouse p99 <= baseline p99 (ratio <= 1)`, measured: ratios(p99), met: middle(p99) <= 1 })
  }
  for (const scenario of Object.keys(RPS_TARGETS)) {
    const cpu = pairedRatios(loadRounds, scenario, 'gatehouse', 'floor', (m) => m.cpuMicrosPerRequest)
    if (cpu.length === 0) continue
    const wanted = FLOOR_CPU_TARGETS[scenario]
    out.push(wanted === undefined
      ? { target: `${scenario}: gatehouse/floor CPU per request`, measured: ratios(cpu), met: true, info: true }
      : { target: `${scenario}: gatehouse/floor CPU per request <= ${wanted}x`, measured: ratios(cpu), met: middle(cpu) <= wanted })
    const rps = pairedRatios(loadRounds, scenario, 'gatehouse', 'floor', okRps)
    out.push({ target: `${scenario}: gatehouse/floor req/s`, measured: ratios(rps), met: true, info: true })
  }
  for (const scenario of new Set(streamRounds.map((m) => m.scenario))) {
    const runs = streamRounds.filter((m) => m.scenario === scenario && m.contender === 'gatehouse')
    if (runs.length === 0) continue
    const growths = runs.map((m) => m.rssGrowthBytes)
    const growth = growths.includes(null) ? null : Math.max(...growths as number[])
    out.push({
      target: `${scenario}: gatehouse RSS growth < 64 MiB (worst round)`,
      measured: growth === null ? 'not measurable' : `${mib(growth)} MiB`,
      met: runs.every((m) => m.ok) && growth !== null && growth < MAX_STREAM_RSS_GROWTH
    })
    const ok = streamRounds.filter((m) => m.ok)
    const share = pairedRatios(ok, scenario, 'gatehouse', 'baseline', (m) => m.mibPerSec)
    if (share.length > 0) {
      out.push({
        target: `${scenario}: gatehouse throughput >= ${MIN_STREAM_SHARE_OF_BASELINE}x baseline`,
        measured: ratios(share),
        met: middle(share) >= MIN_STREAM_SHARE_OF_BASELINE
      })
    }
    // The gateway and the upstream share one core here: for reading only (issue 18 dropped that target).
    const direct = pairedRatios(ok, scenario, 'gatehouse', 'direct', (m) => m.mibPerSec)
    if (direct.length > 0) out.push({ target: `${scenario}: gatehouse/direct throughput`, measured: ratios(direct), met: true, info: true })
  }
  return out
}

/** The revocation pair's runs: req/s, latency and gateway CPU per request, no baseline to compare with. */
export function revocationTable (results: LoadMeasurement[]): string {
  const rows = results.map((m) => [
    m.contender === 'revoke-redis' ? 'redisStore' : 'MemoryStore',
    m.contender,
    m.rps.toFixed(0) + (m.non2xx + m.errors > 0 ? ` (!${m.non2xx + m.errors} bad)` : ''),
    m.p50Ms.toFixed(2),
    m.p99Ms.toFixed(2),
    m.cpuMicrosPerRequest.toFixed(0)
  ])
  return table(['store', 'contender', 'req/s', 'p50 ms', 'p99 ms', 'CPU us/req'], rows)
}

/**
 * Issue 15: what Redis costs against the MemoryStore when every request looks
 * its session up: the req/s ratio (redis/memory) and the added p99 in ms,
 * each the median of per-round values (both measured in the same round).
 */
export function revocationText (loadRounds: LoadMeasurement[], scenario: string, redisGetsPerRequest: number[]): string {
  const rps = pairedRatios(loadRounds, scenario, 'revoke-redis', 'revoke-memory', (m) => m.rps)
  const added: number[] = []
  for (const m of loadRounds) {
    if (m.scenario !== scenario || m.contender !== 'revoke-redis') continue
    const memory = loadRounds.find((o) => o.scenario === scenario && o.contender === 'revoke-memory' && o.round === m.round)
    if (memory !== undefined) added.push(m.p99Ms - memory.p99Ms)
  }
  if (rps.length === 0) return 'revocation: no round measured both stores'
  const each = (values: number[], unit: (v: number) => string): string => values.length < 2 ? '' : ` (rounds: ${values.map(unit).join(', ')})`
  const ms = (v: number): string => `${v >= 0 ? '+' : ''}${v.toFixed(2)} ms`
  const gets = redisGetsPerRequest.length === 0 ? '' : `; redis GETs per request ${middle(redisGetsPerRequest).toFixed(2)}`
  return `revocation (issue 15), redis / memory: req/s ${middle(rps).toFixed(2)}x${each(rps, (v) => `${v.toFixed(2)}x`)}, ` +
    `p99 ${ms(middle(added))}${each(added, ms)}${gets}`
}

export function targetsText (targets: TargetResult[]): string {
  return targets.map((t) => `  ${t.info === true ? 'info  ' : t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.measured}`).join('\n')
}

// Issue 18, scale in connections.
const MAX_KIB_PER_TUNNEL = 24
const MAX_IDLE_P99_GROWTH = 1.5

function kib (value: number | null): string {
  return value === null ? '-' : value.toFixed(1)
}

/** Connections held, memory per connection and latency, one row per scale run. */
export function scaleTable (results: ScaleMeasurement[]): string {
  const rows = results.map((m) => {
    const baseline = results.find((o) => o.scenario === m.scenario && o.contender === 'baseline')
    return [
      m.scenario,
      m.contender,
      `${m.established}/${m.count}${m.ok ? '' : ' FAILED'}`,
      (m.openMs / 1000).toFixed(1),
      mib(m.rssBeforeBytes),
      mib(m.rssAfterBytes),
      kib(m.kibPerConnection),
      m.aloneP99Ms === null ? '-' : m.aloneP99Ms.toFixed(2),
      m.p50Ms.toFixed(2),
      m.p99Ms.toFixed(2),
      m.contender === 'baseline' ? '' : ratio(m.kibPerConnection ?? undefined, baseline?.kibPerConnection ?? undefined),
      m.contender === 'baseline' ? '' : ratio(m.p99Ms, baseline?.p99Ms)
    ]
  })
  return table(['scenario', 'contender', 'held', 'open s', 'RSS before MiB', 'RSS held MiB', 'KiB/conn', 'p99 alone ms', 'p50 ms', 'p99 ms', 'KiB vs baseline', 'p99 vs baseline'], rows)
}

/**
 * Issue 18's connection targets, from runs whose checks passed: KiB per idle
 * tunnel (absolute and against the baseline), echo p99 against the baseline,
 * the idle probe's p99 against itself alone, RSS per idle connection.
 */
export function scaleTargets (rounds: ScaleMeasurement[]): TargetResult[] {
  const out: TargetResult[] = []
  const ok = rounds.filter((m) => m.ok)
  const gatehouse = (scenario: string): ScaleMeasurement[] => rounds.filter((m) => m.scenario === scenario && m.contender === 'gatehouse')
  const tunnels = gatehouse('ws-tunnels')
  if (tunnels.length > 0) {
    const failed = tunnels.filter((m) => !m.ok).length
    out.push({ target: 'ws-tunnels: gatehouse checks passed (every tunnel authenticated, echoing, closed after)', measured: `${tunnels.length - failed}/${tunnels.length} rounds`, met: failed === 0 })
    const per = tunnels.filter((m) => m.ok && m.kibPerConnection !== null).map((m) => m.kibPerConnection as number)
    if (per.length > 0) out.push({ target: `ws-tunnels: gatehouse RSS per tunnel <= ${MAX_KIB_PER_TUNNEL} KiB`, measured: `${middle(per).toFixed(1)} KiB`, met: middle(per) <= MAX_KIB_PER_TUNNEL })
    const memory = pairedRatios(ok.filter((m) => (m.kibPerConnection ?? 0) > 0), 'ws-tunnels', 'gatehouse', 'baseline', (m) => m.kibPerConnection as number)
    if (memory.length > 0) out.push({ target: 'ws-tunnels: gatehouse/baseline RSS per tunnel <= 1', measured: ratios(memory), met: middle(memory) <= 1 })
    const p99 = pairedRatios(ok, 'ws-tunnels', 'gatehouse', 'baseline', (m) => m.p99Ms)
    if (p99.length > 0) out.push({ target: 'ws-tunnels: gatehouse/baseline echo p99 <= 1', measured: ratios(p99), met: middle(p99) <= 1 })
  }
  const idle = gatehouse('idle-keepalive')
  if (idle.length > 0) {
    const failed = idle.filter((m) => !m.ok).length
    out.push({ target: 'idle-keepalive: gatehouse checks passed (every connection and probe answered 200, none dropped)', measured: `${idle.length - failed}/${idle.length} rounds`, met: failed === 0 })
    const growth = idle.filter((m) => m.ok && m.aloneP99Ms !== null && m.aloneP99Ms > 0).map((m) => m.p99Ms / (m.aloneP99Ms as number))
    if (growth.length > 0) out.push({ target: `idle-keepalive: gatehouse probe p99 held/alone <= ${MAX_IDLE_P99_GROWTH}x`, measured: ratios(growth), met: middle(growth) <= MAX_IDLE_P99_GROWTH })
    const per = idle.filter((m) => m.ok && m.kibPerConnection !== null).map((m) => m.kibPerConnection as number)
    if (per.length > 0) out.push({ target: 'idle-keepalive: gatehouse RSS per idle connection', measured: `${middle(per).toFixed(1)} KiB`, met: true, info: true })
    const p99 = pairedRatios(ok, 'idle-keepalive', 'gatehouse', 'baseline', (m) => m.p99Ms)
    if (p99.length > 0) out.push({ target: 'idle-keepalive: gatehouse/baseline probe p99 (held)', measured: ratios(p99), met: true, info: true })
  }
  return out
}
