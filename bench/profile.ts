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
  if (path.startsWith(PROJECT_ROOT + 'lib/')) return 'fastify-gatehouse'
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
  if (files.length === 0) {
    console.error('usage: tsx bench/profile.ts FILE.cpuprofile... [--top N] [--callers FUNCTION]')
    process.exit(2)
  }
  for (const file of files) {
    const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile
    if (callers === undefined) {
      console.log(formatProfile(file, summarizeProfile(profile), { top }), '\n')
      continue
    }
    console.log(`${file}: callers of ${callers}`)
    for (const { stack, selfMs } of callersOf(profile, callers).slice(0, top)) console.log(`  ${selfMs.toFixed(1)} ms  ${stack}`)
  }
}
