import type { Readable } from 'node:stream'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import type { FastifyCompressOptions } from '@fastify/compress'
import type { Registry as PromRegistry } from 'prom-client'

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
  // No declared members: an augmentation may then declare any claim (even
  // `sub: string`) without clashing with a modifier or type set here.
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
  /**
   * Slow down, then refuse with 429, repeated failed logins per user name and
   * per client address. `true` or omitted uses the defaults; `false` turns
   * it off. Default on.
   * @example { user: { max: 5 }, window: '15m' }
   */
  throttle?: boolean | LoginThrottleOptions
  /**
   * Credential checks (`verify` calls) run at once; scrypt runs on libuv's
   * 4-thread pool, which DNS, file I/O and async zlib share. Default 2.
   * @example 1
   */
  concurrency?: number
  /**
   * Logins that may wait for a free check; the next ones get 503
   * `FST_GATEHOUSE_LOGIN_BUSY` with `Retry-After`. Default 8.
   * @example 16
   */
  queue?: number
}

/** Limits for one kind of throttling key (a user name or a client address). */
export interface ThrottleLimit {
  /**
   * Attempts without success allowed per window; the next ones get 429 until
   * the lockout ends. Default 10 per user name, 100 per address.
   * @example 5
   */
  max?: number
  /**
   * Attempts after which each further one is delayed, the delay doubling each
   * time. Default 3 per user name, 30 per address.
   * @example 2
   */
  delayAfter?: number
}

export interface LoginThrottleOptions {
  /** Per user name (any name, known or not, counts the same way). */
  user?: ThrottleLimit
  /** Per client address (`request.ip`; IPv6 grouped by /64). Set `trustProxy` behind a proxy. */
  address?: ThrottleLimit
  /**
   * Window the attempts are counted over, and length of a lockout. Default `'15m'`.
   * @example '1h'
   */
  window?: number | string
  /** First delay in milliseconds once `delayAfter` is passed. Default 250. */
  delayMs?: number
  /** Longest delay in milliseconds. Default 4000. */
  maxDelayMs?: number
  /**
   * When the store fails (Redis down or slow): `'closed'` answers the login
   * with 503 `FST_GATEHOUSE_STORE_UNAVAILABLE` without checking the password;
   * `'open'` checks it uncounted (Kong's `fault_tolerant`, `@fastify/rate-limit`'s
   * `skipOnError`). Default `'closed'`.
   * @example 'open'
   */
  onStoreError?: 'closed' | 'open'
}

/** Refresh tokens: `true` uses the defaults. */
export interface RefreshOptions {
  /**
   * Route path of the refresh endpoint. Default `'/token/refresh'`.
   * @example '/auth/refresh'
   */
  path?: string
  /**
   * Lifetime of one refresh token; each refresh issues a new one. Default `'14d'`.
   * @example '7d'
   */
  expiresIn?: number | string
  /**
   * Longest a login session lasts through refreshes; the user logs in again
   * after it. Default `'30d'`.
   * @example '90d'
   */
  maxAge?: number | string
  /**
   * Grace window after a rotation: the same refresh token used again within
   * it (a double submit, two tabs) gets a fresh pair in the same session
   * instead of revoking the session. Later reuse revokes it. Seconds or a
   * duration, at most 60 s; `0` turns the window off. Default `'2s'`.
   * @example 0
   */
  reuseInterval?: number | string
  /**
   * Asked on every refresh with the session's claims: returns the claims for
   * the next access token (a changed role takes effect now), or `null` to end
   * the whole session with 401 (user deleted, locked). Without it a session
   * keeps its login claims until `maxAge`.
   * @example async (claims) => { const user = await db.user(claims.sub); return user?.active ? { sub: user.id, role: user.role } : null }
   */
  verify?: RefreshVerifier
}

/** `auth.refresh.verify`: fresh claims for a session, or `null` to end it. */
export type RefreshVerifier = (
  claims: GatehouseClaims,
  request: FastifyRequest
) => Promise<GatehouseClaims | null> | GatehouseClaims | null

/** The logout route: `true` uses the defaults. */
export interface LogoutOptions {
  /**
   * Route path of the logout endpoint. Default `'/logout'`.
   * @example '/auth/logout'
   */
  path?: string
  /**
   * Also refuse the caller's access token, and every other access token of
   * its session, until they expire: tokens then carry a `jti` and every
   * verification (HTTP request, `verifyToken`) looks it and the session up in
   * the store. Without it, logout still refuses new WebSocket upgrades of the
   * session. Default false.
   * @example true
   */
  revokeAccessToken?: boolean
}

/**
 * One key of the gateway's own ring (`auth.keys`). HMAC keys take a
 * `secret`; asymmetric keys a `publicKey` and, to sign, a `privateKey`.
 *
 * @example { kid: '2026-12', algorithm: 'ES256', privateKey: readFileSync('es256.key'), publicKey: readFileSync('es256.pub') }
 */
