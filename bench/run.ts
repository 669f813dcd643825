import { randomBytes } from 'node:crypto'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { cpus, totalmem } from 'node:os'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { checkContender } from './checks.js'
import { CONTENDERS, REVOCATION_CONTENDERS } from './contender.js'
import type { Contender, ContenderName } from './contender.js'
import { downloadStream, uploadStream } from './http-client.js'
import type { Transfer } from './http-client.js'
import { chooseLoadGenerator } from './load.js'
import type { LoadGenerator, LoadResult } from './load.js'
import { choosePinning, fdLimit, killAllSync, pinProcess, ServerProcess, stopAll } from './processes.js'
import type { Pinning } from './processes.js'
import { formatProfile, formatStages, readProfile, readStages, stageMicros } from './profile.js'
import type { ProfileSummary } from './profile.js'
import { evaluateTargets, loadTable, revocationTable, revocationText, scaleTable, scaleTargets, streamTable, targetsText } from './report.js'
import type { LoadMeasurement, StreamMeasurement } from './report.js'
import { measureIdle, measureTunnels, SCALE_CONTENDERS, SCALE_COUNTS, SCALE_SCENARIOS } from './scale.js'
import type { ScaleContext, ScaleMeasurement, ScaleScenario } from './scale.js'
import { catalogue, LARGE_BYTES, ROUTES, SMALL_BYTES } from './shared.js'
import { signHs256 } from './token.js'
import { checkRevocation, login, redisGets, startRedisServer } from './revocation.js'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const RESULTS_DIR = `${HERE}results`
const MIB = 1024 * 1024
const CONNECTIONS = 50
// Full run: this long per scenario and contender, after this warm-up.
const DEFAULT_DURATION_SEC = 10
const DEFAULT_WARMUP_SEC = 3
const QUICK_DURATION_SEC = 2
const QUICK_WARMUP_SEC = 1
const STREAM_BYTES = 1024 * MIB
const QUICK_STREAM_BYTES = 64 * MIB
// A transfer slower than this is a failure, which also bounds the run.
const MIN_STREAM_MIB_PER_SEC = 8
const RSS_SAMPLE_MS = 50
const SETTLE_MS = 300

interface LoadScenario { name: string, title: string, path: string, gzip: boolean, headers?: Record<string, string> }
const LOAD_SCENARIOS: LoadScenario[] = [
  { name: '2kb', title: '2 KB', path: ROUTES.small, gzip: false },
  { name: '2kb-gzip', title: '2 KB gzip', path: ROUTES.small, gzip: true },
  { name: '200kb-gzip', title: '200 KB gzip', path: ROUTES.large, gzip: true },
  // Issue 18: a new client connection per request (the gateway closes after answering).
  { name: 'churn', title: '2 KB, Connection: close', path: ROUTES.small, gzip: false, headers: { connection: 'close' } }
]
const STREAM_SCENARIOS = ['stream-up', 'stream-down'] as const
// Issue 15: its own contender pair (MemoryStore, Redis), the 2 KB request without gzip.
const REVOCATION: LoadScenario = { name: 'revocation', title: '2 KB, revocation check', path: ROUTES.small, gzip: false }
const ALL_SCENARIOS = [...LOAD_SCENARIOS.map((s) => s.name), ...STREAM_SCENARIOS, REVOCATION.name, ...SCALE_SCENARIOS]
// The scenarios the stage table profiles: the issue's 2 KB request, no gzip, and the same with a new connection each.
const STAGES_SCENARIOS = ['2kb', 'churn']
// Longest a scale run may take beyond its timed parts (starting, opening, checking, closing).
const SCALE_OVERHEAD_MS = 150_000

const USAGE = `usage: npm run bench -- [options]
  --quick              smoke run: ${QUICK_DURATION_SEC} s per scenario, ${QUICK_STREAM_BYTES / MIB} MiB streamed, ${SCALE_COUNTS['ws-tunnels'].quick} tunnels, ${SCALE_COUNTS['idle-keepalive'].quick} idle connections
  --duration N         seconds per timed run (default ${DEFAULT_DURATION_SEC})
  --warmup N           seconds of warm-up before each timed run (default ${DEFAULT_WARMUP_SEC})
  --only a,b           scenarios: ${ALL_SCENARIOS.join(', ')}
  --contenders a,b     contenders: ${CONTENDERS.join(', ')}
  --rounds N           repeat everything N times: tables show the median run, targets the median of per-round ratios (default 1)
  --stream-mib N       MiB per streamed transfer (default ${STREAM_BYTES / MIB})
  --gzip-level N       zlib level 1-9 for both gateways (default: @fastify/compress's, zlib's 6)
  --profile            run the gateways under node --cpu-prof and summarise the profiles
  --stages             profile each gateway's timed ${STAGES_SCENARIOS.join(' and ')} runs in-process and print us a request by stage (issue 18)`

