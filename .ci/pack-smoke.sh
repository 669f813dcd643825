#!/usr/bin/env bash
# Proves the npm-package use: pack the project, install the tarball into a
# throw-away host app outside the repo, type-check the host and serve one
# proxied request through the installed plugin, and check that a stack trace
# from the installed package names only files the package ships.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$root"
tarball=$(npm pack --silent --pack-destination "$work" | tail -n 1)
ts_version=$(node -p "require('./node_modules/typescript/package.json').version")
types_version=$(node -p "require('./node_modules/@types/node/package.json').version")

mkdir "$work/host"
cd "$work/host"
cat > package.json <<'JSON'
{ "name": "gatehouse-host-smoke", "private": true, "type": "module" }
JSON
cat > tsconfig.json <<'JSON'
{ "compilerOptions": { "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext",
  "strict": true, "outDir": "out", "rootDir": ".", "skipLibCheck": false, "types": ["node"] },
  "files": ["host.ts"] }
JSON
cat > host.ts <<'TS'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import gatehouse, { hashPassword, staticUsers, type GatehouseOptions } from 'fastify-gatehouse'

const upstream = createServer((req, res) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ url: req.url, key: req.headers['x-api-key'], auth: req.headers.authorization ?? null }))
})
await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
const port = (upstream.address() as AddressInfo).port

const options: GatehouseOptions = {
  auth: {
    secret: 'a-host-secret-of-at-least-32-bytes!!',
    login: { verify: staticUsers({ ann: { passwordHash: await hashPassword('ann-pw', { N: 1024, r: 8, p: 1 }), claims: { role: 'user' } } }) }
  },
  targets: [{ prefix: '/svc', upstream: `http://127.0.0.1:${port}`, credentials: { header: 'x-api-key', value: 'k' } }]
}
const app = Fastify()
await app.register(gatehouse, options)
const login = await app.inject({ method: 'POST', url: '/login', payload: { username: 'ann', password: 'ann-pw' } })
const { token } = login.json() as { token: string }
const res = await app.inject({ url: '/svc/hello?x=1', headers: { authorization: `Bearer ${token}` } })
const body = res.json() as { url: string, key: string, auth: string | null }
await app.close()
upstream.close()
if (res.statusCode !== 200 || body.url !== '/svc/hello?x=1' || body.key !== 'k' || body.auth !== null) {
  console.error('pack smoke failed', res.statusCode, body)
  process.exit(1)
}
console.log('pack smoke: installed package served a proxied request')
TS
npm install --prefer-offline --no-audit --no-fund --loglevel=error "$work/$tarball" fastify "typescript@$ts_version" "@types/node@$types_version" >/dev/null
npx --no-install tsc -p tsconfig.json
node out/host.js

# The packed bins: `gatehouse check` validates a config file (secrets from the
# environment, users from a file) and refuses a typo; the old bin still runs.
cat > users.yaml <<'YAML'
ann: { passwordHash: 'scrypt$16384$8$1$LOTX9uEWZDy0uA0zm1Y_xA$emdYVJMSbMNKG4bQVSJWVngmK6-KiftSabkhfRQzhcA' }
YAML
cat > gateway.yaml <<'YAML'
listen: { port: 0 }
auth: { secret: '${SMOKE_JWT_SECRET}', login: { users: ./users.yaml } }
targets:
  - { prefix: /svc, upstream: 'http://127.0.0.1:9', credentials: { header: x-api-key, value: '${SMOKE_API_KEY}' } }
YAML
SMOKE_JWT_SECRET=a-smoke-secret-of-at-least-32-bytes SMOKE_API_KEY=k npx --no-install gatehouse check --config gateway.yaml
sed 's/prefix:/prefx:/' gateway.yaml > typo.yaml
if SMOKE_JWT_SECRET=a-smoke-secret-of-at-least-32-bytes SMOKE_API_KEY=k npx --no-install gatehouse check --config typo.yaml 2>/dev/null; then
  echo 'pack smoke failed: gatehouse check accepted a config with a typo' >&2
  exit 1
fi
npx --no-install gatehouse-hash-password --help >/dev/null
echo 'pack smoke: gatehouse check validated a config file; gatehouse-hash-password runs'

# An options error thrown inside the package: with source maps on, every frame
# in the package must name a file that the installed package contains.
cat > stack.mjs <<'JS'
import { existsSync } from 'node:fs'
import Fastify from 'fastify'
import gatehouse from 'fastify-gatehouse'

const app = Fastify()
const err = await app.register(gatehouse, { targets: 'not-a-list' }).then(() => null, (e) => e)
const frames = (err?.stack ?? '').split('\n').filter((l) => l.includes('/node_modules/fastify-gatehouse/'))
const files = frames.map((l) => l.match(/(?:file:\/\/)?(\/[^():]+\/node_modules\/fastify-gatehouse\/[^():]+):\d+:\d+/)?.[1])
const missing = files.filter((f) => f === undefined || !existsSync(f))
if (err?.code !== 'FST_GATEHOUSE_INVALID_OPTION' || frames.length === 0 || missing.length > 0) {
  console.error('pack smoke failed: stack trace names files the package does not ship', missing, '\n' + err?.stack)
  process.exit(1)
}
console.log(`pack smoke: stack trace names shipped files (${[...new Set(files)].map((f) => f.split('/node_modules/fastify-gatehouse/')[1]).join(', ')})`)
JS
node --enable-source-maps stack.mjs