export interface KeyOptions {
  /** The key id tokens carry in their header; an opaque string of at most 256 characters. */
  kid: string
  /** The one algorithm this key signs and verifies with. */
  algorithm: TokenAlgorithm
  /** Shared secret for HS* keys, at least 32 bytes, never a PEM. */
  secret?: string | Buffer
  /** PEM private key of an asymmetric key; required on the first key when `login` is on. */
  privateKey?: string | Buffer
  /** PEM public key of an asymmetric key. */
  publicKey?: string | Buffer
}

/**
 * An identity provider whose tokens the gateway accepts (verify only): its key
 * set is fetched from `url`, or found through OpenID discovery of `issuer`.
 *
 * @example
 * { issuer: 'https://sso.example.com/realms/erp', audience: 'erp-gateway' }
 */
export interface JwksOptions {
  /**
   * The provider's `iss`; tokens carrying it are verified by this key set and
   * no other. Without `url`, `issuer + '/.well-known/openid-configuration'`
   * gives the key set URL (`jwks_uri`).
   * @example 'https://example.eu.auth0.com/'
   */
  issuer: string
  /**
   * `aud` the tokens must carry (one of them).
   * @example ['erp-gateway', 'erp-api']
   */
  audience: string | string[]
  /**
   * The key set URL (`jwks_uri`). Default: from OpenID discovery of `issuer`.
   * @example 'https://example.eu.auth0.com/.well-known/jwks.json'
   */
  url?: string
  /**
   * Algorithms accepted from this provider; each key is further pinned to its
   * own `alg` (or what its `kty`/`crv` allows). HS* is refused. Default: every
   * asymmetric algorithm.
   * @example ['RS256']
   */
  algorithms?: AsymmetricAlgorithm[]
  /**
   * After this the key set is fetched again in the background; until that
   * succeeds the cached keys keep working. Default `'10m'`.
   * @example '1h'
   */
  cacheMaxAge?: number | string
  /**
   * Least time between two fetches of the key set, however many unknown `kid`s
   * arrive. Default `'30s'`.
   * @example '1m'
   */
  cooldown?: number | string
  /**
   * Milliseconds a fetch (discovery or key set) may take. Default 5000.
   * @example 2000
   */
  timeout?: number
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
   * Several keys instead of `secret`/`publicKey`/`privateKey`/`algorithm`:
   * the first signs (its `kid` goes in the token header), all verify, each
   * token by the key its `kid` names. Retire a key by removing it.
   * @example [{ kid: 'k2', algorithm: 'ES256', privateKey, publicKey }, { kid: 'k1', algorithm: 'ES256', publicKey: oldPublicKey }]
   */
  keys?: KeyOptions[]
  /**
   * Identity providers whose tokens are accepted too, each chosen by the
   * token's `iss`. Verify only.
   * @example { issuer: 'https://sso.example.com/realms/erp', audience: 'erp-gateway' }
   */
  jwks?: JwksOptions | JwksOptions[]
  /**
   * Publishes the public keys of `auth.keys` as a JWKS at this path (`true`:
   * `'/.well-known/jwks.json'`). Default off.
   * @example true
   */
  jwksRoute?: boolean | string
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
  /**
   * Refresh tokens returned by login and rotated by `POST /token/refresh`.
   * Needs `login`. Default off.
   * @example { expiresIn: '7d' }
   */
  refresh?: boolean | RefreshOptions
  /**
   * `POST /logout`, which revokes the caller's refresh family. Default: on
   * when `refresh` is on, off otherwise. Needs `login`.
   * @example { revokeAccessToken: true }
   */
  logout?: boolean | LogoutOptions
  /**
   * Where refresh tokens, revoked token ids and login counters live. Default:
   * an in-memory store per instance. Several instances need a shared one.
   * @example redisStore({ client: new Redis(process.env.REDIS_URL) })
   */
  store?: GatehouseStore
}

/** Computes a target's credential headers per request. */
export type CredentialsFunction = (ctx: GatehouseContext) => Promise<Record<string, string>> | Record<string, string>

/**
 * Credentials computed per request, with the header names they own: the
 * caller's copies of those are dropped before any middleware, whether or not
 * `compute` sets them for this request; `compute` may set no other header.
 * @example { headers: ['x-api-key'], compute: async (ctx) => ({ 'x-api-key': await keyFor(ctx.user?.sub) }) }
 */
export interface ComputedCredentials {
  headers: string[]
  compute: CredentialsFunction
}

/**
 * Credentials a target receives instead of the caller's. The bare function
 * form is deprecated: it declares no names, so the caller's copies of the
 * headers it sets are only replaced when it sets them; use `{ headers, compute }`.
 */
export type TargetCredentials =
  | { header: string, value: string }
  | { bearer: string }
  | { basic: { username: string, password: string } }
  | ComputedCredentials
  | CredentialsFunction

/** Names of the middleware phases: `Phase.clientEdge` (0), `Phase.proxy` (500), `Phase.targetEdge` (1000). */
export type PhaseName = 'clientEdge' | 'proxy' | 'targetEdge'

export type Next = () => Promise<void>

/**
 * Onion middleware: code before `await next()` runs before the request leaves,
 * code after it runs once the upstream has answered.
 *
 * Without a `State` argument its `ctx.state` is `object`, so it fits any
 * target, whether that target's state is an interface or a type alias; name
 * the state it reads or writes (`Middleware<AuditState>`) to use it.
 */
