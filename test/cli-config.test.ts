/* eslint-disable no-template-curly-in-string -- the config files under test hold ${NAME} references on purpose */
import { PassThrough } from 'node:stream'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { verifyPassword } from '../lib/index.js'
import { loadConfig } from '../lib/cli/config.js'
import { buildServer, main } from '../lib/cli/gatehouse.js'
import type { GatehouseStore } from '../lib/types.js'
import { redisSkip, startRedis } from './helpers/redis.js'
import { waitFor } from './helpers/wait.js'
import { runCli } from './helpers/cli.js'

/*
 * Issue 16 section 1: `gatehouse check` validates a config file through the
 * plugin's own resolver; errors name the file, the option path and what was
 * expected, unknown keys get a hint; secrets come from the environment.
 */

const SECRET = 'a-config-test-secret-of-32-bytes-or-more'
const HASH = 'scrypt$16384$8$1$LOTX9uEWZDy0uA0zm1Y_xA$emdYVJMSbMNKG4bQVSJWVngmK6-KiftSabkhfRQzhcA'
const USERS = `ann:\n  passwordHash: '${HASH}'\n  claims: { role: clerk }\n`

/** A minimal valid config, with `extra` lines appended to the top level. */
function config (extra = '', target = ''): string {
  return [
    'listen: { port: 0 }',
    'auth:',
    '  secret: ${JWT_SECRET}',
    '  login: { users: ./users.yaml }',
    'targets:',
    '  - prefix: /api',
    '    upstream: http://127.0.0.1:9',
    '    credentials: { header: x-api-key, value: "${API_KEY}" }',
    target,
    extra
  ].join('\n')
}

/** Runs `gatehouse ARGS` in this process; resolves with the exit code and what it wrote. */
async function run (args: string[], env: Record<string, string> = { JWT_SECRET: SECRET, API_KEY: 'k' }) {
  const io = { input: new PassThrough(), output: new PassThrough(), errors: new PassThrough() }
  let out = ''
  let err = ''
  io.output.on('data', (chunk: Buffer) => { out += chunk.toString() })
  io.errors.on('data', (chunk: Buffer) => { err += chunk.toString() })
  const code = await main(args, io, env)
  return { code, out, err }
}

function dir (t: Test, files: Record<string, string>): string {
  return t.testdir({ 'users.yaml': USERS, ...files })
}

t.test('a valid file passes check with a summary; exit 0', async (t) => {
  const root = dir(t, { 'gateway.yaml': config() })
  const res = await run(['check', '--config', join(root, 'gateway.yaml')])
  t.equal(res.code, 0, res.err)
  t.match(res.out, /gateway\.yaml: ok \(1 target, listen 0\.0\.0\.0:0\)/)
})

t.test('unknown keys fail with the file, the option path and a did-you-mean hint, at every level', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['lisen: { port: 1 }', '', /"lisen": expected a known option; did you mean "listen"\?/],
    ['logging: { levle: info }', '', /"logging\.levle": expected a known option; did you mean "level"\?/],
    ['', '    prefx: /x', /"targets\[0\]\.prefx": expected a known option; did you mean "prefix"\?/],
    ['cors: { origin: [http://a.example], maxage: 5 }', '', /"cors\.maxage": expected a known option; did you mean "maxAge"\?/]
  ]
  for (const [extra, target, expected] of cases) {
    const root = dir(t, { 'gateway.yaml': config(extra, target) })
    const res = await run(['check', '--config', join(root, 'gateway.yaml')])
    t.equal(res.code, 1, `exit 1 for ${extra}${target}`)
    t.match(res.err, /gateway\.yaml: Invalid fastify-gatehouse option/)
    t.match(res.err, expected)
  }
})

