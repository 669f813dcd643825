import t from 'tap'
import type { Test } from 'tap'
import { createHmac, generateKeyPair, sign as cryptoSign } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { GatehouseOptions, TargetOptions, TokenAlgorithm } from '../lib/index.js'
import { SECRET, bearer, buildApp } from './helpers/app.js'
import { upstreamFor } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'

/*
 * Every way a bearer token can be wrong gives the one 401 shape with
 * WWW-Authenticate: Bearer and a FST_GATEHOUSE_TOKEN_* code, and the upstream
 * never hears of the request. Tokens are built by hand so each defect is the
 * only one.
 */

type Json = Record<string, unknown>

const now = (): number => Math.floor(Date.now() / 1000)

function b64url (value: Json | string | Buffer): string {
  const bytes = Buffer.isBuffer(value) ? value : Buffer.from(typeof value === 'string' ? value : JSON.stringify(value), 'utf8')
  return bytes.toString('base64url')
}

/** header.payload.signature, with `signer` over the first two parts. */
function jwt (header: Json | string, payload: Json | string, signer: (input: Buffer) => Buffer): string {
  const input = `${b64url(header)}.${b64url(payload)}`
  return `${input}.${b64url(signer(Buffer.from(input)))}`
}

function hmac (algorithm: 'sha256' | 'sha384' | 'sha512', key: string | Buffer) {
  return (input: Buffer): Buffer => createHmac(algorithm, key).update(input).digest()
}

/** A valid-looking HS256 token over `payload`, signed with the test secret unless told otherwise. */
function hs256 (payload: Json | string, secret: string | Buffer = SECRET, header: Json = { alg: 'HS256', typ: 'JWT' }): string {
  return jwt(header, payload, hmac('sha256', secret))
}

function claims (extra: Json = {}): Json {
  return { sub: 'alice', role: 'admin', iat: now(), exp: now() + 600, ...extra }
}

interface PemPair { publicKey: string, privateKey: string }

/** A PEM key pair, made off the main thread so several generate at once. */
function pemPair (type: 'rsa' | 'ec' | 'ed25519'): Promise<PemPair> {
  const publicKeyEncoding = { type: 'spki', format: 'pem' } as const
  const privateKeyEncoding = { type: 'pkcs8', format: 'pem' } as const
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, publicKey: string, privateKey: string): void => {
      if (err !== null) reject(err)
      else resolve({ publicKey, privateKey })
    }
    if (type === 'rsa') generateKeyPair('rsa', { modulusLength: 2048, publicKeyEncoding, privateKeyEncoding }, done)
    else if (type === 'ec') generateKeyPair('ec', { namedCurve: 'P-256', publicKeyEncoding, privateKeyEncoding }, done)
    else generateKeyPair('ed25519', { publicKeyEncoding, privateKeyEncoding }, done)
  })
}

interface AsymmetricCase {
  alg: Exclude<TokenAlgorithm, 'HS256' | 'HS384' | 'HS512'>
  keys: PemPair
  /** A second pair of the same kind: a signer the gateway does not trust. */
  otherKeys: PemPair
  signer: (key: string) => (input: Buffer) => Buffer
}

const [rsa, rsaOther, ec, ecOther, ed, edOther] = await Promise.all([
  pemPair('rsa'), pemPair('rsa'), pemPair('ec'), pemPair('ec'), pemPair('ed25519'), pemPair('ed25519')
]) as [PemPair, PemPair, PemPair, PemPair, PemPair, PemPair]

const ASYMMETRIC: AsymmetricCase[] = [
  { alg: 'RS256', keys: rsa, otherKeys: rsaOther, signer: (key) => (input) => cryptoSign('sha256', input, key) },
  { alg: 'ES256', keys: ec, otherKeys: ecOther, signer: (key) => (input) => cryptoSign('sha256', input, { key, dsaEncoding: 'ieee-p1363' }) },
  { alg: 'EdDSA', keys: ed, otherKeys: edOther, signer: (key) => (input) => cryptoSign(null, input, key) }
]
const RSA = ASYMMETRIC[0] as AsymmetricCase

interface Gateway { app: FastifyInstance, upstream: Upstream }