export type Middleware<State extends object = object, Claims extends GatehouseClaims = GatehouseClaims> =
  (ctx: GatehouseContext<State, Claims>, next: Next) => Promise<void> | void

export interface MiddlewareEntry<State extends object = object, Claims extends GatehouseClaims = GatehouseClaims> {
  /** `'clientEdge'` (0), `'proxy'` (500, default), `'targetEdge'` (1000) or a number. */
  phase?: PhaseName | number
  handler: Middleware<State, Claims>
}

export interface TimeoutOptions {
  /**
   * Milliseconds to establish the connection. Default 5000. For a WebSocket
   * tunnel, the whole upstream handshake (TCP, TLS and its 101).
   */
  connect?: number
  /** Milliseconds to receive the response headers. Default 30000. */
  response?: number
  /** Milliseconds of silence allowed between body chunks. Default 60000. */
  idle?: number
  /**
   * Milliseconds a whole exchange may take, from the first attempt to the
   * last byte of the response body, however slowly the client reads.
   * Default 0 (off: downloads and streams are bounded by `idle` only).
   * @example 300_000
   */
  total?: number
  /**
   * Milliseconds a request may wait for a pooled connection when all of the
   * upstream's `transport.pool.connections` are busy; then 503
   * `FST_GATEHOUSE_UPSTREAM_BUSY` with `Retry-After`. 0 waits without limit.
   * Default 10000.
   * @example 2_000
   */
  queue?: number
}

/**
 * Roles and scopes a token must carry (exact, case-sensitive matches).
 * A token missing them gets 403 before any upstream contact.
 * @example { anyRole: ['admin', 'clerk'], allScopes: ['orders:read'] }
 */
export interface AllowRule {
  /** At least one of these roles. */
  anyRole?: string[]
  /** Every one of these scopes. */
  allScopes?: string[]
  /**
   * Claims holding roles, a string (one role) or an array of strings.
   * Default `['role', 'roles']`.
   * @example ['https://example.com/roles']
   */
  roleClaims?: string[]
  /**
   * Claims holding scopes, a space-separated string (OAuth `scope`) or an
   * array of strings. Default `['scope', 'scp']`.
   * @example ['permissions']
   */
  scopeClaims?: string[]
}

/**
 * Binds a param of the prefix to a claim: the decoded param must equal the
 * claim exactly (case-sensitive), or the request gets 403.
 * @example { param: 'shopId', claim: 'sub' }
 */
export interface TenantRule<Claims extends GatehouseClaims = GatehouseClaims> {
  /** A param of the target's prefix, without the colon. */
  param: string
  /** The claim holding the caller's tenant, a string or an integer. Default `'sub'`. */
  claim?: Extract<keyof Claims, string>
}

/** Returns the new leading prefix (`''` or an absolute path); the rest of the path is kept. */
export type RewriteFunction<State extends object = object, Claims extends GatehouseClaims = GatehouseClaims> =
  (ctx: GatehouseContext<State, Claims>) => string | Promise<string>

/**
 * A short-lived token the gateway signs for one upstream, so the upstream can
 * verify who called it without ever seeing the caller's own token.
 * @example { audience: 'inventory', expiresIn: '1m', claims: ['sub', 'role'] }
 */
export interface IdentityTokenOptions<Claims extends GatehouseClaims = GatehouseClaims> {
  /** The `aud` of the minted token: this upstream's name for itself; not `auth.audience`. */
  audience: string
  /** Lifetime, seconds or `'30s'`, `'2m'`; 1 s to 1 h. Default 60 s. */
  expiresIn?: number | string
  /** The caller's claims copied into the token (missing ones are left out). Default `['sub']`. */
  claims?: Array<Extract<keyof Claims, string>>
  /**
   * The header that carries it: `authorization` (default) gets `Bearer <token>`,
   * any other header the bare token.
   * @example 'x-gatehouse-identity'
   */
  header?: string
}

/**
 * Who the verified caller is, sent to the upstream: chosen claims as headers,
 * a token minted for the upstream, or both. The caller's own copies of these
 * headers are always removed.
 * @example { headers: { 'x-user-id': 'sub', 'x-user-role': 'role' } }
 * @example { token: { audience: 'billing' } }
 */
export interface IdentityOptions<Claims extends GatehouseClaims = GatehouseClaims> {
  /**
   * Header name to claim name. A string, number or boolean claim is sent,
   * percent-encoded where it holds anything but visible ASCII (and `%`); a
   * missing, empty or non-scalar claim sends no header.
   * @example { 'x-user-id': 'sub', 'x-user-role': 'role' }
   */
  headers?: Record<string, Extract<keyof Claims, string>>
  /** A token minted per caller for this upstream, signed with the gateway's current key. */
  token?: IdentityTokenOptions<Claims>
}

