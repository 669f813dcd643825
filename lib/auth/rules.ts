import { ForbiddenError } from '../errors.js'
import type { ResolvedRules } from './rules-options.js'
import type { GatehouseClaims, GatehouseContext } from '../types.js'

/** A claim of the token, own properties only (never something from Object.prototype). */
export function claimOf (user: GatehouseClaims, name: string): unknown {
  return Object.hasOwn(user, name) ? user[name] : undefined
}

function rolesOf (user: GatehouseClaims, claims: readonly string[]): Set<string> {
  const roles = new Set<string>()
  for (const name of claims) {
    const value = claimOf(user, name)
    // A role string is one role, spaces included: splitting it could invent roles.
    if (typeof value === 'string') roles.add(value)
    else if (Array.isArray(value)) for (const item of value) if (typeof item === 'string') roles.add(item)
  }
  return roles
}

function scopesOf (user: GatehouseClaims, claims: readonly string[]): Set<string> {
  const scopes = new Set<string>()
  for (const name of claims) {
    const value = claimOf(user, name)
    // OAuth 2.0 (RFC 6749 §3.3, RFC 8693 §4.2): space-delimited; some issuers send an array.
    const items: unknown[] = typeof value === 'string' ? value.split(' ') : Array.isArray(value) ? value : []
    for (const item of items) if (typeof item === 'string' && item !== '') scopes.add(item)
  }
  return scopes
}

/** A claim as a tenant id: a non-empty string, or an integer in its canonical decimal form. */
export function tenantOf (value: unknown): string | undefined {
  if (typeof value === 'string') return value === '' ? undefined : value
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value)
  return undefined
}

/** True when the token satisfies the rules for these (decoded) params. */
export function satisfiesRules (rules: ResolvedRules, user: GatehouseClaims | null, params: Readonly<Record<string, string>>): boolean {
  if (user === null || typeof user !== 'object') return false
  if (rules.anyRole !== undefined) {
    const roles = rolesOf(user, rules.roleClaims)
    if (!rules.anyRole.some((role) => roles.has(role))) return false
  }
  if (rules.allScopes !== undefined) {
    const scopes = scopesOf(user, rules.scopeClaims)
    if (!rules.allScopes.every((scope) => scopes.has(scope))) return false
  }
  if (rules.tenant !== undefined) {
    // The router has decoded the param once; the path guard has already
    // refused encoded slashes and dot segments in the raw segment.
    const param = Object.hasOwn(params, rules.tenant.param) ? params[rules.tenant.param] : undefined
    const expected = tenantOf(claimOf(user, rules.tenant.claim))
    if (expected === undefined || typeof param !== 'string' || param !== expected) return false
  }
  return true
}

/** Throws a 403 unless the request's token satisfies the target's rules. */
export function enforceRules (rules: ResolvedRules | undefined, ctx: GatehouseContext<any, any>): void {
  if (rules !== undefined && !satisfiesRules(rules, ctx.user, ctx.params)) throw new ForbiddenError()
}
