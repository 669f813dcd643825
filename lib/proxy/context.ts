import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import type {
  GatehouseClaims, GatehouseContext, HeaderMap, ProxyRequest, ProxyResponse, ResponseBody, TargetInfo
} from '../types.js'

/** The per-request context; one object per request, never shared. */
export class RequestContext<State extends object> implements GatehouseContext<State> {
  readonly request: ProxyRequest
  response: ProxyResponse | undefined = undefined
  state: State
  readonly user: GatehouseClaims | null
  readonly params: Readonly<Record<string, string>>
  readonly target: TargetInfo
  readonly fastifyRequest: FastifyRequest
  readonly fastifyReply: FastifyReply

  constructor (
    request: ProxyRequest, state: State, target: TargetInfo,
    fastifyRequest: FastifyRequest, fastifyReply: FastifyReply
  ) {
    this.request = request
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

  respond (status: number, body: ResponseBody = null, headers: HeaderMap = {}): void {
    const previous = this.response?.body
    if (isStream(previous)) previous.destroy()
    const normalized: HeaderMap = {}
    for (const name in headers) normalized[name.toLowerCase()] = headers[name]
    this.response = { status, headers: normalized, body }
  }
}

export function isStream (body: unknown): body is NodeJS.ReadableStream & { destroy: () => void } {
  return typeof body === 'object' && body !== null && typeof (body as { pipe?: unknown }).pipe === 'function'
}
