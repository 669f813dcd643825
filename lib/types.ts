import type { Readable } from 'node:stream'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import type { FastifyCompressOptions } from '@fastify/compress'

/**
 * The claims carried by gatehouse tokens. Augment it to type `request.user`
 * and `ctx.user` everywhere:
 *
 * @example
 * declare module 'fastify-gatehouse' {
 *   interface GatehouseClaims { sub: string, role: 'admin' | 'clerk' }
 * }
 */
export interface GatehouseClaims {
  sub?: string
  [claim: string]: unknown
}

/** Headers as Node gives them: lower-case names, repeated headers as arrays. */
export type HeaderMap = Record<string, string | string[] | undefined>

/** Credentials a login route receives. */
export interface LoginCredentials {
  username: string
  password: string
}

/**
 * Checks credentials and returns the claims to put in the token, or `null`.
 * It should take the same time whether the user exists or not; `staticUsers()`
 * does.
 */
export type CredentialsVerifier = (
  credentials: LoginCredentials,
  request: FastifyRequest
) => Promise<GatehouseClaims | null> | GatehouseClaims | null

export type HmacAlgorithm = 'HS256' | 'HS384' | 'HS512'
export type AsymmetricAlgorithm = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA'
export type TokenAlgorithm = HmacAlgorithm | AsymmetricAlgorithm

export interface LoginOptions {
  /**
   * Route path of the login endpoint.
   * @example '/auth/login'
   */
  path?: string
  /** Checks the credentials; see `staticUsers()` for a ready one. */
  verify: CredentialsVerifier
}

export interface AuthOptions {
  /**
   * Signing algorithm, pinned for verification too. Default `'HS256'`.
   * @example 'EdDSA'
   */
  algorithm?: TokenAlgorithm
  /**
   * Shared secret for HS* algorithms, at least 32 bytes.
   * @example process.env.GATEHOUSE_JWT_SECRET
   */
  secret?: string | Buffer
  /** PEM private key for asymmetric algorithms (needed to sign, so with `login`). */
  privateKey?: string | Buffer
  /** PEM public key for asymmetric algorithms. */
  publicKey?: string | Buffer
  /**
   * Token lifetime: seconds, or a string such as `'15m'`, `'1h'`. Default one hour.
   * @example '15m'
   */
  expiresIn?: number | string
  /** `iss` claim set on sign and required on verify. */
  issuer?: string
  /** `aud` claim set on sign and required on verify. */
  audience?: string
  /** Seconds of clock skew accepted for `exp` and `nbf`. Default 0. */
  clockTolerance?: number
  /**
   * The login route, or `false` for verify-only mode (tokens minted elsewhere).
   * @example { verify: staticUsers({ alice: { passwordHash, claims: { sub: 'alice' } } }) }
   */
  login: LoginOptions | false
}

/** Credentials a target receives instead of the caller's. */
export type TargetCredentials =
  | { header: string, value: string }
  | { bearer: string }
  | { basic: { username: string, password: string } }
  | ((ctx: GatehouseContext) => Promise<Record<string, string>> | Record<string, string>)

/** Named middleware phases; any number in between works too. */
export const Phase = Object.freeze({
  clientEdge: 0,
  proxy: 500,
  targetEdge: 1000
})
export type PhaseName = keyof typeof Phase

export type Next = () => Promise<void>

/**
 * Onion middleware: code before `await next()` runs before the request leaves,
 * code after it runs once the upstream has answered.
 */
export type Middleware<State extends object = Record<string, unknown>> =
  (ctx: GatehouseContext<State>, next: Next) => Promise<void> | void

export interface MiddlewareEntry<State extends object = Record<string, unknown>> {
  /** `'clientEdge'` (0), `'proxy'` (500, default), `'targetEdge'` (1000) or a number. */
  phase?: PhaseName | number
  handler: Middleware<State>
}

export interface TimeoutOptions {
  /** Milliseconds to establish the connection. Default 5000. */
  connect?: number
  /** Milliseconds to receive the response headers. Default 30000. */
  response?: number
  /** Milliseconds of silence allowed between body chunks. Default 60000. */
  idle?: number
}

export interface TargetOptions<State extends object = Record<string, unknown>> {
  /** Name used in logs and `ctx.target`. Default: the prefix. */
  name?: string
  /**
   * Path prefix, may hold params. Matches itself and everything below.
   * @example '/shops/:shopId/transactions'
   */
  prefix: string
  /**
   * Upstream URL, `http:` or `https:`, optionally with a base path.
   * @example 'http://127.0.0.1:8001'
   */
  upstream: string
  /**
   * Replaces the leading prefix on the way upstream; may use the prefix's params.
   * @example '/api/v2/:shopId'
   */
  rewritePrefix?: string
  /** Credentials injected into every upstream request. */
  credentials?: TargetCredentials
  /** Runs after the token check and before any upstream contact; false gives 403. */
  authorize?: (ctx: GatehouseContext<State>) => boolean | Promise<boolean>
  /** Skip the token check for this target. Default false. */
  public?: boolean
  /** Middleware around the upstream call. */
  middleware?: Array<Middleware<State> | MiddlewareEntry<State>>
  /** Seed of `ctx.state`; each request gets a fresh shallow copy. */
  state?: State
  /** Upstream timeouts. */
  timeouts?: TimeoutOptions
  /**
   * Tunnel WebSocket upgrades under the prefix to the upstream's `ws:`/`wss:`
   * equivalent, with the same token check, `authorize`, middleware and
   * credentials as HTTP. `true` uses the defaults. Default off.
   * @example { origins: ['https://shop.example'], token: { queryParameter: 'access_token' } }
   */
  websocket?: boolean | WebSocketOptions<State>
}

