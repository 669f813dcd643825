import t from 'tap'
import type { Test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { Writable } from 'node:stream'
import { connect } from 'node:net'
import { createVerifier } from 'fast-jwt'
import { request } from 'undici'
import { bearer, buildApp, listen, SECRET, tokenFor } from './helpers/app.js'
import type { BuildOptions } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import { within } from './helpers/wait.js'
import { startWsUpstream } from './helpers/ws-upstream.js'
import { INVENTORY_KEY, JWT_SECRET, shopToken, TRANSACTIONS_KEY } from './helpers/erp.js'
import { buildGateway } from '../examples/erp/gateway.js'
import { buildInventoryService } from '../examples/erp/inventory-service.js'
import { buildTransactionsService } from '../examples/erp/transactions-service.js'
import { createMinter, headerSafe } from '../lib/proxy/identity.js'
import type { GatehouseContext } from '../lib/index.js'
import type { GatehouseOptions, TargetOptions } from '../lib/index.js'

/*
 * Issue 17, section 3: the verified caller's identity sent upstream, as
 * headers and as a token minted for the upstream. Real upstreams record what
 * they received; the caller's own copies and its token never arrive.
 */

const AUDIENCE = 'gatehouse'
const ALICE = { sub: 'alice', role: 'admin' }

function esKeys (): { privateKey: string, publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  return {
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string
  }
}

async function oneTarget (t: Test, target: Partial<TargetOptions<any>>, auth: BuildOptions['auth'] = {}) {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { auth, targets: [{ prefix: '/api', upstream: upstream.url, ...target }] })
  return { upstream, app }
}

t.test('chosen claims arrive as headers; missing, empty and non-scalar claims send none', async (t) => {
  const { upstream, app } = await oneTarget(t, {
    identity: {
      headers: {
        'X-User-Id': 'sub',
        'x-user-role': 'role',
        'x-shop-no': 'shopNo',
        'x-staff': 'staff',
        'x-missing': 'nickname',
        'x-groups': 'groups',
        'x-address': 'address',
        'x-empty': 'empty',
        'x-null': 'gone'
      }
    }
  })
  const token = tokenFor(app, { sub: 'alice', role: 'admin', shopNo: 42, staff: false, groups: ['a', 'b'], address: { city: 'X' }, empty: '', gone: null })
  const res = await app.inject({ url: '/api/x', headers: bearer(token) })
  t.equal(res.statusCode, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  t.equal(seen['x-user-id'], 'alice')
  t.equal(seen['x-user-role'], 'admin')
  t.equal(seen['x-shop-no'], '42')
  t.equal(seen['x-staff'], 'false')
  for (const name of ['x-missing', 'x-groups', 'x-address', 'x-empty', 'x-null']) t.notOk(name in seen, `${name} is absent`)
  t.notOk(JSON.stringify(seen).includes(token), 'the caller\'s token is not forwarded')
})

t.test('the caller\'s copies of identity headers are removed, with the claim and without it', async (t) => {
  let seenByMiddleware: unknown
  const { upstream, app } = await oneTarget(t, {
    identity: { headers: { 'x-user-id': 'sub', 'x-user-role': 'role' } },
    middleware: [{
      phase: 'clientEdge',
      handler: async (ctx, next) => {
        seenByMiddleware = { ...ctx.request.headers }
        await next()
      }
    }]
  })
  const spoof = { 'x-user-id': 'root', 'X-User-Role': 'superuser' }
  const withClaim = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app, ALICE)), ...spoof } })
  t.equal(withClaim.statusCode, 200)
  t.equal(upstream.seen[0]?.headers['x-user-id'], 'alice')
  t.equal(upstream.seen[0]?.headers['x-user-role'], 'admin')
  t.match(seenByMiddleware, { 'x-user-id': 'alice', 'x-user-role': 'admin' }, 'the first middleware already sees the identity headers')

  // A token without `role`: the caller's x-user-role must not fill the gap.
  const noRole = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app, { sub: 'bob' })), ...spoof } })
  t.equal(noRole.statusCode, 200)
  t.equal(upstream.seen[1]?.headers['x-user-id'], 'bob')
  t.notOk('x-user-role' in (upstream.seen[1]?.headers ?? {}), 'no role header reaches the upstream')
  t.notOk('x-user-role' in (seenByMiddleware as object), 'nor the middleware')
})

