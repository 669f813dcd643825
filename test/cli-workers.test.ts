import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import t from 'tap'
import type { Test } from 'tap'
import { request } from 'undici'
import { main } from '../lib/cli/gatehouse.js'
import { serveCli } from './helpers/cli.js'
import type { CliProcess } from './helpers/cli.js'
import { startUpstream } from './helpers/upstream.js'
import type { Upstream } from './helpers/upstream.js'
import { waitFor } from './helpers/wait.js'

/*
 * Issue 16 section 2: `gatehouse serve --workers N` as a real process tree.
 * A killed worker is replaced while the other serves; SIGHUP swaps the
 * workers one by one for a changed file with no failed request, and refuses
 * an invalid file; SIGTERM drains in-flight requests; the memory store needs
 * an explicit per-worker opt-in.
 */

t.setTimeout(300_000)

const SECRET = 'a-workers-test-secret-of-32-bytes-or-more'

function config (upstream: string, store = '{ memory: { perWorker: true } }', extra = ''): string {
  return [
    'listen: { host: 127.0.0.1, port: 0 }',
    'logging: { level: warn }',
    `auth: { secret: '\${JWT_SECRET}', login: false, store: ${store} }`,
    'targets:',
    `  - { prefix: /api, upstream: '${upstream}', public: true${extra} }`
  ].join('\n') + '\n'
}

async function upstreamNamed (t: Test, name: string, handler?: Parameters<typeof startUpstream>[0]): Promise<Upstream> {
  const upstream = await startUpstream(handler ?? ((_req, res) => { res.end(name) }))
  t.teardown(() => upstream.close())
  return upstream
}

