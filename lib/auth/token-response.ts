import type { ResolvedAuth } from '../options/resolved.js'
import type { GatehouseClaims } from '../types.js'

/*
 * What the login and refresh routes answer with. A leaf, so that login.ts
 * (which starts sessions) and refresh.ts (which rotates them) share it
 * without importing each other.
 */

/** A refresh token as returned to the client, with the session it belongs to. */
export interface IssuedRefreshToken {
  token: string
  family: string
  /** Seconds until it expires. */
  expiresIn: number
  claims: GatehouseClaims
}

/** The body of a successful login or refresh; `refreshToken` only when refresh is on. */
export function tokenResponse (auth: ResolvedAuth, token: string, claims: GatehouseClaims, refresh?: IssuedRefreshToken) {
  return {
    token,
    tokenType: 'Bearer',
    expiresIn: auth.expiresInSeconds,
    claims,
    ...(refresh === undefined ? {} : { refreshToken: refresh.token, refreshExpiresIn: refresh.expiresIn })
  }
}
