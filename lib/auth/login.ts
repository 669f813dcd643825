import type { FastifyInstance } from 'fastify'
import { BadCredentialsError, BadRequestError } from '../errors.js'
import type { ResolvedAuth } from '../options/resolved.js'
import type { Observer } from '../observe/observer.js'
import type { GatehouseClaims, LoginCredentials } from '../types.js'
import type { TokenLifecycle } from './lifecycle.js'
import { LOGIN_BUSY_RETRY_AFTER, LoginGate } from './login-gate.js'
import { jsonBodyParser, postOnly } from './token-routes.js'
import type { TokenService } from './token.js'
import { tokenResponse } from './token-response.js'

// Credentials are small; a larger body is refused before it is parsed.
const LOGIN_BODY_LIMIT = 8 * 1024
const MAX_USERNAME = 256
const MAX_PASSWORD = 1024

// Documents the body; `validateLoginBody` enforces it strictly.
const loginSchema = {
  body: {
    type: 'object',
    required: ['username', 'password'],
    additionalProperties: false,
    properties: {
      username: { type: 'string', minLength: 1, maxLength: MAX_USERNAME },
      password: { type: 'string', minLength: 1, maxLength: MAX_PASSWORD }
    }
  }
} as const

function isBoundedString (value: unknown, max: number): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= max
}

/**
 * Fastify's default validator coerces types and strips unknown properties;
 * credentials get neither: exactly two non-empty strings or a 400.
 */
function validateLoginBody (body: unknown): { value: LoginCredentials } | { error: Error } {
  const object = typeof body === 'object' && body !== null && !Array.isArray(body) ? body as Record<string, unknown> : {}
  const { username, password } = object
  if (Object.keys(object).length !== 2 || !isBoundedString(username, MAX_USERNAME) || !isBoundedString(password, MAX_PASSWORD)) {
    return { error: new BadRequestError(`Invalid login body: expected {"username", "password"}, non-empty strings of at most ${MAX_USERNAME} and ${MAX_PASSWORD} characters`) }
  }
  return { value: { username, password } }
}

/** The claims a client sees: without the time claims and the ids the gateway sets itself. */
function publicClaims (claims: GatehouseClaims): GatehouseClaims {
  const { exp, iat, nbf, jti, sid, ...rest } = claims
  return rest
}

/**
 * POST login route: credentials in, bearer token out, plus a refresh token
 * when refresh is on; failures counted when throttling is on; outcomes
 * counted by the observer when metrics are on.
 */
export function registerLogin (scope: FastifyInstance, auth: ResolvedAuth, tokens: TokenService, lifecycle?: TokenLifecycle, observer?: Observer): void {
  if (auth.login === false) return
  const { path, verify } = auth.login
  const throttle = lifecycle?.throttle
  const sessions = lifecycle?.sessions
  const gate = new LoginGate(auth.lifecycle.loginLimit)

  scope.register(async function gatehouseLogin (login) {
    // JSON only: a text/plain body is 415, not a string to validate.
    observer?.observeLogin(login)
    login.removeContentTypeParser('text/plain')
    jsonBodyParser(login, 'login')
    postOnly(login, path)
    login.post<{ Body: LoginCredentials }>(path, {
      schema: loginSchema,
      validatorCompiler: () => validateLoginBody,
      bodyLimit: LOGIN_BODY_LIMIT
    }, async (request, reply) => {
      const { username, password } = request.body
      const attempt = await throttle?.attempt(username, request, reply)
      const claims = await gate.run(() => verify({ username, password }, request), () => {
        // Set before the throw, the header survives into the error response.
        reply.header('retry-after', String(LOGIN_BUSY_RETRY_AFTER))
      })
      if (claims === null || typeof claims !== 'object') throw new BadCredentialsError()
      await attempt?.succeeded()
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
      if (sessions === undefined) {
        const { exp, iat, nbf, ...visible } = claims
        return tokenResponse(auth, tokens.sign(claims), visible)
      }
      const session = await sessions.start(publicClaims(claims))
      return tokenResponse(auth, tokens.sign(session.claims, session.family), session.claims, session)
    })
  })
}
