import { performance } from 'node:perf_hooks'

/*
 * gateway.yaml's middleware, loaded by `gatehouse serve` from the path in the
 * file (`middleware: ./log-requests.mjs`): gateway.ts's `logRequests` as plain
 * JavaScript, so the command runs it under plain `node` without a TypeScript
 * loader. One log line per proxied request; no headers (they hold the
 * caller's token and, upstream, the API keys).
 */

/** @type {import('fastify-gatehouse').MiddlewareEntry} */
export default {
  // Outermost, so the duration covers the other middleware too.
  phase: 'clientEdge',
  async handler (ctx, next) {
    const started = performance.now()
    let status
    try {
      await next()
      status = ctx.response?.status
    } catch (err) {
      status = err?.statusCode ?? 500
      throw err
    } finally {
      const ms = Math.round((performance.now() - started) * 10) / 10
      ctx.log.info({ method: ctx.request.method, target: ctx.target.name, status, ms }, 'proxied')
    }
  }
}