/** Worker pids from the primary's `worker listening` lines, in order. */
function workerPids (cli: CliProcess): number[] {
  return [...cli.stdout().matchAll(/"worker":(\d+),"address":"[^"]+","msg":"worker listening"/g)].map((match) => Number(match[1]))
}

/** One request on a fresh connection (a client of a reloading gateway); the body, or the error. */
async function get (url: string): Promise<{ status: number, body: string } | { error: string }> {
  try {
    const res = await request(`${url}/api/x`, { reset: true })
    return { status: res.statusCode, body: await res.body.text() }
  } catch (err) {
    return { error: (err as Error).message }
  }
}

async function serveWorkers (t: Test, files: Record<string, string>): Promise<{ cli: CliProcess & { url: string }, file: string }> {
  const root = t.testdir(files)
  const file = join(root, 'gateway.yaml')
  const cli = await serveCli(t, file, { JWT_SECRET: SECRET }, ['--workers', '2'])
  return { cli, file }
}

t.test('two workers serve one port; a killed worker is replaced (with a log line) while the other keeps serving', async (t) => {
  const a = await upstreamNamed(t, 'A')
  const { cli } = await serveWorkers(t, { 'gateway.yaml': config(a.url) })
  t.match(cli.stdout(), /gatehouse listening on http:\/\/127\.0\.0\.1:\d+ \(2 workers\)/)
  const [first, second] = workerPids(cli)
  t.ok(first !== undefined && second !== undefined && first !== second, 'two worker processes')
  t.same(await get(cli.url), { status: 200, body: 'A' })

  process.kill(first as number, 'SIGKILL')
  const died = await cli.waitForOutput(/\{[^\n]*"msg":"worker died; replacing it"[^\n]*\}/)
  t.match(JSON.parse(died[0]), { level: 40, worker: first, signal: 'SIGKILL', delayMs: 100 })
  for (let i = 0; i < 5; i++) t.same(await get(cli.url), { status: 200, body: 'A' }, 'the other worker serves')
  const pids = await waitFor(() => workerPids(cli).length === 3 && workerPids(cli), { message: 'a replacement worker', timeout: 60_000 })
  t.notOk([first, second].includes(pids[2]), 'the replacement is a new process')
  t.same(await get(cli.url), { status: 200, body: 'A' })
})

t.test('SIGHUP with a changed target replaces workers one by one with no failed request; an invalid file is refused and the workers keep serving', async (t) => {
  const a = await upstreamNamed(t, 'A')
  const b = await upstreamNamed(t, 'B')
  const { cli, file } = await serveWorkers(t, { 'gateway.yaml': config(a.url) })

  const answers: Array<Awaited<ReturnType<typeof get>>> = []
  const state = { loading: true }
  // Two clients in a loop, bounded: until the reload is done and B answers, at most 3000 requests.
  const load = Promise.all([0, 1].map(async () => {
    while (state.loading && answers.length < 3000) answers.push(await get(cli.url))
  }))
  await waitFor(() => answers.length >= 10, { message: 'the load loop running' })
  writeFileSync(file, config(b.url))
  cli.child.kill('SIGHUP')
  await cli.waitForOutput(/"msg":"reload complete"/, { timeout: 60_000 })
  const afterReload = answers.length
  await waitFor(() => answers.length >= afterReload + 10, { message: 'requests after the reload' })
  state.loading = false
  await load

  const failed = answers.filter((answer) => !('status' in answer) || answer.status !== 200)
  t.same(failed, [], `no failed request among ${answers.length}`)
  t.same(answers[0], { status: 200, body: 'A' }, 'before: the old target')
  t.same(answers.slice(afterReload), Array(answers.length - afterReload).fill({ status: 200, body: 'B' }), 'after: only the new target')
  t.equal(workerPids(cli).length, 4, 'two new workers were started')

  // A file that fails validation: refused, the workers of the last good file keep serving.
  writeFileSync(file, config(b.url).replace('prefix:', 'prefx:'))
  cli.child.kill('SIGHUP')
  const refused = await cli.waitForOutput(/\{[^\n]*"msg":"reload refused; the running workers keep serving"[^\n]*\}/)
  t.match(JSON.parse(refused[0]).error, /gateway\.yaml: .*"targets\[0\]\.prefx": expected a known option; did you mean "prefix"\?/)
  t.same(await get(cli.url), { status: 200, body: 'B' })
  t.equal(workerPids(cli).length, 4, 'no worker was replaced')
})

t.test('SIGTERM drains the in-flight request of every worker, then exits 0', async (t) => {
  let release: () => void = () => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  const slow = await upstreamNamed(t, 'slow', (_req, res) => { void released.then(() => res.end('done')) })
  const { cli } = await serveWorkers(t, { 'gateway.yaml': config(slow.url) })

  const inFlight = get(cli.url)
  await waitFor(() => slow.seen.length === 1, { message: 'the upstream got the request' })
  cli.child.kill('SIGTERM')
  await cli.waitForOutput(/"msg":"draining workers"/)
  release()
  t.same(await inFlight, { status: 200, body: 'done' }, 'the accepted request completed')
  t.equal(await cli.exit, 0)
})

t.test('more than one worker with the memory store is refused unless per-worker state is accepted', async (t) => {
  const root = t.testdir({
    'shared.yaml': config('http://127.0.0.1:9', 'memory'),
    'workers.yaml': config('http://127.0.0.1:9', 'memory') + 'workers: 2\n'
  })
  const run = async (args: string[]) => {
    const io = { input: new PassThrough(), output: new PassThrough(), errors: new PassThrough() }
    let err = ''
    io.errors.on('data', (chunk: Buffer) => { err += chunk.toString() })
    return { code: await main(args, io, { JWT_SECRET: SECRET }), err }
  }
  const refused = await run(['check', '--config', join(root, 'shared.yaml'), '--workers', '2'])
  t.equal(refused.code, 1)
  t.match(refused.err, /shared\.yaml: Invalid fastify-gatehouse option "auth\.store": expected a store the 2 workers share \(\{ redis: \{ url \} \}\), or \{ memory: \{ perWorker: true \} \}/)
  t.match(await run(['check', '--config', join(root, 'workers.yaml')]), { code: 1, err: /"auth\.store": expected a store the 2 workers share/ }, 'workers from the file too')
  t.match(await run(['check', '--config', join(root, 'shared.yaml')]), { code: 0 }, 'one worker: fine')
  t.match(await run(['check', '--config', join(root, 'shared.yaml'), '--workers', 'many']), { code: 2, err: /--workers takes a number/ })
})