t.test('a middleware may read and replace an identity header', async (t) => {
  const { upstream, app } = await oneTarget(t, {
    identity: { headers: { 'x-user-id': 'sub' } },
    middleware: [async (ctx, next) => {
      ctx.request.headers['x-user-id'] = `shop-${String(ctx.request.headers['x-user-id'])}`
      await next()
    }]
  })
  await app.inject({ url: '/api/x', headers: bearer(tokenFor(app, ALICE)) })
  t.equal(upstream.seen[0]?.headers['x-user-id'], 'shop-alice')
})

t.test('claim values cannot inject headers: CR, LF and everything outside visible ASCII are percent-encoded', async (t) => {
  const { upstream, app } = await oneTarget(t, { identity: { headers: { 'x-user-id': 'sub', 'x-name': 'name' } } })
  const base = await listen(app)
  const cases = [
    ['alice\r\nx-admin: true', 'alice%0D%0Ax-admin:%20true'],
    ['bob\nx-admin: true', 'bob%0Ax-admin:%20true'],
    ['Zoë Ünal', 'Zo%C3%AB%20%C3%9Cnal'],
    ['100%', '100%25'],
    ['\u0000\u007f\t', '%00%7F%09'],
    ['  padded ', '%20%20padded%20'],
    ['a@b.example', 'a@b.example']
  ]
  for (const [index, [claim, sent]] of cases.entries()) {
    // Over a real socket: what Node would have written is what the upstream reads.
    const res = await request(`${base}/api/x`, { headers: bearer(tokenFor(app, { sub: claim, name: claim })) })
    await res.body.dump()
    t.equal(res.statusCode, 200)
    const seen = upstream.seen[index]?.headers ?? {}
    t.equal(seen['x-user-id'], sent, JSON.stringify(claim))
    t.equal(seen['x-name'], sent)
    t.equal(decodeURIComponent(sent as string), claim, 'decodeURIComponent gives the claim back')
    t.notOk('x-admin' in seen, 'no header was injected')
  }
})

t.test('headerSafe: scalars only, a lone surrogate becomes U+FFFD', async (t) => {
  t.equal(headerSafe(7.5), '7.5')
  t.equal(headerSafe(true), 'true')
  t.equal(headerSafe(undefined), undefined)
  t.equal(headerSafe(null), undefined)
  t.equal(headerSafe(['x']), undefined)
  t.equal(headerSafe({ toString: () => 'x' }), undefined)
  t.equal(headerSafe('\ud800'), '%EF%BF%BD')
})

