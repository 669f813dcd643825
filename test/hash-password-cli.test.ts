import t from 'tap'
import { TSX_CHILD_ENV } from './helpers/cli.js'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { verifyPassword } from '../lib/index.js'

/*
 * Issue 14 item 15: `gatehouse-hash-password` at a real terminal (a
 * pseudo-terminal from util-linux `script`) never shows the password, asks
 * twice, and has `--help`.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url))
// Without tap's NODE_OPTIONS the child starts as a user's would.
const env = { ...process.env, ...TSX_CHILD_ENV }
const CLI = `${JSON.stringify(process.execPath)} --import tsx lib/cli/hash-password.ts`

interface Terminal { output: () => string, waitFor: (text: string) => Promise<void>, type: (text: string) => void, exit: Promise<number | null> }

/** Runs the CLI on a pseudo-terminal; `output` is everything the terminal showed. */
function onTerminal (args = ''): Terminal {
  const child = spawn('script', ['-qec', `${CLI} ${args}`, '/dev/null'], { cwd: ROOT, env, stdio: 'pipe' })
  let output = ''
  const waiters: Array<{ text: string, resolve: () => void }> = []
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk
    for (const w of waiters.filter((w) => output.includes(w.text))) w.resolve()
  })
  return {
    output: () => output,
    waitFor: async (text) => {
      if (output.includes(text)) return
      await new Promise<void>((resolve) => { waiters.push({ text, resolve }) })
    },
    type: (text) => { child.stdin.write(text) },
    exit: new Promise((resolve) => child.on('close', resolve))
  }
}

t.test('at a terminal the password is asked twice and never shown', async (t) => {
  const term = onTerminal()
  await term.waitFor('Password: ')
  term.type('s3cret-typed\r')
  await term.waitFor('Again: ')
  term.type('s3cret-typed\r')
  t.equal(await term.exit, 0)
  t.notMatch(term.output(), /s3cret/, 'the terminal never showed the password')
  const hash = /scrypt\$[^\s]+/.exec(term.output())?.[0] as string
  t.equal(await verifyPassword('s3cret-typed', hash), true, 'the hash is of the typed password')
})

t.test('two different passwords exit 1 without a hash', async (t) => {
  const term = onTerminal()
  await term.waitFor('Password: ')
  term.type('one-password\r')
  await term.waitFor('Again: ')
  term.type('other-password\r')
  t.equal(await term.exit, 1)
  t.match(term.output(), /do not match/)
  t.notMatch(term.output(), /scrypt\$|one-password|other-password/)
})

t.test('--help prints the usage and exits 0', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'lib/cli/hash-password.ts', '--help'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  t.equal(await new Promise((resolve) => child.on('close', resolve)), 0)
  t.match(stdout, /^Usage: gatehouse-hash-password/)
})
