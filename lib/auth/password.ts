import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto'
import type { CredentialsVerifier, GatehouseClaims } from '../types.js'

/*
 * Password hashes are self-describing strings: scrypt$N$r$p$salt$hash, salt and
 * hash in base64url. The cost can be raised later without breaking old hashes.
 */
const PREFIX = 'scrypt'
const DEFAULT_COST = Object.freeze({ N: 16384, r: 8, p: 1 })
const SALT_BYTES = 16
const KEY_BYTES = 32

export interface ScryptCost { N: number, r: number, p: number }

function derive (password: string, salt: Buffer, cost: ScryptCost): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // maxmem must cover 128 * N * r bytes, plus headroom.
    scrypt(password.normalize('NFC'), salt, KEY_BYTES, { ...cost, maxmem: 256 * cost.N * cost.r }, (err, key) => {
      /* c8 ignore next -- only on exhausted memory */
      if (err !== null) reject(err)
      else resolve(key)
    })
  })
}

/**
 * Hashes a password with scrypt and a random salt.
 * @example const passwordHash = await hashPassword('correct horse battery staple')
 */
export async function hashPassword (password: string, cost: ScryptCost = DEFAULT_COST): Promise<string> {
  if (typeof password !== 'string' || password.length === 0) throw new TypeError('password must be a non-empty string')
  const salt = randomBytes(SALT_BYTES)
  const key = await derive(password, salt, cost)
  return [PREFIX, cost.N, cost.r, cost.p, salt.toString('base64url'), key.toString('base64url')].join('$')
}

interface ParsedHash { cost: ScryptCost, salt: Buffer, key: Buffer }

function parseHash (hash: string): ParsedHash | null {
  const parts = hash.split('$')
  if (parts.length !== 6 || parts[0] !== PREFIX) return null
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number]
  const salt = Buffer.from(parts[4] as string, 'base64url')
  const key = Buffer.from(parts[5] as string, 'base64url')
  const powerOfTwo = (N & (N - 1)) === 0
  if (!Number.isInteger(N) || !powerOfTwo || N < 2 || N > 2 ** 20 || !Number.isInteger(r) || r < 1 || r > 32 ||
      !Number.isInteger(p) || p < 1 || p > 16 || salt.length < 8 || key.length < 16) return null
  return { cost: { N, r, p }, salt, key }
}

/** True when the string is a hash `hashPassword` can verify. */
export function isPasswordHash (hash: unknown): hash is string {
  return typeof hash === 'string' && parseHash(hash) !== null
}

/** Compares a password with a hash from `hashPassword`, in constant time. */
export async function verifyPassword (password: string, hash: string): Promise<boolean> {
  const parsed = parseHash(hash)
  if (parsed === null) return false
  const key = await derive(password, parsed.salt, parsed.cost)
  return key.length === parsed.key.length && timingSafeEqual(key, parsed.key)
}

export interface StaticUser {
  /** A hash from `hashPassword` (or `npx gatehouse-hash-password`). Never a plain password. */
  passwordHash: string
  /** Claims put in the token; `sub` defaults to the user name. */
  claims?: GatehouseClaims
}

/**
 * A credentials verifier over a fixed user table. An unknown user costs the same
 * scrypt work as a known one, so timing does not tell which names exist.
 *
 * @example
 * login: { verify: staticUsers({ WAL001: { passwordHash: 'scrypt$16384$8$1$...', claims: { sub: 'WAL001', role: 'shop' } } }) }
 */
export function staticUsers (users: Record<string, StaticUser>): CredentialsVerifier {
  const table = new Map<string, StaticUser>()
  let cost: ScryptCost | undefined
  let first = ''
  for (const [name, user] of Object.entries(users)) {
    const parsed = parseHash(user?.passwordHash)
    if (parsed === null) throw new TypeError(`staticUsers: user "${name}" needs a passwordHash made by hashPassword()`)
    // Mixed costs would let response times tell which names exist (and which
    // hash they have): one cost for the whole table, rehash the others.
    if (cost === undefined) {
      cost = parsed.cost
      first = name
    } else if (cost.N !== parsed.cost.N || cost.r !== parsed.cost.r || cost.p !== parsed.cost.p) {
      throw new TypeError(`staticUsers: user "${name}" has scrypt cost N=${parsed.cost.N} r=${parsed.cost.r} p=${parsed.cost.p}, ` +
        `user "${first}" N=${cost.N} r=${cost.r} p=${cost.p}: hash every password with the same cost`)
    }
    table.set(name, user)
  }
  // Unknown users are checked against a hash of the table's cost.
  const decoy = hashPassword(randomBytes(16).toString('hex'), cost ?? DEFAULT_COST)

  return async function verifyStaticUser ({ username, password }) {
    const user = table.get(username)
    const ok = await verifyPassword(password, user?.passwordHash ?? await decoy)
    if (user === undefined || !ok) return null
    // The table is typed by the user's claims augmentation; only a user
    // without `claims` can lack a claim it requires, and `sub` is defaulted.
    return { sub: username, ...user.claims } as GatehouseClaims
  }
}