t.test('values the plugin refuses are refused with its own message and path', async (t) => {
  const root = dir(t, { 'gateway.yaml': config('', '    timeouts: { connect: -1 }') })
  const res = await run(['check', '--config', join(root, 'gateway.yaml')])
  t.equal(res.code, 1)
  t.match(res.err, /gateway\.yaml: Invalid fastify-gatehouse option "targets\[0\]\.timeouts\.connect": expected an integer from 1/)

  const short = await run(['check', '--config', join(root, 'gateway.yaml')], { JWT_SECRET: 'short', API_KEY: 'k' })
  t.match(short.err, /"auth\.secret": expected a secret of at least 32 bytes/)

  const port = dir(t, { 'gateway.yaml': config().replace('port: 0', 'port: 70000') })
  t.match((await run(['check', '--config', join(port, 'gateway.yaml')])).err, /"listen\.port": expected an integer from 0 to 65535/)
})

t.test('secrets: ${NAME}, NAME_FILE (trailing newline dropped), ${NAME:-default}; a missing one names the variable', async (t) => {
  const root = dir(t, { 'gateway.yaml': config('', '    name: ${TARGET_NAME:-api}'), 'jwt-secret': `${SECRET}\n` })
  const file = join(root, 'gateway.yaml')
  const fromFile = await loadConfig(file, { JWT_SECRET_FILE: join(root, 'jwt-secret'), API_KEY: 'k' })
  t.equal(fromFile.options.auth.secret, SECRET)
  t.same(fromFile.options.targets[0]?.credentials, { header: 'x-api-key', value: 'k' })
  t.equal(fromFile.options.targets[0]?.name, 'api', 'the default applies when the variable is unset')
  t.equal((await loadConfig(file, { JWT_SECRET: SECRET, API_KEY: 'k', TARGET_NAME: 'orders' })).options.targets[0]?.name, 'orders')

  const missing = await run(['check', '--config', file], { JWT_SECRET: SECRET })
  t.equal(missing.code, 1)
  t.match(missing.err, /gateway\.yaml: .*"targets\[0\]\.credentials\.value": expected environment variable API_KEY to be set \(or API_KEY_FILE/)
  t.notMatch(missing.err, SECRET, 'no secret in the message')

  const unreadable = await run(['check', '--config', file], { JWT_SECRET_FILE: join(root, 'nope'), API_KEY: 'k' })
  t.match(unreadable.err, /"auth\.secret": expected JWT_SECRET_FILE to name a readable file \(ENOENT\)/)
})

t.test('users come from a file of scrypt hashes, checked entry by entry', async (t) => {
  const root = dir(t, { 'gateway.yaml': config() })
  const loaded = await loadConfig(join(root, 'gateway.yaml'), { JWT_SECRET: SECRET, API_KEY: 'k' })
  const login = loaded.options.auth.login
  const verify = login === false ? undefined : login.verify
  t.same(await verify?.({ username: 'ann', password: 'wal001' }, {} as never), { sub: 'ann', role: 'clerk' })
  t.equal(await verify?.({ username: 'ann', password: 'wrong' }, {} as never), null)

  const bad = dir(t, { 'gateway.yaml': config(), 'users.yaml': 'ann: { passwordHash: plain-text }\n' })
  const res = await run(['check', '--config', join(bad, 'gateway.yaml')])
  t.equal(res.code, 1)
  t.match(res.err, /"auth\.login\.users\(\.\/users\.yaml\)\.ann\.passwordHash": expected a scrypt hash from `gatehouse hash-password`/)

  const both = dir(t, { 'gateway.yaml': config().replace('login: { users: ./users.yaml }', 'login: { users: ./users.yaml, verify: ./v.mjs }') })
  t.match((await run(['check', '--config', join(both, 'gateway.yaml')])).err, /"auth\.login": expected false \(verify-only\), \{ users/)
})

t.test('module references: default or named exports, relative to the file; failures name the option', async (t) => {
  const root = dir(t, {
    'gateway.yaml': config('', [
      '    authorize: ./hooks.mjs#authorize',
      '    middleware: [./audit.mjs, { phase: targetEdge, handler: "./hooks.mjs#stamp" }]'
    ].join('\n')),
    'hooks.mjs': 'export const authorize = (ctx) => ctx.user?.role === "clerk"\nexport const stamp = async (ctx, next) => { await next() }\n',
    'audit.mjs': 'export default [async (ctx, next) => { await next() }, { phase: "clientEdge", handler: async (ctx, next) => { await next() } }]\n'
  })
  const loaded = await loadConfig(join(root, 'gateway.yaml'), { JWT_SECRET: SECRET, API_KEY: 'k' })
  const target = loaded.options.targets[0]
  t.equal(typeof target?.authorize, 'function')
  t.equal(target?.authorize?.({ user: { role: 'clerk' } } as never), true, 'the named export is used')
  t.equal(target?.middleware?.length, 3, 'an exported array is spread into the list')
  t.match(target?.middleware?.[2], { phase: 'targetEdge', handler: Function })

  const cases: Array<[string, RegExp]> = [
    ['    authorize: ./hooks.mjs#nope', /"targets\[0\]\.authorize": expected a module with an export "nope" \(\.\/hooks\.mjs\)/],
    ['    authorize: ./missing.mjs', /"targets\[0\]\.authorize": expected a module that loads \(\.\/missing\.mjs: /],
    ['    authorize: hooks.mjs', /"targets\[0\]\.authorize": expected a module path such as "\.\/audit\.js"/],
    ['    middleware: ./hooks.mjs#authorize-typo', /"targets\[0\]\.middleware": expected a module with an export "authorize-typo"/],
    // The plugin's own check still applies to what the module exports.
    ['    onUpstreamError: ./data.mjs', /"targets\[0\]\.onUpstreamError": expected a function/]
  ]
  for (const [target, expected] of cases) {
    const bad = dir(t, { 'gateway.yaml': config('', target), 'hooks.mjs': 'export const authorize = () => true\n', 'data.mjs': 'export default 42\n' })
    const res = await run(['check', '--config', join(bad, 'gateway.yaml')])
    t.equal(res.code, 1)
    t.match(res.err, expected)
  }
})

t.test('store: memory, memory accepted per worker, redis checked without connecting', async (t) => {
  const env = { JWT_SECRET: SECRET, API_KEY: 'k' }
  const at = (store: string) => join(dir(t, { 'gateway.yaml': config().replace('  login:', `  store: ${store}\n  login:`) }), 'gateway.yaml')
  t.equal((await loadConfig(at('memory'), env)).settings.store, 'memory')
  t.equal((await loadConfig(at('memory'), env)).options.auth.store, undefined, 'the plugin keeps its default store')
  t.equal((await loadConfig(at('{ memory: { perWorker: true } }'), env)).settings.store, 'memory-per-worker')
  // Nothing listens on port 9: check never connects, so it passes.
  const redis = await run(['check', '--config', at('{ redis: { url: "redis://127.0.0.1:9" } }')])
  t.equal(redis.code, 0, redis.err)
  t.match((await run(['check', '--config', at('{ redis: { url: "http://127.0.0.1:9" } }')])).err, /"auth\.store\.redis\.url": expected a redis:\/\/ or rediss:\/\/ URL/)
  t.match((await run(['check', '--config', at('{ redis: { uri: x } }')])).err, /"auth\.store\.redis\.uri": expected a known option; did you mean "url"\?/)
  t.match((await run(['check', '--config', at('redis')])).err, /"auth\.store": expected "memory", \{ memory: \{ perWorker: true \} \} or \{ redis: \{ url \} \}/)
})

t.test('store: redis serves from a real redis-server and disconnects on close', { skip: redisSkip }, async (t) => {
  const server = await startRedis(t)
  const env = { JWT_SECRET: SECRET, API_KEY: 'k' }
  const file = join(dir(t, { 'gateway.yaml': config().replace('  login:', `  store: { redis: { url: "${server.url}" } }\n  login:`) }), 'gateway.yaml')
  const loaded = await loadConfig(file, env)
  t.equal(loaded.settings.store, 'redis')
  const app = await buildServer(loaded)
  await app.ready()
  const store = loaded.options.auth.store as GatehouseStore
  t.equal(await store.add('gatehouse:cli-check', 'x', 10_000), true, 'written through the command\'s client')
  const reader = server.client()
  t.equal(await reader.get('gatehouse:cli-check'), 'x', 'and it is in redis-server')
  await app.close()
  const client = loaded.redis as unknown as { status: string }
  await waitFor(() => client.status === 'end', { message: `the command's client is closed with the app (status ${client.status})` })
  t.pass('the command\'s client is closed with the app')
})

t.test('server, logging and workers settings', async (t) => {
  const root = dir(t, {
    'gateway.yaml': config('server: { trustProxy: 1, requestTimeout: 5000, bodyLimit: 2048 }\nlogging: { level: warn, requests: false }\nworkers: auto'),
    'bad.json': JSON.stringify({ workers: 0, auth: {}, targets: [] })
  })
  const { settings } = await loadConfig(join(root, 'gateway.yaml'), { JWT_SECRET: SECRET, API_KEY: 'k' })
  t.same(settings, {
    listen: { host: '0.0.0.0', port: 0 },
    server: { trustProxy: 1, requestTimeout: 5000, bodyLimit: 2048, keepAliveTimeout: undefined },
    logging: { level: 'warn', requests: false },
    workers: 'auto',
    store: 'memory',
    metrics: undefined,
    metricsOn: false
  })
  const res = await run(['check', '--config', join(root, 'bad.json')])
  t.match(res.err, /bad\.json: .*"workers": expected an integer from 1 to 1024/, 'JSON works too')
})

t.test('unreadable and malformed files: FST_GATEHOUSE_CONFIG_FILE naming the file', async (t) => {
  const root = dir(t, { 'broken.yaml': 'auth: [\n', 'list.yaml': '- 1\n' })
  await t.rejects(loadConfig(join(root, 'missing.yaml')), { code: 'FST_GATEHOUSE_CONFIG_FILE', message: /missing\.yaml: no such file/ })
  await t.rejects(loadConfig(join(root, 'broken.yaml')), { code: 'FST_GATEHOUSE_CONFIG_FILE', message: /broken\.yaml/ })
  await t.rejects(loadConfig(join(root, 'list.yaml')), { code: 'FST_GATEHOUSE_INVALID_OPTION', message: /list\.yaml: .*"\(top level\)": expected a mapping/ })
})

t.test('usage errors exit 2; help exits 0', async (t) => {
  t.match(await run([]), { code: 2, out: /Usage: gatehouse/ })
  t.match(await run(['--help']), { code: 0, out: /Usage: gatehouse/ })
  t.match(await run(['check', '--help']), { code: 0, out: /Usage: gatehouse/ })
  t.match(await run(['launch']), { code: 2, err: /unknown command launch/ })
  t.match(await run(['check']), { code: 2, err: /--config FILE is required/ })
  t.match(await run(['check', '--confg', 'x']), { code: 2, err: /Unknown option '--confg'/ })
})

t.test('as a real process: check exits 1 on an error and 0 on the ERP example; hash-password joins the command', async (t) => {
  const root = dir(t, { 'gateway.yaml': config('', '    prefx: /x') })
  const bad = runCli(t, ['check', '--config', join(root, 'gateway.yaml')], { JWT_SECRET: SECRET, API_KEY: 'k' })
  t.equal(await bad.exit, 1)
  t.match(bad.stderr(), /did you mean "prefix"/)

  const good = runCli(t, ['check', '--config', 'examples/erp/gateway.yaml'], {
    GATEHOUSE_JWT_SECRET: SECRET, TRANSACTIONS_API_KEY: 'a', INVENTORY_API_KEY: 'b'
  })
  t.equal(await good.exit, 0, good.stderr())
  t.match(good.stdout(), /gateway\.yaml: ok \(4 targets, listen 127\.0\.0\.1:8080\)/)

  const hash = runCli(t, ['hash-password'])
  hash.child.stdin.end('piped-password\n')
  t.equal(await hash.exit, 0)
  t.equal(await verifyPassword('piped-password', hash.stdout().trim()), true)
})
