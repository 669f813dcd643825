import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer, STATUS_CODES } from 'node:http'
import type { IncomingMessage, Server } from 'node:http'
import { isIPv4 } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { MetricsForbiddenError, MetricsUnauthorizedError } from '../errors.js'
import type { GatehouseMetrics } from './metrics.js'
import type { ResolvedScrapeAccess } from './options.js'

/*
 * Serving the metrics: on a route of the gateway (`metrics.path`), or on a
 * listener of its own (the `gatehouse` command's `metrics.listen`, which with
 * workers serves the sum over every worker). Both refuse the same callers
 * with the same codes.
 */

const BEARER = /^Bearer +(\S+) *$/i

function digest (value: string): Buffer {
  return createHash('sha256').update(value).digest()
}

/** Compares in constant time, whatever the lengths (both sides are hashed first). */
function sameToken (given: string, expected: Buffer): boolean {
  return timingSafeEqual(digest(given), expected)
}

/** `::ffff:127.0.0.1` as `127.0.0.1`: dual-stack sockets report IPv4 callers so. */
function plainAddress (address: string): string {
  const mapped = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : address
  return isIPv4(mapped) ? mapped : address
}

/** The checks of one scrape: the error to answer with, or `undefined` to serve it. */
export function scrapeGuard (access: ResolvedScrapeAccess): (address: string | undefined, authorization: string | undefined) => Error | undefined {
  const expected = access.token === undefined ? undefined : digest(access.token)
  return (address, authorization) => {
    if (access.allow !== undefined) {
      const ip = address === undefined ? undefined : plainAddress(address)
      if (ip === undefined || !access.allow.check(ip, isIPv4(ip) ? 'ipv4' : 'ipv6')) return new MetricsForbiddenError()
    }
    if (expected !== undefined) {
      const match = authorization === undefined ? null : BEARER.exec(authorization)
      if (match === null || !sameToken(match[1] as string, expected)) return new MetricsUnauthorizedError()
    }
    return undefined
  }
}

/** `GET path` in the gatehouse scope: its errors get the gatehouse shape from the scope's error handler. */
export function registerScrapeRoute (scope: FastifyInstance, path: string, access: ResolvedScrapeAccess, metrics: GatehouseMetrics): void {
  const guard = scrapeGuard(access)
  scope.get(path, async (request, reply) => {
    const refused = guard(request.ip, request.headers.authorization)
    if (refused !== undefined) throw refused
    const { text, contentType } = await metrics.scrape()
    reply.header('cache-control', 'no-store').type(contentType)
    return text
  })
}

/**
 * A listener that serves only the metrics, on any path (as Prometheus'
 * exporters do); refusals in the gatehouse error shape. `scrape` gives the
 * text (with workers: the sum over them).
 */
export function scrapeServer (access: ResolvedScrapeAccess, scrape: () => Promise<{ text: string, contentType: string }>, onError: (err: unknown) => void): Server {
  const guard = scrapeGuard(access)
  return createServer((request: IncomingMessage, response) => {
    const fail = (status: number, code: string, message: string): void => {
      const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }
      if (status === 401) headers['www-authenticate'] = 'Bearer realm="gatehouse"'
      if (status === 405) headers.allow = 'GET, HEAD'
      response.writeHead(status, headers).end(JSON.stringify({ statusCode: status, code, error: STATUS_CODES[status], message }))
    }
    const refused = guard(request.socket.remoteAddress, request.headers.authorization) as (Error & { statusCode: number, code: string }) | undefined
    if (refused !== undefined) return fail(refused.statusCode, refused.code, refused.message)
    if (request.method !== 'GET' && request.method !== 'HEAD') return fail(405, 'FST_GATEHOUSE_METHOD_NOT_ALLOWED', 'Method Not Allowed')
    scrape().then(({ text, contentType }) => {
      response.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' })
      response.end(request.method === 'HEAD' ? undefined : text)
    }, (err: unknown) => {
      onError(err)
      fail(500, 'FST_GATEHOUSE_INTERNAL', 'Internal Server Error')
    })
  })
}
