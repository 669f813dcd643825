import t from 'tap'
import { gunzipSync } from 'node:zlib'
import { build, EMPLOYEES } from '../examples/response-transform/server.js'

/* The response-transform example, run in-process through the gateway's real login. */

t.test('the response-transform example hides fields by role', async (t) => {
  const example = await build()
  t.teardown(example.close)
  const { gateway } = example

  async function tokenOf (username: string): Promise<string> {
    const res = await gateway.inject({ method: 'POST', url: '/login', payload: { username, password: `${username}-password` } })
    t.equal(res.statusCode, 200)
    return res.json<{ token: string }>().token
  }

  const staff = { authorization: `Bearer ${await tokenOf('sam')}` }
  const hr = { authorization: `Bearer ${await tokenOf('hr')}` }

  const list = await gateway.inject({ url: '/directory/employees', headers: { ...staff, 'accept-encoding': 'gzip' } })
  t.equal(list.statusCode, 200)
  t.equal(list.headers['content-encoding'], 'gzip')
  t.notOk('etag' in list.headers)
  t.equal(list.headers['cache-control'], 'private, no-store')
  t.same(JSON.parse(gunzipSync(list.rawPayload).toString()), EMPLOYEES.map(({ id, name, department, email }) => ({ id, name, department, email })))

  const one = await gateway.inject({ url: '/directory/employees/2', headers: staff })
  const { salary, homeAddress, ...visible } = EMPLOYEES[1]!
  t.same(one.json(), visible)
  t.ok(salary > 0 && homeAddress !== '', 'the hidden fields exist upstream')

  const full = await gateway.inject({ url: '/directory/employees', headers: hr })
  t.same(full.json(), EMPLOYEES, 'hr sees every field')
  t.equal(full.headers.etag, '"directory-v1"', 'an untouched answer keeps its ETag')

  const missing = await gateway.inject({ url: '/directory/employees/99', headers: staff })
  t.equal(missing.statusCode, 404, 'errors pass untouched')
  t.same(missing.json(), { message: 'not found' })

  const anonymous = await gateway.inject({ url: '/directory/employees' })
  t.equal(anonymous.statusCode, 401)
})