export interface TargetOptions<State extends object = Record<string, unknown>, Claims extends GatehouseClaims = GatehouseClaims> {
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
   * @example ['http://10.0.0.1:8001', 'http://10.0.0.2:8001']
   */
  upstream: string | string[]
  /**
   * Replaces the leading prefix on the way upstream; may use the prefix's params.
   * @example '/api/v2/:shopId'
   */
  rewritePrefix?: string
  /**
   * Replaces the leading prefix on the way upstream, from the token and the
   * params: a template with `{claims.NAME}` and `{params.NAME}` (values are
   * percent-encoded; a missing claim gives 403), or a function returning the
   * new prefix. The result must stay inside the upstream base path (else 400).
   * Not together with `rewritePrefix`.
   * @example '/shops/{claims.sub}/transactions'
   */
  rewrite?: string | RewriteFunction<State, Claims>
  /**
   * Roles and scopes the token must carry; checked before `authorize`.
   * @example { anyRole: ['shop'], allScopes: ['transactions:read'] }
   */
  allow?: AllowRule
  /**
   * Binds a prefix param to a claim; checked before `authorize`.
   * @example { param: 'shopId', claim: 'sub' }
   */
  tenant?: TenantRule<Claims>
  /** Credentials injected into every upstream request. */
  credentials?: TargetCredentials
  /**
   * The verified caller's identity sent upstream, as headers and/or a token
   * the gateway mints for this upstream. See the README, "Identity sent upstream".
   * @example { headers: { 'x-user-id': 'sub' }, token: { audience: 'inventory' } }
   */
  identity?: IdentityOptions<Claims>
  /** Runs after the token check, `allow` and `tenant`, before any upstream contact; false gives 403. */
  authorize?: (ctx: GatehouseContext<State, Claims>) => boolean | Promise<boolean>
  /** Skip the token check for this target. Default false. */
  public?: boolean
  /** Middleware around the upstream call. */
  middleware?: Array<Middleware<State, Claims> | MiddlewareEntry<State, Claims>>
  /** Seed of `ctx.state`; each request gets a fresh shallow copy. */
  state?: State
  /** Upstream timeouts. */
  timeouts?: TimeoutOptions
  /**
   * Most bytes `ctx.request` / `ctx.response` `buffer()`, `text()` and
   * `json()` read, before and after decoding. Beyond it a request body gives
   * 413, a response body 502. Bodies nobody reads are streamed, whatever their
   * size. Default 4 MiB.
   * @example 16 * 1024 * 1024
   */
  maxBufferedBody?: number
  /**
   * Decides what the caller gets when the upstream answers 4xx/5xx or cannot
   * be reached (refused, reset, timeout). Return a response, call
   * `ctx.respond`, or return nothing for the default: upstream statuses pass,
   * transport failures give 502/504. For an upstream answer `ctx.response`
   * holds it (its body can be read); for a transport failure it is undefined.
   * @example (error, ctx) => error.statusCode === 503 ? { status: 503, body: { message: 'maintenance' }, headers: { 'retry-after': '30' } } : undefined
   */
  onUpstreamError?: UpstreamErrorHandler<State, Claims>
  /**
   * Tunnel WebSocket upgrades under the prefix to the upstream's `ws:`/`wss:`
   * equivalent, with the same token check, `authorize`, middleware and
   * credentials as HTTP. `true` uses the defaults. Default off.
   * @example { origins: ['https://shop.example'], token: { queryParameter: 'access_token' } }
   */
  websocket?: boolean | WebSocketOptions<State>
  /**
   * This target's CORS policy: fields given here replace the top-level
   * `cors` fields of the same name (a full policy, with `origin`, when the
   * top-level `cors` is off); `false` turns CORS off for this target.
   * Default: the top-level `cors`.
   * @example { origin: ['https://admin.example'], credentials: true }
   */
  cors?: Partial<CorsOptions> | false
  /**
   * Upstream transport: pool, TLS, retries, balancing, health, circuit breaker,
   * header rewriting, event streams, HTTP/2.
   * @example { retry: { retries: 2 }, tls: { ca: readFileSync('ca.pem') } }
   */
  transport?: TransportOptions
  /**
   * Request headers the header policy drops that this target's upstream may
   * receive as the caller sent them: `Forwarded`, `X-Forwarded-*` other than
   * -For/-Host/-Proto, client address headers (`X-Real-IP`, `True-Client-IP`
   * ...) and URL/method overrides. Only list a header the hop in front of the
   * gateway sets itself. Hop-by-hop headers, `Host`, `Authorization` and
   * `Expect` are refused at register. Default none.
   * @example ['x-forwarded-prefix', 'x-http-method-override']
   */
  forwardHeaders?: string[]
  /**
   * Upstream response headers the client never sees, replacing the default
   * list of server banners (`Server`, `X-Powered-By`, `X-AspNet-Version`,
   * `X-AspNetMvc-Version`, `X-Runtime`, `X-Generator`, `X-Backend-Server`,
   * `X-SourceFiles`); `false` passes them all. Hop-by-hop headers are
   * dropped either way.
   * @example ['server', 'x-powered-by', 'x-upstream-node']
   */
  hideResponseHeaders?: string[] | false
}

/**
 * Who may call the gateway from a browser page on another origin (CORS).
 * Preflights are answered by the gateway, without a token, and never go
 * upstream; every answer to an allowed origin, the gateway's own errors
 * included, carries the CORS headers.
 */
