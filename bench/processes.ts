import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess, StdioOptions } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import type { ChildMessage, RunnerMessage } from './shared.js'

/*
 * Every process the benchmark starts goes through here, is remembered by PID
 * and is stopped by PID: on success, on error, on SIGINT/SIGTERM and, as a
 * last resort, synchronously on exit.
 */
const live = new Map<number, ChildProcess>()

// A child has this long to start (tsx compiles TypeScript on the way).
const READY_TIMEOUT_MS = 30_000
const STOP_GRACE_MS = 5_000

/** Which CPUs the loader and the servers get, when they can be kept apart. */
export interface Pinning {
  loaderCpu: number
  serverCpu: number
}

/** True when `command` is on PATH. */
export function hasCommand (command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0
}

/**
 * Loader on one CPU, servers on another, when `taskset` exists and this
 * process may use two CPUs; otherwise `undefined` and the reason.
 */
export function choosePinning (): Pinning | string {
  if (!hasCommand('taskset')) return 'taskset not found (util-linux)'
  const out = spawnSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' }).stdout ?? ''
  const cpus = parseCpuList(out.split(':').pop() ?? '')
  if (cpus.length < 2) return `only ${cpus.length || availableParallelism()} CPU available`
  return { loaderCpu: cpus[0] as number, serverCpu: cpus[1] as number }
}

function parseCpuList (list: string): number[] {
  const cpus: number[] = []
  for (const part of list.trim().split(',')) {
    const [from, to] = part.split('-').map(Number)
    if (from === undefined || Number.isNaN(from)) continue
    for (let cpu = from; cpu <= (to ?? from); cpu++) cpus.push(cpu)
  }
  return cpus
}

/** Pins an already running process (the runner itself) to one CPU. */
export function pinProcess (pid: number, cpu: number): void {
  spawnSync('taskset', ['-pc', String(cpu), String(pid)], { stdio: 'ignore' })
}

/**
 * The open-files limit a child can be given: `wanted`, or the hard limit
 * when this process may not raise it (not root). `undefined` without prlimit.
 */
export function fdLimit (wanted: number): number | undefined {
  if (!hasCommand('prlimit')) return undefined
  if (process.getuid?.() === 0) return wanted
  const hard = Number(spawnSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).stdout.trim())
  return Number.isFinite(hard) ? Math.min(wanted, hard) : undefined
}

/**
 * Starts a tracked process, under `taskset -c cpu` when a CPU is given and
 * `prlimit --nofile` when a file limit is (both exec the command: the PID is
 * the command's own, for /proc readings).
 */
export function spawnTracked (command: string, args: string[], opts: { cpu?: number, nofile?: number, env?: NodeJS.ProcessEnv, stdio: StdioOptions }): ChildProcess {
  let [file, argv] = [command, args]
  if (opts.nofile !== undefined) [file, argv] = ['prlimit', [`--nofile=${opts.nofile}:${opts.nofile}`, '--', file, ...argv]]
  if (opts.cpu !== undefined) [file, argv] = ['taskset', ['-c', String(opts.cpu), file, ...argv]]
  const child = spawn(file, argv, { stdio: opts.stdio, env: opts.env ?? process.env })
  if (child.pid === undefined) throw new Error(`could not start ${command}`)
  const pid = child.pid
  live.set(pid, child)
  child.once('exit', () => live.delete(pid))
  return child
}

/** Sends SIGKILL to a tracked PID if it is still running. */
export function killPid (pid: number): void {
  if (!live.has(pid)) return
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // Already gone.
  }
  live.delete(pid)
}

/** Asks every tracked child to stop, then kills by PID whatever is left. */
export async function stopAll (graceMs = STOP_GRACE_MS): Promise<void> {
  await Promise.all([...live.values()].map((child) => stopChild(child, graceMs)))
}

/** Last resort from an `exit` handler: nothing async runs there. */
export function killAllSync (): void {
  for (const pid of [...live.keys()]) killPid(pid)
}

