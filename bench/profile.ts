import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

/** The parts of a V8 `.cpuprofile` used here. */
interface CpuProfile {
  nodes: Array<{ id: number, callFrame: { functionName: string, url: string, lineNumber: number }, children?: number[] }>
  samples: number[]
  timeDeltas: number[]
}

export interface ProfileEntry {
  name: string
  group: string
  location: string
  selfMs: number
}

export interface ProfileSummary {
  /** Sampled time not spent idle, in ms. */
  busyMs: number
  /** Self time by package (or Node subsystem), largest first. */
  groups: Array<{ group: string, selfMs: number }>
  /** Self time by function, largest first. */
  functions: ProfileEntry[]
}

const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Which package (or Node subsystem, or V8 bucket) a script URL belongs to. */
export function groupOf (url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  if (url.startsWith('node:')) {
    const rest = url.slice('node:'.length).replace(/^internal\//, '')
    return `node:${rest.split('/')[0] ?? rest}`
  }
  const path = url.startsWith('file:') ? fileURLToPath(url) : url
  const modules = path.lastIndexOf('/node_modules/')
  if (modules !== -1) {
    const parts = path.slice(modules + '/node_modules/'.length).split('/')
    return parts[0]?.startsWith('@') === true ? `${parts[0]}/${parts[1]}` : parts[0] ?? path
  }
  // The gateways run the built package (dist/), tests and tools the sources.
  if (path.startsWith(PROJECT_ROOT + 'lib/') || path.startsWith(PROJECT_ROOT + 'dist/')) return 'fastify-gatehouse'
  if (path.startsWith(PROJECT_ROOT + 'bench/')) return 'bench'
  return path
}

function shortLocation (url: string, line: number): string {
  if (url === '') return ''
  const path = url.startsWith('file:') ? fileURLToPath(url) : url
  const modules = path.lastIndexOf('/node_modules/')
  const short = modules !== -1 ? path.slice(modules + '/node_modules/'.length) : path.replace(PROJECT_ROOT, '')
  return `${short}:${line + 1}`
}

/** Self time by function and by package, idle time left out. */
export function summarizeProfile (profile: CpuProfile): ProfileSummary {
  const selfByNode = new Map<number, number>()
  profile.samples.forEach((id, i) => {
    selfByNode.set(id, (selfByNode.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  })
  const functions = new Map<string, ProfileEntry>()
  const groups = new Map<string, number>()
  let busyMicros = 0
  for (const node of profile.nodes) {
    const micros = selfByNode.get(node.id) ?? 0
    const { functionName, url, lineNumber } = node.callFrame
    if (micros === 0 || functionName === '(idle)') continue
    busyMicros += micros
    const group = groupOf(url, functionName)
    groups.set(group, (groups.get(group) ?? 0) + micros)
    const location = shortLocation(url, lineNumber)
    const key = `${functionName}@${location}`
    const entry = functions.get(key) ?? { name: functionName || '(anonymous)', group, location, selfMs: 0 }
    entry.selfMs += micros / 1000
    functions.set(key, entry)
  }
  return {
    busyMs: busyMicros / 1000,
    groups: [...groups].map(([group, micros]) => ({ group, selfMs: micros / 1000 })).sort((a, b) => b.selfMs - a.selfMs),
    functions: [...functions.values()].sort((a, b) => b.selfMs - a.selfMs)
  }
}

export async function readProfile (file: string): Promise<ProfileSummary> {
  return summarizeProfile(JSON.parse(await readFile(file, 'utf8')) as CpuProfile)
}

/**
 * The call stacks that lead to a function, heaviest first, with their self
 * time: the answer to "who keeps calling this?".
 */
export function callersOf (profile: CpuProfile, functionName: string, depth = 8): Array<{ stack: string, selfMs: number }> {
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const self = new Map<number, number>()
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)))
  const stacks = new Map<string, number>()
  for (const node of profile.nodes) {
    if (node.callFrame.functionName !== functionName) continue
    const frames: string[] = []
    for (let id: number | undefined = node.id; id !== undefined && frames.length < depth; id = parent.get(id)) {
      const frame = byId.get(id)?.callFrame
      if (frame === undefined || frame.functionName === '(root)') break
      frames.push(`${frame.functionName || '(anonymous)'} ${shortLocation(frame.url, frame.lineNumber)}`)
    }
    const key = frames.join('\n      <- ')
    stacks.set(key, (stacks.get(key) ?? 0) + (self.get(node.id) ?? 0) / 1000)
  }
  return [...stacks].map(([stack, selfMs]) => ({ stack, selfMs })).sort((a, b) => b.selfMs - a.selfMs)
}

