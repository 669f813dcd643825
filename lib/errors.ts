import createError from '@fastify/error'

/*
 * Every error fastify-gatehouse can produce, one stable code each.
 *
 * Option errors are thrown at `register` time and never reach a client.
 * Request errors carry the HTTP status the client receives; their messages are
 * written for clients, so they never hold hostnames, tokens, keys or causes.
 */

// Option errors (register time)
export const InvalidOptionError = createError<'FST_GATEHOUSE_INVALID_OPTION', [string, string]>(
  'FST_GATEHOUSE_INVALID_OPTION',
  'Invalid fastify-gatehouse option "%s": expected %s',
  500,
  TypeError
)

export const InvalidMiddlewareError = createError<'FST_GATEHOUSE_INVALID_MIDDLEWARE', [string]>(
  'FST_GATEHOUSE_INVALID_MIDDLEWARE',
  'Invalid middleware at "%s": expected an async function (ctx, next) or { phase, handler }',
  500,
  TypeError
)

// The `gatehouse` command (lib/cli): a config file it cannot read or parse
export const ConfigFileError = createError<'FST_GATEHOUSE_CONFIG_FILE', [string, string]>(
  'FST_GATEHOUSE_CONFIG_FILE',
  'Cannot load config file %s: %s',
  500
)

// Caller errors (4xx)
export const BadRequestError = createError<'FST_GATEHOUSE_BAD_REQUEST', [string?]>(
  'FST_GATEHOUSE_BAD_REQUEST',
  '%s',
  400
)

export const PathNotAllowedError = createError<'FST_GATEHOUSE_PATH_NOT_ALLOWED'>(
  'FST_GATEHOUSE_PATH_NOT_ALLOWED',
  'The request path is not allowed',
  400
)

export const TokenMissingError = createError<'FST_GATEHOUSE_TOKEN_MISSING'>(
  'FST_GATEHOUSE_TOKEN_MISSING',
  'A bearer token is required',
  401
)

export const TokenInvalidError = createError<'FST_GATEHOUSE_TOKEN_INVALID'>(
  'FST_GATEHOUSE_TOKEN_INVALID',
  'The bearer token is invalid',
  401
)

export const TokenExpiredError = createError<'FST_GATEHOUSE_TOKEN_EXPIRED'>(
  'FST_GATEHOUSE_TOKEN_EXPIRED',
  'The bearer token has expired',
  401
)

export const BadCredentialsError = createError<'FST_GATEHOUSE_BAD_CREDENTIALS'>(
  'FST_GATEHOUSE_BAD_CREDENTIALS',
  'Invalid username or password',
  401
)

export const ForbiddenError = createError<'FST_GATEHOUSE_FORBIDDEN'>(
  'FST_GATEHOUSE_FORBIDDEN',
  'Access to this resource is forbidden',
  403
)

// WebSocket upgrades (refused before any 101)
export const OriginNotAllowedError = createError<'FST_GATEHOUSE_ORIGIN_NOT_ALLOWED'>(
  'FST_GATEHOUSE_ORIGIN_NOT_ALLOWED',
  'This origin may not open a WebSocket here',
  403
)

export const WebSocketNotEnabledError = createError<'FST_GATEHOUSE_WEBSOCKET_NOT_ENABLED'>(
  'FST_GATEHOUSE_WEBSOCKET_NOT_ENABLED',
  'WebSocket is not enabled for this path',
  404
)

export const BodyTooLargeError = createError<'FST_GATEHOUSE_BODY_TOO_LARGE'>(
  'FST_GATEHOUSE_BODY_TOO_LARGE',
  'The request body is too large',
  413
)

// Gateway and upstream errors (5xx)
export const InternalError = createError<'FST_GATEHOUSE_INTERNAL'>(
  'FST_GATEHOUSE_INTERNAL',
  'Internal Server Error',
  500
)

export const NoResponseError = createError<'FST_GATEHOUSE_NO_RESPONSE'>(
  'FST_GATEHOUSE_NO_RESPONSE',
  'The gateway produced no response',
  500
)

export const UpstreamUnavailableError = createError<'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE'>(
  'FST_GATEHOUSE_UPSTREAM_UNAVAILABLE',
  'The upstream service is unavailable',
  502
)

export const UpstreamBadResponseError = createError<'FST_GATEHOUSE_UPSTREAM_BAD_RESPONSE'>(
  'FST_GATEHOUSE_UPSTREAM_BAD_RESPONSE',
  'The upstream service sent an invalid response',
  502
)

export const WebSocketProtocolMismatchError = createError<'FST_GATEHOUSE_WEBSOCKET_PROTOCOL_MISMATCH'>(
  'FST_GATEHOUSE_WEBSOCKET_PROTOCOL_MISMATCH',
  'The upstream accepted none of the offered WebSocket subprotocols',
  502
)

export const UpstreamTimeoutError = createError<'FST_GATEHOUSE_UPSTREAM_TIMEOUT'>(
  'FST_GATEHOUSE_UPSTREAM_TIMEOUT',
  'The upstream service did not answer in time',
  504
)

export const UpstreamBusyError = createError<'FST_GATEHOUSE_UPSTREAM_BUSY'>(
  'FST_GATEHOUSE_UPSTREAM_BUSY',
  'Every connection to the upstream service is busy; try again shortly',
  503
)

