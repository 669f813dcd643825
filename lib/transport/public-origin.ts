import { isIP } from 'node:net'
import type { FastifyRequest, onRequestHookHandler } from 'fastify'
import { BadRequestError } from '../errors.js'

// One DNS label as hosts are really named: letters, digits, '-' and '_' (which
// internal names use and nginx accepts). No percent-encoding, no sub-delims.
const LABEL = /^[a-z0-9_-]{1,63}$/i
const NUMERIC = /^(?:0x[0-9a-f]*|[0-9]+)$/i
const PORT = /^[1-9][0-9]{0,4}$/

// Origins already derived, by protocol and host. A gateway sees few distinct
// hosts, so most requests skip the grammar and URL checks; the cap keeps a
// caller sending random Host values from growing it without bound.
const derived = new Map<string, string | null>()
const DERIVED_MAX = 256
// The longest valid authority: a 253-character name, its trailing dot and ":65535".
const AUTHORITY_MAX = 260

function validHostname (host: string): boolean {
  const name = host.endsWith('.') ? host.slice(0, -1) : host
  if (name.length === 0 || name.length > 253) return false
  const labels = name.split('.')
  for (const label of labels) if (!LABEL.test(label)) return false
  // WHATWG URL reads a name that ends in a number as IPv4 (and rejects
  // "1.2.3.999"): only a real dotted quad may look like one.
  return !NUMERIC.test(labels[labels.length - 1] as string) || isIP(name) === 4
}

/**
 * True for `host[:port]` as RFC 9110 allows it in `Host` and as a browser
 * would send it: a DNS name or IPv4 address or bracketed IPv6 literal, then
 * an optional port 1-65535. No userinfo, no empty port, no spaces.
 */
export function isValidAuthority (value: string): boolean {
  let rest: string
  if (value.startsWith('[')) {
    const end = value.indexOf(']')
    if (end === -1 || isIP(value.slice(1, end)) !== 6) return false
    rest = value.slice(end + 1)
  } else {
    const colon = value.indexOf(':')
    const host = colon === -1 ? value : value.slice(0, colon)
    if (!validHostname(host)) return false
    rest = colon === -1 ? '' : value.slice(colon)
  }
  if (rest === '') return true
  if (rest[0] !== ':') return false
  const port = rest.slice(1)
  return PORT.test(port) && Number(port) <= 65535
}

function derive (protocol: string, host: string): string | undefined {
  if (!isValidAuthority(host)) return undefined
  const origin = `${protocol}://${host}`
  try {
    // The grammar above is stricter than WHATWG URL; this only guards against
    // a gap between the two, so that no later `new URL(origin)` can throw.
    new URL(origin) // eslint-disable-line no-new
  } catch {
    return undefined
  }
  return origin
}

/**
 * The origin the client addressed (`https://api.example.com:8443`), from
 * `request.protocol` and `request.host` (both honour trustProxy:
 * X-Forwarded-Proto / X-Forwarded-Host from a trusted hop), or undefined when
 * they do not make a usable origin. Never throws.
 */
export function requestOrigin (request: FastifyRequest): string | undefined {
  const protocol = String(request.protocol ?? '').toLowerCase()
  const host = request.host
  if ((protocol !== 'http' && protocol !== 'https') || typeof host !== 'string' || host.length > AUTHORITY_MAX) return undefined
  // The host as sent: its case is kept in the answer.
  const key = `${protocol}://${host}`
  let origin = derived.get(key)
  if (origin === undefined) {
    origin = derive(protocol, host) ?? null
    if (derived.size >= DERIVED_MAX) derived.clear()
    derived.set(key, origin)
  }
  return origin ?? undefined
}

const ABSOLUTE_FORM = /^https?:\/\/([^/?#]*)/i

/** True when the raw headers hold more than one `Host` (Node keeps only the first). */
function repeatedHost (raw: readonly string[]): boolean {
  let hosts = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    if (name.length === 4 && name.toLowerCase() === 'host' && ++hosts > 1) return true
  }
  return false
}

/**
 * Checks an absolute-form request target (`GET http://host/path`) against
 * `Host` (RFC 9112 §3.2.2: they must name the same authority) and, when they
 * agree, turns it into the origin form every later step expects. False when
 * they disagree.
 */
function agreesWithHost (request: FastifyRequest): boolean {
  const target = request.raw.url ?? ''
  if (target.startsWith('/')) return true
  const match = ABSOLUTE_FORM.exec(target)
  // Anything else ('*', garbage) is left to the path guard.
  if (match === null) return true
  if ((match[1] as string).toLowerCase() !== String(request.headers.host ?? '').toLowerCase()) return false
  const rest = target.slice(match[0].length)
  // Routing already read the same path from it; only its form changes.
  request.raw.url = rest.startsWith('/') ? rest : '/' + rest
  return true
}

/**
 * onRequest hook of a target scope: a request whose `Host` (or, with
 * `trustProxy`, `X-Forwarded-Host` / `X-Forwarded-Proto`) is not a valid
 * authority, that carries more than one `Host`, or whose absolute-form
 * target names another authority than its `Host`, gets 400 before any token
 * check or upstream contact, as nginx and Envoy answer them.
 */
export const checkRequestOrigin: onRequestHookHandler = function checkRequestOrigin (request, _reply, done) {
  if (repeatedHost(request.raw.rawHeaders)) {
    done(new BadRequestError('More than one Host header'))
  } else if (!agreesWithHost(request)) {
    done(new BadRequestError('The request target and the Host header name different hosts'))
  } else {
    done(requestOrigin(request) === undefined ? new BadRequestError('Invalid Host (or X-Forwarded-Host / X-Forwarded-Proto) header') : undefined)
  }
}
