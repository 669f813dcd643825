import type { FastifyCompressOptions } from '@fastify/compress'
import type { ResolvedKeys } from '../auth/keys-options.js'
import type { ResolvedLifecycle } from '../auth/lifecycle-options.js'
import type { ResolvedRules } from '../auth/rules-options.js'
import type { ResolvedCors } from '../cors/options.js'
import type { ResolvedHealth } from '../health/options.js'
import type { ResolvedRequestId } from '../observe/request-id-options.js'
import type { ResolvedHeaderPolicy } from '../proxy/headers-options.js'
import type { ResolvedIdentity } from '../proxy/identity-options.js'
import type { ResolvedAccessLog, ResolvedMetrics } from '../observe/options.js'
import type { ResolvedPathGuard } from '../proxy/path.js'
import type { ResolvedRewrite } from '../proxy/rewrite-options.js'
import type { ResolvedTransport } from '../transport/options.js'
import type { CredentialsFunction, CredentialsVerifier, Middleware, TargetOptions, TokenAlgorithm, TracerProviderLike } from '../types.js'
import type { ResolvedWebSocket } from '../ws/options.js'

/*
 * The options as the request-time code reads them: validated, defaults
 * applied. Types only, so that the register-time resolvers (lib/options/
 * resolve.ts and each feature's `*-options.ts`) and the run-time code both
 * import them without importing each other.
 */

export interface ResolvedAuth {
  readonly algorithm: TokenAlgorithm
  readonly signKey: string | Buffer | undefined
  readonly verifyKey: string | Buffer
  readonly expiresInSeconds: number
  readonly issuer: string | undefined
  readonly audience: string | undefined
  readonly clockToleranceSeconds: number
  readonly login: { readonly path: string, readonly verify: CredentialsVerifier } | false
  /** Refresh, logout, login throttling and their store. */
  readonly lifecycle: ResolvedLifecycle
  /** Own key ring (the single-key form is a ring of one), identity providers, JWKS route. */
  readonly keys: ResolvedKeys
}

export type ResolvedCredentials =
  | { readonly kind: 'static', readonly headers: Readonly<Record<string, string>> }
  | {
    readonly kind: 'computed'
    readonly compute: CredentialsFunction
    /** The header names it owns (lower case); empty for the deprecated bare function, which may set any. */
    readonly names: readonly string[]
  }
  | { readonly kind: 'none' }

export interface ResolvedMiddleware {
  readonly phase: number
  readonly handler: Middleware<any>
}

export interface ResolvedTarget {
  readonly name: string
  readonly prefix: string
  /** Number of path segments in the prefix; params match exactly one. */
  readonly prefixSegments: number
  readonly upstream: string
  readonly origin: string
  /** Upstream base path without a trailing slash ('' for the root). */
  readonly basePath: string
  readonly rewritePrefix: string | undefined
  /** `rewrite`: a parsed template or a function, `undefined` when off. */
  readonly rewrite: ResolvedRewrite | undefined
  /** `allow` and `tenant`, `undefined` when neither is set. */
  readonly rules: ResolvedRules | undefined
  readonly credentials: ResolvedCredentials
  /** The caller's identity sent upstream (headers, minted token), `undefined` when off. */
  readonly identity: ResolvedIdentity | undefined
  readonly authorize: TargetOptions<any>['authorize']
  readonly public: boolean
  readonly middleware: readonly ResolvedMiddleware[]
  readonly state: Readonly<Record<string, unknown>>
  readonly timeouts: Readonly<Required<NonNullable<TargetOptions['timeouts']>>>
  /** Cap of bodies read by middleware, in bytes. */
  readonly maxBufferedBody: number
  readonly onUpstreamError: TargetOptions<any>['onUpstreamError']
  /** WebSocket tunnelling, `undefined` when off. */
  readonly websocket: ResolvedWebSocket | undefined
  /** Pool, TLS, retries, balancing, health, breaker, rewriting; `origins` lists every upstream. */
  readonly transport: ResolvedTransport
  /** What goes upstream and back of the headers (`forwardHeaders`, `hideResponseHeaders`). */
  readonly headerPolicy: ResolvedHeaderPolicy
  /** The CORS policy of this target (its own over the top-level one), `undefined` when off. */
  readonly cors: ResolvedCors | undefined
  /** What the path guard compares a request path with: the prefixes the router prefers to this one. */
  readonly pathGuard: ResolvedPathGuard
}

export interface ResolvedOptions {
  readonly auth: ResolvedAuth
  readonly targets: readonly ResolvedTarget[]
  readonly compress: FastifyCompressOptions | false
  readonly shutdown: { readonly drainTimeout: number | undefined }
  /** The top-level CORS policy (token routes, default of targets), `undefined` when off. */
  readonly cors: ResolvedCors | undefined
  /** OpenTelemetry tracing, `undefined` when off. */
  readonly tracing: { readonly tracerProvider: TracerProviderLike | undefined } | undefined
  /** The request id header and whose copy is kept, `undefined` when off. */
  readonly requestId: ResolvedRequestId | undefined
  /** Liveness and readiness routes, `undefined` when off. */
  readonly health: ResolvedHealth | undefined
  /** Prometheus metrics, `undefined` when off. */
  readonly metrics: ResolvedMetrics | undefined
  /** The access log, `undefined` when off. */
  readonly accessLog: ResolvedAccessLog | undefined
}
