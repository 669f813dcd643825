import t from 'tap'
import { redisStore, DEFAULT_REDIS_COMMAND_TIMEOUT } from '../lib/index.js'
import type { RedisStoreClient } from '../lib/index.js'
import { ready, redisSkip, silentServer, startRedis } from './helpers/redis.js'
import { Redis } from 'ioredis'

/*
 * redisStore on its own: options, and the bounded waits when Redis is gone,
 * hung or slow. Every failure is a StoreUnavailableError (503 at the gateway)
 * within about `commandTimeout`, and no command is left queued to run later.
 */

const STORE_UNAVAILABLE = { code: 'FST_GATEHOUSE_STORE_UNAVAILABLE', statusCode: 503 }
// Slack for a loaded machine on top of the command timeout.
const SLACK = 700

async function elapsed<T> (call: () => Promise<T>): Promise<[PromiseSettledResult<T>, number]> {
  const start = Date.now()
  const [result] = await Promise.allSettled([call()])
  return [result as PromiseSettledResult<T>, Date.now() - start]
}

t.test('options are checked', async (t) => {
  const client = new Redis({ lazyConnect: true })
  t.teardown(() => client.disconnect())
  const invalid = { code: 'FST_GATEHOUSE_INVALID_OPTION' }
  t.throws(() => redisStore(undefined as unknown as { client: RedisStoreClient }), invalid)
  t.throws(() => redisStore({ client: {} as RedisStoreClient }), { ...invalid, message: /redisStore\.client/ })
  t.throws(() => redisStore({ client, prefix: 'has space' }), { ...invalid, message: /redisStore\.prefix/ })
  t.throws(() => redisStore({ client, prefix: 1 as unknown as string }), { ...invalid, message: /redisStore\.prefix/ })
  t.throws(() => redisStore({ client, commandTimeout: 0 }), { ...invalid, message: /redisStore\.commandTimeout/ })
  t.throws(() => redisStore({ client, commandTimeout: 1.5 }), { ...invalid, message: /redisStore\.commandTimeout/ })
  t.ok(redisStore({ client, prefix: '{erp}:', commandTimeout: 1000 }))
  t.equal(DEFAULT_REDIS_COMMAND_TIMEOUT, 300)
  t.equal(client.status, 'wait', 'making a store neither connects nor closes the client')
})

t.test('a silent server (accepts, never answers): every call fails within the timeout', async (t) => {
  const silent = await silentServer(t)
  for (const enableReadyCheck of [true, false]) {
    const client = new Redis({ port: silent.port, host: '127.0.0.1', enableReadyCheck })
    client.on('error', () => {})
    t.teardown(() => client.disconnect())
    const store = redisStore({ client, commandTimeout: 200 })
    const calls: Array<() => Promise<unknown>> = [
      () => store.get('gatehouse:family:x'),
      () => store.set('gatehouse:jti:x', '1', 1000),
      () => store.add('gatehouse:refresh-used:x', '1', 1000),
      () => store.increment('gatehouse:throttle:user:x', 1, 1000),
      () => store.delete('gatehouse:family:x')
    ]
    for (const call of calls) {
      const [result, ms] = await elapsed(call)
      t.equal(result.status, 'rejected', `ready check ${enableReadyCheck}: rejected`)
      if (result.status === 'rejected') t.match(result.reason, STORE_UNAVAILABLE)
      t.ok(ms < 200 + SLACK, `bounded (${ms} ms)`)
    }
    t.ok(silent.connections() > 0, 'the client did reach the server')
  }
})

t.test('Redis killed: calls fail fast, none runs later, and the store recovers after a restart', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const client = redis.client()
  const raw = redis.client()
  await Promise.all([ready(client), ready(raw)])
  const store = redisStore({ client, commandTimeout: 250 })
  await store.set('gatehouse:family:before', '1', 60_000)

  await redis.kill()
  const [get, ms] = await elapsed(() => store.get('gatehouse:family:before'))
  t.equal(get.status, 'rejected')
  if (get.status === 'rejected') t.match(get.reason, STORE_UNAVAILABLE)
  t.ok(ms < 250 + SLACK, `bounded (${ms} ms)`)
  // Writes refused during the outage must not be replayed by ioredis's offline queue on reconnect.
  const writes = await Promise.allSettled([
    store.add('gatehouse:refresh-used:late', '1', 60_000),
    store.set('gatehouse:jti:late', '1', 60_000),
    store.increment('gatehouse:throttle:user:late', 1, 60_000)
  ])
  t.strictSame(writes.map((w) => w.status), ['rejected', 'rejected', 'rejected'])

  await redis.restart()
  await Promise.all([ready(client), ready(raw)])
  t.equal(await store.get('gatehouse:family:before'), undefined, 'a server without persistence comes back empty')
  t.equal(await raw.exists('gatehouse:refresh-used:late', 'gatehouse:jti:late', 'gatehouse:throttle:user:late'), 0,
    'no refused command ran after the reconnect')
  t.equal(await store.add('gatehouse:refresh-used:late', '2', 60_000), true, 'working again, script loaded again')
  t.equal(await store.increment('gatehouse:throttle:user:late', 1, 60_000), 1)
})

t.test('a slow Redis: a command that outlives the timeout fails, the next ones work', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const client = redis.client()
  const admin = redis.client()
  await Promise.all([ready(client), ready(admin)])
  const store = redisStore({ client, commandTimeout: 150 })
  await admin.client('PAUSE', 600, 'ALL')
  const [result, ms] = await elapsed(() => store.get('gatehouse:family:x'))
  t.equal(result.status, 'rejected')
  if (result.status === 'rejected') t.match(result.reason, STORE_UNAVAILABLE)
  t.ok(ms < 150 + SLACK, `bounded (${ms} ms)`)
  await admin.client('UNPAUSE')
  t.equal(await store.add('gatehouse:refresh-used:y', '1', 60_000), true)
})

t.test('a client its owner closed fails at once', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const client = redis.client()
  await ready(client)
  const store = redisStore({ client })
  await client.quit()
  const [result, ms] = await elapsed(() => store.get('gatehouse:family:x'))
  t.equal(result.status, 'rejected')
  if (result.status === 'rejected') t.match(result.reason, STORE_UNAVAILABLE)
  t.ok(ms < 100, `immediately (${ms} ms)`)
})
