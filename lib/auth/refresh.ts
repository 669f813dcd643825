import { createHash, randomBytes } from 'node:crypto'
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import { BadRequestError, RefreshTokenInvalidError, RefreshTokenReusedError, SessionEndedError } from '../errors.js'
import type { ResolvedAuth } from '../options/resolved.js'
import type { GatehouseClaims } from '../types.js'
import type { ResolvedRefresh } from './lifecycle-options.js'
import { tokenResponse } from './token-response.js'
import type { IssuedRefreshToken } from './token-response.js'
import { jsonBodyParser, postOnly } from './token-routes.js'
import { fromStore, storeKeys } from './store.js'
import type { GatehouseStore } from '../types.js'
import type { TokenService } from './token.js'

/*
 * Refresh tokens: opaque, random, stored only as a SHA-256 hash, each bound to
 * the claims of its login and to a family (one login session). Using one
 * rotates it: it dies and a new one of the same family is issued. Using a dead
 * one again means two parties hold it, so the whole family is revoked, except
 * within `reuseInterval` of its rotation: a double submit or two tabs are far
 * likelier there than a thief, and the late caller gets a fresh pair of the same
 * family (Auth0's reuse interval, Okta's grace period). The rotation result is
 * not replayed, as that would mean keeping a refresh token in clear in the store.
 */

const REFRESH_TOKEN_BYTES = 32
const FAMILY_ID_BYTES = 16
// 32 bytes in base64url without padding: anything else was never issued.
const REFRESH_TOKEN = /^[A-Za-z0-9_-]{43}$/
const REFRESH_BODY_LIMIT = 1024

interface RefreshRecord {
  family: string
  claims: GatehouseClaims
  expiresAt: number
  familyExpiresAt: number
}

function digest (token: string): string {
  return createHash('sha256').update(token).digest('base64url')
}

function parseRecord (value: string | undefined): RefreshRecord | undefined {
  if (value === undefined) return undefined
  try {
    const record = JSON.parse(value) as Partial<RefreshRecord>
    if (typeof record.family !== 'string' || typeof record.claims !== 'object' || record.claims === null ||
        typeof record.expiresAt !== 'number' || typeof record.familyExpiresAt !== 'number') return undefined
    return record as RefreshRecord
  } catch {
    return undefined
  }
}

/** Issues, rotates and revokes refresh tokens on a `GatehouseStore`. */
export class RefreshSessions {
  readonly #store: GatehouseStore
  readonly #options: ResolvedRefresh

  constructor (store: GatehouseStore, options: ResolvedRefresh) {
    this.#store = store
    this.#options = options
  }

