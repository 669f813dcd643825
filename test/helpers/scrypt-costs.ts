import crypto from 'node:crypto'
import type { BinaryLike, ScryptOptions } from 'node:crypto'
import { syncBuiltinESMExports } from 'node:module'
import type { Test } from 'tap'

/**
 * Records the cost (`N=.. r=.. p=..`) of every scrypt call made through
 * node:crypto until `t` ends, so a test can check that two paths do the same
 * password work by counting it instead of timing it. The ESM named export
 * (`import { scrypt }`) is kept in step with syncBuiltinESMExports.
 */
export function recordScryptCosts (t: Test): string[] {
  const costs: string[] = []
  const original = crypto.scrypt
  crypto.scrypt = ((password: BinaryLike, salt: BinaryLike, keylen: number, options: ScryptOptions, callback: (err: Error | null, key: Buffer) => void) => {
    costs.push(scryptCost(options.N, options.r, options.p))
    original(password, salt, keylen, options, callback)
  }) as typeof crypto.scrypt
  syncBuiltinESMExports()
  t.teardown(() => {
    crypto.scrypt = original
    syncBuiltinESMExports()
  })
  return costs
}

/** The cost a hash (`scrypt$N$r$p$salt$hash`) was made with, as recordScryptCosts writes it. */
export function hashCost (hash: string): string {
  const [, N, r, p] = hash.split('$')
  return scryptCost(N, r, p)
}

function scryptCost (N: unknown, r: unknown, p: unknown): string {
  return `N=${String(N)} r=${String(r)} p=${String(p)}`
}
