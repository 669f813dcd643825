import t from 'tap'
import { request as httpRequest, Agent } from 'node:http'
import { buildApp, bearer, listen, tokenFor } from './helpers/app.js'
import { startUpstream } from './helpers/upstream.js'
import { waitFor, within } from './helpers/wait.js'

const ROUNDS = 1000

t.test('thousands of client aborts leave no upstream socket, request or listener behind', async (t) => {
  let open = 0
  let closedEarly = 0
  // Each client leaves once the upstream has its request, so every abort is one the gateway must pass on.
  const arrived = new Map<string, () => void>()
  const upstream = await startUpstream((req, res) => {
    open++
    arrived.get(req.url ?? '')?.()
    // Never answers before the client leaves; notices when the gateway aborts.
    res.on('close', () => {
      open--
      if (!res.writableFinished) closedEarly++
    })
    if (req.url?.startsWith('/api/stream') === true) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      res.write(Buffer.alloc(1024))
    }
  })
  t.teardown(upstream.close)
  const app = await buildApp(t, { targets: [{ prefix: '/api', upstream: upstream.url }] })
  const base = await listen(app)
  const agent = new Agent({ keepAlive: false, maxSockets: 50 })
  t.teardown(() => agent.destroy())
  const headers = bearer(tokenFor(app))

  const statuses = new Set<number>()
  const handlesBefore = process.getActiveResourcesInfo().length
  const abortOne = (path: string): Promise<void> => new Promise((resolve) => {
    const req = httpRequest(`${base}${path}`, { headers, agent }, (res) => {
      statuses.add(res.statusCode ?? 0)
      res.once('data', () => req.destroy())
    })
    req.on('error', () => {})
    if (path.includes('hang')) arrived.set(path, () => req.destroy())
    req.on('close', () => {
      arrived.delete(path)
      resolve()
    })
    req.end()
  })
  for (let i = 0; i < ROUNDS; i += 25) {
    const batch = Promise.all(Array.from({ length: 25 }, (_, j) => abortOne((i + j) % 2 === 0 ? `/api/hang/${i + j}` : `/api/stream/${i + j}`)))
    await within(batch, { message: `requests ${i} to ${i + 24} reached the upstream and were aborted` })
  }
  await waitFor(() => open === 0, { message: 'the gateway ended every upstream request', timeout: 10_000 })
  t.same([...statuses], [200], 'responses started')
  t.equal(open, 0, 'every upstream request was ended')
  t.equal(upstream.seen.length, ROUNDS, 'every request reached the upstream before its client left')
  t.equal(closedEarly, upstream.seen.length, 'the gateway aborted them all')
  const connections = await new Promise<number>((resolve, reject) => upstream.server.getConnections((err, n) => err === null ? resolve(n) : reject(err)))
  // Aborted requests cost their connection; what is left are idle keep-alive
  // connections of the pool, at most one per concurrent request.
  t.ok(connections <= 25, `upstream connections left: ${connections}`)
  const handlesAfter = process.getActiveResourcesInfo().length
  // Each pooled keep-alive connection is two sockets here (gateway and upstream ends).
  t.ok(handlesAfter <= handlesBefore + 2 * connections + 4, `active handles ${handlesBefore} -> ${handlesAfter}`)
  t.ok(app.server.listenerCount('request') <= 1)
})
