/*
 * Reading an error's code through its causes. A leaf, so that the transport
 * (retries, health) and the proxy (the client's 502/504) read errors alike.
 */

export interface CodedError { code?: unknown, name?: unknown, cause?: unknown }

// reply-from wraps undici's error, which may wrap the socket's: a few levels.
const MAX_CAUSE_DEPTH = 4

/** An error and its causes, outermost first. */
export function * causeChain (err: unknown): Generator<CodedError> {
  let e = err as CodedError | undefined
  for (let depth = 0; e != null && depth < MAX_CAUSE_DEPTH; depth++, e = e.cause as CodedError | undefined) yield e
}

/** The first string `code` along an error's causes. */
export function errorCode (err: unknown): string | undefined {
  for (const e of causeChain(err)) if (typeof e.code === 'string') return e.code
  return undefined
}
