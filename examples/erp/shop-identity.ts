import type { FastifyInstance } from 'fastify'

/*
 * Which shop called a demo service. The gateway verified the shop's token and
 * names it in `X-Gatehouse-User` (and `X-Gatehouse-Role`), after dropping any
 * copy the caller sent, so a service that only the gateway can reach (its API
 * key) may believe it. Without the header the caller is whoever holds the key
 * (an operator's script), never some shop: no shop is assumed.
 */

/** The header the gateway's `identity` option fills with the token's `sub`. */
export const SHOP_HEADER = 'x-gatehouse-user'

/**
 * Logs the calling shop of every request that passed the key check, and
 * refuses one whose path names another shop than the gateway vouches for
 * (the gateway's own rule already prevents it: this is the second lock).
 * Register after the key check.
 */
export function shopIdentity (app: FastifyInstance): void {
  app.addHook('onRequest', async (request, reply) => {
    const header = request.headers[SHOP_HEADER]
    // Shop ids are plain ASCII, which the gateway sends as is (it percent-encodes anything else).
    const shop = typeof header === 'string' ? header : undefined
    if (shop === undefined) {
      request.log.info({ url: request.url }, 'called without a shop identity (API key holder)')
      return
    }
    request.log.info({ shop, url: request.url }, 'called by shop')
    const { shopId } = request.params as { shopId?: string }
    if (shopId !== undefined && shopId !== shop) {
      return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'Not this shop\'s data' })
    }
  })
}
