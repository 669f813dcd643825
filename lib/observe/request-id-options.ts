import { BlockList, isIP } from 'node:net'
import { fail, headerName, isObject, knownKeys } from '../options/validate.js'

/*
 * The `requestId` option, resolved once at register (and by
 * `gatehouseRequestId`, which the host passes to Fastify as `genReqId`).
 */

export const DEFAULT_REQUEST_ID_HEADER = 'x-request-id'

const REQUEST_ID_KEYS = ['header', 'trust']
const TRUST_SHAPE = 'a boolean, or addresses/CIDRs of the proxies in front ("10.0.0.0/8", a list, or loopback, linklocal, uniquelocal)'

// The names Fastify's trustProxy (proxy-addr) accepts for address ranges.
const NAMED_RANGES: Record<string, readonly string[]> = {
  loopback: ['127.0.0.1/8', '::1/128'],
  linklocal: ['169.254.0.0/16', 'fe80::/10'],
  uniquelocal: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7']
}

export interface ResolvedRequestId {
  /** Lower case. */
  readonly header: string
  /** Whether the incoming id of a connection from this peer address is kept. */
  readonly trusts: (address: string | undefined) => boolean
}

const always = (): boolean => true
const never = (): boolean => false

/** One address or CIDR into the list; false when it is neither. */
function addRange (list: BlockList, entry: string): boolean {
  const [address = '', bits, extra] = entry.split('/')
  const family = isIP(address)
  if (family === 0 || extra !== undefined) return false
  const type = family === 4 ? 'ipv4' : 'ipv6'
  if (bits === undefined) {
    list.addAddress(address, type)
    return true
  }
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > (family === 4 ? 32 : 128)) return false
  list.addSubnet(address, Number(bits), type)
  return true
}

function resolveTrust (value: unknown, at: string): ResolvedRequestId['trusts'] {
  if (value === undefined || value === false) return never
  if (value === true) return always
  const entries = typeof value === 'string' ? value.split(',') : Array.isArray(value) ? value : fail(at, TRUST_SHAPE)
  const list = new BlockList()
  for (const raw of entries) {
    if (typeof raw !== 'string') fail(at, TRUST_SHAPE)
    const entry = raw.trim()
    const named = NAMED_RANGES[entry]
    const ok = named !== undefined ? named.every((range) => addRange(list, range)) : addRange(list, entry)
    if (!ok) fail(at, `${TRUST_SHAPE}, not "${entry}"`)
  }
  if (entries.length === 0) fail(at, TRUST_SHAPE)
  return (address) => address !== undefined && isIP(address) !== 0 && list.check(address, isIP(address) === 4 ? 'ipv4' : 'ipv6')
}

/** Validates `requestId`; `undefined` when it is `false` (off). */
export function resolveRequestId (value: unknown, at = 'requestId'): ResolvedRequestId | undefined {
  if (value === false) return undefined
  if (value !== undefined && !isObject(value)) fail(at, 'false or { header?, trust? }')
  const opts = value ?? {}
  knownKeys(opts, at, REQUEST_ID_KEYS)
  return {
    header: opts.header === undefined ? DEFAULT_REQUEST_ID_HEADER : headerName(opts.header, `${at}.header`),
    trusts: resolveTrust(opts.trust, `${at}.trust`)
  }
}
