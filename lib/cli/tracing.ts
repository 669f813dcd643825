import { fail } from '../options/validate.js'

/** The config file's `tracing` section, validated. */
export interface TracingSettings {
  readonly serviceName: string
  /** OTLP/HTTP traces endpoint, e.g. `http://collector:4318/v1/traces`. */
  readonly url: string
}

/**
 * Sets up the OpenTelemetry SDK for this process (each worker has its own):
 * a tracer provider registered globally (W3C propagator, async context),
 * batching spans to an OTLP/HTTP (JSON) exporter. The SDK packages are
 * optional peers, loaded only here. Resolves with the function that flushes
 * the spans still batched and stops the exporter.
 */
export async function startTracing (settings: TracingSettings): Promise<() => Promise<void>> {
  let node: typeof import('@opentelemetry/sdk-trace-node')
  let base: typeof import('@opentelemetry/sdk-trace-base')
  let otlp: typeof import('@opentelemetry/exporter-trace-otlp-http')
  let resources: typeof import('@opentelemetry/resources')
  try {
    [node, base, otlp, resources] = await Promise.all([
      import('@opentelemetry/sdk-trace-node'),
      import('@opentelemetry/sdk-trace-base'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/resources')
    ])
  /* c8 ignore next 3 -- the optional peers are installed wherever the tests run */
  } catch {
    fail('tracing', 'the OpenTelemetry SDK installed beside fastify-gatehouse (npm install @opentelemetry/api@~1.9 @fastify/otel@~0.21 @opentelemetry/sdk-trace-node@~2.12 @opentelemetry/sdk-trace-base@~2.12 @opentelemetry/resources@~2.12 @opentelemetry/exporter-trace-otlp-http@~0.223)')
  }
  const provider = new node.NodeTracerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': settings.serviceName }),
    spanProcessors: [new base.BatchSpanProcessor(new otlp.OTLPTraceExporter({ url: settings.url }))]
  })
  provider.register()
  return async () => await provider.shutdown()
}