t.test('a minted token verifies with the gateway\'s public key and the target audience, and carries only the chosen claims', async (t) => {
  const current = esKeys()
  const old = esKeys()
  const { upstream, app } = await oneTarget(t, {
    identity: { token: { audience: 'inventory', claims: ['sub', 'role'], expiresIn: '2m' } }
  }, {
    secret: undefined,
    keys: [
      { kid: '2026-12', algorithm: 'ES256', ...current },
      { kid: '2026-06', algorithm: 'ES256', publicKey: old.publicKey }
    ],
    issuer: 'https://gatehouse.example',
    audience: AUDIENCE
  })
  const callerToken = tokenFor(app, { ...ALICE, email: 'alice@example.com', groups: ['x'] })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(callerToken), 'x-extra': 'kept' } })
  t.equal(res.statusCode, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  t.notOk(JSON.stringify(seen).includes(callerToken), 'the caller\'s token never reaches the upstream')
  const match = /^Bearer (.+)$/.exec(String(seen.authorization))
  t.ok(match, 'the minted token is a bearer token')
  const minted = match?.[1] as string
  const verify = createVerifier({ key: current.publicKey, algorithms: ['ES256'], allowedAud: 'inventory', allowedIss: 'https://gatehouse.example', complete: true })
  const { header, payload } = verify(minted) as { header: Record<string, unknown>, payload: Record<string, unknown> }
  t.equal(header.kid, '2026-12', 'signed with the current key, named by its kid')
  t.same(Object.keys(payload).sort(), ['aud', 'exp', 'iat', 'iss', 'role', 'sub'])
  t.match(payload, { sub: 'alice', role: 'admin', aud: 'inventory', iss: 'https://gatehouse.example' })
  t.equal((payload.exp as number) - (payload.iat as number), 120)
  t.throws(() => createVerifier({ key: current.publicKey, algorithms: ['ES256'], allowedAud: AUDIENCE })(minted), 'it is not for the gateway\'s audience')

  // An upstream that replays it to the gateway gets nothing.
  const replay = await app.inject({ url: '/api/x', headers: bearer(minted) })
  t.equal(replay.statusCode, 401)
  t.equal(upstream.seen.length, 1)
})

t.test('minted tokens: HMAC key, default claims (sub only), reused per caller, one per caller', async (t) => {
  const { upstream, app } = await oneTarget(t, { identity: { token: { audience: 'billing' } } }, { audience: AUDIENCE })
  const alice = bearer(tokenFor(app, ALICE))
  await app.inject({ url: '/api/x', headers: alice })
  await app.inject({ url: '/api/y', headers: alice })
  await app.inject({ url: '/api/z', headers: bearer(tokenFor(app, { sub: 'bob', role: 'admin' })) })
  await app.inject({ url: '/api/w', headers: bearer(tokenFor(app, { role: 'admin' })) })
  const minted = upstream.seen.map((seen) => String(seen.headers.authorization).replace(/^Bearer /, ''))
  const verify = createVerifier({ key: SECRET, algorithms: ['HS256'], allowedAud: 'billing' })
  const payloads = minted.map((token) => verify(token) as Record<string, unknown>)
  t.same(Object.keys(payloads[0] as object).sort(), ['aud', 'exp', 'iat', 'sub'], 'no iss without auth.issuer, no role by default')
  t.equal(payloads[0]?.sub, 'alice')
  t.equal((payloads[0]?.exp as number) - (payloads[0]?.iat as number), 60, 'a minute by default')
  t.equal(minted[1], minted[0], 'the same caller reuses its token within its first half-life')
  t.equal(payloads[2]?.sub, 'bob')
  t.not(minted[2], minted[0])
  t.notOk('sub' in (payloads[3] as object), 'a missing claim is left out')
})

t.test('a custom token header beside bearer credentials; the caller\'s copy is dropped', async (t) => {
  const { upstream, app } = await oneTarget(t, {
    credentials: { bearer: 'service-key-0123' },
    identity: { headers: { 'x-user-id': 'sub' }, token: { audience: 'reports', header: 'X-Gatehouse-Identity' } }
  }, { audience: AUDIENCE })
  const res = await app.inject({ url: '/api/x', headers: { ...bearer(tokenFor(app, ALICE)), 'x-gatehouse-identity': 'forged' } })
  t.equal(res.statusCode, 200)
  const seen = upstream.seen[0]?.headers ?? {}
  t.equal(seen.authorization, 'Bearer service-key-0123')
  t.equal(seen['x-user-id'], 'alice')
  const payload = createVerifier({ key: SECRET, algorithms: ['HS256'], allowedAud: 'reports' })(String(seen['x-gatehouse-identity'])) as Record<string, unknown>
  t.equal(payload.sub, 'alice', 'the bare token, no scheme')
})