async function gateway (t: Test, auth?: Partial<GatehouseOptions['auth']>, target: Partial<TargetOptions> = {}): Promise<Gateway> {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url, ...target }], ...(auth === undefined ? {} : { auth }) })
  return { app, upstream }
}

let shared: Promise<Gateway> | undefined

/**
 * The default gateway (HS256, no issuer/audience), shared by the tests that
 * need nothing else; each test starts with an empty upstream log.
 */
async function defaultGateway (): Promise<Gateway> {
  shared ??= gateway(t)
  const g = await shared
  g.upstream.seen.length = 0
  return g
}

function get (app: FastifyInstance, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: '/api/orders?page=1', headers })
}

/** The one 401: exact body keys, a gatehouse token code, a Bearer challenge, no library detail. */
function assertRefused (t: Test, res: LightMyRequestResponse, upstream: Upstream, code?: string): void {
  t.equal(res.statusCode, 401, '401')
  const body = res.json() as Json
  t.strictSame(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], 'exactly { statusCode, code, error, message }')
  t.equal(body.statusCode, 401)
  t.equal(body.error, 'Unauthorized')
  t.match(body.code, /^FST_GATEHOUSE_TOKEN_[A-Z_]+$/, 'a gatehouse token code')
  if (code !== undefined) t.equal(body.code, code)
  t.notMatch(res.body, /FAST_JWT|FST_JWT|fast-jwt|jsonwebtoken/i, 'no library code or name')
  t.match(res.headers['www-authenticate'], /^Bearer/, 'WWW-Authenticate: Bearer ...')
  t.equal(upstream.seen.length, 0, 'the upstream saw nothing')
}

/** The request went through: 200 and exactly one request upstream, without the caller's token. */
function assertForwarded (t: Test, res: LightMyRequestResponse, upstream: Upstream): void {
  t.equal(res.statusCode, 200, '200')
  t.equal(upstream.seen.length, 1, 'the upstream saw one request')
  t.equal(upstream.seen[0]?.url, '/api/orders?page=1')
  t.notOk(upstream.seen[0]?.headers.authorization, 'the caller token is not forwarded')
}

t.test('a well-formed hand-made HS256 token passes (the control for every refusal below)', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertForwarded(t, await get(app, bearer(hs256(claims()))), upstream)
})

t.test('no Authorization header gives 401 FST_GATEHOUSE_TOKEN_MISSING', async (t) => {
  const { app, upstream } = await defaultGateway()
  const res = await get(app)
  assertRefused(t, res, upstream, 'FST_GATEHOUSE_TOKEN_MISSING')
})

t.test('a Basic scheme gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, { authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` }), upstream)
})

t.test('a Basic scheme carrying a valid token gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, { authorization: `Basic ${hs256(claims())}` }), upstream)
})

t.test('"Bearer" with no token gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, { authorization: 'Bearer' }), upstream)
})

t.test('"Bearer " with only spaces gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, { authorization: 'Bearer    ' }), upstream)
})

t.test('a garbage token gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, bearer('not-a-jwt')), upstream)
})

t.test('three garbage segments give 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, bearer('abc.def.ghi')), upstream)
})

t.test('a token signed with another secret gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, bearer(hs256(claims(), 'another-secret-that-is-at-least-32-bytes!!'))), upstream)
})

t.test('a token whose payload was changed after signing gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  const [header, , signature] = hs256(claims({ role: 'clerk' })).split('.')
  const forged = `${header}.${b64url(claims({ role: 'admin' }))}.${signature}`
  assertRefused(t, await get(app, bearer(forged)), upstream)
})

t.test('an expired token gives 401 FST_GATEHOUSE_TOKEN_EXPIRED', async (t) => {
  const { app, upstream } = await defaultGateway()
  const res = await get(app, bearer(hs256(claims({ iat: now() - 3600, exp: now() - 60 }))))
  assertRefused(t, res, upstream, 'FST_GATEHOUSE_TOKEN_EXPIRED')
})

t.test('a token without exp gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  const { exp, ...noExp } = claims()
  t.ok(exp)
  assertRefused(t, await get(app, bearer(hs256(noExp))), upstream)
})

t.test('a token with a non-numeric exp gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, bearer(hs256(claims({ exp: 'never' })))), upstream)
})

t.test('a token whose nbf is in the future gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, bearer(hs256(claims({ nbf: now() + 300 })))), upstream)
})

