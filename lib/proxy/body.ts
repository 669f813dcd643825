import { promisify } from 'node:util'
import * as zlib from 'node:zlib'
import type { HeaderMap, ResponseBody } from '../types.js'

/*
 * Reading, decoding and capping message bodies for middleware. Nothing here
 * runs unless a middleware asks for a body: a body nobody reads keeps the
 * streaming path.
 */

/** Default of a target's `maxBufferedBody`: 4 MiB. */
export const DEFAULT_MAX_BUFFERED_BODY = 4 * 1024 * 1024

type Decoder = (buffer: Buffer, options: zlib.ZlibOptions | zlib.BrotliOptions) => Promise<Buffer>

const gunzip = promisify(zlib.gunzip) as Decoder
const inflate = promisify(zlib.inflate) as Decoder
const inflateRaw = promisify(zlib.inflateRaw) as Decoder
const brotliDecompress = promisify(zlib.brotliDecompress) as Decoder

async function inflateEither (buffer: Buffer, options: zlib.ZlibOptions): Promise<Buffer> {
  // "deflate" means zlib-wrapped data, but some servers send raw deflate.
  try {
    return await inflate(buffer, options)
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'Z_DATA_ERROR') throw err
    return inflateRaw(buffer, options)
  }
}

const DECODERS: Record<string, (buffer: Buffer, max: number) => Promise<Buffer>> = {
  gzip: (buffer, max) => gunzip(buffer, { maxOutputLength: max }),
  'x-gzip': (buffer, max) => gunzip(buffer, { maxOutputLength: max }),
  deflate: (buffer, max) => inflateEither(buffer, { maxOutputLength: max }),
  br: (buffer, max) => brotliDecompress(buffer, { maxOutputLength: max })
}

/** How reading fails, per direction: the request's errors are the caller's, the response's the upstream's. */
export interface BodyErrors {
  /** The body (raw or decoded) is over the cap. */
  tooLarge: () => Error
  /** Bad compressed data or invalid JSON; `expected` names what it should have been. */
  invalid: (expected: string, cause?: unknown) => Error
  /** A content coding the gateway cannot decode. */
  unsupported: (coding: string) => Error
  /** The stream failed while being read. */
  readFailed: (cause: unknown) => Error
}

type BodyStream = NodeJS.ReadableStream & { destroy: (error?: Error) => void }

/** True for anything with `pipe`: a Node stream (and what quacks like one). */
export function isStream (body: unknown): body is BodyStream {
  return typeof body === 'object' && body !== null && typeof (body as { pipe?: unknown }).pipe === 'function'
}

/** The content codings of a `Content-Encoding` value, outermost last, without `identity`. */
export function contentCodings (value: HeaderMap[string]): string[] {
  if (value === undefined) return []
  const joined = Array.isArray(value) ? value.join(',') : value
  return joined.split(',').map((token) => token.trim().toLowerCase()).filter((token) => token !== '' && token !== 'identity')
}

function declaredLength (headers: HeaderMap): number | undefined {
  const value = headers['content-length']
  if (typeof value !== 'string' || !/^\d+$/.test(value)) return undefined
  return Number(value)
}

/**
 * Reads a whole stream, at most `max` bytes. Beyond that (or when the
 * declared length already is), it stops reading and calls `onOverflow` with
 * the stream (destroy it, or leave it to the server) before rejecting.
 */
export function readCapped (
  stream: BodyStream, max: number, headers: HeaderMap, errors: BodyErrors, onOverflow: (stream: BodyStream) => void
): Promise<Buffer> {
  const declared = declaredLength(headers)
  if (declared !== undefined && declared > max) {
    onOverflow(stream)
    return Promise.reject(errors.tooLarge())
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let total = 0
    // Listeners, not `for await`: leaving an async iterator destroys the
    // stream, and destroying a request's stream kills the socket before a
    // 413 can be sent.
    const cleanup = (): void => {
      stream.removeListener('data', onData)
      stream.removeListener('end', onEnd)
      stream.removeListener('error', onError)
      stream.removeListener('close', onClose)
    }
    const onData = (chunk: Buffer | string): void => {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
      total += bytes.length
      if (total > max) {
        cleanup()
        stream.pause()
        onOverflow(stream)
        reject(errors.tooLarge())
        return
      }
      chunks.push(bytes)
    }
    const onEnd = (): void => {
      cleanup()
      resolve(chunks.length === 1 ? chunks[0] as Buffer : Buffer.concat(chunks, total))
    }
    const onError = (err: unknown): void => {
      cleanup()
      reject(errors.readFailed(err))
    }
    const onClose = (): void => {
      // Closed without 'end' or 'error': aborted half-way.
      cleanup()
      reject(errors.readFailed(new Error('The body stream closed before its end')))
    }
    stream.on('data', onData)
    stream.on('end', onEnd)
    stream.on('error', onError)
    stream.on('close', onClose)
    stream.resume()
  })
}

/** Undoes the body's content codings (innermost last), never producing more than `max` bytes. */
export async function decodeBody (bytes: Buffer, headers: HeaderMap, max: number, errors: BodyErrors): Promise<Buffer> {
  const codings = contentCodings(headers['content-encoding'])
  let decoded = bytes
  for (let i = codings.length - 1; i >= 0; i--) {
    const coding = codings[i] as string
    const decoder = DECODERS[coding]
    if (decoder === undefined) throw errors.unsupported(coding)
    try {
      decoded = await decoder(decoded, max)
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') throw errors.tooLarge()
      throw errors.invalid(`${coding} data`, err)
    }
  }
  return decoded
}

/** The bytes of a body that is not a stream: objects as JSON, `null` as nothing. */
export function bytesOf (body: Exclude<ResponseBody, NodeJS.ReadableStream>): Buffer {
  if (body === null) return Buffer.alloc(0)
  if (Buffer.isBuffer(body)) return body
  if (typeof body === 'string') return Buffer.from(body, 'utf8')
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  return Buffer.from(JSON.stringify(body) ?? 'null', 'utf8')
}

/** True for a body sent as JSON (a plain object or array, not bytes, text or a stream). */
export function isJsonValue (body: unknown): boolean {
  return typeof body === 'object' && body !== null && !Buffer.isBuffer(body) && !ArrayBuffer.isView(body) && !isStream(body)
}

const JSON_TYPE = /^application\/([a-z0-9.+-]*\+)?json\s*(;|$)/i

// Headers that describe the bytes of the body, false once it is replaced.
const REPRESENTATION_HEADERS = ['content-length', 'content-encoding', 'content-md5', 'digest', 'content-digest', 'repr-digest']

/**
 * Makes headers fit a replacement body: its length, coding and digests are
 * no longer known, and (for a response) the upstream's ETag named other
 * bytes. An object body is JSON.
 */
export function headersForReplacement (headers: HeaderMap, body: ResponseBody, isResponse: boolean): void {
  for (const name of REPRESENTATION_HEADERS) delete headers[name]
  if (isResponse) delete headers.etag
  if (isJsonValue(body)) {
    const type = headers['content-type']
    if (typeof type !== 'string' || !JSON_TYPE.test(type)) headers['content-type'] = 'application/json; charset=utf-8'
  }
}

/** Text of UTF-8 bytes, without a byte order mark. */
export function textOf (bytes: Buffer): string {
  const text = bytes.toString('utf8')
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
}