interface Options {
  durationSec: number
  warmupSec: number
  scenarios: string[]
  contenders: ContenderName[]
  rounds: number
  streamBytes: number
  /** Both gateways' gzip level; undefined leaves each at its default. */
  gzipLevel: number | undefined
  profile: boolean
  /** Bracket each gateway's timed `2kb` run with the in-process profiler and print the stage table. */
  stages: boolean
  quick: boolean
}

function positive (value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag} expects a positive number, got "${value}"\n${USAGE}`)
  return n
}

function list<T extends string> (value: string | undefined, allowed: readonly T[], flag: string): T[] {
  if (value === undefined) return [...allowed]
  const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '')
  for (const name of names) {
    if (!allowed.includes(name as T)) throw new Error(`${flag}: unknown "${name}", expected ${allowed.join(', ')}`)
  }
  return allowed.filter((name) => names.includes(name))
}

function parseOptions (argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      only: { type: 'string' },
      contenders: { type: 'string' },
      rounds: { type: 'string' },
      'stream-mib': { type: 'string' },
      'gzip-level': { type: 'string' },
      profile: { type: 'boolean', default: false },
      stages: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false }
    }
  })
  if (values.help === true) {
    console.log(USAGE)
    process.exit(0)
  }
  const quick = values.quick === true
  return {
    quick,
    durationSec: Math.round(positive(values.duration, '--duration', quick ? QUICK_DURATION_SEC : DEFAULT_DURATION_SEC)),
    warmupSec: Math.round(positive(values.warmup, '--warmup', quick ? QUICK_WARMUP_SEC : DEFAULT_WARMUP_SEC)),
    scenarios: list(values.only, ALL_SCENARIOS, '--only'),
    contenders: list(values.contenders, CONTENDERS, '--contenders'),
    rounds: Math.round(positive(values.rounds, '--rounds', 1)),
    streamBytes: Math.round(positive(values['stream-mib'], '--stream-mib', (quick ? QUICK_STREAM_BYTES : STREAM_BYTES) / MIB) * MIB),
    gzipLevel: gzipLevel(values['gzip-level']),
    profile: values.profile === true,
    stages: values.stages === true
  }
}

function gzipLevel (value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1 || n > 9) throw new Error(`--gzip-level expects an integer from 1 to 9, got "${value}"\n${USAGE}`)
  return n
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Longest a whole run may take: every loader and transfer is bounded, this bounds the rest. */
function timeBudgetMs (opts: Options): number {
  const loadRuns = opts.scenarios.filter((s) => LOAD_SCENARIOS.some((l) => l.name === s)).length
  const streamRuns = opts.scenarios.filter((s) => STREAM_SCENARIOS.includes(s as typeof STREAM_SCENARIOS[number])).length
  const scaleRuns = opts.scenarios.filter((s) => SCALE_SCENARIOS.includes(s as ScaleScenario)).length
  // ws-tunnels: one timed trickle; idle-keepalive: warm-up and two probes.
  const perScale = (opts.warmupSec + 2 * opts.durationSec) * 1000 + SCALE_OVERHEAD_MS
  const perLoad = (opts.durationSec + opts.warmupSec) * 1000 + 25_000
  const perStream = streamTimeoutMs(opts.streamBytes) + 5_000
  const revocation = opts.scenarios.includes(REVOCATION.name) ? 60_000 + opts.rounds * REVOCATION_CONTENDERS.length * perLoad : 0
  return 120_000 + revocation + opts.rounds * (opts.contenders.length * (loadRuns * perLoad + streamRuns * perStream) + SCALE_CONTENDERS.length * scaleRuns * perScale)
}

function streamTimeoutMs (bytes: number): number {
  return Math.max(30_000, 1000 * bytes / (MIN_STREAM_MIB_PER_SEC * MIB))
}

interface Fixture {
  upstream: ServerProcess
  apiKey: string
  jwtSecret: string
  env: NodeJS.ProcessEnv
  contenders: Contender[]
  /** What every gateway accepts, and what each must refuse (for the scale scenarios). */
  token: string
  gatewayRefused: Contender['refused']
}

async function startFixture (opts: Options, pinning: Pinning | undefined, profileDir: string | undefined): Promise<Fixture> {
  const apiKey = randomBytes(24).toString('hex')
  const jwtSecret = randomBytes(32).toString('hex')
  const cpu = pinning === undefined ? {} : { cpu: pinning.serverCpu }
  const env = { ...process.env, BENCH_API_KEY: apiKey, BENCH_JWT_SECRET: jwtSecret, BENCH_GZIP_LEVEL: String(opts.gzipLevel ?? '') }
  // The tunnels' far end holds one descriptor per tunnel.
  const nofile = opts.scenarios.includes('ws-tunnels') ? fdLimit(SCALE_COUNTS['ws-tunnels'].full + 1024) : undefined
  const upstream = await ServerProcess.start('upstream', `${HERE}upstream.ts`, [], { env, ...cpu, ...(nofile === undefined ? {} : { nofile }) })

  const token = signHs256({ sub: 'bench', role: 'reader' }, jwtSecret)
  const gatewayRefused: Contender['refused'] = [
    { label: 'a token signed with another secret', headers: { authorization: `Bearer ${signHs256({ sub: 'bench' }, randomBytes(32).toString('hex'))}` } },
    { label: 'an expired token', headers: { authorization: `Bearer ${signHs256({ sub: 'bench' }, jwtSecret, -60)}` } },
    { label: 'the API key instead of a token', headers: { 'x-api-key': apiKey } }
  ]
  const contenders: Contender[] = []
  // The revocation and scale scenarios bring their own gateways.
  const standard = opts.scenarios.some((s) => LOAD_SCENARIOS.some((l) => l.name === s) || STREAM_SCENARIOS.includes(s as typeof STREAM_SCENARIOS[number]))
  for (const name of standard ? opts.contenders : []) {
    if (name === 'direct') {
      contenders.push({
        name,
        url: upstream.url,
        measured: upstream,
        credentials: { 'x-api-key': apiKey },
        authenticates: true,
        refused: [{ label: 'a wrong API key', headers: { 'x-api-key': 'wrong' } }]
      })
      continue
    }
    const nodeFlags = profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}/${name}`]
    const gateway = await ServerProcess.start(name, `${HERE}gateway.ts`, [name], { env: { ...env, BENCH_UPSTREAM: upstream.url }, nodeFlags, ...cpu })
    // The floor gets the token too, so it forwards (and drops) the same Authorization.
    contenders.push({ name, url: gateway.url, measured: gateway, credentials: { authorization: `Bearer ${token}` }, authenticates: name !== 'floor', refused: name === 'floor' ? [] : gatewayRefused })
  }
  return { upstream, apiKey, jwtSecret, env, contenders, token, gatewayRefused }
}

