import { requireEnv, serveRunner } from './ipc.js'
import { BUILDERS, GATEWAYS } from './gateway-apps.js'
import type { GatewayName } from './gateway-apps.js'

/** Child entry: `gateway.ts <baseline|gatehouse>`, configured from the environment. */
async function main (): Promise<void> {
  const name = process.argv[2] as GatewayName
  if (!GATEWAYS.includes(name)) {
    console.error(`usage: gateway.ts <${GATEWAYS.join('|')}>`)
    process.exit(2)
  }
  const app = await BUILDERS[name]({
    upstream: requireEnv('BENCH_UPSTREAM'),
    jwtSecret: requireEnv('BENCH_JWT_SECRET'),
    apiKey: requireEnv('BENCH_API_KEY'),
    websocket: process.env.BENCH_WEBSOCKET === '1',
    redisUrl: process.env.BENCH_REDIS_URL === '' ? undefined : process.env.BENCH_REDIS_URL,
    gzipLevel: process.env.BENCH_GZIP_LEVEL === undefined || process.env.BENCH_GZIP_LEVEL === '' ? undefined : Number(process.env.BENCH_GZIP_LEVEL)
  })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  serveRunner(url, () => app.close())
}

await main()
