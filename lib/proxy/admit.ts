import type { FastifyReply, FastifyRequest } from 'fastify'
import { enforceRules } from '../auth/rules.js'
import { ForbiddenError } from '../errors.js'
import type { ResolvedTarget } from '../options/resolved.js'
import type { TargetInfo } from '../types.js'
import { RequestContext } from './context.js'
import type { ProxyRequestInit } from './context.js'
import { applyRewrite } from './rewrite.js'

/**
 * Builds a request's context and runs every check that must pass before the
 * upstream is contacted: `allow`/`tenant` rules, the rewrite (re-checked
 * against the base path) and `authorize`. HTTP forwarding and WebSocket
 * upgrades both come through here, so the two gates cannot drift apart.
 */
export async function admit (
  target: ResolvedTarget, info: TargetInfo, outgoing: ProxyRequestInit, request: FastifyRequest, reply: FastifyReply
): Promise<RequestContext<any>> {
  const ctx = new RequestContext(outgoing, { ...target.state }, info, request, reply, target.maxBufferedBody)
  enforceRules(target.rules, ctx)
  if (target.rewrite !== undefined) await applyRewrite(target, ctx)
  if (target.authorize !== undefined && await target.authorize(ctx) !== true) throw new ForbiddenError()
  return ctx
}
