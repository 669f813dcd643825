import { fail, isObject, knownKeys } from '../options/validate.js'
import { prefixParams } from '../proxy/prefix.js'
import type { TargetOptions } from '../types.js'

/** Claims read for roles when `allow.roleClaims` is not given. */
export const DEFAULT_ROLE_CLAIMS: readonly string[] = Object.freeze(['role', 'roles'])
/** Claims read for scopes when `allow.scopeClaims` is not given. */
export const DEFAULT_SCOPE_CLAIMS: readonly string[] = Object.freeze(['scope', 'scp'])
/** Claim a tenant binding compares with when `tenant.claim` is not given. */
export const DEFAULT_TENANT_CLAIM = 'sub'

const ALLOW_KEYS = ['anyRole', 'allScopes', 'roleClaims', 'scopeClaims']
const TENANT_KEYS = ['param', 'claim']

/** A target's declarative rules, validated at register. */
export interface ResolvedRules {
  readonly anyRole: readonly string[] | undefined
  readonly allScopes: readonly string[] | undefined
  readonly roleClaims: readonly string[]
  readonly scopeClaims: readonly string[]
  readonly tenant: { readonly param: string, readonly claim: string } | undefined
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
    // No `roles`/`scopes`: they would leave any-or-all to a guess; the names say which.
    knownKeys(allow, `${at}.allow`, ALLOW_KEYS)
    anyRole = stringList(allow.anyRole, `${at}.allow.anyRole`, undefined)
    allScopes = stringList(allow.allScopes, `${at}.allow.allScopes`, undefined, true)
    if (anyRole === undefined && allScopes === undefined) fail(`${at}.allow`, 'at least one of anyRole, allScopes')
    roleClaims = stringList(allow.roleClaims, `${at}.allow.roleClaims`, DEFAULT_ROLE_CLAIMS) as readonly string[]
    scopeClaims = stringList(allow.scopeClaims, `${at}.allow.scopeClaims`, DEFAULT_SCOPE_CLAIMS) as readonly string[]
  }

  let binding: ResolvedRules['tenant']
  if (tenant !== undefined) {
    if (!isObject(tenant)) fail(`${at}.tenant`, 'an object { param, claim? }')
    knownKeys(tenant, `${at}.tenant`, TENANT_KEYS)
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
