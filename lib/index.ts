import fp from 'fastify-plugin'
import { gatehouse } from './plugin.js'

/**
 * fastify-gatehouse: an authenticated gateway in front of several upstreams.
 *
 * @example
 * await app.register(gatehouse, {
 *   auth: { secret: process.env.GATEHOUSE_JWT_SECRET!, login: { verify: staticUsers(users) } },
 *   targets: [{ prefix: '/shops/:shopId/inventory', upstream: 'http://127.0.0.1:8002',
 *               credentials: { header: 'x-api-key', value: process.env.INVENTORY_API_KEY! } }]
 * })
 */
const fastifyGatehouse = fp(gatehouse, { fastify: '5.x', name: 'fastify-gatehouse' })

export default fastifyGatehouse
export { fastifyGatehouse, gatehouse }
export type { GatehouseDecorator } from './plugin.js'
export { hashPassword, verifyPassword, isPasswordHash, staticUsers } from './auth/password.js'
export type { StaticUser, ScryptCost } from './auth/password.js'
export { MemoryStore, storeKeys } from './auth/store.js'
export type { MemoryStoreOptions } from './auth/store.js'
export type { GatehouseStore } from './types.js'
export type { JwksOptions, KeyOptions, LoginThrottleOptions, LogoutOptions, RefreshOptions, RefreshVerifier, ThrottleLimit } from './types.js'
export { redisStore, DEFAULT_REDIS_COMMAND_TIMEOUT } from './store/redis.js'
export type { RedisStoreClient, RedisStoreOptions } from './store/redis.js'
export type { CorsOptions } from './types.js'
export { gatehouseFrameworkErrors, gatehouseNotFound } from './error-handler.js'
export type { ErrorBody } from './error-handler.js'
export type {
  ActiveHealthOptions, CircuitBreakerOptions, PassiveHealthOptions, PoolOptions, RetryOptions, RewriteOptions,
  ShutdownOptions, TransportOptions, UpstreamTlsOptions
} from './types.js'
export * as errors from './errors.js'
export { Phase } from './proxy/phase.js'
export type { PathOptions } from './types.js'
export type { TracerProviderLike, TracingOptions } from './types.js'
export type { HealthOptions, RequestIdOptions } from './types.js'
export { gatehouseRequestId, isSafeRequestId } from './observe/request-id.js'
export { gatehouseLogging } from './observe/redact.js'
export type { GatehouseLogging } from './observe/redact.js'
export type { AccessLogOptions, MetricsOptions } from './types.js'
export { DEFAULT_MAX_BUFFERED_BODY } from './proxy/body.js'
export type {
  BodyReader, ProxyResponseInit, UpstreamErrorHandler, UpstreamErrorResult, UpstreamFailure
} from './types.js'
export type {
  AllowRule, AuthOptions, IdentityOptions, IdentityTokenOptions, CredentialsVerifier, GatehouseClaims, GatehouseContext, GatehouseOptions, HeaderMap,
  RewriteFunction, TenantRule,
  LoginCredentials, LoginOptions, Middleware, MiddlewareEntry, Next, PhaseName, ProxyRequest,
  ProxyResponse, ResponseBody, TargetCredentials, ComputedCredentials, CredentialsFunction, TargetInfo, TargetOptions, TimeoutOptions, TokenAlgorithm,
  WebSocketContext, WebSocketHookResult, WebSocketMessage, WebSocketMessageHook, WebSocketOptions, WebSocketTokenOptions
} from './types.js'
