import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { ADMIN_KEY, CALENDAR, createTestBroker, NOTES, openTask, type TestBroker } from './harness.js'

const admin = { authorization: `Bearer ${ADMIN_KEY}` }

describe('tasks API', () => {
  let b: TestBroker
  beforeEach(async () => {
    b = await createTestBroker({ config: (c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }) })
  })
  afterEach(() => b.close())

  it('a task needing approval waits; exchange is invalid_grant until an admin approves', async () => {
    const res = await openTask(b, { purpose: 'read my calendar', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] })
    assert.equal(res.status, 201)
    const task = (await res.json()) as { task_id: string; status: string }
    assert.equal(task.status, 'pending_approval')

    const early = await b.exchange({ task_id: task.task_id, resource: CALENDAR, scope: 'cal:read' })
    assert.equal(early.status, 400)
    assert.equal(((await early.json()) as { error: string }).error, 'invalid_grant')
    assert.equal(await b.count('tokens'), 0)

    assert.equal((await b.app.request(`/admin/tasks/${task.task_id}/approve`, { method: 'POST' })).status, 401)
    const approved = await b.app.request(`/admin/tasks/${task.task_id}/approve`, { method: 'POST', headers: admin })
    assert.equal(approved.status, 200)
    assert.equal(((await approved.json()) as { status: string }).status, 'active')

    const ok = await b.exchange({ task_id: task.task_id, resource: CALENDAR, scope: 'cal:read' })
    assert.equal(ok.status, 200)
  })

  it('opening a task runs the policy: scope beyond the workload is invalid_scope and writes nothing', async () => {
    const res = await openTask(b, { purpose: 'x', resources: [{ resource: NOTES, scopes: ['notes:delete'] }] })
    assert.equal(res.status, 400)
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_scope')
    assert.equal(await b.count('tasks'), 0)
    const audit = await b.lastAudit()
    assert.equal(audit?.action, 'task.open')
    assert.equal(audit?.decision, 'deny')
    assert.equal(audit?.error, 'invalid_scope')
  })

  it('a task for an unregistered resource is invalid_target', async () => {
    const res = await openTask(b, { purpose: 'x', resources: [{ resource: 'https://unknown.example/mcp', scopes: ['a'] }] })
    assert.equal(res.status, 400)
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_target')
    assert.equal(await b.count('tasks'), 0)
  })

  it('a task is visible to its user and its workload only', async () => {
    const { task_id } = (await (await openTask(b, { purpose: 'x', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })).json()) as { task_id: string }
    const asUser = await b.app.request(`/tasks/${task_id}`, { headers: { authorization: `Bearer ${await b.session()}` } })
    assert.equal(asUser.status, 200)
    const asWorkload = await b.app.request(`/tasks/${task_id}`, { headers: { 'actor-token': await b.svid('a') } })
    assert.equal(asWorkload.status, 200)
    const asOther = await b.app.request(`/tasks/${task_id}`, { headers: { authorization: `Bearer ${await b.session({ sub: 'bob' })}` } })
    assert.equal(asOther.status, 404)
    const asOtherWorkload = await b.app.request(`/tasks/${task_id}`, { headers: { 'actor-token': await b.svid('b') } })
    assert.equal(asOtherWorkload.status, 404)
    const list = (await (await b.app.request('/tasks', { headers: { authorization: `Bearer ${await b.session()}` } })).json()) as { tasks: { task_id: string }[] }
    assert.deepEqual(list.tasks.map((t) => t.task_id), [task_id])
  })

  it('only the workload completes a task; completing twice is 409 task_not_active', async () => {
    const { task_id } = (await (await openTask(b, { purpose: 'x', resources: [{ resource: NOTES, scopes: [] }] })).json()) as { task_id: string }
    const byUser = await b.app.request(`/tasks/${task_id}/complete`, { method: 'POST', headers: { authorization: `Bearer ${await b.session()}` } })
    assert.equal(byUser.status, 401)
    const byOther = await b.app.request(`/tasks/${task_id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('b') } })
    assert.equal(byOther.status, 404)
    const ok = await b.app.request(`/tasks/${task_id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
    assert.equal(ok.status, 200)
    const twice = await b.app.request(`/tasks/${task_id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
    assert.equal(twice.status, 409)
    assert.equal(((await twice.json()) as { error: string }).error, 'task_not_active')
    assert.equal(await b.count('revocation_events'), 1)
  })

  it('an admin revokes a task and reads the audit log', async () => {
    const { access_token, task_id } = (await (await b.exchange()).json()) as { access_token: string; task_id: string }
    const res = await b.app.request(`/admin/tasks/${task_id}/revoke`, { method: 'POST', headers: admin })
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { tokens_revoked: number }).tokens_revoked, 1)
    assert.equal((await b.deps.stores.tokens.get(JSON.parse(Buffer.from(access_token.split('.')[1]!, 'base64url').toString()).jti))?.status, 'revoked')
    const audit = (await (await b.app.request('/admin/audit?after=0&limit=10', { headers: admin })).json()) as { events: { action: string; decision: string }[] }
    assert.deepEqual(audit.events.map((e) => `${e.action}:${e.decision}`), ['token.exchange:allow', 'task.revoke:allow'])
  })

  it('an admin lists tasks filtered by status (expired derived from time), workload and user', async () => {
    const pending = (await (await openTask(b, { purpose: 'cal', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }], ttl: 100 })).json()) as { task_id: string }
    const active = (await (await openTask(b, { purpose: 'notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }], ttl: 1000 })).json()) as { task_id: string }
    const done = (await (await openTask(b, { purpose: 'done', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })).json()) as { task_id: string }
    await b.app.request(`/tasks/${done.task_id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
    const list = async (query: string) => {
      const res = await b.app.request(`/admin/tasks${query}`, { headers: admin })
      assert.equal(res.status, 200, query)
      return ((await res.json()) as { tasks: { task_id: string; status: string }[] }).tasks.map((t) => `${t.task_id}:${t.status}`).sort()
    }
    assert.deepEqual(await list('?status=pending_approval'), [`${pending.task_id}:pending_approval`])
    assert.deepEqual(await list('?status=completed'), [`${done.task_id}:completed`])
    assert.equal((await list('')).length, 3)
    assert.deepEqual(await list('?user=bob'), [])
    assert.deepEqual(await list('?workload=agent-b'), [])
    b.clock.advance(100)
    assert.deepEqual(await list('?status=expired'), [`${pending.task_id}:expired`])
    assert.deepEqual(await list('?status=pending_approval'), [])
    assert.deepEqual(await list('?status=active'), [`${active.task_id}:active`])
    for (const bad of ['?status=gone', '?limit=0', '?limit=501', '?other=1']) {
      const res = await b.app.request(`/admin/tasks${bad}`, { headers: admin })
      assert.equal(res.status, 400, bad)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
    }
    assert.equal((await b.app.request('/admin/tasks')).status, 401)
  })
})