t.test('alg "none" with an empty signature gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  const token = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims())}.`
  assertRefused(t, await get(app, bearer(token)), upstream)
})

t.test('alg "none" with a valid HS256 signature kept gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, bearer(hs256(claims(), SECRET, { alg: 'none', typ: 'JWT' }))), upstream)
})

t.test('an HS512 token signed with the right secret gives 401 when HS256 is pinned', async (t) => {
  const { app, upstream } = await defaultGateway()
  const token = jwt({ alg: 'HS512', typ: 'JWT' }, claims(), hmac('sha512', SECRET))
  assertRefused(t, await get(app, bearer(token)), upstream)
})

t.test('an RS256 token gives 401 when HS256 is pinned', async (t) => {
  const { app, upstream } = await defaultGateway()
  const token = jwt({ alg: 'RS256', typ: 'JWT' }, claims(), RSA.signer(RSA.keys.privateKey))
  assertRefused(t, await get(app, bearer(token)), upstream)
})

t.test('an HS256 token signed with the RSA public key gives 401 when RS256 is pinned', async (t) => {
  const { app, upstream } = await gateway(t, { algorithm: 'RS256', publicKey: RSA.keys.publicKey, login: false })
  const token = jwt({ alg: 'HS256', typ: 'JWT' }, claims(), hmac('sha256', RSA.keys.publicKey))
  assertRefused(t, await get(app, bearer(token)), upstream)
})

t.test('a token with the wrong issuer gives 401', async (t) => {
  const { app, upstream } = await gateway(t, { issuer: 'gatehouse', audience: 'erp' })
  assertRefused(t, await get(app, bearer(hs256(claims({ iss: 'someone-else', aud: 'erp' })))), upstream)
})

t.test('a token without an issuer gives 401 when an issuer is configured', async (t) => {
  const { app, upstream } = await gateway(t, { issuer: 'gatehouse', audience: 'erp' })
  assertRefused(t, await get(app, bearer(hs256(claims({ aud: 'erp' })))), upstream)
})

t.test('a token with the wrong audience gives 401', async (t) => {
  const { app, upstream } = await gateway(t, { issuer: 'gatehouse', audience: 'erp' })
  assertRefused(t, await get(app, bearer(hs256(claims({ iss: 'gatehouse', aud: 'billing' })))), upstream)
})

t.test('a token without an audience gives 401 when an audience is configured', async (t) => {
  const { app, upstream } = await gateway(t, { issuer: 'gatehouse', audience: 'erp' })
  assertRefused(t, await get(app, bearer(hs256(claims({ iss: 'gatehouse' })))), upstream)
})

t.test('a token with the configured issuer and audience passes', async (t) => {
  const { app, upstream } = await gateway(t, { issuer: 'gatehouse', audience: 'erp' })
  assertForwarded(t, await get(app, bearer(hs256(claims({ iss: 'gatehouse', aud: 'erp' })))), upstream)
})

t.test('tokens from the login route carry the configured issuer and audience', async (t) => {
  const { app, upstream } = await gateway(t, { issuer: 'gatehouse', audience: 'erp' })
  const login = await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'alice-pw' } })
  const payload = JSON.parse(Buffer.from(login.json().token.split('.')[1], 'base64url').toString()) as Json
  t.equal(payload.iss, 'gatehouse')
  t.equal(payload.aud, 'erp')
  assertForwarded(t, await get(app, bearer(login.json().token)), upstream)
})

t.test('a payload that is not JSON gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, bearer(hs256('this is not json'))), upstream)
})

t.test('a JSON payload that is not an object gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, bearer(hs256('[1,2,3]'))), upstream)
})

t.test('a header that is not JSON gives 401', async (t) => {
  const { app, upstream } = await defaultGateway()
  const input = `${b64url('{"alg":"HS256"')}.${b64url(claims())}`
  const token = `${input}.${b64url(hmac('sha256', SECRET)(Buffer.from(input)))}`
  assertRefused(t, await get(app, bearer(token)), upstream)
})

t.test('a token that expired 5 s ago passes with clockTolerance 10', async (t) => {
  const { app, upstream } = await gateway(t, { clockTolerance: 10 })
  assertForwarded(t, await get(app, bearer(hs256(claims({ iat: now() - 600, exp: now() - 5 })))), upstream)
})