export interface CorsOptions {
  /**
   * Origins allowed, compared exactly (scheme, host, port; no path, no `*`),
   * or a function deciding per request. A request from any other origin gets
   * no CORS headers.
   * @example ['https://shop.example', 'http://localhost:5173']
   * @example (origin) => origin.endsWith('.shop.example')
   */
  origin: string[] | ((origin: string, request: FastifyRequest) => boolean | Promise<boolean>)
  /**
   * Send `Access-Control-Allow-Credentials: true`, so pages may send cookies
   * or HTTP auth with `credentials: 'include'`. Bearer tokens do not need it.
   * Default `false`.
   * @example true
   */
  credentials?: boolean
  /**
   * Request headers a page may send. Default: those the preflight asks for
   * (`Access-Control-Request-Headers`), since only allowed origins get an answer.
   * @example ['authorization', 'content-type', 'x-request-id']
   */
  allowedHeaders?: string[]
  /**
   * Response headers a page may read, on top of `WWW-Authenticate`,
   * `Retry-After` and `X-Request-Id`, which are always exposed.
   * @example ['etag', 'x-total-count']
   */
  exposedHeaders?: string[]
  /**
   * Seconds a browser may cache a preflight answer (`Access-Control-Max-Age`).
   * Default: not sent, so the browser's own default applies (5 s in Chromium).
   * @example 600
   */
  maxAge?: number
}

export interface GatehouseOptions {
  /** Token issuing and verification. */
  auth: AuthOptions
  /** The upstream targets, one encapsulated scope each. */
  targets: Array<TargetOptions<any, any>>
  /**
   * Options for `@fastify/compress`, or `false` to leave responses as they are.
   * @example { threshold: 2048, encodings: ['br', 'gzip'] }
   */
  compress?: FastifyCompressOptions | false
  /**
   * Graceful shutdown of proxied requests on `fastify.close()`.
   * @example { drainTimeout: 5_000 }
   */
  shutdown?: ShutdownOptions
  /**
   * CORS for browser pages on other origins: login, refresh, logout and
   * every target. Off by default; the host's own routes are never touched.
   * @example { origin: ['https://shop.example'], maxAge: 600 }
   */
  cors?: CorsOptions
  /**
   * How request paths are compared with the target prefixes (see the README's path policy).
   * @example { caseInsensitive: false }
   */
  paths?: PathOptions
  /**
   * OpenTelemetry tracing, off by default: a server span per request (through
   * `@fastify/otel`), child spans for admission, middleware and the upstream
   * call, and W3C `traceparent`/`tracestate` sent upstream. Needs the optional
   * peers `@opentelemetry/api` and `@fastify/otel` installed. `true` uses the
   * globally registered tracer provider.
   * @example { tracerProvider: provider }
   */
  tracing?: boolean | TracingOptions
  /**
   * The request id (on by default; `false` turns it off): sent upstream on
   * every proxied request and WebSocket handshake and returned to the client.
   * The caller's own id is kept only from a trusted peer and when it is a safe
   * value; otherwise a random UUID replaces it. Pass `gatehouseRequestId(sameOptions)`
   * as Fastify's `genReqId` so that `reqId` in log lines is the same id.
   * @example { header: 'x-request-id', trust: ['10.0.0.0/8'] }
   */
  requestId?: RequestIdOptions | false
  /**
   * Liveness (`/healthz`) and readiness (`/readyz`) routes, outside the targets
   * and without a token. Off unless given (`true` for the defaults).
   * @example { readyPath: '/ready', maxEventLoopDelay: 500 }
   */
  health?: HealthOptions | boolean
  /**
   * Prometheus metrics (prom-client), off by default: `true` for the defaults
   * (`GET /metrics`, loopback callers only), or settings.
   * @example { allow: ['10.0.0.0/8'], token: process.env.METRICS_TOKEN! }
   */
  metrics?: boolean | MetricsOptions
  /**
   * One `info` line per request to a target, through the request's logger
   * (`msg: 'proxied'`). Off by default in code, on in the `gatehouse` command.
   * @example { user: true }
   */
  accessLog?: boolean | AccessLogOptions
}

/**
 * An OpenTelemetry `TracerProvider`, typed by shape so that the package's
 * types do not need `@opentelemetry/api` installed.
 */
export interface TracerProviderLike {
  getTracer: (name: string, version?: string) => unknown
}

export interface TracingOptions {
  /**
   * Where the gateway's spans go; default: the provider registered globally
   * with `@opentelemetry/api` (what `NodeTracerProvider#register()` does).
   * @example new NodeTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] })
   */
  tracerProvider?: TracerProviderLike
}

/** Where the request id is read and written, and whose copy is believed. */
export interface RequestIdOptions {
  /**
   * The header that carries it, both ways. Default `'x-request-id'`.
   * @example 'x-correlation-id'
   */
  header?: string
  /**
   * Whose incoming id is kept: `false` (default: always a fresh one, as Envoy
   * does for external callers), `true` (any peer: only behind a proxy that
   * sets or strips it), or the addresses/CIDRs of the proxies in front
   * (`'loopback'`, `'linklocal'` and `'uniquelocal'` also work, as in
   * Fastify's `trustProxy`). Compared with the connection's peer address.
   * @example ['10.0.0.0/8', '127.0.0.1']
   */
  trust?: boolean | string | string[]
}

