import t from 'tap'
import type { Test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { request } from 'undici'
import { MemoryStore } from '../lib/index.js'
import type { GatehouseOptions, GatehouseStore, KeyOptions } from '../lib/index.js'
import { bearer, buildApp, listen } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { hmacSigner, rawToken } from './helpers/jwks.js'

/*
 * The gateway's own key ring (`auth.keys`): the first key signs and names
 * itself with `kid`, every key verifies the tokens that name it, a removed
 * key's tokens are refused, refresh after a rotation signs with the new key,
 * and the public keys are published at the opt-in JWKS route. A rotation is a
 * restart with another key list, as in production: two apps on one store.
 */

function ecKey (kid: string): KeyOptions {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  return {
    kid,
    algorithm: 'ES256',
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string
  }
}

const K1 = ecKey('k1')
const K2 = ecKey('k2')
const H1: KeyOptions = { kid: 'h1', algorithm: 'HS256', secret: 'a-rotation-secret-of-at-least-32-bytes!!' }

interface Setup { app: FastifyInstance, upstream: Upstream }

async function gateway (t: Test, keys: KeyOptions[], store: GatehouseStore, auth: Partial<GatehouseOptions['auth']> = {}): Promise<Setup> {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: { secret: undefined, keys, refresh: true, store, ...auth }
  })
  return { app, upstream }
}

function header (token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString('utf8')) as Record<string, unknown>
}

async function login (app: FastifyInstance): Promise<{ token: string, refreshToken: string }> {
  const res = await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'alice-pw' } })
  t.equal(res.statusCode, 200, 'login')
  return res.json()
}

async function status (app: FastifyInstance, token: string): Promise<number> {
  return (await app.inject({ url: '/api/x', headers: bearer(token) })).statusCode
}

t.test('the first key signs with its kid; after a rotation both verify, then the retired one is refused', async (t) => {
  const store = new MemoryStore()
  const before = await gateway(t, [K1], store)
  const old = await login(before.app)
  t.equal(header(old.token).kid, 'k1')
  t.equal(header(old.token).alg, 'ES256')

  // Rotation step 1: the new key signs, the old one still verifies.
  const during = await gateway(t, [K2, K1], store)
  t.equal(await status(during.app, old.token), 200, 'a token of the old key')
  const renewed = await during.app.inject({ method: 'POST', url: '/token/refresh', payload: { refreshToken: old.refreshToken } })
  t.equal(renewed.statusCode, 200, 'the refresh token survives the rotation')
  const next = renewed.json() as { token: string, refreshToken: string }
  t.equal(header(next.token).kid, 'k2', 'the refresh signs with the new key')
  t.equal(await status(during.app, next.token), 200)
  t.equal(during.upstream.seen.length, 2)

  // Step 2: the old key is removed.
  const after = await gateway(t, [K2], store)
  t.equal(await status(after.app, old.token), 401, 'the retired key no longer verifies')
  t.equal(await status(after.app, next.token), 200)
  t.equal(after.upstream.seen.length, 1, 'only the new token reached the upstream')
})

t.test('tokens must name a configured key; the kid never picks an algorithm or a second try', async (t) => {
  const { app, upstream } = await gateway(t, [H1, K1], new MemoryStore())
  const claims = { sub: 'alice', exp: Math.floor(Date.now() / 1000) + 60 }
  t.equal(await status(app, rawToken({ alg: 'HS256', typ: 'JWT', kid: 'h1' }, claims, hmacSigner(H1.secret as string))), 200)
  t.equal(await status(app, rawToken({ alg: 'HS256', typ: 'JWT' }, claims, hmacSigner(H1.secret as string))), 401, 'no kid')
  t.equal(await status(app, rawToken({ alg: 'HS256', typ: 'JWT', kid: 'nope' }, claims, hmacSigner(H1.secret as string))), 401, 'unknown kid')
  t.equal(await status(app, rawToken({ alg: 'HS256', typ: 'JWT', kid: '__proto__' }, claims, hmacSigner(H1.secret as string))), 401, 'kid is an opaque key')
  // Algorithm confusion: k1's public PEM used as an HMAC secret, under k1's kid.
  t.equal(await status(app, rawToken({ alg: 'HS256', typ: 'JWT', kid: 'k1' }, claims, hmacSigner(K1.publicKey as string))), 401, 'HS256 with the public PEM')
  // The right secret under another key's kid is not tried against h1.
  t.equal(await status(app, rawToken({ alg: 'HS256', typ: 'JWT', kid: 'k1' }, claims, hmacSigner(H1.secret as string))), 401, 'no key tried in turn')
  t.equal(upstream.seen.length, 1)
})