t.test('a minted token is out of reach of middleware', async (t) => {
  let seenByMiddleware: unknown
  const { upstream, app } = await oneTarget(t, {
    identity: { token: { audience: 'reports', header: 'x-identity' } },
    middleware: [async (ctx, next) => {
      ctx.request.headers['x-identity'] = 'replaced'
      seenByMiddleware = { ...ctx.request.headers }
      await next()
    }]
  }, { audience: AUDIENCE })
  await app.inject({ url: '/api/x', headers: bearer(tokenFor(app, ALICE)) })
  t.match(String(upstream.seen[0]?.headers['x-identity']), /^ey[^.]+\.[^.]+\.[^.]+$/, 'the minted token wins')
  t.equal((seenByMiddleware as Record<string, unknown>)['x-identity'], 'replaced', 'middleware only saw its own value')
})

t.test('a WebSocket upgrade carries the same identity headers and token, never the caller\'s copies', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(upstream.close)
  const app = await buildApp(t, {
    auth: { audience: AUDIENCE },
    targets: [{ prefix: '/live', upstream: upstream.url, websocket: true, identity: { headers: { 'x-user-id': 'sub', 'x-user-role': 'role' }, token: { audience: 'feed' } } }]
  })
  const base = await listen(app)
  const callerToken = tokenFor(app, { sub: 'alice' })
  const socket = connect(Number(new URL(base).port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.write(`GET /live/feed HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${callerToken}\r\nx-user-id: root\r\nx-user-role: admin\r\n` +
    'connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  const head = await within(new Promise<string>((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString('latin1')))), { message: 'the upgrade answer' })
  t.match(head, /^HTTP\/1\.1 101/)
  const seen = upstream.handshakes[0]?.headers ?? {}
  t.equal(seen['x-user-id'], 'alice')
  t.notOk('x-user-role' in seen, 'the caller\'s role header is dropped although the token has no role')
  t.notOk(JSON.stringify(seen).includes(callerToken))
  const payload = createVerifier({ key: SECRET, algorithms: ['HS256'], allowedAud: 'feed' })(String(seen.authorization).replace(/^Bearer /, '')) as Record<string, unknown>
  t.equal(payload.sub, 'alice')
})

t.test('the minter renews a token after half its life and keeps at most 1000 callers', async (t) => {
  const mint = createMinter({
    key: SECRET, algorithm: 'HS256', kid: undefined, issuer: undefined, audience: 'x', expiresInSeconds: 60, claims: ['sub'], header: 'authorization', scheme: 'Bearer '
  })
  const as = (sub: string) => ({ user: { sub } }) as unknown as GatehouseContext<any>
  const realNow = Date.now
  t.teardown(() => { Date.now = realNow })
  let now = realNow()
  // The clock is stepped by hand: no test waits for 30 s to pass.
  Date.now = () => now
  const first = mint(as('alice'))
  now += 29_999
  t.equal(mint(as('alice')), first, 'reused within the first half-life')
  now += 1
  const renewed = mint(as('alice'))
  t.not(renewed.authorization, first.authorization, 'minted again at half-life')
  for (let i = 0; i < 1000; i++) mint(as(`user-${i}`))
  t.not(mint(as('alice')), renewed, 'the oldest caller was dropped when 1000 others came')
  t.equal(mint(as('user-999')), mint(as('user-999')), 'recent callers stay')
})

t.test('ERP example: the services log the shop the gateway vouches for, and assume none without it', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>)
      done()
    }
  })
  const inventoryService = buildInventoryService({ apiKey: INVENTORY_KEY, logger: { level: 'info', stream } })
  const transactionsService = buildTransactionsService({ apiKey: TRANSACTIONS_KEY, logger: { level: 'info', stream } })
  const inventory = await inventoryService.listen({ host: '127.0.0.1', port: 0 })
  const transactions = await transactionsService.listen({ host: '127.0.0.1', port: 0 })
  const gatewayApp = await buildGateway({
    transactionsUrl: transactions, inventoryUrl: inventory, transactionsApiKey: TRANSACTIONS_KEY, inventoryApiKey: INVENTORY_KEY, jwtSecret: JWT_SECRET
  })
  const gateway = await gatewayApp.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(async () => {
    await gatewayApp.close()
    await Promise.all([inventoryService.close(), transactionsService.close()])
  })
  const seen: Array<Record<string, unknown>> = []
  inventoryService.server.on('request', (req) => seen.push({ ...req.headers }))

  const token = await shopToken(gateway, 'WAL001')
  const spoofed = { authorization: `Bearer ${token}`, 'x-gatehouse-user': 'BBY001', 'x-gatehouse-role': 'admin' }
  for (const path of ['/shops/WAL001/inventory', '/inventory']) {
    const res = await request(`${gateway}${path}`, { headers: spoofed })
    t.equal(res.statusCode, 200, path)
    t.match(await res.body.json(), [{ shopId: 'WAL001' }])
  }
  t.match(seen, [{ 'x-gatehouse-user': 'WAL001', 'x-gatehouse-role': 'shop' }, { 'x-gatehouse-user': 'WAL001', 'x-gatehouse-role': 'shop' }])
  t.match(lines.filter((line) => line.msg === 'called by shop'), [{ shop: 'WAL001', url: '/shops/WAL001/inventory' }, { shop: 'WAL001' }])

  // Directly, with the key: no header, no shop assumed; a named shop must match the path.
  const direct = await request(`${inventory}/shops/BBY001/inventory`, { headers: { 'x-api-key': INVENTORY_KEY } })
  t.equal(direct.statusCode, 200)
  await direct.body.dump()
  t.match(lines.at(-1), { msg: 'called without a shop identity (API key holder)', url: '/shops/BBY001/inventory' })
  t.notOk('shop' in (lines.at(-1) as object))
  const other = await request(`${transactions}/shops/BBY001/transactions`, { headers: { 'x-api-key': TRANSACTIONS_KEY, 'x-gatehouse-user': 'WAL001' } })
  t.equal(other.statusCode, 403)
  await other.body.dump()
  const keyless = await request(`${transactions}/shops/WAL001/transactions`, { headers: { 'x-gatehouse-user': 'WAL001' } })
  t.equal(keyless.statusCode, 401, 'the header means nothing without the key')
  await keyless.body.dump()
})