/** Liveness and readiness routes. */
export interface HealthOptions {
  /**
   * Liveness: 200 `{ status: 'ok' }` while the process answers. Default `'/healthz'`.
   * @example '/livez'
   */
  path?: string
  /**
   * Readiness: 200 `{ status: 'ok' }`, or 503 `{ status: 'unavailable', reasons }`
   * when not listening, draining, the store does not answer, a target with
   * active health checks has no healthy upstream, or the event loop lags.
   * Default `'/readyz'`.
   * @example '/ready'
   */
  readyPath?: string
  /**
   * Mean event-loop delay (ms, measured by `@fastify/under-pressure`) above
   * which the gateway is not ready; `0` turns the check off. Default 1000.
   * @example 200
   */
  maxEventLoopDelay?: number
  /**
   * How often (ms) the event-loop delay is sampled. Default 1000.
   * @example 500
   */
  sampleInterval?: number
  /**
   * Milliseconds the store (`auth.store`) gets to answer a readiness probe. Default 500.
   * @example 250
   */
  storeTimeout?: number
  /**
   * Whether a target with active health checks and no healthy upstream makes
   * the gateway not ready. Default true.
   * @example false
   */
  upstreams?: boolean
}

/** Where and to whom the metrics are served (see the README's "Metrics"). */
export interface MetricsOptions {
  /**
   * The scrape route; `false` to collect only (read `fastify.gatehouse.metrics`
   * yourself). It may not fall under a target prefix, the login or token routes.
   * @default '/metrics'
   * @example '/-/metrics'
   */
  path?: string | false
  /**
   * Addresses or CIDRs (`request.ip`, so `trustProxy` applies) that may
   * scrape. Default: loopback only without `token`, any address with one.
   * @example ['127.0.0.1', '10.0.0.0/8', 'fd00::/8']
   */
  allow?: string[]
  /**
   * A bearer token a scrape must send (`Authorization: Bearer ...`), compared
   * in constant time; at least 16 characters.
   * @example process.env.METRICS_TOKEN!
   */
  token?: string
  /**
   * prom-client's default process and Node.js metrics (`process_*`, `nodejs_*`).
   * @default true
   */
  defaultMetrics?: boolean
  /**
   * The prom-client registry to register in, e.g. prom-client's global
   * `register` to serve the gateway's metrics beside your own. Default: a
   * registry of this gateway's own, so two gateways in one process never mix.
   */
  registry?: PromRegistry
}

/** What the access log adds to its lines; both off by default. */
export interface AccessLogOptions {
  /**
   * The query string in `path` (it may carry identifiers or secrets).
   * @default false
   * @example true
   */
  query?: boolean
  /**
   * The caller's `sub` claim as `user`.
   * @default false
   * @example true
   */
  user?: boolean
}

/** How the path guard reads request paths. */
export interface PathOptions {
  /**
   * The upstreams may match paths case-insensitively, as Express, ASP.NET and IIS do by default:
   * a path routed to one target whose case-folded form matches the prefix of a target the router
   * prefers (`/api/ADMIN/x` beside `/api/admin`) is refused with 400. Set `false` only when every
   * upstream behind an overlapping prefix compares paths case-sensitively, as Fastify does.
   * @default true
   * @example false
   */
  caseInsensitive?: boolean
}

/** What a target looks like from inside a middleware. */
export interface TargetInfo {
  readonly name: string
  readonly prefix: string
  readonly upstream: string
}

/**
 * Reads a body on demand, decoded from its `Content-Encoding` (gzip, deflate,
 * br) and capped at the target's `maxBufferedBody`. Repeated calls share one
 * read. A body nobody reads is streamed.
 */
export interface BodyReader {
  /** The whole body, decoded. */
  buffer: () => Promise<Buffer>
  /** The body as UTF-8 text. */
  text: () => Promise<string>
  /** The body parsed as JSON (400 for a request body that is not, 502 for a response body). */
  json: <T = unknown>() => Promise<T>
}

/** Body a message may carry. Objects are sent as JSON. */
export type ResponseBody = Readable | Buffer | Uint8Array | string | object | null

/** The request that will be sent upstream; mutable before `next()`. */
export interface ProxyRequest extends BodyReader {
  method: string
  /** Path sent upstream, already rewritten, without the query string. */
  path: string
  /** Raw query string without `?`, forwarded byte for byte. */
  query: string
  headers: HeaderMap
  /**
   * The caller's body stream (`null` without one); after a read, the bytes as
   * received. Setting it replaces the body: Content-Length is recomputed,
   * Content-Encoding dropped, an object is sent as JSON.
   */
  body: ResponseBody
}

/** A response to set as `ctx.response`, return from `onUpstreamError`, or pass to `ctx.respond`. */
export interface ProxyResponseInit {
  status: number
  headers?: HeaderMap
  body?: ResponseBody
}

