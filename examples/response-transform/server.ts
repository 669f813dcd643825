import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { gzipSync } from 'node:zlib'
import Fastify from 'fastify'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import gatehouse, { gatehouseFrameworkErrors, hashPassword, staticUsers } from 'fastify-gatehouse'
import type { GatehouseClaims, Middleware, TargetOptions } from 'fastify-gatehouse'

/*
 * Response transform: the gateway reads the upstream's JSON and drops the
 * fields the caller's role may not see, before the body reaches the caller
 * (compressed again if the caller accepts it). A tiny staff directory plays
 * the upstream, in the same process.
 */

export interface Employee {
  id: number
  name: string
  department: string
  email: string
  salary: number
  homeAddress: string
}

const FIRST = ['Ada', 'Bo', 'Cy', 'Dee', 'Eli', 'Fay', 'Gus', 'Hal', 'Ivy', 'Jo']
const LAST = ['Park', 'Chen', 'Diaz']
const DEPARTMENTS = ['Engineering', 'Sales', 'People', 'Finance']

/** Thirty made-up employees: enough JSON to be worth compressing. */
export const EMPLOYEES: Employee[] = Array.from({ length: 30 }, (_, i) => {
  const first = FIRST[i % FIRST.length] as string
  const last = LAST[i % LAST.length] as string
  return {
    id: i + 1,
    name: `${first} ${last}`,
    department: DEPARTMENTS[i % DEPARTMENTS.length] as string,
    email: `${first.toLowerCase()}.${last.toLowerCase()}${i + 1}@example.com`,
    salary: 60_000 + i * 1_500,
    homeAddress: `${i + 1} Elm St`
  }
})

/** Roles of this example's tokens; `hr` sees everything, `staff` the directory only. */
export interface StaffClaims extends GatehouseClaims {
  sub: string
  role: 'hr' | 'staff'
}

/** Per-request state: the fields this caller may not see. */
export interface FieldState {
  hidden: Array<keyof Employee>
}

const HIDDEN_FROM: Record<StaffClaims['role'], Array<keyof Employee>> = {
  hr: [],
  staff: ['salary', 'homeAddress']
}

function withoutFields (employee: Employee, hidden: Array<keyof Employee>): Partial<Employee> {
  const copy: Partial<Employee> = { ...employee }
  for (const field of hidden) delete copy[field]
  return copy
}

/**
 * Drops the hidden fields from `/directory/employees` answers. Before
 * `next()` it decides what to hide (an unknown role sees the least); after
 * it, it reads the upstream JSON (decoded from gzip if the upstream sent
 * that) and replaces the body. Errors and non-JSON answers pass untouched,
 * still streamed.
 */
export const hideFields: Middleware<FieldState, StaffClaims> = async (ctx, next) => {
  ctx.state.hidden = HIDDEN_FROM[ctx.user?.role ?? 'staff'] ?? HIDDEN_FROM.staff
  await next()
  const response = ctx.response
  if (response === undefined || response.status !== 200 || ctx.state.hidden.length === 0) return
  if (!String(response.headers['content-type']).startsWith('application/json')) return
  const data = await response.json<Employee | Employee[]>()
  response.body = Array.isArray(data)
    ? data.map((employee) => withoutFields(employee, ctx.state.hidden))
    : withoutFields(data, ctx.state.hidden)
  // The answer now depends on who asks: no shared cache may keep it.
  response.headers['cache-control'] = 'private, no-store'
}

/** The upstream: a staff directory that gzips its JSON when asked to. */
export function startDirectory (port = 0): Promise<Server> {
  const server = createServer((req, res) => {
    const match = /^\/employees(?:\/(\d+))?$/.exec(req.url ?? '')
    const found = match?.[1] === undefined ? EMPLOYEES : EMPLOYEES.find((e) => e.id === Number(match[1]))
    if (match === null || found === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"not found"}')
      return
    }
    let body = Buffer.from(JSON.stringify(found))
    const headers: Record<string, string> = { 'content-type': 'application/json', etag: '"directory-v1"' }
    if (/\bgzip\b/.test(String(req.headers['accept-encoding']))) {
      body = gzipSync(body)
      headers['content-encoding'] = 'gzip'
    }
    res.writeHead(200, { ...headers, 'content-length': String(body.length) }).end(body)
  })
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)))
}

export interface ExampleOptions {
  /** HS256 secret, at least 32 bytes. Default: random per run. */
  jwtSecret?: string
  logger?: FastifyServerOptions['logger']
  /** Port of the directory; default any free one. */
  directoryPort?: number
}

export interface Example {
  gateway: FastifyInstance
  directory: Server
  /** Closes the gateway, then the directory. */
  close: () => Promise<void>
}

/**
 * The gateway (login at `POST /login`; `hr`/`hr-password` and
 * `sam`/`sam-password`) in front of the directory at `/directory/*`.
 */
export async function build (opts: ExampleOptions = {}): Promise<Example> {
  const directory = await startDirectory(opts.directoryPort)
  const directoryUrl = `http://127.0.0.1:${(directory.address() as AddressInfo).port}`
  const gateway = Fastify({ logger: opts.logger ?? false, requestTimeout: 60_000, frameworkErrors: gatehouseFrameworkErrors })
  const target: TargetOptions<FieldState, StaffClaims> = {
    prefix: '/directory',
    upstream: directoryUrl,
    rewritePrefix: '',
    state: { hidden: [] },
    middleware: [hideFields],
    // Only the bodies the middleware reads count; the directory is small.
    maxBufferedBody: 1024 * 1024
  }
  await gateway.register(gatehouse, {
    auth: {
      secret: opts.jwtSecret ?? randomBytes(32).toString('base64url'),
      login: {
        verify: staticUsers({
          hr: { passwordHash: await hashPassword('hr-password'), claims: { sub: 'hr', role: 'hr' } },
          sam: { passwordHash: await hashPassword('sam-password'), claims: { sub: 'sam', role: 'staff' } }
        })
      }
    },
    targets: [target]
  })
  const close = async (): Promise<void> => {
    await gateway.close()
    await new Promise<void>((resolve) => directory.close(() => resolve()))
  }
  return { gateway, directory, close }
}

async function main (): Promise<void> {
  const example = await build({ logger: { level: 'info' } })
  const url = await example.gateway.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 8080) })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => { example.close().then(() => process.exit(0), () => process.exit(1)) })
  }
  process.stdout.write([
    `gateway on ${url}; try:`,
    `  TOKEN=$(curl -s -X POST ${url}/login -H 'content-type: application/json' -d '{"username":"sam","password":"sam-password"}' | node -pe 'JSON.parse(require("fs").readFileSync(0)).token')`,
    `  curl -s --compressed ${url}/directory/employees -H "authorization: Bearer $TOKEN"`,
    ''
  ].join('\n'))
}

const entry = process.argv[1]
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`example failed to start: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  })
}
