import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import {
  BadRequestError, BodyTooLargeError, UnsupportedContentEncodingError, UpstreamBodyInvalidError,
  UpstreamBodyTooLargeError, UpstreamStatusError
} from '../errors.js'
import type {
  GatehouseClaims, GatehouseContext, HeaderMap, ProxyRequest, ProxyResponse, ProxyResponseInit, ResponseBody,
  TargetInfo, UpstreamErrorHandler, UpstreamFailure
} from '../types.js'
import type { BodyErrors } from './body.js'
import {
  bytesOf, decodeBody, DEFAULT_MAX_BUFFERED_BODY, headersForReplacement, isJsonValue, isStream, readCapped, textOf
} from './body.js'
import { upstreamError } from './upstream-errors.js'

export { isStream } from './body.js'

type BodyStream = NodeJS.ReadableStream & { destroy: (error?: Error) => void }

/** The request line and headers a context starts from. */
export interface ProxyRequestInit {
  method: string
  path: string
  query: string
  headers: HeaderMap
}

const REQUEST_ERRORS: BodyErrors = {
  tooLarge: () => new BodyTooLargeError(),
  invalid: (expected, cause) => Object.assign(new BadRequestError(`The request body is not valid ${expected}`), { cause }),
  unsupported: () => new UnsupportedContentEncodingError(),
  readFailed: (cause) => Object.assign(new BadRequestError('The request body could not be read'), { cause })
}

const RESPONSE_ERRORS: BodyErrors = {
  tooLarge: () => new UpstreamBodyTooLargeError(),
  invalid: (expected, cause) => new UpstreamBodyInvalidError({ cause: cause ?? new Error(`${expected} expected`) }),
  unsupported: (coding) => new UpstreamBodyInvalidError({ cause: new Error(`Unsupported content coding "${coding}"`) }),
  readFailed: (cause) => upstreamError(cause)
}

function lowerCaseHeaders (headers: HeaderMap): HeaderMap {
  for (const name in headers) {
    if (name !== name.toLowerCase()) {
      const normalized: HeaderMap = {}
      for (const key in headers) normalized[key.toLowerCase()] = headers[key]
      return normalized
    }
  }
  return headers
}

interface MessageSettings {
  readonly limit: number
  readonly errors: BodyErrors
  readonly isResponse: boolean
  /** Called with every stream the message ever holds, so it can be released. */
  readonly track: (stream: BodyStream) => void
  /** What to do with a stream that went over the cap. */
  readonly overflow: (stream: BodyStream) => void
}

/**
 * A message whose body stays a stream until a middleware reads or replaces
 * it. `body` and `headers` always describe the same bytes: after a read,
 * `body` holds the bytes as received (still encoded if `Content-Encoding`
 * says so); a replacement drops the headers that described the old bytes.
 */
abstract class Message {
  headers: HeaderMap
  #source: ResponseBody
  #reading: Promise<Buffer> | undefined = undefined
  #touched = false
  readonly #settings: MessageSettings

  constructor (headers: HeaderMap, body: ResponseBody, settings: MessageSettings) {
    this.headers = headers
    this.#source = body
    this.#settings = settings
    if (isStream(body)) settings.track(body)
  }

  get body (): ResponseBody {
    return this.#source
  }

