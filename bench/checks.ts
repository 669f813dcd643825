import { gunzipSync } from 'node:zlib'
import type { Contender } from './contender.js'
import { fetchRaw } from './http-client.js'
import { API_KEY_HEADER, ROUTES } from './shared.js'
import type { LastSeen } from './shared.js'

export interface CheckContext {
  upstream: string
  apiKey: string
  expected: { small: Buffer, large: Buffer }
}

// Small enough to be quick, large enough to span several chunks.
const CHECK_UPLOAD_BYTES = 300_000
const CHECK_DOWNLOAD_BYTES = 1_000_000

async function lastSeen (upstream: string): Promise<LastSeen> {
  return JSON.parse((await fetchRaw(upstream + ROUTES.debug)).body.toString('utf8')) as LastSeen
}

function decoded (body: Buffer, encoding: string | undefined): Buffer {
  return encoding === 'gzip' ? gunzipSync(body) : body
}

export interface CheckResult {
  /** What went wrong; empty when the contender is correct. */
  failures: string[]
  /** The small and large bodies' sizes, before and after the contender's gzip (same level, same bytes expected). */
  gzipped: string
}

/**
 * Checks that a contender does the job before it is timed: 200 with valid
 * credentials, 401 (and no upstream call) without, the same body after
 * decompression, gzip when accepted, and the upstream got the API key and
 * never the caller's Authorization.
 */
export async function checkContender (contender: Contender, ctx: CheckContext): Promise<CheckResult> {
  const failures: string[] = []
  const bodyBytes: string[] = []
  const expect = (ok: boolean, what: string): void => { if (!ok) failures.push(what) }
  const gateway = contender.name !== 'direct'
  const auth = contender.credentials

  const plain = await fetchRaw(contender.url + ROUTES.small, { headers: auth })
  expect(plain.status === 200, `GET small: status ${plain.status}, expected 200`)
  expect(plain.headers['content-encoding'] === undefined, 'GET small without Accept-Encoding came encoded')
  expect(plain.body.equals(ctx.expected.small), 'GET small: body differs from the upstream\'s')
  const seen = await lastSeen(ctx.upstream)
  expect(seen.headers[API_KEY_HEADER] === ctx.apiKey, 'upstream did not receive the API key')
  expect(seen.headers.authorization === undefined, 'upstream received the caller\'s Authorization')

  for (const [route, body] of [[ROUTES.small, ctx.expected.small], [ROUTES.large, ctx.expected.large]] as const) {
    const res = await fetchRaw(contender.url + route, { headers: { ...auth, 'accept-encoding': 'gzip' } })
    const encoding = res.headers['content-encoding']
    expect(res.status === 200, `GET ${route} gzip: status ${res.status}`)
    // The upstream itself never compresses: `direct` is the uncompressed limit.
    if (gateway) expect(encoding === 'gzip', `GET ${route}: not gzipped although accepted (content-encoding ${encoding})`)
    expect(res.status === 200 && decoded(res.body, encoding).equals(body), `GET ${route} gzip: body differs after decompression`)
    bodyBytes.push(`${body.length} -> ${res.body.length} B`)
  }

  // The floor has no auth to check: it is the cost of forwarding alone.
  if (contender.authenticates) {
    const before = (await lastSeen(ctx.upstream)).count
    const missing = await fetchRaw(contender.url + ROUTES.small)
    expect(missing.status === 401, `GET without credentials: status ${missing.status}, expected 401`)
    for (const { label, headers } of contender.refused) {
      const res = await fetchRaw(contender.url + ROUTES.small, { headers })
      expect(res.status === 401, `GET with ${label}: status ${res.status}, expected 401`)
    }
    if (gateway) {
      const after = (await lastSeen(ctx.upstream)).count
      expect(after === before, `refused requests reached the upstream (${after - before} of them)`)
    }
  }

  const upload = await fetchRaw(contender.url + ROUTES.upload, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/octet-stream' },
    body: Buffer.alloc(CHECK_UPLOAD_BYTES, 'u')
  })
  expect(upload.status === 200 && upload.body.toString('utf8') === JSON.stringify({ bytes: CHECK_UPLOAD_BYTES }),
    `POST upload: status ${upload.status}, answer ${upload.body.toString('utf8').slice(0, 100)}`)
  const uploadSeen = await lastSeen(ctx.upstream)
  expect(uploadSeen.headers[API_KEY_HEADER] === ctx.apiKey && uploadSeen.headers.authorization === undefined,
    'POST upload: upstream headers wrong (key missing or Authorization forwarded)')

  const download = await fetchRaw(`${contender.url}${ROUTES.download}?bytes=${CHECK_DOWNLOAD_BYTES}`, { headers: auth })
  expect(download.status === 200 && download.body.length === CHECK_DOWNLOAD_BYTES,
    `GET download: status ${download.status}, ${download.body.length} bytes, expected ${CHECK_DOWNLOAD_BYTES}`)
  return { failures, gzipped: bodyBytes.join(', ') }
}
