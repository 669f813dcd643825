#!/usr/bin/env node
import { createInterface } from 'node:readline'
import { hashPassword } from '../auth/password.js'

/*
 * Prints a scrypt hash for a password read from standard input, so the
 * password never appears in the process list. Typed at the prompt (or piped
 * from a file or a password manager), it stays out of shell history too:
 *   npx gatehouse-hash-password
 */
const lines = createInterface({ input: process.stdin, terminal: false })
let password: string | undefined
if (process.stdin.isTTY) process.stderr.write('Password: ')
lines.once('line', (line) => {
  password = line
  lines.close()
})
lines.once('close', () => {
  if (password === undefined || password.length === 0) {
    process.stderr.write('gatehouse-hash-password: no password on standard input\n')
    process.exitCode = 1
    return
  }
  hashPassword(password).then((hash) => { process.stdout.write(hash + '\n') })
})
