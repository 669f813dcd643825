import t from 'tap'
import type { Test } from 'tap'
import { constants, randomBytes, sign as cryptoSign } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import type { JwksOptions } from '../lib/index.js'
import { SECRET, bearer, buildApp, tokenFor } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { hmacSigner, keyPair, providerToken, rawToken, startProvider } from './helpers/jwks.js'
import type { Provider, ProviderKeyPair } from './helpers/jwks.js'
import { waitFor } from './helpers/wait.js'

/*
 * Tokens of an identity provider, verified with the key set the gateway
 * fetches from a provider this test runs on 127.0.0.1: the key the token's
 * iss and kid select, with the algorithm the key allows, fetched again at
 * most once per cooldown, cached keys kept while the provider is down.
 */

const AUDIENCE = 'erp-gateway'
const now = (): number => Math.floor(Date.now() / 1000)
const RSA = keyPair('rsa-1', 'RS256')
const EC = keyPair('ec-1', 'ES256')

function claims (provider: Provider, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { sub: 'shop-7', iss: provider.url, aud: AUDIENCE, exp: now() + 300, iat: now(), ...extra }
}

interface Setup { app: FastifyInstance, upstream: Upstream, provider: Provider }

async function setup (t: Test, keys: ProviderKeyPair[], jwks: Partial<JwksOptions> = {}): Promise<Setup> {
  const provider = await startProvider(t, keys)
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: { jwks: { issuer: provider.url, url: provider.jwksUrl, audience: AUDIENCE, timeout: 300, ...jwks } }
  })
  return { app, upstream, provider }
}

async function status (app: FastifyInstance, token: string): Promise<number> {
  const res = await app.inject({ url: '/api/x', headers: bearer(token) })
  if (res.statusCode === 401) t.match(res.json(), { code: /^FST_GATEHOUSE_TOKEN_/ })
  return res.statusCode
}

t.test('RS256 and ES256 tokens of the provider are accepted; the upstream sees the request', async (t) => {
  const { app, upstream, provider } = await setup(t, [RSA, EC])
  t.equal(await status(app, providerToken(RSA, claims(provider))), 200)
  t.equal(await status(app, providerToken(EC, claims(provider))), 200)
  t.equal(upstream.seen.length, 2)
  t.equal(provider.fetches, 1, 'one fetch served both keys')
  // The gateway's own tokens keep working beside the provider's.
  t.equal(await status(app, tokenFor(app)), 200)
})

t.test('the issuer alone finds the key set through OpenID discovery', async (t) => {
  const provider = await startProvider(t, [EC])
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: upstream.url }],
    auth: { jwks: { issuer: provider.url, audience: AUDIENCE } }
  })
  t.equal(await status(app, providerToken(EC, claims(provider))), 200)
  t.equal(provider.discoveries, 1)
  t.equal(provider.fetches, 1)
})

t.test('wrong audience, wrong issuer, no exp, no kid, an expired token: 401, upstream untouched', async (t) => {
  const { app, upstream, provider } = await setup(t, [RSA])
  t.equal(await status(app, providerToken(RSA, claims(provider, { aud: 'other-app' }))), 401)
  const { exp, ...noExp } = claims(provider)
  t.equal(await status(app, providerToken(RSA, noExp)), 401)
  t.equal(await status(app, providerToken(RSA, claims(provider), { kid: undefined })), 401)
  t.equal(await status(app, providerToken(RSA, claims(provider, { exp: now() - 10 }))), 401)
  // Another issuer is the gateway's own key set, which does not hold this key.
  t.equal(await status(app, providerToken(RSA, claims(provider, { iss: 'https://evil.example' }))), 401)
  t.equal(upstream.seen.length, 0)
})

t.test('algorithm confusion: the key decides the algorithm, never the header', async (t) => {
  const noAlg = keyPair('rsa-no-alg', 'RS256', false)
  const { app, upstream, provider } = await setup(t, [RSA, noAlg])
  t.equal(await status(app, providerToken(RSA, claims(provider))), 200, 'keys loaded')
  for (const kid of [RSA.kid, noAlg.kid]) {
    const keyPem = (kid === RSA.kid ? RSA : noAlg).publicKey.export({ type: 'spki', format: 'pem' }) as string
    t.equal(await status(app, rawToken({ alg: 'HS256', kid }, claims(provider), hmacSigner(keyPem))), 401, `HS256 with the public PEM as secret (${kid})`)
    t.equal(await status(app, rawToken({ alg: 'HS256', kid }, claims(provider), hmacSigner(JSON.stringify(RSA.jwk)))), 401, 'HS256 with the JWK as secret')
    t.equal(await status(app, rawToken({ alg: 'none', kid }, claims(provider), () => Buffer.alloc(0))), 401, 'alg none')
  }
  // The JWK says RS256: a PS256 header is refused even though the key is RSA.
  const ps = rawToken({ alg: 'PS256', kid: RSA.kid }, claims(provider), (input) =>
    cryptoSign('sha256', input, { key: RSA.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING }))
  t.equal(await status(app, ps), 401, 'PS256 against a key pinned to RS256')
  // A provider token signed with the gateway's own secret: its iss picks the provider, never the own key.
  t.equal(await status(app, rawToken({ alg: 'HS256', typ: 'JWT' }, claims(provider), hmacSigner(SECRET))), 401)
  t.equal(upstream.seen.length, 1)
})

