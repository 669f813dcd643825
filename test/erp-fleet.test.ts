import t from 'tap'
import { buildGateway } from '../examples/erp/gateway.js'
import { buildInventoryService } from '../examples/erp/inventory-service.js'
import { buildTransactionsService } from '../examples/erp/transactions-service.js'
import { get, post } from './helpers/fleet.js'
import { INVENTORY_KEY, JWT_SECRET, shopToken, TRANSACTIONS_KEY } from './helpers/erp.js'
import { redisSkip, startRedis } from './helpers/redis.js'

/*
 * The ERP example run as its README shows: two gateways on two ports with
 * REDIS_URL pointing at one Redis, in front of the same services.
 */

t.test('two ERP gateways on one Redis: a logout on one is refused on the other', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const transactionsService = buildTransactionsService({ apiKey: TRANSACTIONS_KEY })
  const inventoryService = buildInventoryService({ apiKey: INVENTORY_KEY })
  const transactionsUrl = await transactionsService.listen({ host: '127.0.0.1', port: 0 })
  const inventoryUrl = await inventoryService.listen({ host: '127.0.0.1', port: 0 })
  const seen: string[] = []
  transactionsService.server.on('request', (req: { url?: string }) => seen.push(req.url ?? ''))
  const gateways = await Promise.all([1, 2].map(() => buildGateway({
    transactionsUrl, inventoryUrl, transactionsApiKey: TRANSACTIONS_KEY, inventoryApiKey: INVENTORY_KEY, jwtSecret: JWT_SECRET, redisUrl: redis.url
  })))
  t.teardown(async () => {
    await Promise.all(gateways.map((gateway) => gateway.close()))
    await Promise.all([transactionsService.close(), inventoryService.close()])
  })
  const [one, two] = await Promise.all(gateways.map((gateway) => gateway.listen({ host: '127.0.0.1', port: 0 })))

  const token = await shopToken(one as string, 'WAL001')
  t.equal((await get(`${two as string}/shops/WAL001/transactions`, token)).status, 200, 'the token works on the other gateway')
  t.equal((await post(`${one as string}/logout`, undefined, { authorization: `Bearer ${token}` })).status, 204)
  const refused = await get(`${two as string}/shops/WAL001/transactions`, token)
  t.equal(refused.status, 401)
  t.equal(refused.body.code, 'FST_GATEHOUSE_TOKEN_REVOKED', 'refused on the other gateway')
  t.strictSame(seen, ['/shops/WAL001/transactions'], 'the service saw only the request before the logout')
})
