import type { FastifyReply, FastifyRequest, onSendHookHandler, RouteOptions } from 'fastify'

// The Content-Encoding a reply had before @fastify/compress's onSend ran.
const encodingBefore = new WeakMap<FastifyReply, unknown>()

const ENTITY_TAG = /(?:W\/)?"[^"]*"|\*/g

/**
 * An `If-None-Match` for the upstream with every `W/` dropped. A client
 * holding a compressed variant has the weak tag the gateway made from the
 * upstream's strong one; If-None-Match compares weakly (RFC 9110 §13.1.2),
 * so this asks the same question of an upstream that compares strongly by
 * mistake. Unchanged when it does not parse as a list of entity tags.
 */
export function upstreamIfNoneMatch (value: string): string {
  const tags = value.match(ENTITY_TAG)
  if (tags === null || value.replace(ENTITY_TAG, '').replace(/[\s,]/g, '') !== '') return value
  return tags.map((tag) => tag.startsWith('W/') ? tag.slice(2) : tag).join(', ')
}

const rememberEncoding: onSendHookHandler = function rememberEncoding (_request, reply, payload, done) {
  // Only weakenEtag reads it, and only for a strong ETag: most replies skip the map.
  if (isStrongEtag(reply.getHeader('etag'))) encodingBefore.set(reply, reply.getHeader('content-encoding'))
  done(null, payload)
}

function isStrongEtag (etag: unknown): etag is string {
  return typeof etag === 'string' && etag.startsWith('"')
}

function holdsWeak (request: FastifyRequest, etag: string): boolean {
  const header = request.headers['if-none-match']
  const tags = typeof header === 'string' ? header.match(ENTITY_TAG) : null
  return tags !== null && tags.includes(`W/${etag}`)
}

/**
 * The compressed variant is other bytes than the identity one: it must not
 * carry the same strong ETag, so it gets the weak one (what nginx's gzip
 * does). A 304 answering the weak tag the client holds keeps it weak too.
 */
const weakenEtag: onSendHookHandler = function weakenEtag (request, reply, payload, done) {
  const etag = reply.getHeader('etag')
  if (isStrongEtag(etag)) {
    const encoding = reply.getHeader('content-encoding')
    const compressedHere = encoding !== undefined && encoding !== 'identity' && encodingBefore.get(reply) !== encoding
    if (compressedHere || (reply.statusCode === 304 && holdsWeak(request, etag))) reply.header('etag', `W/${etag}`)
  }
  done(null, payload)
}

/**
 * onRoute hook for a target scope, added after @fastify/compress's (which
 * appends its onSend to each route): brackets compress's onSend so the
 * ETag of a response it compressed is weakened.
 */
export function bracketCompression (routeOptions: RouteOptions): void {
  const existing = routeOptions.onSend
  const hooks = existing === undefined ? [] : Array.isArray(existing) ? existing : [existing]
  routeOptions.onSend = [rememberEncoding, ...hooks, weakenEtag]
}
