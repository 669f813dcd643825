import { Session } from 'node:inspector/promises'
import { writeFile } from 'node:fs/promises'
import type { ChildMessage, RunnerMessage } from './shared.js'

// A child that cannot close cleanly in this time exits anyway.
const CLOSE_GRACE_MS = 3000

function send (message: ChildMessage): void {
  process.send?.(message)
}

/**
 * The child side of the runner protocol: announce the URL, answer CPU time
 * questions, and exit on `stop`, on a signal or when the runner goes away
 * (so no child outlives it). A normal exit also lets `--cpu-prof` write its file.
 */
export function serveRunner (url: string, close: () => Promise<void>): void {
  if (process.send === undefined) {
    console.log(`listening on ${url} (no runner attached; Ctrl-C to stop)`)
  }
  let closing = false
  const shutdown = (): void => {
    if (closing) return
    closing = true
    const timer = setTimeout(() => process.exit(0), CLOSE_GRACE_MS)
    timer.unref()
    close().catch(() => {}).finally(() => process.exit(0))
  }
  process.on('message', (message: RunnerMessage) => {
    if (message.type === 'cpu') {
      const usage = process.cpuUsage()
      send({ type: 'cpu', userMicros: usage.user, systemMicros: usage.system })
    } else if (message.type === 'stop') {
      shutdown()
    } else if (message.type === 'profile-start') {
      startProfile().then(() => send({ type: 'profiling' }), (err: Error) => send({ type: 'profiled', file: '', error: err.message }))
    } else if (message.type === 'profile-stop') {
      stopProfile(message.file).then(() => send({ type: 'profiled', file: message.file }), (err: Error) => send({ type: 'profiled', file: message.file, error: err.message }))
    }
  })
  process.on('disconnect', shutdown)
  process.on('SIGINT', shutdown)
  process.on('SIGTERM', shutdown)
  send({ type: 'ready', url })
}

let profiler: Session | undefined

/**
 * Starts V8's sampling profiler in this process: unlike `--cpu-prof`, the
 * profile then covers one timed run only (no start-up, no other scenario).
 */
async function startProfile (): Promise<void> {
  profiler = new Session()
  profiler.connect()
  await profiler.post('Profiler.enable')
  // 100 us: a 2 KB request is a few samples, enough for per-stage shares over thousands of requests.
  await profiler.post('Profiler.setSamplingInterval', { interval: 100 })
  await profiler.post('Profiler.start')
}

async function stopProfile (file: string): Promise<void> {
  if (profiler === undefined) throw new Error('no profile started')
  const { profile } = await profiler.post('Profiler.stop')
  profiler.disconnect()
  profiler = undefined
  await writeFile(file, JSON.stringify(profile))
}

/** A required environment variable, or exit with a message. */
export function requireEnv (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') {
    console.error(`missing environment variable ${name}`)
    process.exit(2)
  }
  return value
}
