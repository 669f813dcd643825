import t from 'tap'
import type { Test } from 'tap'
import { createServer } from 'node:https'
import type { ServerOptions } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { buildApp, bearer, tokenFor } from './helpers/app.js'
import { makePki } from './helpers/faulty-upstream.js'

const pki = makePki()

interface TlsUpstream { port: number, requests: Array<{ authorization?: string, host?: string, clientCert: boolean }>, handshakes: () => number }

async function tlsUpstream (t: Test, options: ServerOptions): Promise<TlsUpstream> {
  const requests: TlsUpstream['requests'] = []
  let handshakes = 0
  const server = createServer(options, (req, res) => {
    const socket = req.socket as TLSSocket
    requests.push({ authorization: req.headers.authorization, host: req.headers.host, clientCert: socket.authorized })
    res.writeHead(200, { 'content-type': 'text/plain' }).end('secure')
  })
  server.on('secureConnection', () => { handshakes++ })
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return { port: (server.address() as AddressInfo).port, requests, handshakes: () => handshakes }
}

const SECRET_CREDENTIALS = { bearer: 'upstream-secret-token' }

t.test('a self-signed upstream gives 502 and never receives the credentials', async (t) => {
  const upstream = await tlsUpstream(t, { cert: pki.selfSignedCert, key: pki.selfSignedKey })
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `https://127.0.0.1:${upstream.port}`, credentials: SECRET_CREDENTIALS }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE')
  t.equal(upstream.requests.length, 0, 'no HTTP request reached the upstream')
  t.notOk(res.body.includes('certificate'), 'no TLS detail for the client')
})

t.test('a custom CA is trusted and the credentials arrive', async (t) => {
  const upstream = await tlsUpstream(t, { cert: pki.serverCert, key: pki.serverKey })
  const app = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: `https://127.0.0.1:${upstream.port}`, credentials: SECRET_CREDENTIALS, transport: { tls: { ca: pki.caCert } } }]
  })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
  t.equal(res.body, 'secure')
  t.equal(upstream.requests[0]?.authorization, 'Bearer upstream-secret-token')
})

t.test('a certificate for another name gives 502; servername fixes it (SNI)', async (t) => {
  const upstream = await tlsUpstream(t, { cert: pki.serverCert, key: pki.serverKey })
  // localhost resolves to 127.0.0.1 and is in the certificate; "wrong.internal" via servername is not.
  const wrong = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: `https://127.0.0.1:${upstream.port}`, credentials: SECRET_CREDENTIALS, transport: { tls: { ca: pki.caCert, servername: 'wrong.internal' } } }]
  })
  const bad = await wrong.inject({ url: '/api/x', headers: bearer(tokenFor(wrong)) })
  t.equal(bad.statusCode, 502)
  t.equal(upstream.requests.length, 0)

  let sni: string | false = false
  const named = await tlsUpstream(t, {
    cert: pki.serverCert,
    key: pki.serverKey,
    SNICallback: (name, cb) => {
      sni = name
      cb(null)
    }
  })
  const right = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: `https://127.0.0.1:${named.port}`, transport: { tls: { ca: pki.caCert, servername: 'upstream.internal' } } }]
  })
  const ok = await right.inject({ url: '/api/x', headers: bearer(tokenFor(right)) })
  t.equal(ok.statusCode, 200)
  t.equal(sni, 'upstream.internal', 'SNI sent')
  t.equal(named.requests[0]?.host, `127.0.0.1:${named.port}`, 'Host is still the upstream URL')
})

t.test('mutual TLS: without a client certificate 502, with one 200', async (t) => {
  const upstream = await tlsUpstream(t, { cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert, requestCert: true, rejectUnauthorized: true })
  const without = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: `https://127.0.0.1:${upstream.port}`, credentials: SECRET_CREDENTIALS, transport: { tls: { ca: pki.caCert } } }]
  })
  const bad = await without.inject({ url: '/api/x', headers: bearer(tokenFor(without)) })
  t.equal(bad.statusCode, 502)
  t.equal(upstream.requests.length, 0)

  const withCert = await buildApp(t, {
    targets: [{ prefix: '/api', upstream: `https://127.0.0.1:${upstream.port}`, transport: { tls: { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey } } }]
  })
  const ok = await withCert.inject({ url: '/api/x', headers: bearer(tokenFor(withCert)) })
  t.equal(ok.statusCode, 200)
  t.equal(upstream.requests[0]?.clientCert, true, 'the upstream verified the client certificate')
})

t.test('rejectUnauthorized: false is an explicit opt-out', async (t) => {
  const upstream = await tlsUpstream(t, { cert: pki.selfSignedCert, key: pki.selfSignedKey })
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: `https://127.0.0.1:${upstream.port}`, transport: { tls: { rejectUnauthorized: false } } }] })
  const res = await app.inject({ url: '/api/x', headers: bearer(tokenFor(app)) })
  t.equal(res.statusCode, 200)
})