t.test('jku, x5u and jwk are never followed; crit is refused', async (t) => {
  const { app, upstream, provider } = await setup(t, [RSA])
  const attacker = keyPair('rsa-1', 'RS256')
  const evil = await startProvider(t, [attacker])
  for (const header of [{ jku: evil.jwksUrl }, { x5u: `${evil.url}/cert.pem` }, { jwk: attacker.jwk }]) {
    t.equal(await status(app, providerToken(attacker, claims(provider), header)), 401, Object.keys(header).join())
  }
  t.equal(evil.fetches, 0, 'the attacker server never heard from the gateway')
  t.equal(await status(app, providerToken(RSA, claims(provider), { crit: ['exp'] })), 401, 'crit')
  t.equal(await status(app, providerToken(RSA, claims(provider))), 200, 'the genuine key still works')
  t.equal(upstream.seen.length, 1)
})

t.test('a flood of unknown kids: at most one fetch per cooldown, each answered 401', async (t) => {
  const { app, provider } = await setup(t, [RSA], { cooldown: '1m' })
  t.equal(await status(app, providerToken(RSA, claims(provider))), 200)
  t.equal(provider.fetches, 1)
  const flood = async (): Promise<number[]> => await Promise.all(Array.from({ length: 50 }, async () =>
    await status(app, providerToken({ ...RSA, kid: randomBytes(8).toString('hex') }, claims(provider)))))
  // The first load was a fetch, so the cooldown already holds: no refetch at all.
  t.same(new Set(await flood()), new Set([401]))
  t.equal(provider.fetches, 1, 'no fetch within the cooldown of the first one')
})

t.test('a flood before any key is known: one fetch for all of them', async (t) => {
  const { app, provider } = await setup(t, [RSA], { cooldown: '1m' })
  const codes = await Promise.all(Array.from({ length: 50 }, async () =>
    await status(app, providerToken({ ...RSA, kid: randomBytes(8).toString('hex') }, claims(provider)))))
  t.same(new Set(codes), new Set([401]))
  t.equal(provider.fetches, 1)
  t.equal(await status(app, providerToken(RSA, claims(provider))), 200, 'the fetched key set serves known kids')
  t.equal(provider.fetches, 1)
})

t.test('rotation: a new kid is fetched after the cooldown, the removed one is refused', async (t) => {
  const next = keyPair('rsa-2', 'RS256')
  const { app, provider } = await setup(t, [RSA], { cooldown: 1 })
  const old = providerToken(RSA, claims(provider))
  const fresh = providerToken(next, claims(provider))
  t.equal(await status(app, old), 200)
  provider.keys = [next.jwk]
  // Polled: the refetch happens once the 1 s cooldown has passed, on the next unknown kid.
  await waitFor(async () => await status(app, fresh) === 200, { message: 'the new key was never fetched', interval: 100 })
  t.equal(provider.fetches, 2)
  // A token verified before stays cached until its exp; a new token of the removed key is refused.
  t.equal(await status(app, providerToken(RSA, claims(provider, { jti: 'new' }))), 401)
})

t.test('provider down: cached keys keep working, unknown kids get 401', async (t) => {
  const { app, provider } = await setup(t, [RSA], { cooldown: 1, cacheMaxAge: 1 })
  t.equal(await status(app, providerToken(RSA, claims(provider))), 200)
  provider.mode = 'down'
  // Once the set is older than cacheMaxAge, requests start background fetches that fail.
  await waitFor(async () => {
    t.equal(await status(app, providerToken(RSA, claims(provider, { jti: randomBytes(4).toString('hex') }))), 200)
    return provider.fetches >= 2
  }, { message: 'no background fetch', interval: 100 })
  t.equal(await status(app, providerToken(RSA, claims(provider, { jti: 'after' }))), 200, 'still served from the cached keys')
  t.equal(await status(app, providerToken(keyPair('gone', 'RS256'), claims(provider))), 401)
})

t.test('provider slow or answering garbage: 401 within the timeout, never 500 or a hang', async (t) => {
  for (const mode of ['slow', 'garbage', 'down'] as const) {
    const { app, provider } = await setup(t, [RSA], { timeout: 200 })
    provider.mode = mode
    const started = Date.now()
    t.equal(await status(app, providerToken(RSA, claims(provider))), 401, mode)
    t.ok(Date.now() - started < 5_000, `${mode}: answered in bounded time`)
    t.equal(provider.fetches, 1)
    // Within the cooldown nothing is fetched again, and the answer is immediate.
    t.equal(await status(app, providerToken(RSA, claims(provider))), 401)
    t.equal(provider.fetches, 1)
  }
})
