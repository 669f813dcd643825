import type { Context, Span, SpanStatusCode, Tracer } from '@opentelemetry/api'
import type { FastifyInstance, FastifyRequest, onErrorHookHandler, onRequestHookHandler, onSendHookHandler } from 'fastify'
import { fail } from '../options/validate.js'
import type { TracerProviderLike } from '../types.js'

/*
 * OpenTelemetry spans around a proxied request. `@opentelemetry/api` and
 * `@fastify/otel` are optional peers loaded here, at register, only when
 * `tracing` is on: with it off the gateway neither loads them nor checks
 * anything per request (the target scope picks its plain functions once).
 * Only the types are imported statically, and TypeScript erases them.
 */

type Api = typeof import('@opentelemetry/api')
type Terminal<C> = (ctx: C) => Promise<void>

/** What the tracing wrappers need of a request's context (a `GatehouseContext`). */
export interface TracedContext {
  readonly request: { readonly method: string, readonly headers: Record<string, unknown> }
  readonly response: { readonly status: number } | undefined
  readonly fastifyRequest: FastifyRequest
}

/** The spans of one target: hooks and wrappers for its request-time functions. */
export interface TargetTracing {
  /** onRequest hook placed before the token check: opens `gatehouse.admission`. */
  readonly startAdmission: onRequestHookHandler
  /** onError hook: an admission refused before the handler (401) closes its span; the error's code is kept for the server span. */
  readonly failed: onErrorHookHandler
  /**
   * onSend hook, before @fastify/otel's (which it appends to every route):
   * the server span's error status carries the code, not the message, which
   * for a middleware's own error may name anything.
   */
  readonly serverStatus: onSendHookHandler
  /** Follows `admit` of `request`: the admission span ends when the rules, rewrite and `authorize` are done. */
  admitted: <C>(request: FastifyRequest, admission: Promise<C>) => Promise<C>
  /** Wraps the composed middleware chain in `gatehouse.middleware`; its terminal gets the upstream span. */
  run: <C extends TracedContext>(run: (ctx: C, terminal: Terminal<C>) => Promise<void>, middleware: number) => (ctx: C, terminal: Terminal<C>) => Promise<void>
  /** Wraps the upstream call in a `gatehouse.upstream` client span and puts the trace headers on the request. */
  upstream: <C extends TracedContext>(terminal: Terminal<C>) => Terminal<C>
}

/** Tracing for the gateway's scope, from which each target takes its own. */
export interface Tracing {
  target: (name: string, origin: string) => TargetTracing
}

interface RequestSpans {
  parent: Context
  admission: Span | undefined
  /** The context the upstream span starts in: the middleware span's, or `parent`. */
  current: Context
  /** The code of the error the request failed with. */
  error: string | undefined
}

// What @fastify/otel's `request.opentelemetry()` gives (its types are not needed here).
interface OtelRequest { opentelemetry?: () => { context: Context | null, span: Span | null } }

const INSTRUMENTATION_NAME = 'fastify-gatehouse'

/**
 * Loads the OpenTelemetry API and registers `@fastify/otel` in the gateway's
 * scope (unless the host already did, on an enclosing instance), so that each
 * request gets one server span. Call before any route of the scope is added.
 */
export async function createTracing (scope: FastifyInstance, settings: { readonly tracerProvider: TracerProviderLike | undefined }): Promise<Tracing> {
  let api: Api
  let FastifyOtelInstrumentation: typeof import('@fastify/otel').FastifyOtelInstrumentation
  try {
    api = await import('@opentelemetry/api')
    ;({ FastifyOtelInstrumentation } = await import('@fastify/otel'))
  /* c8 ignore next 3 -- the optional peers are installed wherever the tests run */
  } catch {
    fail('tracing', '@opentelemetry/api and @fastify/otel installed beside fastify-gatehouse (npm install @opentelemetry/api@~1.9 @fastify/otel@~0.21)')
  }
  const provider = settings.tracerProvider ?? api.trace.getTracerProvider()
  const tracer = provider.getTracer(INSTRUMENTATION_NAME) as Tracer
  if (!scope.hasRequestDecorator('opentelemetry')) {
    const instrumentation = new FastifyOtelInstrumentation({
      // Exceptions carry stacks, and upstream errors may name internal hosts.
      recordExceptions: false,
      // A span per hook would bury the three that matter.
      instrumentHooks: false,
      instrumentHandler: false,
      requestHook (span: Span, request: FastifyRequest) {
        // @fastify/otel records the raw URL; query values may carry secrets.
        const query = request.url.indexOf('?')
        if (query !== -1) span.setAttribute('url.path', request.url.slice(0, query))
      }
    })
    if (settings.tracerProvider !== undefined) instrumentation.setTracerProvider(settings.tracerProvider as Parameters<typeof instrumentation.setTracerProvider>[0])
    await scope.register(instrumentation.plugin())
  }
  return { target: (name, origin) => targetTracing(api, tracer, name, origin) }
}