/** The upstream's answer (or the one set by `ctx.respond`); mutable after `next()`. */
export interface ProxyResponse extends BodyReader {
  status: number
  headers: HeaderMap
  /**
   * The upstream's body stream; after a read, the bytes as received (still
   * encoded if Content-Encoding says so). Setting it replaces the body and
   * drops Content-Length, Content-Encoding, digests and the ETag, which
   * described the old bytes; set them again after the replacement if needed.
   */
  body: ResponseBody
}

/** An upstream failure as `onUpstreamError` receives it: a gatehouse error, the original in `cause`. */
export interface UpstreamFailure extends Error {
  /**
   * `FST_GATEHOUSE_UPSTREAM_STATUS` for a 4xx/5xx answer, else
   * `FST_GATEHOUSE_UPSTREAM_UNAVAILABLE`, `_BAD_RESPONSE` or `_TIMEOUT`.
   */
  readonly code: string
  /** The status the caller gets by default: the upstream's own, or 502/504. */
  readonly statusCode: number
  readonly cause?: unknown
}

/** A response, or nothing for the default. */
export type UpstreamErrorResult = ProxyResponseInit | undefined | void

export type UpstreamErrorHandler<State extends object = object, Claims extends GatehouseClaims = GatehouseClaims> =
  (error: UpstreamFailure, ctx: GatehouseContext<State, Claims>) => UpstreamErrorResult | Promise<UpstreamErrorResult>

