import { MAX_TIMER_MS, fail, integer, knownKeys, object, origin } from '../options/validate.js'
import type { WebSocketMessageHook, WebSocketOptions } from '../types.js'

export const DEFAULT_TOKEN_PROTOCOL_PREFIX = 'bearer.'
export const DEFAULT_TOKEN_QUERY_PARAMETER = 'access_token'
export const DEFAULT_WEBSOCKET = Object.freeze({
  maxPayload: 1024 * 1024,
  pingInterval: 30_000,
  idleTimeout: 0,
  highWaterMark: 1024 * 1024
})

// A subprotocol is an RFC 9110 token; a prefix must be one too.
const PROTOCOL_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const QUERY_NAME = /^[A-Za-z0-9\-._~]+$/

export interface ResolvedWebSocket {
  readonly tokenProtocolPrefix: string | false
  readonly tokenQueryParameter: string | false
  readonly origins: ReadonlySet<string> | undefined
  readonly maxPayload: number
  readonly pingInterval: number
  readonly idleTimeout: number
  readonly highWaterMark: number
  readonly onClientMessage: WebSocketMessageHook<any> | undefined
  readonly onUpstreamMessage: WebSocketMessageHook<any> | undefined
}

const WEBSOCKET_KEYS = ['token', 'origins', 'maxPayload', 'pingInterval', 'idleTimeout', 'highWaterMark', 'onClientMessage', 'onUpstreamMessage']

function carrier (value: unknown, option: string, fallback: string | false, pattern: RegExp, byDefault: string): string | false {
  if (value === undefined) return fallback
  if (value === false) return false
  if (value === true) return byDefault
  if (typeof value !== 'string' || !pattern.test(value)) fail(option, `false, true or a name such as "${byDefault}"`)
  return value
}

function hook (value: unknown, option: string): WebSocketMessageHook<any> | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'function') fail(option, 'a function (message, ctx) => message | string | Buffer | null | undefined')
  return value as WebSocketMessageHook<any>
}

/** Validates a target's `websocket` option; `undefined` when WebSocket is off. */
export function resolveWebSocket (value: unknown, at: string): ResolvedWebSocket | undefined {
  if (value === undefined || value === false) return undefined
  if (value !== true && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    fail(at, 'a boolean or an object { token?, origins?, maxPayload?, pingInterval?, idleTimeout?, highWaterMark?, onClientMessage?, onUpstreamMessage? }')
  }
  const opts: WebSocketOptions<any> = value === true ? {} : value as WebSocketOptions<any>
  if (value !== true) knownKeys(value as Record<string, unknown>, at, WEBSOCKET_KEYS)
  object(opts.token, `${at}.token`, ['protocolPrefix', 'queryParameter'])
  if (opts.origins !== undefined && (!Array.isArray(opts.origins) || opts.origins.length === 0)) {
    fail(`${at}.origins`, 'a non-empty array of origins')
  }
  return {
    tokenProtocolPrefix: carrier(opts.token?.protocolPrefix, `${at}.token.protocolPrefix`, DEFAULT_TOKEN_PROTOCOL_PREFIX, PROTOCOL_TOKEN, DEFAULT_TOKEN_PROTOCOL_PREFIX),
    tokenQueryParameter: carrier(opts.token?.queryParameter, `${at}.token.queryParameter`, false, QUERY_NAME, DEFAULT_TOKEN_QUERY_PARAMETER),
    origins: opts.origins === undefined ? undefined : new Set(opts.origins.map((o, i) => origin(o, `${at}.origins[${i}]`))),
    maxPayload: integer(opts.maxPayload, `${at}.maxPayload`, DEFAULT_WEBSOCKET.maxPayload, { min: 1 }),
    pingInterval: integer(opts.pingInterval, `${at}.pingInterval`, DEFAULT_WEBSOCKET.pingInterval, { min: 0, max: MAX_TIMER_MS }),
    idleTimeout: integer(opts.idleTimeout, `${at}.idleTimeout`, DEFAULT_WEBSOCKET.idleTimeout, { min: 0, max: MAX_TIMER_MS }),
    highWaterMark: integer(opts.highWaterMark, `${at}.highWaterMark`, DEFAULT_WEBSOCKET.highWaterMark, { min: 1 }),
    onClientMessage: hook(opts.onClientMessage, `${at}.onClientMessage`),
    onUpstreamMessage: hook(opts.onUpstreamMessage, `${at}.onUpstreamMessage`)
  }
}