const { publicKey: VERIFY_ONLY_KEY } = esKeys()
const REFUSED: Array<[string, Partial<TargetOptions<any>>, Partial<GatehouseOptions['auth']>, string]> = [
  ['an unknown identity key', { identity: { heders: { 'x-user-id': 'sub' } } as never }, {}, 'targets\\[0\\]\\.identity\\.heders.*did you mean "headers"'],
  ['an unknown token key', { identity: { token: { audiance: 'x' } } as never }, { audience: AUDIENCE }, 'targets\\[0\\]\\.identity\\.token\\.audiance.*did you mean "audience"'],
  ['an identity that is not an object', { identity: true as never }, {}, 'targets\\[0\\]\\.identity"'],
  ['an empty identity', { identity: {} }, {}, 'targets\\[0\\]\\.identity"'],
  ['empty headers', { identity: { headers: {} } }, {}, 'targets\\[0\\]\\.identity\\.headers"'],
  ['an invalid header name', { identity: { headers: { 'x user': 'sub' } } }, {}, 'identity\\.headers\\.x user'],
  ['a framing header', { identity: { headers: { 'content-length': 'sub' } } }, {}, 'identity\\.headers\\.content-length'],
  ['a hop-by-hop header', { identity: { headers: { 'Proxy-Authorization': 'sub' } } }, {}, 'identity\\.headers\\.Proxy-Authorization.*hop-by-hop'],
  ['a gateway-set header', { identity: { headers: { 'x-forwarded-for': 'sub' } } }, {}, 'identity\\.headers\\.x-forwarded-for'],
  ['authorization as a claim header', { identity: { headers: { authorization: 'sub' } } }, {}, 'identity\\.headers\\.authorization'],
  ['a handshake header', { identity: { headers: { 'sec-websocket-protocol': 'sub' } } }, {}, 'identity\\.headers\\.sec-websocket-protocol'],
  ['a credential header', { credentials: { header: 'x-api-key', value: 'k' }, identity: { headers: { 'X-Api-Key': 'sub' } } }, {}, 'identity\\.headers\\.X-Api-Key.*credentials'],
  ['a computed credential header', { credentials: { headers: ['x-user'], compute: () => ({}) }, identity: { headers: { 'x-user': 'sub' } } }, {}, 'identity\\.headers\\.x-user.*credentials'],
  ['the same header twice', { identity: { headers: { 'x-user': 'sub', 'X-User': 'role' } } }, {}, 'identity\\.headers\\.X-User.*twice'],
  ['a header also in forwardHeaders', { forwardHeaders: ['x-forwarded-user'], identity: { headers: { 'x-forwarded-user': 'sub' } } }, {}, 'identity\\.headers\\.x-forwarded-user.*forwardHeaders'],
  ['a claim that is no name', { identity: { headers: { 'x-user': 3 as never } } }, {}, 'identity\\.headers\\.x-user.*claim name'],
  ['a public target', { public: true, identity: { headers: { 'x-user': 'sub' } } }, {}, 'identity.*public'],
  ['the deprecated credentials function', { credentials: () => ({}), identity: { headers: { 'x-user': 'sub' } } }, {}, 'targets\\[0\\]\\.credentials"'],
  ['a token on a verify-only gateway', { identity: { token: { audience: 'x' } } }, { secret: undefined, algorithm: 'ES256', publicKey: VERIFY_ONLY_KEY, login: false, audience: AUDIENCE }, 'identity\\.token.*can sign'],
  ['a token on a JWKS-only gateway', { identity: { token: { audience: 'x' } } }, { secret: undefined, login: false, audience: AUDIENCE, jwks: { issuer: 'https://idp.example', audience: 'gw', url: 'https://idp.example/jwks' } }, 'identity\\.token.*can sign'],
  ['a token without auth.audience', { identity: { token: { audience: 'x' } } }, {}, '"auth\\.audience"'],
  ['a token for the gateway\'s own audience', { identity: { token: { audience: AUDIENCE } } }, { audience: AUDIENCE }, 'identity\\.token\\.audience'],
  ['a token in the bearer credentials\' header', { credentials: { bearer: 'k' }, identity: { token: { audience: 'x' } } }, { audience: AUDIENCE }, 'identity\\.token\\.header.*credentials'],
  ['a token in an identity header', { identity: { headers: { 'x-id': 'sub' }, token: { audience: 'x', header: 'x-id' } } }, { audience: AUDIENCE }, 'identity\\.token\\.header.*twice'],
  ['a token in a gateway-set header', { identity: { token: { audience: 'x', header: 'x-forwarded-proto' } } }, { audience: AUDIENCE }, 'identity\\.token\\.header'],
  ['a token carrying exp', { identity: { token: { audience: 'x', claims: ['sub', 'exp'] } } }, { audience: AUDIENCE }, 'identity\\.token\\.claims\\[1\\]'],
  ['empty token claims', { identity: { token: { audience: 'x', claims: [] } } }, { audience: AUDIENCE }, 'identity\\.token\\.claims"'],
  ['a token living two hours', { identity: { token: { audience: 'x', expiresIn: '2h' } } }, { audience: AUDIENCE }, 'identity\\.token\\.expiresIn.*at most 3600'],
  ['a token that is not an object', { identity: { token: 'x' as never } }, { audience: AUDIENCE }, 'identity\\.token"']
]

for (const [what, target, auth, message] of REFUSED) {
  t.test(`register refuses ${what}`, async (t) => {
    const upstream = await upstreamFor(t)
    await t.rejects(buildApp(t, { auth, targets: [{ prefix: '/api', upstream: upstream.url, ...target }] }), {
      code: 'FST_GATEHOUSE_INVALID_OPTION',
      message: new RegExp(message)
    })
  })
}
