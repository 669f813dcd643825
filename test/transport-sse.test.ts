import t from 'tap'
import { request as httpRequest } from 'node:http'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'

t.test('text/event-stream flows event by event, uncompressed, with no idle timeout by default', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    let n = 0
    const timer = setInterval(() => {
      res.write(`data: event${n}\n\n`)
      if (++n === 3) {
        clearInterval(timer)
        res.end()
      }
    }, 250)
  })
  t.teardown(upstream.close)
  // Gaps of 250 ms exceed the 100 ms body-idle timeout: it must not apply to SSE.
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, timeouts: { idle: 100 } }] })
  const base = await listen(app)
  const arrivals: Array<{ at: number, data: string }> = []
  const started = Date.now()
  const result = await new Promise<{ complete: boolean, encoding?: string }>((resolve) => {
    httpRequest(`${base}/api/events`, { headers: { ...bearer(tokenFor(app)), accept: 'text/event-stream', 'accept-encoding': 'gzip, br' }, agent: false }, (res) => {
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => arrivals.push({ at: Date.now() - started, data: chunk }))
      res.on('end', () => resolve({ complete: res.complete, encoding: res.headers['content-encoding'] }))
      res.on('error', () => resolve({ complete: false }))
    }).end()
  })
  t.equal(result.complete, true)
  t.equal(result.encoding, undefined, 'not compressed')
  t.same(arrivals.map((a) => a.data), ['data: event0\n\n', 'data: event1\n\n', 'data: event2\n\n'], 'one chunk per event')
  t.ok((arrivals[1]?.at ?? 0) - (arrivals[0]?.at ?? 0) >= 150, 'events arrive as sent, not buffered')
})

t.test('eventStreamIdle cuts a silent event stream when configured', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: first\n\n')
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, transport: { eventStreamIdle: 150 } }] })
  const base = await listen(app)
  const complete = await new Promise<boolean>((resolve) => {
    httpRequest(`${base}/api/events`, { headers: bearer(tokenFor(app)), agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.complete))
      res.on('error', () => resolve(false))
      res.on('aborted', () => resolve(false))
    }).end()
  })
  t.equal(complete, false, 'cut after the event-stream idle timeout')
})
