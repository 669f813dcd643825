import { staticUsers } from 'fastify-gatehouse'
import type { CredentialsVerifier, StaticUser } from 'fastify-gatehouse'

/*
 * The demo shops' logins. Demo credentials (documented, not secret):
 * WAL001/wal001, BBY001/bby001, ZAR001/zar001. Only scrypt hashes live here;
 * make your own with `npm run -s hash-password`.
 * Each token's `sub` is the shop id, which the gateway binds to `:shopId`.
 */
export const shopUsers: Readonly<Record<string, StaticUser>> = {
  WAL001: {
    passwordHash: 'scrypt$16384$8$1$LOTX9uEWZDy0uA0zm1Y_xA$emdYVJMSbMNKG4bQVSJWVngmK6-KiftSabkhfRQzhcA',
    claims: { sub: 'WAL001', role: 'shop' }
  },
  BBY001: {
    passwordHash: 'scrypt$16384$8$1$WM6LPp5YgN5ZGY3VOh9GoQ$QNIqZZ7_g4PnUj--PQ7LvHtvWvdOf2icuGzcwnxsBS4',
    claims: { sub: 'BBY001', role: 'shop' }
  },
  ZAR001: {
    passwordHash: 'scrypt$16384$8$1$7C38tgExn3FOxqyrD59LDA$PfYga-YSTLGfjNySpu3CoP8FFtchzTIc2xjf9vBPULY',
    claims: { sub: 'ZAR001', role: 'shop' }
  }
}

/** A login verifier over the shop users (constant work for unknown names). */
export function verifyShopUser (): CredentialsVerifier {
  return staticUsers(shopUsers)
}
