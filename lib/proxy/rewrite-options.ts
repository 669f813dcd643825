import { fail } from '../options/validate.js'
import type { RewriteFunction, TargetOptions } from '../types.js'
import { prefixParams } from './prefix.js'

export type TemplatePart =
  | { readonly kind: 'text', readonly text: string }
  | { readonly kind: 'claim', readonly name: string }
  | { readonly kind: 'param', readonly name: string }

/** A target's `rewrite`, validated at register. */
export type ResolvedRewrite =
  | { readonly kind: 'template', readonly parts: readonly TemplatePart[] }
  | { readonly kind: 'function', readonly rewrite: RewriteFunction<any, any> }

const PLACEHOLDER = /\{([^{}]*)\}/g
const PLACEHOLDER_BODY = /^(claims|params)\.(.+)$/
// What a prefix may not hold (as for `prefix` and `rewritePrefix`), plus the
// `:param` syntax of `rewritePrefix`, which a template spells `{params.x}`.
const BAD_TEMPLATE = /[?#\\\s{}]|\/\/|(^|\/)\.\.?(\/|$)|(^|\/):/
function parseTemplate (template: string, prefix: string, publicTarget: boolean, option: string): TemplatePart[] {
  const params = prefixParams(prefix)
  const parts: TemplatePart[] = []
  let last = 0
  for (const match of template.matchAll(PLACEHOLDER)) {
    const body = PLACEHOLDER_BODY.exec(match[1] as string)
    if (body === null) fail(option, `placeholders {claims.NAME} or {params.NAME}, not "${match[0]}"`)
    const [, source, name] = body as unknown as [string, 'claims' | 'params', string]
    if (source === 'params' && !params.includes(name)) {
      fail(option, params.length === 0 ? `no {params.*}: the prefix "${prefix}" has no params` : `{params.NAME} with NAME one of ${params.join(', ')}`)
    }
    if (source === 'claims' && publicTarget) fail(option, 'no {claims.*} on a public target (it has no token)')
    if (match.index > last) parts.push({ kind: 'text', text: template.slice(last, match.index) })
    parts.push({ kind: source === 'claims' ? 'claim' : 'param', name })
    last = match.index + match[0].length
  }
  if (last < template.length) parts.push({ kind: 'text', text: template.slice(last) })

  // The static text is checked with every placeholder standing for one safe character.
  const shape = parts.map((part) => part.kind === 'text' ? part.text : 'x').join('')
  if (!(shape === '' || shape.startsWith('/')) || BAD_TEMPLATE.test(shape)) {
    fail(option, 'an absolute path template such as "/shops/{claims.sub}/transactions", without query, fragment, dot segments, backslashes or :params')
  }
  // A trailing slash would double the one the rest of the path starts with; "/" strips the prefix.
  const tail = parts[parts.length - 1]
  if (tail?.kind === 'text' && tail.text.endsWith('/')) {
    const text = tail.text.slice(0, -1)
    if (text === '') parts.pop()
    else parts[parts.length - 1] = { kind: 'text', text }
  }
  return parts
}

/** Validates a target's `rewrite`: a template string or a function. */
export function resolveRewrite (target: TargetOptions<any, any>, prefix: string, at: string): ResolvedRewrite | undefined {
  const rewrite: unknown = target.rewrite
  if (rewrite === undefined) return undefined
  if (target.rewritePrefix !== undefined) fail(`${at}.rewrite`, 'either rewrite or rewritePrefix, not both')
  if (typeof rewrite === 'function') return Object.freeze({ kind: 'function', rewrite: rewrite as RewriteFunction<any, any> })
  if (typeof rewrite !== 'string') fail(`${at}.rewrite`, 'a path template such as "/shops/{claims.sub}/transactions" or a function (ctx) => prefix')
  return Object.freeze({ kind: 'template', parts: Object.freeze(parseTemplate(rewrite, prefix, target.public === true, `${at}.rewrite`)) })
}