export const UnsupportedMediaTypeError = createError<'FST_GATEHOUSE_UNSUPPORTED_MEDIA_TYPE'>(
  'FST_GATEHOUSE_UNSUPPORTED_MEDIA_TYPE',
  'Unsupported media type: send application/json',
  415
)

export const RewriteFailedError = createError<'FST_GATEHOUSE_REWRITE_FAILED'>(
  'FST_GATEHOUSE_REWRITE_FAILED',
  'The gateway could not route this request',
  500
)

// Upstream transport (lib/transport): fast failures that carry Retry-After
export const NoHealthyUpstreamError = createError<'FST_GATEHOUSE_NO_HEALTHY_UPSTREAM'>(
  'FST_GATEHOUSE_NO_HEALTHY_UPSTREAM',
  'No healthy upstream is available',
  503
)

export const CircuitOpenError = createError<'FST_GATEHOUSE_CIRCUIT_OPEN'>(
  'FST_GATEHOUSE_CIRCUIT_OPEN',
  'The upstream service is failing; try again later',
  503
)

export const ShuttingDownError = createError<'FST_GATEHOUSE_SHUTTING_DOWN'>(
  'FST_GATEHOUSE_SHUTTING_DOWN',
  'The gateway is shutting down',
  503
)

// Token lifecycle (lib/auth: refresh, logout, login throttling, store)
export const TokenRevokedError = createError<'FST_GATEHOUSE_TOKEN_REVOKED'>(
  'FST_GATEHOUSE_TOKEN_REVOKED',
  'The bearer token has been revoked',
  401
)

export const RefreshTokenInvalidError = createError<'FST_GATEHOUSE_REFRESH_TOKEN_INVALID'>(
  'FST_GATEHOUSE_REFRESH_TOKEN_INVALID',
  'The refresh token is invalid, expired or revoked',
  401
)

export const SessionEndedError = createError<'FST_GATEHOUSE_SESSION_ENDED'>(
  'FST_GATEHOUSE_SESSION_ENDED',
  'The session has ended; log in again',
  401
)

export const RefreshTokenReusedError = createError<'FST_GATEHOUSE_REFRESH_TOKEN_REUSED'>(
  'FST_GATEHOUSE_REFRESH_TOKEN_REUSED',
  'The refresh token was already used; the session has been revoked',
  401
)

export const TooManyAttemptsError = createError<'FST_GATEHOUSE_TOO_MANY_ATTEMPTS'>(
  'FST_GATEHOUSE_TOO_MANY_ATTEMPTS',
  'Too many failed login attempts; try again later',
  429
)

export const StoreUnavailableError = createError<'FST_GATEHOUSE_STORE_UNAVAILABLE'>(
  'FST_GATEHOUSE_STORE_UNAVAILABLE',
  'The gateway cannot check tokens right now; try again later',
  503
)

export const LoginBusyError = createError<'FST_GATEHOUSE_LOGIN_BUSY'>(
  'FST_GATEHOUSE_LOGIN_BUSY',
  'Too many logins in progress; try again shortly',
  503
)

export const NotFoundError = createError<'FST_GATEHOUSE_NOT_FOUND'>(
  'FST_GATEHOUSE_NOT_FOUND',
  'No route for this method and path',
  404
)

export const MethodNotAllowedError = createError<'FST_GATEHOUSE_METHOD_NOT_ALLOWED'>(
  'FST_GATEHOUSE_METHOD_NOT_ALLOWED',
  'This route only answers POST',
  405
)

// Bodies in middleware (lib/proxy/body.ts) and upstream answers given to onUpstreamError
export const UnsupportedContentEncodingError = createError<'FST_GATEHOUSE_UNSUPPORTED_CONTENT_ENCODING'>(
  'FST_GATEHOUSE_UNSUPPORTED_CONTENT_ENCODING',
  'Unsupported Content-Encoding: send gzip, deflate, br or identity',
  415
)

export const UpstreamBodyTooLargeError = createError<'FST_GATEHOUSE_UPSTREAM_BODY_TOO_LARGE'>(
  'FST_GATEHOUSE_UPSTREAM_BODY_TOO_LARGE',
  'The upstream response is too large to process',
  502
)

export const UpstreamBodyInvalidError = createError<'FST_GATEHOUSE_UPSTREAM_BODY_INVALID'>(
  'FST_GATEHOUSE_UPSTREAM_BODY_INVALID',
  'The upstream response body could not be processed',
  502
)

const UpstreamStatus = createError<'FST_GATEHOUSE_UPSTREAM_STATUS', [number]>(
  'FST_GATEHOUSE_UPSTREAM_STATUS',
  'The upstream service answered with status %s',
  502
)

/** What `onUpstreamError` receives for an upstream 4xx/5xx; its statusCode is the upstream's. */
export class UpstreamStatusError extends UpstreamStatus {
  constructor (status: number) {
    super(status)
    this.statusCode = status
  }
}

export const MetricsForbiddenError = createError<'FST_GATEHOUSE_METRICS_FORBIDDEN'>(
  'FST_GATEHOUSE_METRICS_FORBIDDEN',
  'This address may not read the metrics',
  403
)

export const MetricsUnauthorizedError = createError<'FST_GATEHOUSE_METRICS_UNAUTHORIZED'>(
  'FST_GATEHOUSE_METRICS_UNAUTHORIZED',
  'The metrics need a valid bearer token',
  401
)