/** The per-request context every middleware receives. */
export interface GatehouseContext<State extends object = object, Claims extends GatehouseClaims = GatehouseClaims> {
  readonly request: ProxyRequest
  /** The response once the upstream answered (or `ctx.respond` ran); a plain `{ status, headers, body }` may be assigned. */
  get response (): ProxyResponse | undefined
  set response (value: ProxyResponseInit | undefined)
  state: State
  readonly user: Claims | null
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
export interface WebSocketContext<State extends object = object> {
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
export type WebSocketMessageHook<State extends object = object> =
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

/**
 * A small key/value store with expiring entries. Values are strings (JSON for
 * records), TTLs are milliseconds and always positive. Every method may reject;
 * the gateway then fails closed with 503 FST_GATEHOUSE_STORE_UNAVAILABLE.
 *
 * Keys it uses (`<hash>` is the SHA-256 of a refresh token, base64url):
 * - `gatehouse:refresh:<hash>` a refresh token's record, until the token expires
 * - `gatehouse:refresh-used:<hash>` set once when the token is rotated, value: that time in epoch ms
 * - `gatehouse:family:<id>` present while a login session (refresh family) is alive
 * - `gatehouse:jti:<jti>` a revoked access token, until its `exp`
 * - `gatehouse:throttle:<user|address>:<id>` login attempts in the current window
 * - `gatehouse:lock:<user|address>:<id>` a lockout, value: its end in epoch ms
 *
 * @example
 * // Redis with ioredis: get -> GET, set -> SET k v PX ttl, add -> SET k v PX ttl NX,
 * // increment -> MULTI INCRBY k delta; PEXPIRE k ttl NX; EXEC, delete -> DEL
 */
export interface GatehouseStore {
  /** The value, or `undefined` when absent or expired. */
  get: (key: string) => Promise<string | undefined>
  /** Stores a value, replacing any, for `ttlMs`. */
  set: (key: string, value: string, ttlMs: number) => Promise<void>
  /**
   * Stores a value only if the key is absent; resolves `true` when this call
   * created it. Must be atomic across instances (Redis `SET NX`): refresh token
   * rotation relies on it so that of two concurrent uses of one token exactly
   * one rotates it; the others read the value (the rotation time) to tell a
   * reuse within `refresh.reuseInterval` from theft.
   */
  add: (key: string, value: string, ttlMs: number) => Promise<boolean>
  /**
   * Adds `delta` (may be negative) to an integer counter and resolves the new
   * value; an absent key starts at 0 and expires `ttlMs` after its creation
   * (later increments do not extend it). Must be atomic (Redis `INCRBY` plus
   * `PEXPIRE ... NX` in one `MULTI`): concurrent logins each see their own count.
   */
  increment: (key: string, delta: number, ttlMs: number) => Promise<number>
  /** Removes a key; absent keys are fine. */
  delete: (key: string) => Promise<void>
}

/** Connection pool of each upstream (undici `Pool` options). */
export interface PoolOptions {
  /** Connections per upstream URL; requests beyond wait in a queue. Default 128. */
  connections?: number
  /** Requests in flight on one connection (HTTP/1.1 pipelining). Default 1 (off). */
  pipelining?: number
  /** Milliseconds an idle connection is kept, unless the upstream says less. Default 4000. */
  keepAliveTimeout?: number
  /** Cap on a keep-alive timeout the upstream announces. Default 600000. */
  keepAliveMaxTimeout?: number
}

/** How the gateway checks upstream certificates and presents its own. */
export interface UpstreamTlsOptions {
  /** Verify the upstream's certificate and name. Default true; false only for tests. */
  rejectUnauthorized?: boolean
  /**
   * Trusted CA certificates (PEM), replacing the system ones.
   * @example readFileSync('internal-ca.pem')
   */
  ca?: string | Buffer | Array<string | Buffer>
  /** Client certificate (PEM) for mutual TLS. */
  cert?: string | Buffer
  /** Private key (PEM) of the client certificate. */
  key?: string | Buffer
  /** Passphrase of `key`. */
  passphrase?: string
  /**
   * Name sent as SNI and checked against the certificate, when the upstream
   * URL holds an IP address or another name.
   * @example 'billing.internal'
   */
  servername?: string
}

/** Retries of idempotent requests. */
export interface RetryOptions {
  /** Retries after the first attempt. Default 0 (off). */
  retries?: number
  /** Methods that may be retried. Default GET, HEAD, OPTIONS, PUT, DELETE. */
  methods?: string[]
  /** Upstream statuses that are retried (the response is discarded). Default [503]. */
  statuses?: number[]
  /** First backoff delay in ms, doubled each retry, with full jitter. Default 100. */
  minDelay?: number
  /** Cap of the backoff delay in ms. Default 2000. */
  maxDelay?: number
  /** Largest `Retry-After` (ms) waited for; a longer one is passed to the client. Default 5000. */
  maxRetryAfter?: number
}

/** Passive health: ejects an upstream that keeps failing. */
export interface PassiveHealthOptions {
  /** Consecutive failures (connection errors, timeouts, 502/503/504) that eject. Default 5. */
  failures?: number
  /** Milliseconds an ejected upstream is skipped. Default 10000. */
  coolDown?: number
}

/** Active health checks: a periodic GET of a probe path on each upstream. */
export interface ActiveHealthOptions {
  /** Path probed (below the upstream origin). @example '/healthz' */
  path: string
  /** Milliseconds between probes. Default 5000. */
  interval?: number
  /** Milliseconds a probe may take. Default 2000. */
  timeout?: number
  /** Consecutive successes (2xx/3xx) that mark a down upstream up. Default 2. */
  healthyThreshold?: number
  /** Consecutive failures that mark an upstream down. Default 2. */
  unhealthyThreshold?: number
}

/** Circuit breaker of the whole target. */
export interface CircuitBreakerOptions {
  /** Milliseconds of the rolling window. Default 10000. */
  window?: number
  /** Requests in the window before the rate is judged. Default 20. */
  minRequests?: number
  /** Failure ratio (0-1] that opens the circuit. Default 0.5. */
  failureRate?: number
  /** Milliseconds the circuit stays open before half-open probes. Default 5000. */
  coolDown?: number
  /** Concurrent probe requests let through while half-open. Default 1. */
  halfOpenRequests?: number
}

/** Rewriting of upstream `Location` and `Set-Cookie` to the gateway's address. */
export interface RewriteOptions {
  /** Rewrite `Location` / `Content-Location` pointing at the upstream. Default true. */
  location?: boolean
  /** Rewrite `Set-Cookie` `Domain` (and `Path` under the upstream prefix). Default true. */
  cookies?: boolean
  /**
   * Public origin of the gateway; default: the request's protocol and Host.
   * @example 'https://api.example.com'
   */
  publicOrigin?: string
}

/** Upstream transport of one target. */
export interface TransportOptions {
  pool?: PoolOptions
  tls?: UpstreamTlsOptions
  /** `false` or a retry policy. Default off. */
  retry?: false | RetryOptions
  /** How a request picks one of several upstreams. Default `'round-robin'`. */
  balance?: 'round-robin' | 'least-in-flight'
  /**
   * Passive health; on by default for targets with several upstreams, off for
   * one (ejecting the only upstream would only change 502 into 503).
   */
  passiveHealth?: boolean | PassiveHealthOptions
  /** Active health checks; off by default. */
  activeHealth?: ActiveHealthOptions
  /** Circuit breaker; off by default. */
  circuitBreaker?: boolean | CircuitBreakerOptions
  /** Header rewriting of redirects and cookies. Default on. */
  rewrite?: boolean | RewriteOptions
  /**
   * Milliseconds of silence allowed in a `text/event-stream` body. Default 0:
   * event streams have no idle timeout.
   */
  eventStreamIdle?: number
  /** Negotiate HTTP/2 with `https:` upstreams (ALPN, undici `allowH2`). Default false. */
  http2?: boolean
  /**
   * Upstream responses that declare a `Content-Length` of at most this many
   * bytes are read whole before the answer starts: one write, and one
   * synchronous compress call when @fastify/compress's `syncThreshold`
   * allows. Each response in flight may hold that much. 0 streams every
   * response. Default 65536 (64 KiB).
   */
  bufferResponses?: number
}

/** Gateway-wide shutdown behaviour. */
export interface ShutdownOptions {
  /**
   * Milliseconds `fastify.close()` lets in-flight proxied requests finish
   * before their upstream connections are cut. Default 10000, lowered to 90%
   * of Fastify's `pluginTimeout` (which bounds each close hook) when that is
   * less; a value set here above that is refused at register.
   * @example 30_000 // with Fastify({ pluginTimeout: 40_000 })
   */
  drainTimeout?: number
}
