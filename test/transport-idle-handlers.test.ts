import t from 'tap'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Dispatcher } from 'undici'
import { rawUpstream } from './helpers/faulty-upstream.js'
import { signal, within } from './helpers/wait.js'
import { IdlePool } from '../lib/transport/idle.js'

const require = createRequire(import.meta.url)
const STALLING_HEAD = 'HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 100\r\n\r\nhello'

/** An IdlePool that records which handler interface each dispatch came with. */
class RecordingPool extends IdlePool {
  readonly interfaces: string[] = []
  override dispatch (opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.interfaces.push(typeof handler.onRequestStart === 'function' ? 'new' : typeof handler.onHeaders === 'function' ? 'legacy' : 'unknown')
    return super.dispatch(opts, handler)
  }
}

t.test('the undici of the lock file is the one installed, and its request() hands IdlePool the older interface', async (t) => {
  const lock = JSON.parse(readFileSync(new URL('../package-lock.json', import.meta.url), 'utf8')) as { packages: Record<string, { version: string }> }
  const installed = (require('undici/package.json') as { version: string }).version
  t.equal(installed, lock.packages['node_modules/undici']?.version, 'undici as locked: re-check idle.ts when it changes')
  const upstream = await rawUpstream(t, (socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok'))
  const pool = new RecordingPool(upstream.url, { bodyTimeout: 0 }, 1000, 0)
  t.teardown(() => pool.destroy())
  const res = await pool.request({ path: '/', method: 'GET' })
  t.equal(await res.body.text(), 'ok')
  t.same(pool.interfaces, ['legacy'])
})

for (const kind of ['legacy', 'new'] as const) {
  t.test(`a ${kind}-interface handler gets the body-idle timeout`, async (t) => {
    const upstream = await rawUpstream(t, (socket) => socket.write(STALLING_HEAD))
    const pool = new IdlePool(upstream.url, { bodyTimeout: 0 }, 200, 0)
    t.teardown(() => pool.destroy())
    const seen: string[] = []
    const failed = new Promise<Error>((resolve) => {
      const handler: Dispatcher.DispatchHandler = kind === 'new'
        ? {
            onRequestStart: () => {},
            onResponseStart: (_controller, status) => { seen.push(`status ${status}`) },
            onResponseData: (_controller, chunk) => { seen.push(chunk.toString()) },
            onResponseEnd: () => { seen.push('end') },
            onResponseError: (_controller, err) => resolve(err)
          }
        : {
            onConnect: () => {},
            onHeaders: (status) => { seen.push(`status ${status}`); return true },
            onData: (chunk) => { seen.push(chunk.toString()); return true },
            onComplete: () => { seen.push('end') },
            onError: (err) => resolve(err)
          }
      pool.dispatch({ origin: upstream.url, path: '/', method: 'GET' }, handler)
    })
    const err = await within(failed, { message: 'the stalled body timed out', timeout: 3000 })
    t.equal((err as { code?: string }).code, 'UND_ERR_BODY_TIMEOUT')
    t.same(seen, ['status 200', 'hello'])
  })
}

t.test('a new-interface handler that pauses (back-pressure) is not timed out while paused; resumed, it is', async (t) => {
  const upstream = await rawUpstream(t, (socket) => socket.write(STALLING_HEAD))
  const pool = new IdlePool(upstream.url, { bodyTimeout: 0 }, 100, 0)
  t.teardown(() => pool.destroy())
  let controller: Dispatcher.DispatchController | undefined
  const paused = signal()
  const failed = signal<Error>()
  pool.dispatch({ origin: upstream.url, path: '/', method: 'GET' }, {
    onRequestStart: () => {},
    onResponseStart: () => {},
    onResponseData: (c) => {
      if (controller !== undefined) return
      controller = c
      c.pause()
      paused.resolve()
    },
    onResponseEnd: () => {},
    onResponseError: (_c, err) => failed.resolve(err)
  })
  await within(paused.promise, { message: 'the first chunk arrived' })
  let early: Error | undefined
  void failed.promise.then((err) => { early = err })
  // Several idle periods pass while paused: waiting for nothing to happen.
  await new Promise((resolve) => setTimeout(resolve, 350))
  t.equal(early, undefined, 'not aborted while the reader is full')
  t.equal(controller?.aborted, false)
  controller?.resume()
  const err = await within(failed.promise, { message: 'the idle timeout after resuming', timeout: 3000 })
  t.equal((err as { code?: string }).code, 'UND_ERR_BODY_TIMEOUT')
})
