import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'

export interface RawUpstream {
  url: string
  port: number
  /** TCP connections accepted so far. */
  connections: () => number
  /** Connections currently open. */
  open: () => number
}

/**
 * A raw TCP upstream on 127.0.0.1:0: `onRequest` gets the socket once a
 * request head has arrived (once per connection) and decides what goes on
 * the wire. Closed on teardown.
 */
export async function rawUpstream (t: Test, onRequest: (socket: Socket, head: string) => void): Promise<RawUpstream> {
  const sockets = new Set<Socket>()
  let connections = 0
  const server: Server = createServer((socket) => {
    connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let head = ''
    socket.on('data', (chunk: Buffer) => {
      if (head.includes('\r\n\r\n')) return
      head += chunk.toString('latin1')
      if (head.includes('\r\n\r\n')) onRequest(socket, head)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  const port = (server.address() as AddressInfo).port
  return { url: `http://127.0.0.1:${port}`, port, connections: () => connections, open: () => sockets.size }
}

export interface Pki {
  caCert: string
  /** Server certificate for `names` signed by the CA. */
  serverCert: string
  serverKey: string
  /** A self-signed certificate (no CA) for the same names. */
  selfSignedCert: string
  selfSignedKey: string
  /** Client certificate signed by the CA, for mTLS. */
  clientCert: string
  clientKey: string
}

let cached: Pki | undefined

/** A throwaway CA, server, self-signed and client certificates made with `openssl`. */
export function makePki (): Pki {
  if (cached !== undefined) return cached
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-pki-'))
  const run = (...args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' }) }
  try {
    const ext = 'subjectAltName=DNS:upstream.internal,DNS:localhost,IP:127.0.0.1'
    writeFileSync(join(dir, 'san.ext'), ext + '\n')
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=gatehouse test CA')
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=upstream.internal')
    run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'san.ext')
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'self.key', '-out', 'self.crt', '-days', '2', '-subj', '/CN=upstream.internal', '-addext', ext)
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=gateway')
    run('x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.crt', '-days', '2')
    const read = (name: string): string => readFileSync(join(dir, name), 'utf8')
    cached = {
      caCert: read('ca.crt'),
      serverCert: read('server.crt'),
      serverKey: read('server.key'),
      selfSignedCert: read('self.crt'),
      selfSignedKey: read('self.key'),
      clientCert: read('client.crt'),
      clientKey: read('client.key')
    }
    return cached
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Resolves after `ms` (for upstream behaviour only, never to wait for the gateway). */
export function delay (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
