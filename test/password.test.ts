import t from 'tap'
import { TSX_CHILD_ENV } from './helpers/cli.js'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { FastifyRequest } from 'fastify'
import { hashPassword, isPasswordHash, staticUsers, verifyPassword } from '../lib/index.js'
import { testHash } from './helpers/app.js'
import { hashCost, recordScryptCosts } from './helpers/scrypt-costs.js'

/*
 * Password hashes: scrypt with a random salt, compared in constant time; the
 * static user table refuses plain passwords; the CLI reads stdin.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url))
// The verifier ignores the request; a stand-in keeps the call typed.
const request = {} as FastifyRequest

t.test('hashPassword then verifyPassword with the default cost round-trips', async (t) => {
  const hash = await hashPassword('correct horse battery staple')
  t.match(hash, /^scrypt\$16384\$8\$1\$[\w-]+\$[\w-]+$/, 'self-describing scrypt hash with the default cost')
  t.equal(await verifyPassword('correct horse battery staple', hash), true)
})

t.test('a wrong password does not verify', async (t) => {
  const hash = await testHash('alice-pw')
  t.equal(await verifyPassword('alice-pw ', hash), false)
  t.equal(await verifyPassword('Alice-pw', hash), false)
  t.equal(await verifyPassword('', hash), false)
})

t.test('a password verifies whatever its Unicode normalization', async (t) => {
  const hash = await testHash('caf\u00e9')
  t.equal(await verifyPassword('cafe\u0301', hash), true)
})

t.test('a malformed hash never verifies and never throws', async (t) => {
  const good = await testHash('pw')
  const parts = good.split('$')
  const malformed = [
    '',
    'pw',
    '$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234',
    parts.slice(0, 5).join('$'),
    ['bcrypt', ...parts.slice(1)].join('$'),
    ['scrypt', '1000', ...parts.slice(2)].join('$'),
    ['scrypt', 'abc', ...parts.slice(2)].join('$'),
    ['scrypt', String(2 ** 24), ...parts.slice(2)].join('$'),
    ['scrypt', parts[1], '0', ...parts.slice(3)].join('$'),
    [...parts.slice(0, 4), 'AA', parts[5]].join('$'),
    [...parts.slice(0, 5), 'AA'].join('$'),
    good + '$extra'
  ]
  for (const hash of malformed) {
    t.equal(await verifyPassword('pw', hash as string), false, `rejects ${JSON.stringify(hash)}`)
  }
  t.equal(await verifyPassword('pw', good), true, 'the well-formed original verifies')
})

t.test('isPasswordHash tells hashes from anything else', async (t) => {
  t.equal(isPasswordHash(await testHash('pw')), true)
  t.equal(isPasswordHash(await hashPassword('pw')), true)
  t.equal(isPasswordHash('alice-pw'), false)
  t.equal(isPasswordHash(''), false)
  t.equal(isPasswordHash('scrypt$16384$8$1$$'), false)
  t.equal(isPasswordHash(undefined), false)
  t.equal(isPasswordHash(42), false)
  t.equal(isPasswordHash({ passwordHash: 'x' }), false)
})

t.test('two hashes of the same password differ (random salt) and both verify', async (t) => {
  const a = await testHash('same')
  const b = await testHash('same')
  t.not(a, b)
  t.not(a.split('$')[4], b.split('$')[4], 'different salts')
  t.equal(await verifyPassword('same', a), true)
  t.equal(await verifyPassword('same', b), true)
})

t.test('hashPassword refuses an empty password', async (t) => {
  await t.rejects(hashPassword(''), TypeError)
})

t.test('staticUsers refuses a plain-text password at construction', async (t) => {
  const users = { alice: { passwordHash: 'alice-plain-secret' } }
  let error: unknown
  try {
    staticUsers(users)
  } catch (err) {
    error = err
  }
  t.ok(error instanceof TypeError, 'a TypeError')
  t.match((error as Error).message, /alice/, 'names the user')
  t.notMatch((error as Error).message, /alice-plain-secret/, 'does not echo the password')
})

t.test('staticUsers refuses an entry without passwordHash at construction', async (t) => {
  t.throws(() => staticUsers({ alice: { password: 'pw' } } as never), TypeError)
})

t.test('staticUsers returns claims with sub defaulting to the user name', async (t) => {
  const verify = staticUsers({
    alice: { passwordHash: await testHash('alice-pw'), claims: { role: 'admin' } },
    bob: { passwordHash: await testHash('bob-pw'), claims: { sub: 'B-42', role: 'clerk' } }
  })
  t.strictSame(await verify({ username: 'alice', password: 'alice-pw' }, request), { sub: 'alice', role: 'admin' })
  t.strictSame(await verify({ username: 'bob', password: 'bob-pw' }, request), { sub: 'B-42', role: 'clerk' })
})

t.test('staticUsers returns null for a wrong password', async (t) => {
  const verify = staticUsers({ alice: { passwordHash: await testHash('alice-pw') } })
  t.equal(await verify({ username: 'alice', password: 'bob-pw' }, request), null)
})

t.test('staticUsers returns null for an unknown user', async (t) => {
  const verify = staticUsers({ alice: { passwordHash: await testHash('alice-pw') } })
  t.equal(await verify({ username: 'mallory', password: 'alice-pw' }, request), null)
  t.equal(await verify({ username: '__proto__', password: 'alice-pw' }, request), null)
  t.equal(await verify({ username: 'constructor', password: 'alice-pw' }, request), null)
})

t.test('staticUsers spends the same work on an unknown user as on a known one, whatever the table\'s cost', async (t) => {
  // The table uses a cheaper cost than the default: the decoy must match it,
  // or unknown names answer measurably slower than known ones. Counted, not
  // timed: every scrypt call's cost is recorded.
  const verify = staticUsers({ alice: { passwordHash: await testHash('alice-pw') } })
  const expected = hashCost(await testHash('x'))
  const costs = recordScryptCosts(t)

  t.equal(await verify({ username: 'alice', password: 'wrong' }, request), null)
  t.same(costs, [expected], 'a known name with a wrong password: one scrypt at the table\'s cost')
  costs.length = 0
  t.equal(await verify({ username: 'nobody', password: 'alice-pw' }, request), null)
  t.equal(await verify({ username: 'nobody-else', password: 'x' }, request), null)
  t.same(costs, [expected, expected], 'an unknown name: one scrypt each, at the same cost')
})

interface CliResult { code: number | null, stdout: string, stderr: string }

function runCli (stdin: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    // Without tap's NODE_OPTIONS the child starts as a user's would, and fast.
    const env = { ...process.env, ...TSX_CHILD_ENV }
    const child = spawn(process.execPath, ['--import', 'tsx', 'lib/cli/hash-password.ts'], { cwd: ROOT, env, stdio: 'pipe' })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(stdin)
  })
}

t.test('the CLI prints a hash of the password read from stdin', async (t) => {
  const { code, stdout } = await runCli('s3cret pass phrase\n')
  t.equal(code, 0)
  const lines = stdout.split('\n').filter((line) => line !== '')
  t.equal(lines.length, 1, 'one line: the hash')
  const hash = lines[0] as string
  t.ok(isPasswordHash(hash), 'a password hash')
  t.notMatch(stdout, /s3cret/, 'the password is not echoed')
  t.equal(await verifyPassword('s3cret pass phrase', hash), true)
  t.equal(await verifyPassword('s3cret', hash), false)
})

t.test('the CLI exits 1 with a message on empty stdin', async (t) => {
  const { code, stdout, stderr } = await runCli('')
  t.equal(code, 1)
  t.equal(stdout, '')
  t.match(stderr, /no password/)
})