t.test('a token that expired 5 s ago fails without clockTolerance', async (t) => {
  const { app, upstream } = await defaultGateway()
  assertRefused(t, await get(app, bearer(hs256(claims({ iat: now() - 600, exp: now() - 5 })))), upstream, 'FST_GATEHOUSE_TOKEN_EXPIRED')
})

t.test('a token that expired 30 s ago fails with clockTolerance 10', async (t) => {
  const { app, upstream } = await gateway(t, { clockTolerance: 10 })
  assertRefused(t, await get(app, bearer(hs256(claims({ iat: now() - 600, exp: now() - 30 })))), upstream)
})

function decodeHeader (token: string): Json {
  return JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString('utf8')) as Json
}

for (const { alg, keys, otherKeys, signer } of ASYMMETRIC) {
  t.test(`${alg}: login issues a ${alg} token that a proxied request accepts`, async (t) => {
    const { app, upstream } = await gateway(t, { algorithm: alg, privateKey: keys.privateKey, publicKey: keys.publicKey })
    const login = await app.inject({ method: 'POST', url: '/login', payload: { username: 'alice', password: 'alice-pw' } })
    t.equal(login.statusCode, 200)
    const token = login.json().token as string
    t.equal(decodeHeader(token).alg, alg)
    assertForwarded(t, await get(app, bearer(token)), upstream)
  })

  t.test(`${alg}: verify-only mode accepts a token signed elsewhere with the private key`, async (t) => {
    const { app, upstream } = await gateway(t, { algorithm: alg, publicKey: keys.publicKey, login: false })
    const token = jwt({ alg, typ: 'JWT' }, claims(), signer(keys.privateKey))
    assertForwarded(t, await get(app, bearer(token)), upstream)
  })

  t.test(`${alg}: a token signed with another private key gives 401`, async (t) => {
    const { app, upstream } = await gateway(t, { algorithm: alg, publicKey: keys.publicKey, login: false })
    const token = jwt({ alg, typ: 'JWT' }, claims(), signer(otherKeys.privateKey))
    assertRefused(t, await get(app, bearer(token)), upstream)
  })
}

t.test('a public target is reachable without a token', async (t) => {
  const { app, upstream } = await gateway(t, undefined, { public: true })
  const res = await get(app)
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/api/orders?page=1')
})

t.test('a protected target beside a public one still needs a token', async (t) => {
  const upstream = await upstreamFor(t)
  const app = await buildApp(t, {
    targets: [{ prefix: '/health', upstream: upstream.url, public: true }, { prefix: '/api', upstream: upstream.url }]
  })
  const open = await app.inject({ url: '/health' })
  t.equal(open.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.url, '/health')
  upstream.seen.length = 0
  assertRefused(t, await get(app), upstream)
})

t.test('ctx.user carries the token claims to middleware', async (t) => {
  const { app, upstream } = await gateway(t, undefined, {
    middleware: [async (ctx, next) => {
      ctx.request.headers['x-user-sub'] = String(ctx.user?.sub)
      ctx.request.headers['x-user-role'] = String(ctx.user?.role)
      await next()
    }]
  })
  const res = await get(app, bearer(hs256(claims({ sub: 'WAL001', role: 'shop' }))))
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.headers['x-user-sub'], 'WAL001')
  t.equal(upstream.seen[0]?.headers['x-user-role'], 'shop')
})

t.test('request.user carries the token claims', async (t) => {
  const { app, upstream } = await gateway(t, undefined, {
    middleware: [async (ctx, next) => {
      ctx.request.headers['x-request-user'] = String(ctx.fastifyRequest.user.sub)
      await next()
    }]
  })
  const res = await get(app, bearer(hs256(claims({ sub: 'BBY001' }))))
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.headers['x-request-user'], 'BBY001')
})

t.test('ctx.user is null on a public target', async (t) => {
  const { app, upstream } = await gateway(t, undefined, {
    public: true,
    middleware: [async (ctx, next) => {
      ctx.request.headers['x-user'] = JSON.stringify(ctx.user)
      await next()
    }]
  })
  const res = await get(app)
  t.equal(res.statusCode, 200)
  t.equal(upstream.seen.length, 1)
  t.equal(upstream.seen[0]?.headers['x-user'], 'null')
})
