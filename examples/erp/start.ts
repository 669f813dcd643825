import type { FastifyInstance } from 'fastify'
import {
  buildGateway, corsOriginsFromEnv, DEFAULT_INVENTORY_API_KEY, DEFAULT_TRANSACTIONS_API_KEY, jwtSecretFromEnv, portFromEnv, redisUrlFromEnv
} from './gateway.js'
import { buildInventoryService } from './inventory-service.js'
import { buildTransactionsService } from './transactions-service.js'

/*
 * `npm start`: both demo services and the gateway in one process, all on
 * 127.0.0.1. The gateway logs each request; the services log which shop called them.
 */
const HOST = '127.0.0.1'

async function main (): Promise<void> {
  const transactionsApiKey = process.env.TRANSACTIONS_API_KEY ?? DEFAULT_TRANSACTIONS_API_KEY
  const inventoryApiKey = process.env.INVENTORY_API_KEY ?? DEFAULT_INVENTORY_API_KEY
  const servers: FastifyInstance[] = []
  const closeAll = async (): Promise<void> => {
    // Gateway first, so no request is in flight to a closed service.
    await Promise.allSettled(servers.reverse().map((server) => server.close()))
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => { closeAll().then(() => process.exit(0), () => process.exit(1)) })
  }

  try {
    const transactions = buildTransactionsService({ apiKey: transactionsApiKey, logger: { level: 'info' } })
    servers.push(transactions)
    const transactionsUrl = await transactions.listen({ host: HOST, port: portFromEnv('TRANSACTIONS_PORT', 8001) })

    const inventory = buildInventoryService({ apiKey: inventoryApiKey, logger: { level: 'info' } })
    servers.push(inventory)
    const inventoryUrl = await inventory.listen({ host: HOST, port: portFromEnv('INVENTORY_PORT', 8002) })

    const gateway = await buildGateway({
      transactionsUrl, inventoryUrl, transactionsApiKey, inventoryApiKey, jwtSecret: jwtSecretFromEnv(), corsOrigins: corsOriginsFromEnv(), redisUrl: redisUrlFromEnv(), logger: { level: 'info' }
    })
    servers.push(gateway)
    const gatewayUrl = await gateway.listen({ host: HOST, port: portFromEnv('PORT', 8080) })

    process.stdout.write([
      '',
      `transactions service  ${transactionsUrl}  (X-API-Key required)`,
      `inventory service     ${inventoryUrl}  (X-API-Key required)`,
      `gateway               ${gatewayUrl}`,
      '',
      'Log in (demo shops: WAL001/wal001, BBY001/bby001, ZAR001/zar001):',
      `  TOKEN=$(curl -s -X POST ${gatewayUrl}/login -H 'content-type: application/json' \\`,
      '    -d \'{"username":"WAL001","password":"wal001"}\' | sed -E \'s/.*"token":"([^"]+)".*/\\1/\')',
      "List WAL001's transactions:",
      `  curl -s --compressed ${gatewayUrl}/shops/WAL001/transactions -H "Authorization: Bearer $TOKEN"`,
      '',
      'More in examples/erp/README.md. Ctrl-C stops all three.',
      ''
    ].join('\n'))
  } catch (err) {
    await closeAll()
    throw err
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`npm start failed: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
