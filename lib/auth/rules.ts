import { ForbiddenError, InvalidOptionError } from '../errors.js'
import { prefixParams } from '../proxy/path.js'
import type { GatehouseClaims, GatehouseContext, TargetOptions } from '../types.js'

/** Claims read for roles when `allow.roleClaims` is not given. */
export const DEFAULT_ROLE_CLAIMS: readonly string[] = Object.freeze(['role', 'roles'])
/** Claims read for scopes when `allow.scopeClaims` is not given. */
export const DEFAULT_SCOPE_CLAIMS: readonly string[] = Object.freeze(['scope', 'scp'])
/** Claim a tenant binding compares with when `tenant.claim` is not given. */
export const DEFAULT_TENANT_CLAIM = 'sub'

const ALLOW_KEYS = new Set(['anyRole', 'allScopes', 'roleClaims', 'scopeClaims'])
const TENANT_KEYS = new Set(['param', 'claim'])

/** A target's declarative rules, validated at register. */
export interface ResolvedRules {
  readonly anyRole: readonly string[] | undefined
  readonly allScopes: readonly string[] | undefined
  readonly roleClaims: readonly string[]
  readonly scopeClaims: readonly string[]
  readonly tenant: { readonly param: string, readonly claim: string } | undefined
}

function fail (option: string, expected: string): never {
  throw new InvalidOptionError(option, expected)
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function stringList (value: unknown, option: string, fallback: readonly string[] | undefined, noSpaces = false): readonly string[] | undefined {
  if (value === undefined) return fallback
  if (!Array.isArray(value) || value.length === 0 ||
      !value.every((item) => typeof item === 'string' && item.length > 0 && !(noSpaces && /\s/.test(item)))) {
    fail(option, `a non-empty array of non-empty strings${noSpaces ? ' without spaces' : ''}`)
  }
  return Object.freeze([...value as string[]])
}

/**
 * Validates `allow` and `tenant` of one target. Both need a token, and a
 * tenant param must be one of the prefix's params.
 */
export function resolveRules (target: TargetOptions<any, any>, prefix: string, at: string): ResolvedRules | undefined {
  const { allow, tenant } = target
  if (allow === undefined && tenant === undefined) return undefined
  if (target.public === true) fail(`${at}.${allow === undefined ? 'tenant' : 'allow'}`, 'no rules on a public target (they need a token)')

  let anyRole: readonly string[] | undefined
  let allScopes: readonly string[] | undefined
  let roleClaims = DEFAULT_ROLE_CLAIMS
  let scopeClaims = DEFAULT_SCOPE_CLAIMS
  if (allow !== undefined) {
    if (!isObject(allow)) fail(`${at}.allow`, 'an object { anyRole?, allScopes?, roleClaims?, scopeClaims? }')
    for (const key of Object.keys(allow)) {
      // `roles`/`scopes` would leave any-or-all to a guess: the names say which.
      if (!ALLOW_KEYS.has(key)) fail(`${at}.allow.${key}`, 'one of anyRole (any one role), allScopes (every scope), roleClaims, scopeClaims')
    }
    anyRole = stringList(allow.anyRole, `${at}.allow.anyRole`, undefined)
    allScopes = stringList(allow.allScopes, `${at}.allow.allScopes`, undefined, true)
    if (anyRole === undefined && allScopes === undefined) fail(`${at}.allow`, 'at least one of anyRole, allScopes')
    roleClaims = stringList(allow.roleClaims, `${at}.allow.roleClaims`, DEFAULT_ROLE_CLAIMS) as readonly string[]
    scopeClaims = stringList(allow.scopeClaims, `${at}.allow.scopeClaims`, DEFAULT_SCOPE_CLAIMS) as readonly string[]
  }

  let binding: ResolvedRules['tenant']
  if (tenant !== undefined) {
    if (!isObject(tenant)) fail(`${at}.tenant`, 'an object { param, claim? }')
    for (const key of Object.keys(tenant)) {
      if (!TENANT_KEYS.has(key)) fail(`${at}.tenant.${key}`, 'one of param, claim')
    }
    const params = prefixParams(prefix)
    if (typeof tenant.param !== 'string' || !params.includes(tenant.param)) {
      fail(`${at}.tenant.param`, params.length === 0
        ? `a param of the prefix, but "${prefix}" has none`
        : `a param of the prefix "${prefix}": ${params.join(', ')}`)
    }
    const claim = tenant.claim ?? DEFAULT_TENANT_CLAIM
    if (typeof claim !== 'string' || claim.length === 0) fail(`${at}.tenant.claim`, 'a claim name')
    binding = Object.freeze({ param: tenant.param, claim })
  }

  return Object.freeze({ anyRole, allScopes, roleClaims, scopeClaims, tenant: binding })
}

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