function requestContext (api: Api, request: FastifyRequest): Context {
  return (request as OtelRequest).opentelemetry?.().context ?? api.context.active()
}

/** The error's own code when it is the gateway's or Fastify's, never a library's (or a message). */
function errorType (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('FST_') ? code : '_OTHER'
}

// Set by the upstream call; a function, as TypeScript holds it `undefined` from the check before.
function answered (ctx: TracedContext): number | undefined {
  return ctx.response?.status
}

function failed (span: Span, err: unknown, error: SpanStatusCode): void {
  const type = errorType(err)
  span.setAttribute('error.type', type)
  span.setStatus({ code: error, message: type })
  span.end()
}

function targetTracing (api: Api, tracer: Tracer, name: string, origin: string): TargetTracing {
  const { SpanKind, SpanStatusCode, context, propagation, trace } = api
  const spans = new WeakMap<FastifyRequest, RequestSpans>()
  const attributes = { 'gatehouse.target': name }

  function current (request: FastifyRequest): Context {
    const own = spans.get(request)
    return own === undefined ? requestContext(api, request) : own.current
  }

  return {
    startAdmission (request, _reply, done) {
      const parent = requestContext(api, request)
      trace.getSpan(parent)?.setAttribute('gatehouse.target', name)
      const admission = tracer.startSpan('gatehouse.admission', { kind: SpanKind.INTERNAL, attributes }, parent)
      spans.set(request, { parent, admission, current: parent, error: undefined })
      done()
    },

    failed (request, _reply, err, done) {
      let own = spans.get(request)
      if (own === undefined) {
        const parent = requestContext(api, request)
        own = { parent, admission: undefined, current: parent, error: undefined }
        spans.set(request, own)
      }
      own.error = errorType(err)
      if (own.admission !== undefined) {
        failed(own.admission, err, SpanStatusCode.ERROR)
        own.admission = undefined
      }
      done()
    },

    serverStatus (request, _reply, payload, done) {
      const own = spans.get(request)
      if (own?.error !== undefined) trace.getSpan(own.parent)?.setStatus({ code: SpanStatusCode.ERROR, message: own.error })
      done(null, payload)
    },

    async admitted (request, admission) {
      const own = spans.get(request)
      try {
        const ctx = await admission
        own?.admission?.end()
        return ctx
      } catch (err) {
        if (own?.admission !== undefined) failed(own.admission, err, SpanStatusCode.ERROR)
        throw err
      } finally {
        if (own !== undefined) own.admission = undefined
      }
    },

    run (run, middleware) {
      return async function tracedRun (ctx, terminal) {
        const request = ctx.fastifyRequest
        const parent = current(request)
        const span = tracer.startSpan('gatehouse.middleware', {
          kind: SpanKind.INTERNAL,
          attributes: { ...attributes, 'gatehouse.middleware.count': middleware }
        }, parent)
        const inner = trace.setSpan(parent, span)
        const own = spans.get(request)
        if (own !== undefined) own.current = inner
        else spans.set(request, { parent, admission: undefined, current: inner, error: undefined })
        try {
          // Active too, so spans a middleware starts itself nest under it.
          await context.with(inner, () => run(ctx, terminal))
          span.end()
        } catch (err) {
          failed(span, err, SpanStatusCode.ERROR)
          throw err
        }
      }
    },

    upstream (terminal) {
      return async function tracedUpstream (ctx) {
        // A middleware answered: no upstream call to trace.
        if (ctx.response !== undefined) return await terminal(ctx)
        const parent = current(ctx.fastifyRequest)
        const span = tracer.startSpan('gatehouse.upstream', {
          kind: SpanKind.CLIENT,
          attributes: { ...attributes, 'gatehouse.upstream.origin': origin, 'http.request.method': ctx.request.method }
        }, parent)
        const traced = trace.setSpan(parent, span)
        const headers = ctx.request.headers
        // The caller's copies go: the upstream continues this span, not the caller's.
        for (const field of propagation.fields()) delete headers[field]
        propagation.inject(traced, headers)
        try {
          await context.with(traced, () => terminal(ctx))
        } catch (err) {
          failed(span, err, SpanStatusCode.ERROR)
          throw err
        }
        const status = answered(ctx)
        if (status !== undefined) {
          span.setAttribute('http.response.status_code', status)
          // OpenTelemetry's HTTP client convention: a 4xx or 5xx answer is a failed call.
          if (status >= 400) {
            span.setAttribute('error.type', String(status))
            span.setStatus({ code: SpanStatusCode.ERROR })
          }
        }
        span.end()
      }
    }
  }
}