/**
 * The revocation pair: a redis-server of its own, both gateways started, a
 * login each (the token then has a session and a jti), checked before timing.
 */
async function startRevocation (fixture: Fixture, pinning: Pinning | undefined, profileDir: string | undefined): Promise<{ contenders: Contender[], redisPort: number, failures: Record<string, string[]> }> {
  const redis = await startRedisServer(pinning?.serverCpu)
  console.log(`revocation: redis-server ${redis.url} (--save "" --appendonly no)`)
  const contenders: Contender[] = []
  const failures: Record<string, string[]> = {}
  for (const name of REVOCATION_CONTENDERS) {
    const nodeFlags = profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}/${name}`]
    const env = { ...fixture.env, BENCH_UPSTREAM: fixture.upstream.url, BENCH_REDIS_URL: name === 'revoke-redis' ? redis.url : '' }
    try {
      const gateway = await ServerProcess.start(name, `${HERE}gateway.ts`, [name], { env, nodeFlags, ...(pinning === undefined ? {} : { cpu: pinning.serverCpu }) })
      const token = await login(gateway.url, fixture.apiKey)
      const contender: Contender = { name, url: gateway.url, measured: gateway, credentials: { authorization: `Bearer ${token}` }, authenticates: true, refused: [] }
      failures[name] = await checkRevocation(contender, fixture.apiKey, name === 'revoke-redis' ? redis.port : undefined)
      if (failures[name].length === 0) contenders.push(contender)
    } catch (err) {
      failures[name] = [err instanceof Error ? err.message : String(err)]
    }
    console.log(`check ${name}: ${failures[name]?.length === 0 ? 'ok (sid and jti in the token, every response 200, a logged-out token refused' + (name === 'revoke-redis' ? ', one redis GET per request)' : ')') : `FAILED\n  ${failures[name]?.join('\n  ')}`}`)
  }
  return { contenders, redisPort: redis.port, failures }
}

async function measureLoad (loader: LoadGenerator, fixture: Fixture, contender: Contender, scenario: LoadScenario, opts: Options, pinning: Pinning | undefined, round: number, profileFile?: string): Promise<{ warmup: LoadResult, measurement: LoadMeasurement }> {
  const spec = {
    url: contender.url + scenario.path,
    headers: { ...contender.credentials, ...(scenario.gzip ? { 'accept-encoding': 'gzip' } : {}), ...scenario.headers },
    connections: CONNECTIONS,
    ...(pinning === undefined ? {} : { cpu: pinning.loaderCpu })
  }
  const warmup = await loader.run({ ...spec, durationSec: opts.warmupSec })
  await sleep(SETTLE_MS)
  if (profileFile !== undefined) await contender.measured.profileStart()
  const [cpuBefore, upstreamBefore] = [await contender.measured.cpuMicros(), await fixture.upstream.cpuMicros()]
  const result = await loader.run({ ...spec, durationSec: opts.durationSec })
  const [cpuAfter, upstreamAfter] = [await contender.measured.cpuMicros(), await fixture.upstream.cpuMicros()]
  if (profileFile !== undefined) await contender.measured.profileStop(profileFile)
  // Per successful response, as req/s: wrk counts a request it wrote to a
  // socket the gateway had closed (the churn quirk, see bench/README.md) as
  // a non-2xx response, though the gateway never saw it.
  const requests = Math.max(1, result.requests - result.non2xx)
  return {
    warmup,
    measurement: {
      ...result,
      scenario: scenario.name,
      contender: contender.name,
      round,
      cpuMicrosPerRequest: (cpuAfter - cpuBefore) / requests,
      upstreamCpuMicrosPerRequest: (upstreamAfter - upstreamBefore) / requests
    }
  }
}

async function measureStream (contender: Contender, scenario: typeof STREAM_SCENARIOS[number], bytes: number, round: number): Promise<StreamMeasurement> {
  const before = await contender.measured.rssBytes()
  const cpuBefore = await contender.measured.cpuMicros()
  let peak = before ?? 0
  const sampler = setInterval(() => {
    contender.measured.rssBytes().then((rss) => { if (rss !== undefined && rss > peak) peak = rss }, () => {})
  }, RSS_SAMPLE_MS)
  const timeout = streamTimeoutMs(bytes)
  let transfer: Transfer | undefined
  let note = ''
  try {
    transfer = scenario === 'stream-up'
      ? await uploadStream(contender.url + ROUTES.upload, contender.credentials, bytes, timeout)
      : await downloadStream(`${contender.url}${ROUTES.download}?bytes=${bytes}`, contender.credentials, timeout)
  } catch (err) {
    note = (err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError' ? `over ${timeout / 1000} s` : (err as Error).message
  } finally {
    clearInterval(sampler)
  }
  const after = await contender.measured.rssBytes()
  const cpuMicros = await contender.measured.cpuMicros() - cpuBefore
  if (after !== undefined && after > peak) peak = after
  let ok = transfer !== undefined && transfer.status === 200
  if (transfer !== undefined && !ok) note = `status ${transfer.status}`
  if (transfer !== undefined && ok) {
    const received = scenario === 'stream-up' ? uploadedBytes(transfer.answer) : transfer.bytes
    if (received !== bytes) {
      ok = false
      note = `${received ?? 'unknown'} bytes arrived, ${bytes} sent`
    }
  }
  const ms = transfer?.ms ?? timeout
  return {
    scenario,
    contender: contender.name,
    round,
    bytes,
    ms,
    mibPerSec: ok ? bytes / MIB / (ms / 1000) : 0,
    cpuMicrosPerMib: cpuMicros / (bytes / MIB),
    rssBeforeBytes: before ?? null,
    rssPeakBytes: before === undefined ? null : peak,
    rssGrowthBytes: before === undefined ? null : peak - before,
    ok,
    note
  }
}

/** The byte count the upload sink answered, or `undefined` for any other answer. */
function uploadedBytes (answer: string): number | undefined {
  try {
    const bytes = (JSON.parse(answer) as { bytes?: unknown }).bytes
    return typeof bytes === 'number' ? bytes : undefined
  } catch {
    return undefined
  }
}

/** The run whose value is the median (by `key`); rounds must not be averaged across noisy neighbours. */
function median<T> (runs: T[], key: (run: T) => number): T {
  return [...runs].sort((a, b) => key(a) - key(b))[Math.floor((runs.length - 1) / 2)] as T
}

/** Per stage, the median over rounds of its us a request (a stage missing from a round counts 0 there). */
function medianStages (rounds: Array<Map<string, number>>): Map<string, number> {
  const names = new Set(rounds.flatMap((r) => [...r.keys()]))
  return new Map([...names].map((stage) => {
    const values = rounds.map((r) => r.get(stage) ?? 0).sort((a, b) => a - b)
    const half = Math.floor(values.length / 2)
    return [stage, values.length % 2 === 1 ? values[half] as number : ((values[half - 1] as number) + (values[half] as number)) / 2]
  }))
}

function rotate<T> (items: T[], by: number): T[] {
  const k = by % items.length
  return [...items.slice(k), ...items.slice(0, k)]
}

/** The commit measured, marked `-dirty` when lib/ has uncommitted changes (they are measured too). */
function gitCommit (): string | null {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: HERE, encoding: 'utf8' })
  if (head.status !== 0) return null
  const dirty = spawnSync('git', ['status', '--porcelain', '--', '../lib'], { cwd: HERE, encoding: 'utf8' }).stdout.trim() !== ''
  return head.stdout.trim() + (dirty ? '-dirty' : '')
}

async function main (): Promise<number> {
  const opts = parseOptions(process.argv.slice(2))
  const budget = timeBudgetMs(opts)
  setTimeout(() => {
    console.error(`\nrun exceeded its time budget of ${Math.round(budget / 1000)} s; stopping`)
    stopAll(2_000).finally(() => process.exit(1))
  }, budget).unref()

  const { generator: loader, note: loaderNote } = chooseLoadGenerator()
  const pinned = choosePinning()
  const pinning = typeof pinned === 'string' ? undefined : pinned
  if (pinning !== undefined) pinProcess(process.pid, pinning.loaderCpu)
  const pinningNote = pinning === undefined
    ? `not pinned: ${pinned as string}`
    : `taskset: load generator and runner on CPU ${pinning.loaderCpu}; upstream and gateways on CPU ${pinning.serverCpu}`
  const profileDir = opts.profile ? `${RESULTS_DIR}/profiles/${new Date().toISOString().replace(/[:.]/g, '-')}` : undefined

  const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} CPUs, ${(totalmem() / 1024 ** 3).toFixed(1)} GiB RAM`
  console.log(`fastify-gatehouse benchmark (${opts.quick ? 'quick' : 'full'}), node ${process.version}, ${machine}`)
  console.log(`load: ${loaderNote}, ${CONNECTIONS} connections, ${opts.warmupSec} s warm-up + ${opts.durationSec} s per run, ${opts.rounds} round(s)`)
  console.log(`cpu: ${pinningNote}`)
  console.log(`scenarios: ${opts.scenarios.join(', ')}; contenders: ${opts.contenders.join(', ')}; streamed: ${opts.streamBytes / MIB} MiB each way`)
  console.log(`gzip level: ${opts.gzipLevel === undefined ? 'each gateway\'s default (zlib\'s 6 for both)' : `${opts.gzipLevel} for both gateways`}`)
  // Read once: the tree may move on while the run goes, the children loaded this one.
  const commit = gitCommit()
  console.log(`commit: ${commit ?? 'unknown'}\n`)

  const fixture = await startFixture(opts, pinning, profileDir)
  const expected = { small: catalogue(SMALL_BYTES), large: catalogue(LARGE_BYTES) }
  const checks: Partial<Record<ContenderName, string[]>> = {}
  const correct: Contender[] = []
  for (const contender of fixture.contenders) {
    const { failures, gzipped } = await checkContender(contender, { upstream: fixture.upstream.url, apiKey: fixture.apiKey, expected })
    checks[contender.name] = failures
    console.log(`check ${contender.name}: ${failures.length === 0 ? `ok (with Accept-Encoding: gzip, ${gzipped})` : `FAILED\n  ${failures.join('\n  ')}`}`)
    if (failures.length === 0) correct.push(contender)
  }
  const revocation = opts.scenarios.includes(REVOCATION.name) ? await startRevocation(fixture, pinning, profileDir) : undefined
  if (revocation !== undefined) Object.assign(checks, revocation.failures)
  console.log()

  const loadRuns: LoadMeasurement[] = []
  const streamRuns: StreamMeasurement[] = []
  const served = new Map<ContenderName, number>()
  const loadScenarios = LOAD_SCENARIOS.filter((s) => opts.scenarios.includes(s.name))
  const streamScenarios = STREAM_SCENARIOS.filter((s) => opts.scenarios.includes(s))
  // Redis GETs per response of each timed revoke-redis run: about 1 when every request is checked.
  const redisGetsPerRequest: number[] = []
  const scaleScenarios = SCALE_SCENARIOS.filter((s) => opts.scenarios.includes(s))
  const scaleContenders = SCALE_CONTENDERS.filter((name) => opts.contenders.includes(name))
  const scaleRuns: ScaleMeasurement[] = []
  // --stages: per contender, us a request by stage of each profiled round.
  const stageRounds = new Map<string, Map<ContenderName, Array<Map<string, number>>>>()
  const stagesDir = opts.stages ? `${RESULTS_DIR}/stages/${new Date().toISOString().replace(/[:.]/g, '-')}` : undefined
  if (stagesDir !== undefined) await mkdir(stagesDir, { recursive: true })
  const scaleContext: ScaleContext = {
    loader,
    upstream: fixture.upstream,
    env: fixture.env,
    credentials: { authorization: `Bearer ${fixture.token}` },
    refused: fixture.gatewayRefused,
    pinning,
    quick: opts.quick,
    durationSec: opts.durationSec,
    warmupSec: opts.warmupSec
  }
  for (let round = 0; round < opts.rounds; round++) {
    // Contenders take turns going first, so none always runs on a cold or hot machine.
    const order = rotate(correct, round)
    for (const scenario of loadScenarios) {
      for (const contender of order) {
        const profileFile = stagesDir !== undefined && STAGES_SCENARIOS.includes(scenario.name) && contender.name !== 'direct'
          ? `${stagesDir}/${scenario.name}-${contender.name}-round${round}.cpuprofile`
          : undefined
        const { warmup, measurement } = await measureLoad(loader, fixture, contender, scenario, opts, pinning, round, profileFile)
        if (profileFile !== undefined) {
          const byContender = stageRounds.get(scenario.name) ?? new Map<ContenderName, Array<Map<string, number>>>()
          const list = byContender.get(contender.name) ?? []
          list.push(stageMicros(await readStages(profileFile), measurement.cpuMicrosPerRequest))
          byContender.set(contender.name, list)
          stageRounds.set(scenario.name, byContender)
        }
        served.set(contender.name, (served.get(contender.name) ?? 0) + warmup.requests + measurement.requests)
        loadRuns.push(measurement)
        console.log(`  ${scenario.name.padEnd(11)} ${contender.name.padEnd(9)} ${measurement.rps.toFixed(0).padStart(7)} req/s  p99 ${measurement.p99Ms.toFixed(2)} ms  ${measurement.cpuMicrosPerRequest.toFixed(0)} us CPU/req`)
        await sleep(SETTLE_MS)
      }
    }
    for (const contender of rotate(revocation?.contenders ?? [], round)) {
      const gets = revocation === undefined ? 0 : redisGets(revocation.redisPort)
      const { warmup, measurement } = await measureLoad(loader, fixture, contender, REVOCATION, opts, pinning, round)
      const perRequest = revocation === undefined ? 0 : (redisGets(revocation.redisPort) - gets) / Math.max(1, warmup.requests + measurement.requests)
      if (contender.name === 'revoke-redis') redisGetsPerRequest.push(perRequest)
      served.set(contender.name, (served.get(contender.name) ?? 0) + warmup.requests + measurement.requests)
      loadRuns.push(measurement)
      console.log(`  ${REVOCATION.name.padEnd(11)} ${contender.name.padEnd(13)} ${measurement.rps.toFixed(0).padStart(7)} req/s  p99 ${measurement.p99Ms.toFixed(2)} ms  ${measurement.cpuMicrosPerRequest.toFixed(0)} us CPU/req${measurement.non2xx + measurement.errors > 0 ? `  (!${measurement.non2xx + measurement.errors} bad)` : ''}${contender.name === 'revoke-redis' ? `  ${perRequest.toFixed(2)} redis GET/req` : ''}`)
      await sleep(SETTLE_MS)
    }
    for (const scenario of streamScenarios) {
      for (const contender of order) {
        const measurement = await measureStream(contender, scenario, opts.streamBytes, round)
        streamRuns.push(measurement)
        console.log(`  ${scenario.padEnd(11)} ${contender.name.padEnd(9)} ${measurement.ok ? `${measurement.mibPerSec.toFixed(0).padStart(7)} MiB/s` : `failed: ${measurement.note}`}  RSS +${((measurement.rssGrowthBytes ?? 0) / MIB).toFixed(1)} MiB`)
        await sleep(SETTLE_MS)
      }
    }
    for (const scenario of scaleScenarios) {
      for (const name of rotate(scaleContenders, round)) {
        const m = scenario === 'ws-tunnels' ? await measureTunnels(name, scaleContext, round) : await measureIdle(name, scaleContext, round)
        scaleRuns.push(m)
        const alone = m.aloneP99Ms === null ? '' : `  p99 alone ${m.aloneP99Ms.toFixed(2)} ms`
        console.log(`  ${scenario.padEnd(14)} ${name.padEnd(9)} ${m.established}/${m.count} held  ${m.kibPerConnection?.toFixed(1) ?? '-'} KiB/conn  p50 ${m.p50Ms.toFixed(2)} ms  p99 ${m.p99Ms.toFixed(2)} ms${alone}${m.ok ? '' : `\n    FAILED: ${m.failures.join('\n    ')}`}`)
        await sleep(SETTLE_MS)
      }
    }
  }

  const load: LoadMeasurement[] = []
  for (const scenario of loadScenarios) {
    for (const contender of correct) {
      const runs = loadRuns.filter((m) => m.scenario === scenario.name && m.contender === contender.name)
      if (runs.length > 0) load.push(median(runs, (m) => m.rps))
    }
  }
  const stream: StreamMeasurement[] = []
  for (const scenario of streamScenarios) {
    for (const contender of correct) {
      const runs = streamRuns.filter((m) => m.scenario === scenario && m.contender === contender.name)
      if (runs.length > 0) stream.push(median(runs, (m) => m.mibPerSec))
    }
  }
  for (const contender of revocation?.contenders ?? []) {
    const runs = loadRuns.filter((m) => m.scenario === REVOCATION.name && m.contender === contender.name)
    if (runs.length > 0) load.push(median(runs, (m) => m.rps))
  }
  const targets = [...evaluateTargets(loadRuns, streamRuns), ...scaleTargets(scaleRuns)]
  const scale: ScaleMeasurement[] = []
  for (const scenario of scaleScenarios) {
    for (const name of scaleContenders) {
      const runs = scaleRuns.filter((m) => m.scenario === scenario && m.contender === name)
      if (runs.length > 0) scale.push(median(runs, (m) => m.p99Ms))
    }
  }
  const scaleFailures = scaleRuns.filter((m) => !m.ok)
  const titles = Object.fromEntries([...LOAD_SCENARIOS, REVOCATION].map((s) => [s.name, s.title]))

  console.log()
  const revocationLoad = load.filter((m) => m.scenario === REVOCATION.name)
  const standardLoad = load.filter((m) => m.scenario !== REVOCATION.name)
  if (revocationLoad.length > 0) {
    console.log(`${REVOCATION.title} (GET, no gzip), auth.refresh and auth.logout.revokeAccessToken on: one store lookup per request`)
    console.log(revocationTable(revocationLoad))
    console.log(`${revocationText(loadRuns, REVOCATION.name, redisGetsPerRequest)}\n`)
  }
  if (standardLoad.length > 0) {
    console.log(loadTable(standardLoad, titles))
    console.log('(direct: the load generator calls the upstream itself, which never compresses; CPU for direct is the upstream\'s)\n')
  }
  if (stream.length > 0) console.log(`${streamTable(stream)}\n`)
  if (scale.length > 0) {
    console.log(`${scaleTable(scale)}\n(KiB/conn: gateway RSS growth per connection held; ws-tunnels p50/p99: echo latency under the trickle; idle-keepalive p99: the probe with the idle connections held, "alone" without)\n`)
  }
  const stages = [...stageRounds].map(([scenario, byContender]) => ({
    scenario,
    columns: [...byContender].map(([name, rounds]) => ({ name, micros: medianStages(rounds) }))
  }))
  for (const { scenario, columns } of stages) {
    console.log(`us a request by stage, ${scenario} (in-process V8 profile of each timed run, 100 us sampling; shares of sampled time x measured CPU per request; median of rounds; profiles in ${stagesDir ?? ''}):`)
    console.log(`${formatStages(columns)}\n`)
  }
  if (opts.stages && stages.length === 0) {
    console.log(`--stages: no stage table (it profiles ${STAGES_SCENARIOS.join(' and ')}; add one to --only)\n`)
  }
  if (targets.length > 0) console.log(`targets (issues 6 and 18; ratios of contenders measured in the same round):\n${targetsText(targets)}\n`)

  await stopAll()
  let profiles: Record<string, ProfileSummary> | undefined
  if (profileDir !== undefined) {
    profiles = {}
    for (const contender of correct) {
      if (contender.name === 'direct') continue
      const dir = `${profileDir}/${contender.name}`
      // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread
      // (the others are loader-hook workers).
      const files = (await readdir(dir).catch(() => [])).filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f))
      if (files[0] === undefined) {
        console.log(`no profile written for ${contender.name} in ${dir}`)
        continue
      }
      const summary = await readProfile(`${dir}/${files[0]}`)
      profiles[contender.name] = summary
      const requests = served.get(contender.name)
      console.log(formatProfile(`profile ${contender.name} (${dir}/${files[0]})`, summary, requests === undefined ? {} : { requests }), '\n')
    }
  }

  const report = {
    date: new Date().toISOString(),
    commit,
    node: process.version,
    machine,
    loadGenerator: loader.name,
    pinning: pinningNote,
    options: { ...opts, connections: CONNECTIONS },
    checks,
    load,
    stream,
    scale,
    rounds: { load: loadRuns, stream: streamRuns, scale: scaleRuns },
    targets,
    ...(stages.length === 0
      ? {}
      : { stages: Object.fromEntries(stages.map(({ scenario, columns }) => [scenario, Object.fromEntries(columns.map(({ name, micros }) => [name, Object.fromEntries(micros)]))])) }),
    ...(revocation === undefined ? {} : { revocation: { redisGetsPerRequest } }),
    ...(profiles === undefined ? {} : { profiles: Object.fromEntries(Object.entries(profiles).map(([name, p]) => [name, { ...p, functions: p.functions.slice(0, 50) }])) })
  }
  await mkdir(RESULTS_DIR, { recursive: true })
  await writeFile(`${RESULTS_DIR}/latest.json`, JSON.stringify(report, null, 2) + '\n')
  console.log(`results written to ${RESULTS_DIR}/latest.json`)
  return Object.values(checks).some((failures) => failures.length > 0) || scaleFailures.length > 0 ? 1 : 0
}

let interrupted = false
process.on('exit', killAllSync)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true
    console.error(`\n${signal}: stopping every process started`)
    stopAll(2_000).finally(() => process.exit(130))
  })
}
main().then(
  async (code) => { await stopAll(); process.exitCode = code },
  async (err: unknown) => {
    // After a signal, a loader killed mid-run is expected, not news.
    if (!interrupted) console.error(err instanceof Error ? err.message : err)
    await stopAll()
    process.exitCode = 1
  }
)
