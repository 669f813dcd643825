import { ForbiddenError, PathNotAllowedError, RewriteFailedError } from '../errors.js'
import { claimOf, tenantOf } from '../auth/rules.js'
import type { ResolvedTarget } from '../options/resolved.js'
import type { GatehouseContext, RewriteFunction } from '../types.js'
import { assertInsideBase } from './path.js'
import { splitPrefix, splitUrl } from './prefix.js'
import type { TemplatePart } from './rewrite-options.js'

// A function's prefix goes on the wire as it is: no query, fragment, empty
// segment (`//host` would read as an authority) or control characters.
// eslint-disable-next-line no-control-regex
const BAD_PREFIX = /[?#\s\u0000-\u001f\u007f]|\/\//

function encodeSegment (value: string): string {
  try {
    return encodeURIComponent(value)
  } catch {
    // A lone surrogate cannot be encoded; it has no business in a path.
    throw new PathNotAllowedError()
  }
}

function fill (parts: readonly TemplatePart[], ctx: GatehouseContext<any, any>): string {
  let out = ''
  for (const part of parts) {
    if (part.kind === 'text') {
      out += part.text
    } else if (part.kind === 'claim') {
      // A token without the claim is the caller's problem, not the gateway's.
      const value = ctx.user === null ? undefined : tenantOf(claimOf(ctx.user, part.name))
      if (value === undefined) throw new ForbiddenError()
      out += encodeSegment(value)
    } else {
      const value = Object.hasOwn(ctx.params, part.name) ? ctx.params[part.name] : undefined
      if (typeof value !== 'string' || value === '') throw new PathNotAllowedError()
      out += encodeSegment(value)
    }
  }
  return out
}

async function callRewrite (rewrite: RewriteFunction<any, any>, ctx: GatehouseContext<any, any>): Promise<string> {
  const prefix: unknown = await rewrite(ctx)
  if (typeof prefix !== 'string' || (prefix !== '' && !prefix.startsWith('/'))) throw new RewriteFailedError()
  if (BAD_PREFIX.test(prefix)) throw new PathNotAllowedError()
  return prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
}

/**
 * Applies the target's `rewrite` to `ctx.request.path`: the leading prefix is
 * replaced, the rest of the raw path kept, and the result must be a safe path
 * inside the upstream base path (400 otherwise), before any upstream contact.
 */
export async function applyRewrite (target: ResolvedTarget, ctx: GatehouseContext<any, any>): Promise<void> {
  const rewrite = target.rewrite
  if (rewrite === undefined) return
  const leading = rewrite.kind === 'template' ? fill(rewrite.parts, ctx) : await callRewrite(rewrite.rewrite, ctx)
  const { rest } = splitPrefix(target, splitUrl(ctx.fastifyRequest.url).path)
  const path = target.basePath + leading + rest
  assertInsideBase(target, path === '' ? '/' : path)
  ctx.request.path = path === '' ? '/' : path
}
