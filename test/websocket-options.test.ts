import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import gatehouse from '../lib/index.js'
import type { GatehouseOptions } from '../lib/index.js'
import { SECRET } from './helpers/app.js'

// Nothing listens here; registering a target never connects to it.
const UPSTREAM = 'http://127.0.0.1:9'

function withWebsocket (websocket: unknown): GatehouseOptions {
  return {
    auth: { secret: SECRET, login: false },
    targets: [{ prefix: '/live', upstream: UPSTREAM, websocket: websocket as GatehouseOptions['targets'][number]['websocket'] }]
  }
}

async function register (t: Test, options: GatehouseOptions, before?: (app: ReturnType<typeof Fastify>) => Promise<void>): Promise<(Error & { code?: string }) | undefined> {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close().catch(() => {}))
  try {
    if (before !== undefined) await before(app)
    await app.register(gatehouse, options)
    await app.ready()
  } catch (err) {
    return err as Error & { code?: string }
  }
  return undefined
}

t.test('valid websocket options register', async (t) => {
  t.equal(await register(t, withWebsocket(true)), undefined)
  t.equal(await register(t, withWebsocket(false)), undefined)
  t.equal(await register(t, withWebsocket({
    token: { protocolPrefix: 'jwt.', queryParameter: 'token' },
    origins: ['https://shop.example', 'http://localhost:5173'],
    maxPayload: 4096,
    pingInterval: 0,
    idleTimeout: 60_000,
    highWaterMark: 1,
    onClientMessage: () => undefined,
    onUpstreamMessage: async () => null
  })), undefined)
})

const invalid: Array<[string, unknown, string]> = [
  ['a string', 'yes', 'targets[0].websocket'],
  ['an array', [], 'targets[0].websocket'],
  ['a token that is not an object', { token: 'bearer.' }, 'targets[0].websocket.token'],
  ['an empty protocol prefix', { token: { protocolPrefix: '' } }, 'targets[0].websocket.token.protocolPrefix'],
  ['a protocol prefix with a separator', { token: { protocolPrefix: 'bearer ' } }, 'targets[0].websocket.token.protocolPrefix'],
  ['a query parameter with "="', { token: { queryParameter: 'a=b' } }, 'targets[0].websocket.token.queryParameter'],
  ['origins that are not an array', { origins: 'https://shop.example' }, 'targets[0].websocket.origins'],
  ['no origins', { origins: [] }, 'targets[0].websocket.origins'],
  ['an origin with a path', { origins: ['https://shop.example/'] }, 'targets[0].websocket.origins[0]'],
  ['an origin that is not a URL', { origins: ['shop.example'] }, 'targets[0].websocket.origins[0]'],
  ['a zero maxPayload', { maxPayload: 0 }, 'targets[0].websocket.maxPayload'],
  ['a fractional highWaterMark', { highWaterMark: 1.5 }, 'targets[0].websocket.highWaterMark'],
  ['a negative pingInterval', { pingInterval: -1 }, 'targets[0].websocket.pingInterval'],
  ['an idleTimeout past the timer range', { idleTimeout: 2 ** 31 }, 'targets[0].websocket.idleTimeout'],
  ['a hook that is not a function', { onClientMessage: 'upper' }, 'targets[0].websocket.onClientMessage'],
  ['an upstream hook that is not a function', { onUpstreamMessage: {} }, 'targets[0].websocket.onUpstreamMessage']
]

for (const [what, value, option] of invalid) {
  t.test(`websocket: ${what} fails at register`, async (t) => {
    const err = await register(t, withWebsocket(value))
    t.equal(err?.code, 'FST_GATEHOUSE_INVALID_OPTION')
    t.match(err?.message ?? '', `"${option}"`)
  })
}

t.test('an app that registered @fastify/websocket itself is told so', async (t) => {
  const err = await register(t, withWebsocket(true), async (app) => { await app.register(fastifyWebsocket) })
  t.equal(err?.code, 'FST_GATEHOUSE_INVALID_OPTION')
  t.match(err?.message ?? '', /@fastify\/websocket/)
})

t.test('without a websocket target, @fastify/websocket is not registered', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(gatehouse, withWebsocket(undefined))
  await app.register(fastifyWebsocket)
  await app.ready()
  t.ok(app.hasDecorator('websocketServer'), 'the host may register its own')
})
