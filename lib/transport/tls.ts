import type { ConnectionOptions } from 'node:tls'
import type { buildConnector } from 'undici'
import type { ResolvedTransport } from './options.js'

/**
 * `tls.connect` options for one target's upstreams. Certificates are
 * verified unless `rejectUnauthorized: false` is set explicitly; `ca`
 * replaces the trusted roots, `cert`/`key` present a client certificate
 * (mTLS), `servername` sets SNI and the name checked. Connections the
 * gateway opens outside undici (WebSocket handshakes) take these as they are.
 */
export function tlsOptions (tls: ResolvedTransport['tls']): ConnectionOptions {
  return {
    rejectUnauthorized: tls.rejectUnauthorized,
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert, key: tls.key }),
    ...(tls.passphrase === undefined ? {} : { passphrase: tls.passphrase }),
    ...(tls.servername === undefined ? {} : { servername: tls.servername })
  }
}

/** undici `connect` options for one target: the connect timeout plus TLS (see tlsOptions). */
export function connectOptions (tls: ResolvedTransport['tls'], timeout: number): buildConnector.BuildOptions {
  return { timeout, ...tlsOptions(tls) }
}
