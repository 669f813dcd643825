import { createRequire } from 'node:module'
import { hasCommand, killPid, spawnTracked } from './processes.js'

/** One fixed-duration load run against one URL. */
export interface LoadSpec {
  url: string
  headers: Record<string, string>
  connections: number
  durationSec: number
  /** CPU to pin the loader to. */
  cpu?: number
}

export interface LoadResult {
  /** Responses received in the run (any status). */
  requests: number
  durationSec: number
  rps: number
  p50Ms: number
  p99Ms: number
  /** Responses outside 2xx/3xx. */
  non2xx: number
  /** Connect, read, write errors and timeouts. */
  errors: number
}

export interface LoadGenerator {
  readonly name: 'wrk' | 'autocannon'
  run: (spec: LoadSpec) => Promise<LoadResult>
}

// A loader gets its duration plus this much before it is killed.
const LOADER_GRACE_MS = 20_000
const WRK_INSTALL_HINT = 'install wrk for a lighter load generator: `sudo apt-get install wrk` (Debian/Ubuntu), `brew install wrk` (macOS)'

/** wrk when it is installed (about half autocannon's CPU), autocannon otherwise. */
export function chooseLoadGenerator (): { generator: LoadGenerator, note: string } {
  if (hasCommand('wrk')) return { generator: wrk, note: 'wrk -t1' }
  return { generator: autocannon, note: `autocannon (wrk not found; ${WRK_INSTALL_HINT})` }
}

async function runToEnd (command: string, args: string[], spec: LoadSpec): Promise<string> {
  const child = spawnTracked(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(spec.cpu === undefined ? {} : { cpu: spec.cpu }) })
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (text: string) => { stdout += text })
  child.stderr?.setEncoding('utf8').on('data', (text: string) => { stderr += text })
  const timer = setTimeout(() => killPid(child.pid as number), spec.durationSec * 1000 + LOADER_GRACE_MS)
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  clearTimeout(timer)
  if (code !== 0) throw new Error(`${command} exited with ${code}: ${stderr.trim() || stdout.trim()}`)
  return stdout
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

function wrkDuration (text: string | undefined): number {
  const match = /^([\d.]+)(us|ms|s|m|h)$/.exec(text ?? '')
  if (match === null) throw new Error(`unexpected wrk latency "${text}"`)
  return Number(match[1]) * (UNIT_MS[match[2] as string] as number)
}

/** Reads the summary `wrk --latency` prints. */
export function parseWrk (output: string): LoadResult {
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(output)
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(output)
  const p50 = /^\s+50%\s+(\S+)/m.exec(output)
  const p99 = /^\s+99%\s+(\S+)/m.exec(output)
  if (total === null || rps === null || p50 === null || p99 === null) throw new Error(`unexpected wrk output:\n${output}`)
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output)
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output)
  return {
    requests: Number(total[1]),
    durationSec: wrkDuration(`${total[2]}${total[3]}`) / 1000,
    rps: Number(rps[1]),
    p50Ms: wrkDuration(p50[1]),
    p99Ms: wrkDuration(p99[1]),
    non2xx: non2xx === null ? 0 : Number(non2xx[1]),
    errors: socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0)
  }
}

const wrk: LoadGenerator = {
  name: 'wrk',
  async run (spec) {
    const headers = Object.entries(spec.headers).flatMap(([name, value]) => ['-H', `${name}: ${value}`])
    const args = ['-t1', `-c${spec.connections}`, `-d${spec.durationSec}s`, '--latency', '--timeout', '10s', ...headers, spec.url]
    return parseWrk(await runToEnd('wrk', args, spec))
  }
}

/** The part of autocannon's `--json` report used here. */
interface AutocannonReport {
  requests: { total: number }
  latency: { p50: number, p99: number }
  duration: number
  non2xx: number
  errors: number
  timeouts: number
}

/** Reads autocannon's `--json` report. */
export function parseAutocannon (output: string): LoadResult {
  const report = JSON.parse(output) as AutocannonReport
  return {
    requests: report.requests.total,
    durationSec: report.duration,
    rps: report.requests.total / report.duration,
    p50Ms: report.latency.p50,
    p99Ms: report.latency.p99,
    non2xx: report.non2xx,
    errors: report.errors + report.timeouts
  }
}

const autocannon: LoadGenerator = {
  name: 'autocannon',
  async run (spec) {
    const cli = createRequire(import.meta.url).resolve('autocannon')
    const headers = Object.entries(spec.headers).flatMap(([name, value]) => ['-H', `${name}=${value}`])
    const args = [cli, '-c', String(spec.connections), '-d', String(spec.durationSec), '--json', '-n', ...headers, spec.url]
    return parseAutocannon(await runToEnd(process.execPath, args, spec))
  }
}