  set body (value: ResponseBody) {
    const body = value ?? null
    this.#source = body
    this.#reading = undefined
    this.#touched = true
    headersForReplacement(this.headers, body, this.#settings.isResponse)
    if (isStream(body)) this.#settings.track(body)
  }

  /** The whole body, decoded from its `Content-Encoding`, at most `maxBufferedBody` bytes. */
  buffer (): Promise<Buffer> {
    if (this.#reading === undefined) {
      this.#touched = true
      this.#reading = this.#read()
    }
    return this.#reading
  }

  async text (): Promise<string> {
    return textOf(await this.buffer())
  }

  async json<T = unknown> (): Promise<T> {
    const text = await this.text()
    try {
      return JSON.parse(text) as T
    } catch (err) {
      throw this.#settings.errors.invalid('JSON', err)
    }
  }

  async #read (): Promise<Buffer> {
    const { limit, errors, overflow } = this.#settings
    const source = this.#source
    let bytes: Buffer
    if (isStream(source)) {
      bytes = await readCapped(source, limit, this.headers, errors, overflow)
      // Only if nothing replaced the body meanwhile.
      if (this.#source === source) this.#source = bytes
    } else {
      bytes = bytesOf(source)
    }
    return decodeBody(bytes, this.headers, limit, errors)
  }

  /** True while a read of the body is in progress or has ended. */
  protected get reading (): boolean {
    return this.#reading !== undefined
  }

  /** True once a middleware has read or replaced the body. */
  protected get touched (): boolean {
    return this.#touched
  }

  /** The body to put on the wire, once any read in progress has ended (and rethrowing its failure). */
  protected async settled (): Promise<ResponseBody> {
    if (this.#reading !== undefined) await this.#reading
    return this.#source
  }
}

/** What goes upstream in place of the caller's own body stream. */
export type RequestPayload = { bytes: Buffer } | { stream: BodyStream }

/** The request that will be sent upstream. */
export class OutgoingRequest extends Message implements ProxyRequest {
  method: string
  path: string
  query: string

  constructor (init: ProxyRequestInit, body: ResponseBody, settings: MessageSettings) {
    super(init.headers, body, settings)
    this.method = init.method
    this.path = init.path
    this.query = init.query
  }

  /**
   * `undefined` when the caller's body can be streamed upstream as it is;
   * otherwise what to send instead (the headers are fixed up to match).
   */
  payload (): Promise<RequestPayload | undefined> | undefined {
    return this.touched ? this.#replacement() : undefined
  }

  async #replacement (): Promise<RequestPayload> {
    const body = await this.settled()
    if (isStream(body)) {
      delete this.headers['content-length']
      return { stream: body }
    }
    const bytes = bytesOf(body)
    if (bytes.length > 0 || (this.method !== 'GET' && this.method !== 'HEAD')) {
      this.headers['content-length'] = String(bytes.length)
    } else {
      delete this.headers['content-length']
    }
    delete this.headers['transfer-encoding']
    return { bytes }
  }
}

/** A body that goes on the wire as it is. */
type WireBody = BodyStream | Buffer | string | null

function isWireBody (body: ResponseBody): body is WireBody {
  return body === null || isStream(body) || typeof body === 'string' || Buffer.isBuffer(body)
}

/** A response from the upstream, or set by `ctx.respond`. */
export class GatewayResponse extends Message implements ProxyResponse {
  status: number

  constructor (init: ProxyResponseInit, settings: MessageSettings) {
    super(lowerCaseHeaders(init.headers ?? {}), init.body ?? null, settings)
    this.status = init.status
  }

  /**
   * The body to send when it is ready as it is (an untouched upstream stream,
   * bytes, text, null); undefined when it needs `wireBody()`.
   */
  get readyBody (): WireBody | undefined {
    if (this.reading) return undefined
    const body = this.body
    return isWireBody(body) ? body : undefined
  }

  /** The body to send: a stream, bytes or text (objects as JSON), or null. */
  async wireBody (): Promise<WireBody> {
    const body = await this.settled()
    return isWireBody(body) ? body : bytesOf(body)
  }
}

/** The per-request context; one object per request, never shared. */
export class RequestContext<State extends object> implements GatehouseContext<State> {
  readonly request: OutgoingRequest
  state: State
  readonly user: GatehouseClaims | null
  readonly params: Readonly<Record<string, string>>
  readonly target: TargetInfo
  readonly fastifyRequest: FastifyRequest
  readonly fastifyReply: FastifyReply
  #response: GatewayResponse | undefined = undefined
  readonly #streams = new Set<BodyStream>()
  readonly #responseSettings: MessageSettings

  constructor (
    request: ProxyRequestInit, state: State, target: TargetInfo,
    fastifyRequest: FastifyRequest, fastifyReply: FastifyReply,
    maxBufferedBody: number = DEFAULT_MAX_BUFFERED_BODY
  ) {
    const track = (stream: BodyStream): void => { this.#streams.add(stream) }
    this.request = new OutgoingRequest(request, isStream(fastifyRequest.body) ? fastifyRequest.body : null, {
      limit: maxBufferedBody,
      errors: REQUEST_ERRORS,
      isResponse: false,
      // The caller's body is left unread: destroying it would cut the socket
      // before the 413 goes out. Node drains it after the answer, then closes.
      track: () => {},
      overflow: () => { fastifyReply.header('connection', 'close') }
    })
    this.#responseSettings = {
      limit: maxBufferedBody,
      errors: RESPONSE_ERRORS,
      isResponse: true,
      track,
      overflow: (stream) => { stream.destroy() }
    }
    this.state = state
    this.target = target
    this.user = fastifyRequest.user ?? null
    this.params = fastifyRequest.params as Record<string, string>
    this.fastifyRequest = fastifyRequest
    this.fastifyReply = fastifyReply
  }

