/**
 * Admin key roles: an auditor reads, an operator also acts on tasks, approvals and sessions, an
 * admin also rotates and revokes keys and loads policies. A key of a lesser role is 403
 * `insufficient_scope`, audited, and changes nothing else.
 */
import assert from 'node:assert/strict'
import { before, describe, it } from 'node:test'
import { argon2Hasher } from '../src/broker.js'
import { parseConfig } from '../src/config.js'
import { ADMIN_KEY, counts, NOTES, openTask, testConfig, testKeys, withBroker, type TestBroker } from './harness.js'

const AUDITOR = 'tpa_auditor-key-0123456789'
const OPERATOR = 'tpa_operator-key-0123456789'
let hashes: { auditor: string; operator: string }

const withRoles = (c: ReturnType<typeof testConfig>) => ({
  ...c,
  admin: { ...c.admin, keys: [{ name: 'audit-1', role: 'auditor' as const, hash: hashes.auditor }, { name: 'ops-1', role: 'operator' as const, hash: hashes.operator }] },
})

function as(b: TestBroker, key: string, method: string, path: string, body?: unknown) {
  return b.app.request(path, { method, headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, body: body === undefined ? undefined : JSON.stringify(body) })
}

async function openOne(b: TestBroker): Promise<string> {
  const res = await openTask(b, { purpose: 'roles', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
  assert.equal(res.status, 201)
  return ((await res.json()) as { task_id: string }).task_id
}

/** Refused for its role: 403 insufficient_scope with the challenge, one audit row, nothing else changed. */
async function assertRoleRefused(b: TestBroker, send: () => Response | Promise<Response>, needs: string) {
  const before = await counts(b)
  const r = await send()
  assert.equal(r.status, 403)
  assert.equal(((await r.json()) as { error: string }).error, 'insufficient_scope')
  assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer error="insufficient_scope"/)
  const after = await counts(b)
  assert.deepEqual({ ...after, audit_events: before.audit_events }, before, 'nothing but the audit row')
  assert.equal(after.audit_events, before.audit_events + 1)
  const row = (await b.lastAudit())!
  assert.equal(row.action, 'admin.refuse')
  assert.equal(row.decision, 'deny')
  assert.match(String(row.reason), new RegExp(`needs ${needs}$`))
}

describe('admin key roles', () => {
  before(async () => {
    hashes = { auditor: await argon2Hasher.hash(AUDITOR), operator: await argon2Hasher.hash(OPERATOR) }
  })

  it('an auditor reads everything and changes nothing', () =>
    withBroker(withRoles, async (b) => {
      const id = await openOne(b)
      for (const path of ['/admin/tasks', '/admin/audit', '/admin/audit/verify', `/admin/tasks/${id}/evidence`, '/admin/policies']) {
        assert.equal((await as(b, AUDITOR, 'GET', path)).status, 200, path)
      }
      await assertRoleRefused(b, () => as(b, AUDITOR, 'POST', `/admin/tasks/${id}/revoke`), 'operator')
      await assertRoleRefused(b, () => as(b, AUDITOR, 'POST', '/admin/sessions/revoke', { issuer: 'https://idp.test.example', sid: 'sess-1' }), 'operator')
      await assertRoleRefused(b, () => as(b, AUDITOR, 'POST', '/admin/keys/rotate'), 'admin')
      await assertRoleRefused(b, () => as(b, AUDITOR, 'PUT', '/admin/policies', { policies: '' }), 'admin')
      assert.equal((await b.deps.stores.tasks.get(id))!.status, 'active')
    }))

  it('an operator ends tasks and sessions, never keys or policies; its name is on the audit row', () =>
    withBroker(withRoles, async (b) => {
      const id = await openOne(b)
      const revoked = await as(b, OPERATOR, 'POST', `/admin/tasks/${id}/revoke`)
      assert.equal(revoked.status, 200)
      assert.equal((await b.deps.stores.tasks.get(id))!.endReason, 'revoked by admin:ops-1')
      assert.equal((await as(b, OPERATOR, 'POST', '/admin/sessions/revoke', { issuer: 'https://idp.test.example', sid: 'sess-1' })).status, 200)
      await assertRoleRefused(b, () => as(b, OPERATOR, 'POST', '/admin/keys/rotate'), 'admin')
      await assertRoleRefused(b, async () => as(b, OPERATOR, 'POST', `/admin/keys/${(await b.deps.keys.current()).kid}/revoke`), 'admin')
      await assertRoleRefused(b, () => as(b, OPERATOR, 'PUT', '/admin/policies', { policies: '' }), 'admin')
      await assertRoleRefused(b, () => as(b, OPERATOR, 'POST', '/admin/policies/reload'), 'admin')
    }))

  it('a key of apiKeyHashes is a full admin', () =>
    withBroker(withRoles, async (b) => {
      assert.equal((await as(b, ADMIN_KEY, 'PUT', '/admin/policies', { policies: '' })).status, 200)
    }))

  it('the configuration refuses two keys of one name and an unknown role', async () => {
    const keys = await testKeys()
    const base = testConfig(keys)
    assert.throws(() => parseConfig({ ...base, admin: { keys: [{ name: 'a', role: 'auditor', hash: hashes.auditor }, { name: 'a', role: 'admin', hash: hashes.operator }] } }), /distinct/)
    assert.throws(() => parseConfig({ ...base, admin: { keys: [{ name: 'a', role: 'root', hash: hashes.auditor }] } }), /admin\.keys\.0\.role/)
  })
})
