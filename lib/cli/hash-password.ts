#!/usr/bin/env node
import { realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { hashPassword } from '../auth/password.js'

/*
 * Prints a scrypt hash for a password read from standard input, so the
 * password never appears in the process list. Typed at the prompt it is not
 * echoed and is asked twice; piped from a file or a password manager, the
 * first line is used:
 *   npx gatehouse-hash-password
 */

export const USAGE = `Usage: gatehouse-hash-password [--help]

Reads a password from standard input and prints its scrypt hash, for
staticUsers({ name: { passwordHash } }).

  At a terminal  the password is asked twice and not shown as typed.
  Piped          the first line of standard input is the password:
                 pass show gatehouse/alice | gatehouse-hash-password

Options:
  -h, --help     show this help and exit
`

/** What the CLI reads from and writes to; a fake in tests. */
export interface CliIo {
  input: NodeJS.ReadableStream & { isTTY?: boolean, setRawMode?: (raw: boolean) => unknown }
  output: NodeJS.WritableStream
  errors: NodeJS.WritableStream
}

const CTRL_C = '\u0003'
const CTRL_D = '\u0004'
const BACKSPACE = new Set(['\u007f', '\b'])

/**
 * Reads one line from a terminal in raw mode, so the terminal echoes nothing;
 * the prompt goes to `errors` so that `output` holds only the hash. Resolves
 * `undefined` on Ctrl-C or Ctrl-D at an empty line.
 */
export function readHidden (io: CliIo, prompt: string): Promise<string | undefined> {
  const { input } = io
  // Raw before the prompt: whatever is typed after seeing it is never echoed.
  input.setRawMode?.(true)
  io.errors.write(prompt)
  input.resume()
  return new Promise((resolve) => {
    let line = ''
    const finish = (value: string | undefined) => {
      input.removeListener('data', onData)
      input.setRawMode?.(false)
      input.pause()
      io.errors.write('\n')
      resolve(value)
    }
    const onData = (chunk: Buffer | string) => {
      for (const char of chunk.toString('utf8')) {
        if (char === '\r' || char === '\n') return finish(line)
        if (char === CTRL_C || (char === CTRL_D && line === '')) return finish(undefined)
        if (BACKSPACE.has(char)) line = line.slice(0, -1)
        else if (char >= ' ') line += char
      }
    }
    input.on('data', onData)
  })
}

/** The first line of a non-terminal input, or `undefined` when there is none. */
function readLine (io: CliIo): Promise<string | undefined> {
  return new Promise((resolve) => {
    let data = ''
    io.input.setEncoding('utf8')
    io.input.on('data', (chunk: string) => { data += chunk })
    io.input.on('end', () => {
      const [first] = data.split(/\r?\n/)
      resolve(first === '' ? undefined : first)
    })
  })
}

/** The CLI; resolves the exit code. */
export async function main (args: string[], io: CliIo): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.output.write(USAGE)
    return 0
  }
  if (args.length > 0) {
    io.errors.write(`gatehouse-hash-password: unknown argument ${args[0]}\n\n${USAGE}`)
    return 2
  }
  let password: string | undefined
  if (io.input.isTTY === true) {
    password = await readHidden(io, 'Password: ')
    if (password !== undefined && password !== '') {
      const again = await readHidden(io, 'Again: ')
      if (again !== password) {
        io.errors.write('gatehouse-hash-password: the passwords do not match\n')
        return 1
      }
    }
  } else {
    password = await readLine(io)
  }
  if (password === undefined || password === '') {
    io.errors.write('gatehouse-hash-password: no password on standard input\n')
    return 1
  }
  io.output.write(await hashPassword(password) + '\n')
  return 0
}

const entry = process.argv[1]
/* c8 ignore start -- the process entry point; tests run `main` or spawn the file */
if (entry !== undefined && import.meta.url === pathToFileURL(realpathSync(entry)).href) {
  main(process.argv.slice(2), { input: process.stdin, output: process.stdout, errors: process.stderr }).then((code) => {
    process.exitCode = code
  }, (err: unknown) => {
    process.stderr.write(`gatehouse-hash-password: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
/* c8 ignore stop */
