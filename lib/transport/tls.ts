import type { buildConnector } from 'undici'
import type { ResolvedTransport } from './options.js'

/**
 * undici `connect` options for one target: the connect timeout plus TLS.
 * Certificates are verified unless `rejectUnauthorized: false` is set
 * explicitly; `ca` replaces the trusted roots, `cert`/`key` present a client
 * certificate (mTLS), `servername` sets SNI and the name checked.
 */
export function connectOptions (tls: ResolvedTransport['tls'], timeout: number): buildConnector.BuildOptions {
  return {
    timeout,
    rejectUnauthorized: tls.rejectUnauthorized,
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert, key: tls.key }),
    ...(tls.passphrase === undefined ? {} : { passphrase: tls.passphrase }),
    ...(tls.servername === undefined ? {} : { servername: tls.servername })
  }
}