  /** Starts a session (a new family) for the claims of a login. */
  async start (claims: GatehouseClaims): Promise<IssuedRefreshToken> {
    const family = randomBytes(FAMILY_ID_BYTES).toString('base64url')
    const maxAgeMs = this.#options.maxAgeSeconds * 1000
    // The family key is only ever created here and deleted by revocation: nothing can revive it.
    await fromStore(this.#store.set(storeKeys.family(family), '1', maxAgeMs))
    return this.#issue(family, claims, Date.now() + maxAgeMs)
  }

  /**
   * Kills the token and issues its successor. Of several concurrent calls with
   * the same token, the one that marks it used first rotates it; the others,
   * and any later call, get a fresh pair of the same family while within
   * `reuseInterval` of that mark, and are reuse that revokes the family after it.
   */
  async rotate (token: string, log: FastifyBaseLogger, request?: FastifyRequest): Promise<IssuedRefreshToken> {
    const hash = digest(token)
    const record = await this.#live(token, hash)
    // Asked before the token is spent: if the lookup fails, the client may retry with the same token.
    const claims = await this.#fresh(record, log, request)
    const now = Date.now()
    // The mark holds the rotation time, so one atomic `add` both elects the
    // winner and tells the others how long ago it won.
    const usedKey = storeKeys.refreshUsed(hash)
    const first = await fromStore(this.#store.add(usedKey, String(now), Math.max(1, record.expiresAt - now)))
    if (!first) {
      // A mark from a version without the window reads as NaN: reuse, as before.
      const usedAt = Number(await fromStore(this.#store.get(usedKey)))
      const windowMs = this.#options.reuseIntervalSeconds * 1000
      if (!(windowMs > 0 && now - usedAt <= windowMs)) {
        await this.revoke(record.family)
        log.warn({ family: record.family, sub: record.claims.sub }, 'gatehouse refresh token reused: session revoked')
        throw new RefreshTokenReusedError()
      }
      log.info({ family: record.family, sub: record.claims.sub }, 'gatehouse refresh token reused within reuseInterval: same session')
    }
    return this.#issue(record.family, claims, record.familyExpiresAt)
  }

  /** The claims of the next tokens: the verifier's answer, or the login's without one. */
  async #fresh (record: RefreshRecord, log: FastifyBaseLogger, request: FastifyRequest | undefined): Promise<GatehouseClaims> {
    const verify = this.#options.verify
    if (verify === undefined || request === undefined) return record.claims
    const claims = await verify(record.claims, request)
    if (claims === null) {
      await this.revoke(record.family)
      log.info({ family: record.family, sub: record.claims.sub }, 'gatehouse refresh refused by auth.refresh.verify: session ended')
      throw new SessionEndedError()
    }
    if (typeof claims !== 'object' || Array.isArray(claims)) throw new TypeError('auth.refresh.verify must return claims (an object) or null')
    return claims
  }

  /** The family of a live or rotated token, `undefined` for an unknown one. */
  async familyOf (token: string): Promise<string | undefined> {
    if (!REFRESH_TOKEN.test(token)) return undefined
    return parseRecord(await fromStore(this.#store.get(storeKeys.refresh(digest(token)))))?.family
  }

  /** Ends a session: every refresh token of the family fails from now on. */
  async revoke (family: string): Promise<void> {
    await fromStore(this.#store.delete(storeKeys.family(family)))
  }

  async #live (token: string, hash: string): Promise<RefreshRecord> {
    if (!REFRESH_TOKEN.test(token)) throw new RefreshTokenInvalidError()
    const record = parseRecord(await fromStore(this.#store.get(storeKeys.refresh(hash))))
    // A store may keep an entry a little past its TTL: the record's own expiry decides.
    if (record === undefined || record.expiresAt <= Date.now()) throw new RefreshTokenInvalidError()
    if (await fromStore(this.#store.get(storeKeys.family(record.family))) === undefined) throw new RefreshTokenInvalidError()
    return record
  }

  async #issue (family: string, claims: GatehouseClaims, familyExpiresAt: number): Promise<IssuedRefreshToken> {
    const now = Date.now()
    const expiresAt = Math.min(now + this.#options.expiresInSeconds * 1000, familyExpiresAt)
    // The session reached its maxAge: the user logs in again.
    if (expiresAt - now < 1000) throw new RefreshTokenInvalidError()
    const token = randomBytes(REFRESH_TOKEN_BYTES).toString('base64url')
    const record: RefreshRecord = { family, claims, expiresAt, familyExpiresAt }
    await fromStore(this.#store.set(storeKeys.refresh(digest(token)), JSON.stringify(record), expiresAt - now))
    return { token, family, expiresIn: Math.floor((expiresAt - now) / 1000), claims }
  }
}

const refreshSchema = {
  body: {
    type: 'object',
    required: ['refreshToken'],
    additionalProperties: false,
    properties: { refreshToken: { type: 'string', minLength: 1, maxLength: 128 } }
  }
} as const

/** Exactly `{ "refreshToken": "<string>" }`, nothing coerced. */
function validateRefreshBody (body: unknown): { value: { refreshToken: string } } | { error: Error } {
  const object = typeof body === 'object' && body !== null && !Array.isArray(body) ? body as Record<string, unknown> : {}
  const { refreshToken } = object
  if (Object.keys(object).length !== 1 || typeof refreshToken !== 'string' || refreshToken.length === 0 || refreshToken.length > 128) {
    return { error: new BadRequestError('Invalid refresh body: expected {"refreshToken"}, a non-empty string') }
  }
  return { value: { refreshToken } }
}

/** POST refresh route: a refresh token in, a new access token and refresh token out (the login shape). */
export function registerRefresh (scope: FastifyInstance, auth: ResolvedAuth, tokens: TokenService, sessions: RefreshSessions | undefined): void {
  const { refresh } = auth.lifecycle
  if (refresh === false || sessions === undefined) return

  scope.register(async function gatehouseRefresh (route) {
    route.removeContentTypeParser('text/plain')
    jsonBodyParser(route, 'refresh')
    postOnly(route, refresh.path)
    route.post<{ Body: { refreshToken: string } }>(refresh.path, {
      schema: refreshSchema,
      validatorCompiler: () => validateRefreshBody,
      bodyLimit: REFRESH_BODY_LIMIT
    }, async (request, reply) => {
      const next = await sessions.rotate(request.body.refreshToken, request.log, request)
      const token = tokens.sign(next.claims, next.family)
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
      return tokenResponse(auth, token, next.claims, next)
    })
  })
}
