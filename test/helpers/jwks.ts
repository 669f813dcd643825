import { createHmac, generateKeyPairSync, sign as cryptoSign } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { createServer } from 'node:http'
import type { ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Test } from 'tap'

/** A key pair of an identity provider, with its public JWK. */
export interface ProviderKeyPair {
  kid: string
  alg: 'RS256' | 'ES256'
  privateKey: KeyObject
  publicKey: KeyObject
  jwk: Record<string, unknown>
}

export function keyPair (kid: string, alg: 'RS256' | 'ES256', jwkAlg: boolean = true): ProviderKeyPair {
  const { privateKey, publicKey } = alg === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', ...(jwkAlg ? { alg } : {}) }
  return { kid, alg, privateKey, publicKey, jwk }
}

function b64url (value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
}

/** A compact JWT whose signature is made by `signer` over the first two parts. */
export function rawToken (header: Record<string, unknown>, payload: Record<string, unknown>, signer: (input: Buffer) => Buffer): string {
  const input = `${b64url(header)}.${b64url(payload)}`
  return `${input}.${signer(Buffer.from(input)).toString('base64url')}`
}

/** A token signed by a provider key, header `{ alg, kid }` unless `header` overrides. */
export function providerToken (key: ProviderKeyPair, payload: Record<string, unknown>, header: Record<string, unknown> = {}): string {
  return rawToken({ alg: key.alg, typ: 'JWT', kid: key.kid, ...header }, payload, (input) =>
    cryptoSign('sha256', input, key.alg === 'ES256' ? { key: key.privateKey, dsaEncoding: 'ieee-p1363' } : key.privateKey))
}

export function hmacSigner (secret: string | Buffer) {
  return (input: Buffer): Buffer => createHmac('sha256', secret).update(input).digest()
}

export type ProviderMode = 'ok' | 'down' | 'slow' | 'garbage'

/** A JWKS server on 127.0.0.1:0 that the test controls. */
export interface Provider {
  url: string
  jwksUrl: string
  keys: Array<Record<string, unknown>>
  mode: ProviderMode
  /** Requests for the key set, and for the OpenID configuration. */
  fetches: number
  discoveries: number
}

export async function startProvider (t: Test, keys: ProviderKeyPair[]): Promise<Provider> {
  const sockets = new Set<Socket>()
  const held: ServerResponse[] = []
  const state: Provider = { url: '', jwksUrl: '', keys: keys.map((key) => key.jwk), mode: 'ok', fetches: 0, discoveries: 0 }
  const server = createServer((req, res) => {
    if (req.url === '/.well-known/openid-configuration') {
      state.discoveries++
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ issuer: state.url, jwks_uri: state.jwksUrl }))
      return
    }
    state.fetches++
    if (state.mode === 'down') {
      req.socket.destroy()
      return
    }
    if (state.mode === 'slow') {
      held.push(res)
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(state.mode === 'garbage' ? '<html>oops' : JSON.stringify({ keys: state.keys }))
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  state.url = `http://127.0.0.1:${port}`
  state.jwksUrl = `${state.url}/jwks.json`
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return state
}
