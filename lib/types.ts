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
