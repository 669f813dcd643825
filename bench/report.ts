import type { ContenderName } from './contender.js'
import type { LoadResult } from './load.js'

/** One timed load run of one contender in one scenario. */
export interface LoadMeasurement extends LoadResult {
  scenario: string
  contender: ContenderName
  /** CPU time of the measured process (the gateway; the upstream for `direct`) per response. */
  cpuMicrosPerRequest: number
  /** CPU time of the upstream per response, for comparison across contenders. */
  upstreamCpuMicrosPerRequest: number
}

/** One streamed transfer of one contender. */
export interface StreamMeasurement {
  scenario: string
  contender: ContenderName
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
      m.contender === 'gatehouse' ? ratio(m.cpuMicrosPerRequest, baseline?.cpuMicrosPerRequest) : ''
    ]
  })
  return table(['scenario', 'contender', 'req/s', 'p50 ms', 'p99 ms', 'CPU us/req', 'req/s vs baseline', 'req/s vs direct', 'CPU vs baseline'], rows)
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

// From the issue: gatehouse / baseline req/s at least this, per scenario.
const RPS_TARGETS: Record<string, number> = { '2kb': 1.2, '2kb-gzip': 2.0, '200kb-gzip': 1.2 }
const MAX_STREAM_RSS_GROWTH = 64 * MIB
const MIN_STREAM_SHARE_OF_DIRECT = 0.5

/**
 * The targets, each with the figure measured in this run: ratios
 * from the median runs, memory growth from the worst of all rounds.
 */
export function evaluateTargets (load: LoadMeasurement[], stream: StreamMeasurement[], streamRounds: StreamMeasurement[] = stream): TargetResult[] {
  const out: TargetResult[] = []
  for (const [scenario, wanted] of Object.entries(RPS_TARGETS)) {
    const gatehouse = find(load, scenario, 'gatehouse')
    const baseline = find(load, scenario, 'baseline')
    if (gatehouse === undefined || baseline === undefined) continue
    const rpsRatio = gatehouse.rps / baseline.rps
    out.push({ target: `${scenario}: gatehouse/baseline req/s >= ${wanted}x`, measured: `${rpsRatio.toFixed(2)}x`, met: rpsRatio >= wanted })
    out.push({
      target: `${scenario}: gatehouse p99 <= baseline p99`,
      measured: `${gatehouse.p99Ms.toFixed(2)} ms vs ${baseline.p99Ms.toFixed(2)} ms`,
      met: gatehouse.p99Ms <= baseline.p99Ms
    })
  }
  for (const scenario of new Set(stream.map((m) => m.scenario))) {
    const gatehouse = find(stream, scenario, 'gatehouse')
    const direct = find(stream, scenario, 'direct')
    if (gatehouse === undefined) continue
    const growths = streamRounds.filter((m) => m.scenario === scenario && m.contender === 'gatehouse').map((m) => m.rssGrowthBytes)
    const growth = growths.includes(null) ? null : Math.max(...growths as number[])
    out.push({
      target: `${scenario}: gatehouse RSS growth < 64 MiB (worst round)`,
      measured: growth === null ? 'not measurable' : `${mib(growth)} MiB`,
      met: gatehouse.ok && growth !== null && growth < MAX_STREAM_RSS_GROWTH
    })
    if (direct === undefined) continue
    const share = gatehouse.mibPerSec / direct.mibPerSec
    out.push({
      target: `${scenario}: gatehouse throughput >= 0.5x direct`,
      measured: `${share.toFixed(2)}x (${gatehouse.mibPerSec.toFixed(0)} vs ${direct.mibPerSec.toFixed(0)} MiB/s)`,
      met: gatehouse.ok && direct.ok && share >= MIN_STREAM_SHARE_OF_DIRECT
    })
  }
  return out
}

export function targetsText (targets: TargetResult[]): string {
  return targets.map((t) => `  ${t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.measured}`).join('\n')
}