t.test('the JWKS route publishes the public keys only, over a real socket', async (t) => {
  const { app } = await gateway(t, [K1, H1, K2], new MemoryStore(), { jwksRoute: true })
  const base = await listen(app)
  const res = await request(`${base}/.well-known/jwks.json`)
  t.equal(res.statusCode, 200)
  t.match(res.headers['cache-control'], /max-age=/)
  const body = await res.body.json() as { keys: Array<Record<string, unknown>> }
  t.same(body.keys.map((key) => key.kid), ['k1', 'k2'], 'HMAC keys are never published')
  for (const key of body.keys) {
    t.match(key, { kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' })
    t.notOk('d' in key, 'no private part')
  }
  // A token signed by the gateway verifies with the published key, as an upstream would do it.
  const token = (await login(app)).token
  const { createPublicKey, verify } = await import('node:crypto')
  const [h, p, s] = token.split('.') as [string, string, string]
  const jwk = body.keys[0] as import('node:crypto').JsonWebKey
  t.ok(verify('sha256', Buffer.from(`${h}.${p}`), { key: createPublicKey({ key: jwk, format: 'jwk' }), dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url')))
})

t.test('the JWKS route is off by default', async (t) => {
  const { app } = await gateway(t, [K1], new MemoryStore())
  t.equal((await app.inject({ url: '/.well-known/jwks.json' })).statusCode, 404)
})

t.test('the single secret form still signs without kid and verifies', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const { token } = await login(app)
  t.equal(header(token).kid, undefined)
  t.equal(await status(app, token), 200)
})

t.test('keys, jwks and jwksRoute are checked at register with the option named', async (t) => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }) as string
  const cases: Array<[Partial<GatehouseOptions['auth']>, RegExp]> = [
    [{ keys: [K1], secret: 'x'.repeat(40) }, /auth\.secret/],
    [{ keys: [] }, /auth\.keys/],
    [{ keys: [K1, { ...K2, kid: 'k1' }] }, /auth\.keys\[1\]\.kid/],
    [{ keys: [{ ...H1, secret: rsa }] }, /auth\.keys\[0\]\.secret.*PEM/],
    [{ keys: [{ kid: 'r', algorithm: 'ES256', publicKey: rsa }], login: false }, /auth\.keys\[0\]\.publicKey/],
    [{ keys: [{ kid: 'k', algorithm: 'ES256', publicKey: K1.publicKey }] }, /auth\.keys\[0\]\.privateKey/],
    [{ keys: [{ ...K1, privateKey: K2.privateKey }] }, /auth\.keys\[0\]\.privateKey.*private key of publicKey/],
    [{ keys: [H1], jwksRoute: true }, /auth\.jwksRoute/],
    [{ login: false, jwks: { issuer: 'https://idp.example', audience: 'a', algorithms: ['HS256' as 'RS256'] } }, /auth\.jwks\.algorithms/],
    [{ login: false, jwks: { issuer: 'https://idp.example', audience: [] } }, /auth\.jwks\.audience/],
    [{ login: false, jwks: { issuer: 'https://idp.example', audience: 'a', cooldwn: '1m' } as never }, /auth\.jwks\.cooldwn/],
    [{ login: false, jwks: { issuer: 'not a url', audience: 'a' } }, /auth\.jwks\.url/],
    [{ login: false, issuer: 'https://idp.example', jwks: { issuer: 'https://idp.example', audience: 'a' } }, /auth\.jwks.*distinct/],
    [{ secret: undefined, jwks: { issuer: 'https://idp.example', audience: 'a' } }, /auth\.keys.*signing key/]
  ]
  for (const [auth, message] of cases) {
    await t.rejects(buildApp(t, { targets: [], auth: { secret: undefined, ...auth } }), { code: 'FST_GATEHOUSE_INVALID_OPTION', message }, String(message))
  }
  // A provider alone, verify-only, needs no key of its own.
  await t.resolves(buildApp(t, { targets: [], auth: { secret: undefined, login: false, jwks: { issuer: 'https://idp.example', audience: 'a' } } }))
})
