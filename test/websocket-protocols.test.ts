import t from 'tap'
import type { Test } from 'tap'
import { Writable } from 'node:stream'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { refusedUpgrade, startWsUpstream, wsUrl } from './helpers/ws-upstream.js'
import type { WsUpstreamOptions } from './helpers/ws-upstream.js'

interface LogLine { level: number, code?: string, msg?: string }

/** A gateway whose log lines are kept, with one WebSocket target. */
async function gateway (t: Test, opts: WsUpstreamOptions): Promise<{ url: string, headers: Record<string, string>, logs: LogLine[] }> {
  const upstream = await startWsUpstream(opts)
  t.teardown(upstream.close)
  const logs: LogLine[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      logs.push(JSON.parse(chunk.toString('utf8')) as LogLine)
      done()
    }
  })
  const app = await buildApp(t, {
    targets: [{ prefix: '/live', upstream: upstream.url, websocket: true }],
    server: { logger: { level: 'info', stream } }
  })
  const base = await listen(app)
  return { url: wsUrl(base, '/live'), headers: bearer(tokenFor(app)), logs }
}

for (const [name, choice] of [['selects none', false], ['selects one not offered', 'other.v9']] as const) {
  t.test(`an upstream that ${name} of the offered subprotocols: 502 PROTOCOL_MISMATCH at warn`, async (t) => {
    const { url, headers, logs } = await gateway(t, { handleProtocols: () => choice })
    const refusal = await refusedUpgrade(url, ['chat.v1', 'chat.v2'], { headers })
    t.equal(refusal.statusCode, 502)
    t.equal(refusal.body.code, 'FST_GATEHOUSE_WEBSOCKET_PROTOCOL_MISMATCH')
    t.match(refusal.body.message ?? '', /none of the offered WebSocket subprotocols/)
    const line = logs.find((l) => l.code === 'FST_GATEHOUSE_WEBSOCKET_PROTOCOL_MISMATCH')
    t.equal(line?.level, 40, 'logged at warn')
    t.notOk(logs.some((l) => l.level >= 50), 'nothing at error')
  })
}