/*
 * The stage table (issue 18): where a gateway's time per request goes. Each
 * sample's self time goes to the nearest frame, itself or a caller, that
 * belongs to a package or to gatehouse: node internals and natives count for
 * whoever called them (an HMAC for the token check, a socket write for
 * undici). Samples with no such caller are Node's own (HTTP parser, sockets,
 * timers). Files of gatehouse map to stages by path.
 */
// The profiler's own start and the runner's IPC: not the gateway's work, left out of the table.
const HARNESS_STAGE = 'bench harness (profiler start, IPC)'
const LIB_STAGES: Array<[RegExp, string]> = [
  [/^auth\//, 'verification'],
  [/^proxy\/admit\./, 'admission'],
  [/^proxy\/(context|compose|phase)\./, 'context and middleware'],
  [/^proxy\/body\./, 'buffering'],
  [/^transport\/idle\./, 'idle-timer pool'],
  [/^transport\//, 'gatehouse transport (dispatcher)'],
  [/^proxy\//, 'gatehouse proxy hooks (target, headers, path)'],
  [/^/, 'gatehouse, other']
]
const PACKAGE_STAGES: Record<string, string> = {
  'fast-jwt': 'verification',
  jose: 'verification',
  '@fastify/jwt': 'verification',
  '@fastify/reply-from': 'reply-from',
  undici: 'undici',
  '@fastify/compress': 'compress',
  bench: HARNESS_STAGE
}
// Fastify and what it is made of.
const FASTIFY_PACKAGES = /^(fastify|find-my-way|avvio|light-my-request|fast-json-stringify|fast-querystring|fast-decode-uri-component|toad-cache|rfdc|abstract-logging|pino|@fastify\/(error|forwarded|proxy-addr|merge-json-schemas|fast-json-stringify-compiler|ajv-compiler)|proxy-addr|forwarded|safe-regex2|ret|process-warning)$/
export const NODE_STAGE = 'node core (HTTP parser, sockets, timers)'
export const STAGE_ORDER = [
  'verification', 'admission', 'context and middleware', 'buffering', 'idle-timer pool', 'gatehouse transport (dispatcher)',
  'gatehouse proxy hooks (target, headers, path)', 'gatehouse, other', 'fastify', 'reply-from', 'undici', 'compress',
  NODE_STAGE, '(garbage collector)', '(program)'
]

/** The stage of one frame, or `undefined` for node internals and natives (their caller's stage counts). */
export function stageOfFrame (url: string, functionName: string): string | undefined {
  if (url === '') return functionName === '(garbage collector)' || functionName === '(program)' ? functionName : undefined
  if (url.startsWith('node:')) return undefined
  // undici's HTTP parser (llhttp) is the only WebAssembly the gateways run.
  if (url.startsWith('wasm://')) return 'undici'
  const path = url.startsWith('file:') ? fileURLToPath(url) : url
  for (const root of ['lib/', 'dist/']) {
    if (!path.startsWith(PROJECT_ROOT + root)) continue
    const rest = path.slice(PROJECT_ROOT.length + root.length)
    return LIB_STAGES.find(([pattern]) => pattern.test(rest))?.[1]
  }
  const group = groupOf(url, functionName)
  if (PACKAGE_STAGES[group] !== undefined) return PACKAGE_STAGES[group]
  return FASTIFY_PACKAGES.test(group) ? 'fastify' : `other: ${group}`
}

/** Self time (ms) by stage, idle left out. */
export function stagesOf (profile: CpuProfile): Map<string, number> {
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const stageOf = new Map<number, string>()
  const resolve = (id: number): string => {
    const known = stageOf.get(id)
    if (known !== undefined) return known
    const node = byId.get(id)
    const frame = node?.callFrame
    let stage = frame === undefined ? NODE_STAGE : stageOfFrame(frame.url, frame.functionName)
    if (stage === undefined) {
      const up = parent.get(id)
      stage = up === undefined || byId.get(up)?.callFrame.functionName === '(root)' ? NODE_STAGE : resolve(up)
    }
    stageOf.set(id, stage)
    return stage
  }
  const stages = new Map<string, number>()
  profile.samples.forEach((id, i) => {
    if (byId.get(id)?.callFrame.functionName === '(idle)') return
    const stage = resolve(id)
    stages.set(stage, (stages.get(stage) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000)
  })
  return stages
}

export async function readStages (file: string): Promise<Map<string, number>> {
  return stagesOf(JSON.parse(await readFile(file, 'utf8')) as CpuProfile)
}

/**
 * Microseconds a request by stage: each stage's share of the sampled busy
 * time times the process's measured CPU time per request (samples are wall
 * time while busy, so on a shared core their absolute sum runs high; the
 * shares hold).
 */
export function stageMicros (stages: Map<string, number>, cpuMicrosPerRequest: number): Map<string, number> {
  const gateway = [...stages].filter(([stage]) => stage !== HARNESS_STAGE)
  const busy = gateway.reduce((sum, [, ms]) => sum + ms, 0)
  return new Map(gateway.map(([stage, ms]) => [stage, busy === 0 ? 0 : cpuMicrosPerRequest * ms / busy]))
}

/** The stage table: one column per contender (us a request), and gatehouse minus the floor. */
export function formatStages (columns: Array<{ name: string, micros: Map<string, number> }>): string {
  const names = new Set(columns.flatMap((c) => [...c.micros.keys()]))
  const order = [...STAGE_ORDER.filter((s) => names.has(s)), ...[...names].filter((s) => !STAGE_ORDER.includes(s)).sort()]
  const gatehouse = columns.find((c) => c.name === 'gatehouse')
  const floor = columns.find((c) => c.name === 'floor')
  const diff = gatehouse !== undefined && floor !== undefined
  const header = ['stage', ...columns.map((c) => `${c.name} us/req`), ...(diff ? ['gatehouse - floor'] : [])]
  const cell = (v: number | undefined): string => (v ?? 0).toFixed(1)
  const rows = order.map((stage) => [stage, ...columns.map((c) => cell(c.micros.get(stage))), ...(diff ? [cell((gatehouse.micros.get(stage) ?? 0) - (floor.micros.get(stage) ?? 0))] : [])])
  const total = (c: { micros: Map<string, number> }): number => [...c.micros.values()].reduce((a, b) => a + b, 0)
  rows.push(['total (measured CPU)', ...columns.map((c) => cell(total(c))), ...(diff ? [cell(total(gatehouse) - total(floor))] : [])])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number)).join('  ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

/**
 * Text report. With `requests`, times are also given per request served by
 * the profiled process over its life (warm-up and checks included).
 */
export function formatProfile (title: string, summary: ProfileSummary, opts: { top?: number, requests?: number } = {}): string {
  const top = opts.top ?? 20
  const perRequest = (ms: number): string => opts.requests === undefined ? '' : `${(ms * 1000 / opts.requests).toFixed(1).padStart(8)} us/req`
  const pct = (ms: number): string => `${(100 * ms / summary.busyMs).toFixed(1).padStart(5)}%`
  // Samples are wall time while the thread is not idle: on a shared core that
  // includes time spent descheduled, so shares are sound and absolute figures high.
  const lines = [
    `${title}: ${summary.busyMs.toFixed(0)} ms sampled busy${opts.requests === undefined ? '' : ` over ${opts.requests} requests`} (wall time, not CPU time)`,
    '  by package (self time):'
  ]
  for (const { group, selfMs } of summary.groups.slice(0, 15)) {
    lines.push(`    ${pct(selfMs)} ${perRequest(selfMs)}  ${group}`)
  }
  lines.push(`  top ${top} functions (self time):`)
  for (const entry of summary.functions.slice(0, top)) {
    lines.push(`    ${pct(entry.selfMs)} ${perRequest(entry.selfMs)}  ${entry.name}  [${entry.group}] ${entry.location}`)
  }
  return lines.join('\n')
}

// `tsx bench/profile.ts FILE.cpuprofile [--top N] [--callers NAME]` summarises any profile.
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const files = process.argv.slice(2).filter((arg) => arg.endsWith('.cpuprofile'))
  const flag = (name: string): string | undefined => {
    const at = process.argv.indexOf(name)
    return at === -1 ? undefined : process.argv[at + 1]
  }
  const top = Number(flag('--top') ?? 20)
  const callers = flag('--callers')
  const stages = process.argv.includes('--stages')
  if (files.length === 0) {
    console.error('usage: tsx bench/profile.ts FILE.cpuprofile... [--top N] [--callers FUNCTION] [--stages]')
    process.exit(2)
  }
  for (const file of files) {
    const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile
    if (stages) {
      // Without a measured CPU time the shares are given as ms of samples.
      console.log(`${file}: sampled ms by stage`)
      console.log(formatStages([{ name: 'sampled ms', micros: stagesOf(profile) }]), '\n')
      continue
    }
    if (callers === undefined) {
      console.log(formatProfile(file, summarizeProfile(profile), { top }), '\n')
      continue
    }
    console.log(`${file}: callers of ${callers}`)
    for (const { stack, selfMs } of callersOf(profile, callers).slice(0, top)) console.log(`  ${selfMs.toFixed(1)} ms  ${stack}`)
  }
}
