import t from 'tap'
import { request as httpRequest } from 'node:http'
import type { IncomingHttpHeaders } from 'node:http'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { rawUpstream } from './helpers/faulty-upstream.js'
import { within } from './helpers/wait.js'
import { DEFAULT_BUFFER_RESPONSES } from '../lib/transport/options.js'

// A declared length the gateway streams rather than reads whole.
const STREAMED_LENGTH = DEFAULT_BUFFER_RESPONSES + 1
const UPSTREAM_HEADERS = 'content-type: application/json\r\ncontent-encoding: gzip\r\nset-cookie: sid=upstream; Path=/\r\netag: "v1"\r\nx-upstream: yes\r\n'

interface Outcome { status: number, headers: IncomingHttpHeaders, body: string }

function get (url: string, headers: Record<string, string>): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers: { ...headers, 'accept-encoding': 'identity' }, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

const FRAMINGS = {
  'content-length': `content-length: ${STREAMED_LENGTH}\r\n`,
  chunked: 'transfer-encoding: chunked\r\n'
}

for (const [framing, header] of Object.entries(FRAMINGS)) {
  for (const failure of ['reset', 'stall'] as const) {
    t.test(`${framing} body, upstream ${failure}s right after the headers: a clean ${failure === 'reset' ? 502 : 504}, none of the upstream's headers`, async (t) => {
      const upstream = await rawUpstream(t, (socket) => {
        socket.write(`HTTP/1.1 200 OK\r\n${UPSTREAM_HEADERS}${header}\r\n`, () => {
          if (failure === 'reset') socket.resetAndDestroy()
        })
      })
      const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, timeouts: { idle: 200 } }] })
      const base = await listen(app)
      const res = await within(get(`${base}/api/x`, bearer(tokenFor(app))), { message: 'the gateway answered' })
      const expected = failure === 'reset'
        ? { status: 502, code: 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE' }
        : { status: 504, code: 'FST_GATEHOUSE_UPSTREAM_TIMEOUT' }
      t.equal(res.status, expected.status)
      t.match(res.headers['content-type'], /^application\/json/)
      t.same(JSON.parse(res.body), { statusCode: expected.status, code: expected.code, error: res.status === 502 ? 'Bad Gateway' : 'Gateway Timeout', message: JSON.parse(res.body).message })
      for (const name of ['content-encoding', 'set-cookie', 'etag', 'x-upstream']) t.equal(res.headers[name], undefined, `no upstream ${name}`)
      t.equal(upstream.connections(), 1)
    })
  }
}
