import type { FastifyInstance } from 'fastify'
import { BadRequestError } from '../errors.js'
import type { ResolvedAuth } from '../options/resolved.js'
import type { TokenLifecycle } from './lifecycle.js'
import { jsonBodyParser, postOnly } from './token-routes.js'
import { fromStore, storeKeys } from './store.js'
import { checkedBySession, requireToken, tokenId } from './token.js'
import type { TokenService } from './token.js'

const LOGOUT_BODY_LIMIT = 1024

/** No body, `{}` or `{ "refreshToken": "<string>" }`. */
function validateLogoutBody (body: unknown): { value: { refreshToken?: string } } | { error: Error } {
  if (body === undefined || body === null) return { value: {} }
  const object = typeof body === 'object' && !Array.isArray(body) ? body as Record<string, unknown> : undefined
  const keys = object === undefined ? [] : Object.keys(object)
  const refreshToken = object?.refreshToken
  if (object === undefined || keys.some((key) => key !== 'refreshToken') ||
      (refreshToken !== undefined && (typeof refreshToken !== 'string' || refreshToken.length === 0 || refreshToken.length > 128))) {
    return { error: new BadRequestError('Invalid logout body: expected nothing or {"refreshToken"}, a non-empty string') }
  }
  return { value: refreshToken === undefined ? {} : { refreshToken } }
}

const logoutSchema = {
  body: {
    type: 'object',
    additionalProperties: false,
    properties: { refreshToken: { type: 'string', minLength: 1, maxLength: 128 } }
  }
} as const

/**
 * POST logout route, behind the access token: revokes the session the access
 * token belongs to (its `sid`), the one of a refresh token in the body (holding
 * it is proof enough), and with `revokeAccessToken` the access token itself
 * until its `exp` (through its session when it has one, else by its `jti`). Answers 204 whether or not there was anything left to revoke.
 */
export function registerLogout (scope: FastifyInstance, auth: ResolvedAuth, tokens: TokenService, lifecycle: TokenLifecycle): void {
  const { logout } = auth.lifecycle
  const { store, sessions } = lifecycle
  if (logout === false || store === undefined) return

  scope.register(async function gatehouseLogout (route) {
    route.removeContentTypeParser('text/plain')
    jsonBodyParser(route, 'logout')
    postOnly(route, logout.path)
    route.post<{ Body: { refreshToken?: string } | undefined }>(logout.path, {
      schema: logoutSchema,
      validatorCompiler: () => validateLogoutBody,
      bodyLimit: LOGOUT_BODY_LIMIT,
      onRequest: requireToken(tokens)
    }, async (request, reply) => {
      const claims = request.user
      const families = new Set<string>()
      if (sessions !== undefined) {
        if (typeof claims.sid === 'string') families.add(claims.sid)
        const presented = request.body?.refreshToken
        const family = presented === undefined ? undefined : await sessions.familyOf(presented)
        if (family !== undefined) families.add(family)
        await Promise.all([...families].map((id) => sessions.revoke(id)))
      }
      const jti = tokenId(claims)
      // A token of a session is refused through its session, now ended: one
      // lookup per request instead of two, and no entry per logged-out token.
      if (logout.revokeAccessToken && jti !== undefined && typeof claims.exp === 'number' && !checkedBySession(tokens, claims)) {
        // Kept as long as the token could still pass verification, clock tolerance included.
        const ttl = (claims.exp + auth.clockToleranceSeconds) * 1000 - Date.now()
        if (ttl > 0) await fromStore(store.set(storeKeys.revokedJti(jti), '1', ttl))
      }
      request.log.info({ sub: claims.sub, sessions: families.size }, 'gatehouse logout')
      return reply.code(204).header('cache-control', 'no-store').send()
    })
  })
}
