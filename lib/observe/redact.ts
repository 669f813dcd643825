import type { FastifyRequest } from 'fastify'
import { resolveOptions } from '../options/resolve.js'
import type { GatehouseOptions } from '../types.js'

/*
 * What a host's logger needs so that no log line of the gateway carries a
 * secret: pino `redact` paths for every header that holds one, and a `req`
 * serializer whose URL hides token query parameters. The gatehouse's own log
 * calls never log header values; these cover Fastify's request lines and
 * whatever the host or a middleware logs.
 */

/** Headers that carry secrets whatever the targets. */
export const SECRET_HEADERS = Object.freeze(['authorization', 'proxy-authorization', 'cookie', 'set-cookie'])
// RFC 6750's query parameter for bearer tokens, hidden even where no target reads it.
const TOKEN_PARAMETER = 'access_token'
// Where a header map sits in the objects Fastify, the host and middleware usually log.
const HEADER_HOLDERS = ['req.headers', 'res.headers', 'request.headers', 'response.headers', 'headers', 'upstream.headers']
export const REDACTED = '[Redacted]'

/** The log settings `gatehouseLogging` returns, to spread into Fastify's `logger` option. */
export interface GatehouseLogging {
  redact: { paths: string[], censor: string }
  serializers: { req: (request: FastifyRequest) => Record<string, unknown> }
}

/** `url` with the values of `names` in its query replaced. */
export function redactUrl (url: string, names: ReadonlySet<string>): string {
  const mark = url.indexOf('?')
  if (mark === -1) return url
  const query = url.slice(mark + 1).split('&').map((pair) => {
    const equals = pair.indexOf('=')
    const name = equals === -1 ? pair : pair.slice(0, equals)
    let decoded = name
    try {
      decoded = decodeURIComponent(name.replace(/\+/g, ' '))
    } catch {}
    return names.has(decoded.toLowerCase()) ? `${name}=${REDACTED}` : pair
  })
  return `${url.slice(0, mark)}?${query.join('&')}`
}

/**
 * Logger settings that keep secrets out of the host's log lines: the
 * `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie` headers
 * and every credential header a target injects are redacted wherever a
 * header map is logged, and token query parameters (WebSocket
 * `token.queryParameter`, `access_token`) are hidden in request URLs.
 *
 * @example
 * const logging = gatehouseLogging(options)
 * const app = Fastify({ logger: { level: 'info', ...logging } })
 * await app.register(gatehouse, options)
 */
export function gatehouseLogging (options: GatehouseOptions): GatehouseLogging {
  const resolved = resolveOptions(options)
  const headers = new Set<string>(SECRET_HEADERS)
  const parameters = new Set([TOKEN_PARAMETER])
  for (const target of resolved.targets) {
    const credentials = target.credentials
    if (credentials.kind === 'static') for (const name of Object.keys(credentials.headers)) headers.add(name)
    if (credentials.kind === 'computed') for (const name of credentials.names) headers.add(name)
    const parameter = target.websocket?.tokenQueryParameter
    if (typeof parameter === 'string') parameters.add(parameter.toLowerCase())
  }
  // Header names are RFC 9110 tokens: no double quote can end the bracket early.
  const paths = HEADER_HOLDERS.flatMap((holder) => [...headers].map((name) => `${holder}["${name}"]`))
  return {
    redact: { paths, censor: REDACTED },
    serializers: {
      // Fastify's own `req` serializer, with the URL's token parameters
      // hidden. Anything else logged as `req` (a middleware's own object)
      // passes as it is, its headers redacted by the paths.
      req: (request) => typeof request?.url !== 'string' || request.raw === undefined
        ? request as unknown as Record<string, unknown>
        : {
            method: request.method,
            url: redactUrl(request.url, parameters),
            version: request.headers['accept-version'],
            host: request.host,
            remoteAddress: request.ip,
            remotePort: request.socket?.remotePort
          }
    }
  }
}
