import { createHmac } from 'node:crypto'

function base64url (value: string | Buffer): string {
  return Buffer.from(value).toString('base64url')
}

/**
 * An HS256 JWT signed with node:crypto, so the runner depends on neither
 * contender's JWT library. `expiresInSec` may be negative for an expired one.
 */
export function signHs256 (claims: Record<string, unknown>, secret: string, expiresInSec = 3600): string {
  const now = Math.floor(Date.now() / 1000)
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
  const payload = base64url(JSON.stringify({ ...claims, iat: now, exp: now + expiresInSec }))
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url')
  return `${header}.${payload}.${signature}`
}
