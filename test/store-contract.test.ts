import t from 'tap'
import type { Test } from 'tap'
import { MemoryStore, redisStore } from '../lib/index.js'
import type { GatehouseStore } from '../lib/index.js'
import { redisSkip, startRedis } from './helpers/redis.js'
import { waitFor } from './helpers/wait.js'

/*
 * The GatehouseStore contract, one suite run against every store: the
 * in-memory one and Redis. Two stores of one "fleet" (`a` and `b`) share
 * state: for Redis two clients on one server, for memory the same instance.
 */

interface Fleet {
  a: GatehouseStore
  b: GatehouseStore
}

let unique = 0
/** A fresh key per case, so that cases never see each other's state. */
function key (name: string): string {
  return `gatehouse:contract:${name}:${++unique}`
}

function contract (t: Test, makeFleet: (t: Test) => Promise<Fleet>): void {
  t.test('get of an absent key is undefined; set then get; set replaces', async (t) => {
    const { a, b } = await makeFleet(t)
    const k = key('set')
    t.equal(await a.get(k), undefined)
    await a.set(k, 'one', 60_000)
    t.equal(await b.get(k), 'one', 'seen by the other instance')
    await b.set(k, 'two', 60_000)
    t.equal(await a.get(k), 'two')
  })

  t.test('set entries expire after their TTL', async (t) => {
    const { a, b } = await makeFleet(t)
    const k = key('ttl')
    const start = Date.now()
    await a.set(k, 'v', 150)
    t.equal(await b.get(k), 'v')
    await waitFor(async () => await b.get(k) === undefined, { message: 'the entry expired', timeout: 5000 })
    t.ok(Date.now() - start >= 140, 'not before its TTL')
  })

  t.test('add creates only an absent key and keeps the first value', async (t) => {
    const { a, b } = await makeFleet(t)
    const k = key('add')
    t.equal(await a.add(k, 'first', 60_000), true)
    t.equal(await b.add(k, 'second', 60_000), false)
    t.equal(await a.get(k), 'first')
    await b.delete(k)
    t.equal(await b.add(k, 'third', 60_000), true, 'absent again after delete')
    t.equal(await a.get(k), 'third')
  })

  t.test('add succeeds again once the key expired', async (t) => {
    const { a, b } = await makeFleet(t)
    const k = key('add-ttl')
    t.equal(await a.add(k, 'first', 100), true)
    await waitFor(async () => await b.get(k) === undefined, { message: 'the entry expired', timeout: 5000 })
    t.equal(await b.add(k, 'second', 60_000), true)
  })

  t.test('add races: of 100 concurrent callers on two instances exactly one wins', async (t) => {
    const { a, b } = await makeFleet(t)
    const k = key('race')
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? a : b).add(k, String(i), 60_000)))
    t.equal(results.filter(Boolean).length, 1, 'one winner')
    const winner = results.indexOf(true)
    t.equal(await a.get(k), String(winner), 'its value stands')
  })

  t.test('increment counts from 0, atomically, and takes negative deltas', async (t) => {
    const { a, b } = await makeFleet(t)
    const k = key('count')
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? a : b).increment(k, 1, 60_000)))
    t.strictSame([...results].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i + 1), 'each caller saw its own count')
    t.equal(await a.increment(k, -1, 60_000), 99)
    t.equal(await b.get(k), '99', 'readable with get')
    t.equal(await a.increment(key('negative'), -1, 60_000), -1, 'an absent key starts at 0')
  })

  t.test('increment sets the TTL at creation and later increments do not extend it', async (t) => {
    const { a, b } = await makeFleet(t)
    const k = key('window')
    const start = Date.now()
    await a.increment(k, 1, 300)
    // Later increments with a long TTL, well within the first window.
    t.equal(await b.increment(k, 1, 60_000), 2)
    t.equal(await a.increment(k, 1, 60_000), 3)
    await waitFor(async () => await a.get(k) === undefined, { message: 'the counter expired at its first TTL', timeout: 5000 })
    t.ok(Date.now() - start >= 290, 'not before its TTL')
    t.equal(await b.increment(k, 1, 60_000), 1, 'a new window starts at 1')
  })

  t.test('delete removes a key; an absent key is fine', async (t) => {
    const { a, b } = await makeFleet(t)
    const k = key('delete')
    await a.set(k, 'v', 60_000)
    await b.delete(k)
    t.equal(await a.get(k), undefined)
    await a.delete(k)
    await a.delete(key('never'))
  })

  t.test('values are strings kept byte for byte', async (t) => {
    const { a, b } = await makeFleet(t)
    const k = key('json')
    const value = JSON.stringify({ claims: { sub: 'ünï', role: 'a b' }, expiresAt: 1 })
    await a.set(k, value, 60_000)
    t.equal(await b.get(k), value)
  })
}

t.test('MemoryStore', async (t) => {
  contract(t, async () => {
    const store = new MemoryStore()
    return { a: store, b: store }
  })
})

t.test('redisStore', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  contract(t, async () => ({
    a: redisStore({ client: redis.client() }),
    b: redisStore({ client: redis.client() })
  }))

  t.test('the prefix goes before every key and separates two gateways', async (t) => {
    const raw = redis.client()
    const erp = redisStore({ client: redis.client(), prefix: 'erp:' })
    const other = redisStore({ client: redis.client(), prefix: 'other:' })
    await erp.set('gatehouse:family:x', '1', 60_000)
    t.equal(await raw.get('erp:gatehouse:family:x'), '1')
    t.equal(await other.get('gatehouse:family:x'), undefined)
    await erp.increment('gatehouse:throttle:user:u', 1, 60_000)
    t.equal(await raw.get('erp:gatehouse:throttle:user:u'), '1')
    t.ok(await raw.pttl('erp:gatehouse:throttle:user:u') > 0, 'the counter has a TTL')
    t.equal(await erp.add('gatehouse:refresh-used:h', '5', 60_000), true)
    t.equal(await raw.get('erp:gatehouse:refresh-used:h'), '5')
    await erp.delete('gatehouse:family:x')
    t.equal(await raw.exists('erp:gatehouse:family:x'), 0)
  })

  t.test('increment loads its script again after SCRIPT FLUSH', async (t) => {
    const raw = redis.client()
    const store = redisStore({ client: redis.client() })
    const k = key('flush')
    t.equal(await store.increment(k, 1, 60_000), 1)
    await raw.script('FLUSH')
    t.equal(await store.increment(k, 1, 60_000), 2)
  })

  t.test('a lazyConnect client is connected by the first call', async (t) => {
    const client = redis.client({ lazyConnect: true })
    const store = redisStore({ client })
    t.equal(client.status, 'wait')
    await store.set(key('lazy'), 'v', 60_000)
    t.equal(client.status, 'ready')
  })
})
