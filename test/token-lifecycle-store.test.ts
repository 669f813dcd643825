import t from 'tap'
import { MemoryStore } from '../lib/index.js'

/*
 * The in-memory GatehouseStore: expiry, the atomic add/increment the
 * lifecycle relies on, and its bound.
 */

function clockedStore (maxEntries?: number): { store: MemoryStore, advance: (ms: number) => void } {
  let now = 1_000_000
  const store = new MemoryStore({ now: () => now, ...(maxEntries === undefined ? {} : { maxEntries }) })
  return { store, advance: (ms) => { now += ms } }
}

t.test('entries expire after their TTL', async (t) => {
  const { store, advance } = clockedStore()
  await store.set('k', 'v', 1000)
  t.equal(await store.get('k'), 'v')
  advance(999)
  t.equal(await store.get('k'), 'v', 'alive until the TTL')
  advance(1)
  t.equal(await store.get('k'), undefined, 'gone at the TTL')
  t.equal(store.size, 0, 'and dropped')
})

t.test('set replaces the value and the TTL; delete removes', async (t) => {
  const { store, advance } = clockedStore()
  await store.set('k', 'a', 100)
  await store.set('k', 'b', 1000)
  advance(500)
  t.equal(await store.get('k'), 'b')
  await store.delete('k')
  t.equal(await store.get('k'), undefined)
  await store.delete('never-there')
})

t.test('add only creates: one of concurrent adds wins, and an expired key can be added again', async (t) => {
  const { store, advance } = clockedStore()
  const results = await Promise.all(Array.from({ length: 5 }, (_, i) => store.add('once', String(i), 1000)))
  t.strictSame(results.filter(Boolean).length, 1)
  t.equal(await store.get('once'), String(results.indexOf(true)))
  advance(1000)
  t.equal(await store.add('once', 'again', 1000), true)
})

t.test('increment counts atomically in a window that later increments do not extend', async (t) => {
  const { store, advance } = clockedStore()
  const counts = await Promise.all(Array.from({ length: 10 }, () => store.increment('c', 1, 1000)))
  t.strictSame([...counts].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'each caller sees its own count')
  advance(900)
  t.equal(await store.increment('c', -1, 1000), 9)
  advance(100)
  t.equal(await store.get('c'), undefined, 'the window started at the first increment')
  t.equal(await store.increment('c', 1, 1000), 1, 'a new window')
})

t.test('the store is bounded: expired entries go first, then the oldest login counter', async (t) => {
  const { store, advance } = clockedStore(3)
  await store.set('short', '1', 10)
  await store.set('gatehouse:throttle:user:a', '1', 10_000)
  await store.set('gatehouse:throttle:user:b', '1', 10_000)
  advance(20)
  await store.set('gatehouse:throttle:user:c', '1', 10_000)
  t.equal(store.size, 3)
  t.equal(await store.get('gatehouse:throttle:user:a'), '1', 'the expired entry made room')
  await store.set('d', '1', 10_000)
  t.equal(store.size, 3)
  t.equal(await store.get('gatehouse:throttle:user:a'), undefined, 'then the oldest counter went')
  t.equal(await store.get('d'), '1')
})

t.test('clear empties the store; bad sizes are refused', async (t) => {
  const store = new MemoryStore()
  await store.set('k', 'v', 1000)
  store.clear()
  t.equal(await store.get('k'), undefined)
  t.throws(() => new MemoryStore({ maxEntries: 0 }), TypeError)
})