export interface GatehouseOptions {
  /** Token issuing and verification. */
  auth: AuthOptions
  /** The upstream targets, one encapsulated scope each. */
  targets: TargetOptions<any>[]
  /**
   * Options for `@fastify/compress`, or `false` to leave responses as they are.
   * @example { threshold: 2048, encodings: ['br', 'gzip'] }
   */
  compress?: FastifyCompressOptions | false
}

/** What a target looks like from inside a middleware. */
export interface TargetInfo {
  readonly name: string
  readonly prefix: string
  readonly upstream: string
}

/** The request that will be sent upstream; mutable before `next()`. */
export interface ProxyRequest {
  method: string
  /** Path sent upstream, already rewritten, without the query string. */
  path: string
  /** Raw query string without `?`, forwarded byte for byte. */
  query: string
  headers: HeaderMap
}

/** Body a response may carry. Objects are sent as JSON. */
export type ResponseBody = Readable | Buffer | string | object | null

/** The upstream's answer (or the one set by `ctx.respond`); mutable after `next()`. */
export interface ProxyResponse {
  status: number
  headers: HeaderMap
  body: ResponseBody
}

/** The per-request context every middleware receives. */
export interface GatehouseContext<State extends object = Record<string, unknown>> {
  readonly request: ProxyRequest
  response: ProxyResponse | undefined
  state: State
  readonly user: GatehouseClaims | null
  readonly params: Readonly<Record<string, string>>
  readonly target: TargetInfo
  readonly log: FastifyBaseLogger
  readonly fastifyRequest: FastifyRequest
  readonly fastifyReply: FastifyReply
  /** Answer without the upstream; middlewares of lower phases still see it. */
  respond: (status: number, body?: ResponseBody, headers?: HeaderMap) => void
}

// WebSocket tunnels (targets with `websocket`)

/** Where an upgrade request may carry the token besides `Authorization: Bearer`. */
export interface WebSocketTokenOptions {
  /**
   * A `Sec-WebSocket-Protocol` entry `<prefix><token>`, for browsers that cannot
   * set headers. It is never offered upstream nor selected. `false` disables;
   * `true` or default: `'bearer.'`.
   * @example new WebSocket(url, ['feed.v1', 'bearer.' + token])
   */
  protocolPrefix?: string | boolean
  /**
   * A query parameter holding the token, removed before the request goes
   * upstream. Off by default: URLs end up in access logs. `true` means
   * `'access_token'`.
   * @example 'access_token'
   */
  queryParameter?: string | boolean
}

/** One WebSocket message as a hook sees it: text as a string, binary as a Buffer. */
export type WebSocketMessage =
  | { readonly binary: false, readonly data: string }
  | { readonly binary: true, readonly data: Buffer }

/**
 * What a message hook returns: `undefined` passes the message unchanged,
 * `null` drops it, a string sends a text message, a Buffer a binary one.
 */
export type WebSocketHookResult = string | Buffer | null | undefined | void

/** The per-connection context message hooks receive. */
export interface WebSocketContext<State extends object = Record<string, unknown>> {
  /** The same state object the upgrade's middleware saw. */
  state: State
  readonly user: GatehouseClaims | null
  readonly params: Readonly<Record<string, string>>
  readonly target: TargetInfo
  readonly log: FastifyBaseLogger
  /** The upgrade request. */
  readonly fastifyRequest: FastifyRequest
  /** The subprotocol agreed end to end, `''` for none. */
  readonly protocol: string
  /** Closes both sides with this code (1000, 1001, 1008, 1011, 3000-4999 ...) and reason. */
  close: (code?: number, reason?: string) => void
}

/**
 * Runs on each message of one direction, in arrival order; results are sent
 * in the same order even when the hook is async.
 */
export type WebSocketMessageHook<State extends object = Record<string, unknown>> =
  (message: WebSocketMessage, ctx: WebSocketContext<State>) => WebSocketHookResult | Promise<WebSocketHookResult>

export interface WebSocketOptions<State extends object = Record<string, unknown>> {
  /** Token carriers for clients that cannot send `Authorization`. */
  token?: WebSocketTokenOptions
  /**
   * Origins allowed to open a connection (exact match, as browsers send them);
   * others get 403. Requests without `Origin` (non-browser clients) pass.
   * Default: any origin.
   * @example ['https://shop.example']
   */
  origins?: string[]
  /**
   * Largest message accepted from either side, in bytes; a larger one closes
   * the connection with 1009. Default 1 MiB.
   * @example 64 * 1024
   */
  maxPayload?: number
  /**
   * Milliseconds between keep-alive pings to both peers; a peer that has not
   * answered the previous ping is dropped. `0` disables. Default 30000.
   * @example 15_000
   */
  pingInterval?: number
  /**
   * Milliseconds without a message in either direction before both sides are
   * closed with 1001. `0` (default) disables.
   * @example 300_000
   */
  idleTimeout?: number
  /**
   * Bytes queued towards a slow peer before reading from the other side
   * pauses. Default 1 MiB.
   * @example 256 * 1024
   */
  highWaterMark?: number
  /**
   * Runs on each message from the caller before it goes upstream.
   * @example (message, ctx) => message.binary ? null : undefined
   */
  onClientMessage?: WebSocketMessageHook<State>
  /**
   * Runs on each message from the upstream before it reaches the caller.
   * @example (message, ctx) => message.binary ? undefined : message.data.replace(/secret/g, '***')
   */
  onUpstreamMessage?: WebSocketMessageHook<State>
}