  get log (): FastifyBaseLogger {
    return this.fastifyRequest.log
  }

  get response (): GatewayResponse | undefined {
    return this.#response
  }

  set response (value: ProxyResponseInit | undefined) {
    this.#response = value === undefined || value instanceof GatewayResponse
      ? value
      : new GatewayResponse(value, this.#responseSettings)
  }

  respond (status: number, body: ResponseBody = null, headers: HeaderMap = {}): void {
    const response = new GatewayResponse({ status, headers: lowerCaseHeaders({ ...headers }), body }, this.#responseSettings)
    if (isJsonValue(body) && response.headers['content-type'] === undefined) {
      response.headers['content-type'] = 'application/json; charset=utf-8'
    }
    this.#response = response
  }

  /**
   * Destroys every body stream this request held that has not ended: the
   * upstream's, once replaced or dropped, must not hold its connection.
   */
  release (): void {
    for (const stream of this.#streams) {
      const state = stream as { readableEnded?: boolean, destroyed?: boolean }
      if (state.readableEnded !== true && state.destroyed !== true) stream.destroy()
    }
    this.#streams.clear()
  }

  /** Releases the streams once the reply is done (or at once if it is). */
  releaseAfter (reply: FastifyReply): void {
    if (this.#streams.size === 0) return
    const raw = reply.raw
    if (raw.writableFinished || raw.destroyed) {
      this.release()
      return
    }
    const done = (): void => {
      raw.removeListener('finish', done)
      raw.removeListener('close', done)
      this.release()
    }
    raw.once('finish', done)
    raw.once('close', done)
  }
}

/**
 * Runs a target's `onUpstreamError` for a transport failure (`failure`) or an
 * upstream answer of 400 or more (`ctx.response`). The hook's answer replaces
 * the response; without one (and without `ctx.respond`) the default stands:
 * the upstream's status passes, a transport failure is thrown.
 */
export async function handleUpstreamError (
  ctx: GatehouseContext<any>, failure: Error | undefined, hook: UpstreamErrorHandler<any>
): Promise<void> {
  const before = ctx.response
  let error: UpstreamFailure
  if (failure !== undefined) {
    error = failure as UpstreamFailure
  } else if (before !== undefined && before.status >= 400) {
    error = new UpstreamStatusError(before.status) as UpstreamFailure
  } else {
    return
  }
  const result = await hook(error, ctx)
  if (result !== undefined && result !== null) {
    ctx.respond(result.status, result.body ?? null, result.headers ?? {})
    return
  }
  if (ctx.response !== before) return
  if (failure !== undefined) throw failure
}

/**
 * The request's payload if a middleware read or replaced its body;
 * `undefined` (no promise to wait for) keeps the stream.
 */
export function requestPayload (request: ProxyRequest): Promise<RequestPayload | undefined> | undefined {
  return request instanceof OutgoingRequest ? request.payload() : undefined
}

/**
 * The `body` / `contentType` options of `reply.from` for a payload.
 * Workaround: reply-from throws on a stream in its `body` option ("not
 * supported yet") but pipes `request.body` when that is a stream, so a
 * replacement stream goes there; and it refuses any truthy `body` on GET/HEAD,
 * an empty Buffer included, so no body is `null`. Both pinned in
 * test/reply-from-contract.test.ts.
 */
export function replyFromBody (
  payload: RequestPayload | undefined, fastifyRequest: FastifyRequest, headers: HeaderMap
): { body?: Buffer | null, contentType?: string } {
  if (payload === undefined) return {}
  if ('stream' in payload) {
    fastifyRequest.body = payload.stream
    return {}
  }
  // reply-from refuses any truthy body on GET/HEAD, an empty Buffer included.
  if (payload.bytes.length === 0) return { body: null }
  const type = headers['content-type']
  return { body: payload.bytes, contentType: typeof type === 'string' && type !== '' ? type : 'application/octet-stream' }
}
