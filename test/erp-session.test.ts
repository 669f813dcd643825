import t from 'tap'
import { request } from 'undici'
import { startErpStack } from './helpers/erp.js'

/*
 * Issue 14 item 12: the ERP example refreshes, logs out (ending the session's
 * access tokens at once) and throttles failed logins, as its README shows.
 */

async function post (url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  const text = await res.body.text()
  return { status: res.statusCode, headers: res.headers, body: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
}

t.test('refresh, logout and a 429 in the ERP example', async (t) => {
  const erp = await startErpStack(t)
  const login = await post(`${erp.gateway}/login`, { username: 'WAL001', password: 'wal001' })
  t.equal(login.status, 200)
  t.type(login.body.refreshToken, 'string')
  const refreshed = await post(`${erp.gateway}/token/refresh`, { refreshToken: login.body.refreshToken })
  t.equal(refreshed.status, 200)
  const auth = { authorization: `Bearer ${refreshed.body.token as string}` }
  t.equal((await request(`${erp.gateway}/transactions`, { headers: auth })).statusCode, 200)
  t.equal((await post(`${erp.gateway}/logout`, {}, auth)).status, 204)
  const after = await request(`${erp.gateway}/transactions`, { headers: auth })
  t.equal(after.statusCode, 401)
  t.equal((await after.body.json() as { code: string }).code, 'FST_GATEHOUSE_TOKEN_REVOKED')

  const statuses = await Promise.all(Array.from({ length: 11 }, async (_, i) => (await post(`${erp.gateway}/login`, { username: 'BBY001', password: `guess-${i}` })).status))
  t.equal(statuses.filter((s) => s === 429).length, 1, 'the 11th wrong password is refused')
  const locked = await post(`${erp.gateway}/login`, { username: 'BBY001', password: 'bby001' })
  t.equal(locked.status, 429, 'even the right password while locked out')
  t.ok(Number(locked.headers['retry-after']) > 0)
})
