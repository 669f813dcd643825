import { spawn } from 'node:child_process'
import type { ChildProcessWithoutNullStreams } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { within } from './wait.js'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** `gatehouse` run from source as a real process, as a user's shell would start it. */
export interface CliProcess {
  child: ChildProcessWithoutNullStreams
  /** Everything written to stdout and stderr so far. */
  stdout: () => string
  stderr: () => string
  /** Resolves with the exit code (or the signal name). */
  exit: Promise<number | string>
  /** Resolves when stdout (or stderr) has a line matching `pattern`, with the match; fails after a deadline. */
  waitForOutput: (pattern: RegExp, opts?: { stream?: 'stdout' | 'stderr', timeout?: number }) => Promise<RegExpExecArray>
}

/**
 * Environment for a child that loads the TypeScript sources through tsx: no
 * coverage. tsx transpiles differently from tap's loader, and V8 coverage of
 * one file from both merges into nonsense (lib/transport/retry.ts measured 95%
 * alone, 64% beside a CLI test), so children leave coverage to the tests.
 */
export const TSX_CHILD_ENV = Object.freeze({ NODE_OPTIONS: '', _TAPJS_PROCESSINFO_COVERAGE_: '0' })

/**
 * Spawns `gatehouse ARGS` with `env` on top of this process's environment
 * (tap's NODE_OPTIONS left out); killed on teardown if still running.
 */
export function runCli (t: Test, args: string[], env: Record<string, string | undefined> = {}): CliProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=fastify-gatehouse-source', 'lib/cli/gatehouse.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...TSX_CHILD_ENV, ...env },
    stdio: 'pipe'
  })
  const output = { stdout: '', stderr: '' }
  const waiters: Array<{ pattern: RegExp, stream: 'stdout' | 'stderr', resolve: (match: RegExpExecArray) => void }> = []
  const check = (): void => {
    for (const waiter of [...waiters]) {
      const match = waiter.pattern.exec(output[waiter.stream])
      if (match !== null) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve(match)
      }
    }
  }
  for (const stream of ['stdout', 'stderr'] as const) {
    child[stream].setEncoding('utf8').on('data', (chunk: string) => {
      output[stream] += chunk
      check()
    })
  }
  const exit = new Promise<number | string>((resolve) => {
    child.on('exit', (code, signal) => resolve(code ?? signal ?? -1))
  })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exit
    }
  })
  return {
    child,
    stdout: () => output.stdout,
    stderr: () => output.stderr,
    exit,
    waitForOutput: (pattern, opts = {}) => within(new Promise<RegExpExecArray>((resolve, reject) => {
      waiters.push({ pattern, stream: opts.stream ?? 'stdout', resolve })
      exit.then((code) => reject(new Error(`gatehouse exited (${code}) before printing ${String(pattern)}:\n${output.stderr}`)), () => {})
      check()
    }), { message: `gatehouse to print ${String(pattern)}`, timeout: opts.timeout ?? 20_000 })
  }
}

/** Runs `gatehouse serve --config FILE` and resolves once it listens, with its base URL. */
export async function serveCli (t: Test, file: string, env: Record<string, string | undefined> = {}, extra: string[] = []): Promise<CliProcess & { url: string }> {
  const cli = runCli(t, ['serve', '--config', file, ...extra], env)
  // Several processes each loading TypeScript through tsx: slow when the whole suite shares 2 cores.
  const match = await cli.waitForOutput(/^gatehouse listening on (http:\/\/\S+)/m, { timeout: 60_000 })
  return { ...cli, url: match[1] as string }
}