async function stopChild (child: ChildProcess, graceMs: number): Promise<void> {
  const pid = child.pid as number
  if (!live.has(pid)) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  if (child.connected) child.send({ type: 'stop' } satisfies RunnerMessage)
  else child.kill('SIGTERM')
  const timer = setTimeout(() => killPid(pid), graceMs)
  await exited
  clearTimeout(timer)
}

/** A server child (upstream or gateway) speaking the runner protocol over IPC. */
export class ServerProcess {
  readonly name: string
  readonly child: ChildProcess
  readonly pid: number
  url = ''

  private constructor (name: string, child: ChildProcess) {
    this.name = name
    this.child = child
    this.pid = child.pid as number
  }

  /** Starts a TypeScript entry with tsx and waits for its `ready` message. */
  static async start (name: string, script: string, args: string[], opts: { cpu?: number, nofile?: number, env: NodeJS.ProcessEnv, nodeFlags?: string[] }): Promise<ServerProcess> {
    const tsx = import.meta.resolve('tsx')
    // No source condition: the gateway runs the built package (dist/), as users get it.
    const nodeArgs = ['--import', tsx, ...(opts.nodeFlags ?? []), script, ...args]
    const child = spawnTracked(process.execPath, nodeArgs, {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: opts.env,
      ...(opts.cpu === undefined ? {} : { cpu: opts.cpu }),
      ...(opts.nofile === undefined ? {} : { nofile: opts.nofile })
    })
    const server = new ServerProcess(name, child)
    server.url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} did not start within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS)
      child.on('message', function onReady (message: ChildMessage) {
        if (message.type !== 'ready') return
        clearTimeout(timer)
        child.off('message', onReady)
        resolve(message.url)
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`${name} exited with code ${code} before it was ready`))
      })
    })
    return server
  }

  /** CPU time (user + system, all threads) the process has used, in microseconds. */
  async cpuMicros (): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} did not report its CPU time`)), 5_000)
      const onMessage = (message: ChildMessage): void => {
        if (message.type !== 'cpu') return
        clearTimeout(timer)
        this.child.off('message', onMessage)
        resolve(message.userMicros + message.systemMicros)
      }
      this.child.on('message', onMessage)
      this.child.send({ type: 'cpu' } satisfies RunnerMessage)
    })
  }

  /** Asks the child for one message of `type` after sending `message`. */
  private async ask<T extends ChildMessage['type']> (message: RunnerMessage, type: T, ms: number): Promise<Extract<ChildMessage, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.child.off('message', onMessage)
        reject(new Error(`${this.name} did not answer ${message.type} within ${ms} ms`))
      }, ms)
      const onMessage = (answer: ChildMessage): void => {
        if (answer.type !== type && !(answer.type === 'profiled' && answer.error !== undefined)) return
        clearTimeout(timer)
        this.child.off('message', onMessage)
        if (answer.type === 'profiled' && answer.error !== undefined) reject(new Error(`${this.name}: ${answer.error}`))
        else resolve(answer as Extract<ChildMessage, { type: T }>)
      }
      this.child.on('message', onMessage)
      this.child.send(message)
    })
  }

  /** Starts the in-process sampling profiler (see `ipc.ts`). */
  async profileStart (): Promise<void> {
    await this.ask({ type: 'profile-start' }, 'profiling', 10_000)
  }

  /** Stops it and has the child write the `.cpuprofile` to `file`. */
  async profileStop (file: string): Promise<void> {
    await this.ask({ type: 'profile-stop', file }, 'profiled', 60_000)
  }

  /** Resident set size in bytes, from /proc (Linux), or `undefined` elsewhere. */
  async rssBytes (): Promise<number | undefined> {
    try {
      const status = await readFile(`/proc/${this.pid}/status`, 'utf8')
      const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
      return match === null ? undefined : Number(match[1]) * 1024
    } catch {
      return undefined
    }
  }

  async stop (graceMs = STOP_GRACE_MS): Promise<void> {
    await stopChild(this.child, graceMs)
  }
}
