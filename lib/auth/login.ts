import type { FastifyInstance } from 'fastify'
import { BadCredentialsError } from '../errors.js'
import type { ResolvedAuth } from '../options.js'
import type { LoginCredentials } from '../types.js'
import type { TokenService } from './token.js'

// Credentials are small; a larger body is refused before it is parsed.
const LOGIN_BODY_LIMIT = 8 * 1024

const loginSchema = {
  body: {
    type: 'object',
    required: ['username', 'password'],
    additionalProperties: false,
    properties: {
      username: { type: 'string', minLength: 1, maxLength: 256 },
      password: { type: 'string', minLength: 1, maxLength: 1024 }
    }
  }
} as const

/** POST login route: credentials in, bearer token out. */
export function registerLogin (scope: FastifyInstance, auth: ResolvedAuth, tokens: TokenService): void {
  if (auth.login === false) return
  const { path, verify } = auth.login

  scope.post<{ Body: LoginCredentials }>(path, { schema: loginSchema, bodyLimit: LOGIN_BODY_LIMIT }, async (request, reply) => {
    const { username, password } = request.body
    const claims = await verify({ username, password }, request)
    if (claims === null || typeof claims !== 'object') throw new BadCredentialsError()
    const token = tokens.sign(claims)
    const { exp, iat, nbf, ...publicClaims } = claims
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
    return { token, tokenType: 'Bearer', expiresIn: auth.expiresInSeconds, claims: publicClaims }
  })
}
