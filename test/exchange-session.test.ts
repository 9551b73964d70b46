/**
 * A token exchange naming a task (`task_id`) reads the task and the presented session's
 * revocation together: a revoked session refuses it exactly as it refuses an exchange that opens
 * a task — `invalid_request` "subject_token session has been revoked", before anything about the
 * task is told, with the same audit row — whether the subject token is verified anew or comes
 * from the verified-session cache, and whether the named task is bound to that session, to no
 * session, or does not exist.
 */
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { ADMIN_KEY, createTestBroker, USER_ISSUER, type TestBroker } from './harness.js'

const REVOKED = { error: 'invalid_request', error_description: 'subject_token session has been revoked' }

async function revokeSession(b: TestBroker, sid: string): Promise<void> {
  const res = await b.app.request('/admin/sessions/revoke', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ issuer: USER_ISSUER, sid }) })
  assert.equal(res.status, 200)
}

/** The audit row of the last refusal, the columns that say who was refused and why. */
async function lastRefusal(b: TestBroker): Promise<Record<string, unknown>> {
  const row = (await b.lastAudit())!
  return { action: row.action, decision: row.decision, error: row.error, reason: row.reason, user_sub: row.user_sub, workload_id: row.workload_id, task_id: row.task_id, jti: row.jti }
}

describe('token exchange naming a task: the session is checked in the same read', () => {
  let b: TestBroker
  beforeEach(async () => {
    b = await createTestBroker()
  })
  afterEach(() => b.close())

  it('a revoked session refuses the exchange of its own task, cached subject token or fresh one, with the audit row of any revoked session', async () => {
    const session = await b.session({ sid: 'sess-1' })
    const opened = await b.exchange({ subject_token: session })
    assert.equal(opened.status, 200)
    const { task_id } = (await opened.json()) as { task_id: string }
    // The subject token is in the verified-session cache now.
    assert.equal((await b.exchange({ subject_token: session, task_id })).status, 200)
    await revokeSession(b, 'sess-1')
    const tokens = await b.count('tokens')

    for (const subject_token of [session, await b.session({ sid: 'sess-1' })]) {
      const refused = await b.exchange({ subject_token, task_id })
      assert.equal(refused.status, 400)
      assert.deepEqual(await refused.json(), REVOKED)
      assert.deepEqual(await lastRefusal(b), { action: 'token.exchange', decision: 'deny', error: 'invalid_request', reason: 'session sess-1 revoked', user_sub: null, workload_id: 'agent-a', task_id, jti: null })
    }
    assert.equal(await b.count('tokens'), tokens)

    // The same row as an exchange that would open a task on the revoked session.
    const implicit = await b.exchange({ subject_token: session })
    assert.deepEqual(await implicit.json(), REVOKED)
    assert.deepEqual(await lastRefusal(b), { action: 'token.exchange', decision: 'deny', error: 'invalid_request', reason: 'session sess-1 revoked', user_sub: null, workload_id: 'agent-a', task_id: null, jti: null })
  })

  it('a revoked session refuses before the task is looked at: an unknown task, another user\'s, one bound to no session', async () => {
    // A task opened with a session token that names no session: bound to none.
    const unbound = (await (await b.exchange({ subject_token: await b.session({ sid: null }) })).json()) as { task_id: string }
    const othersTask = (await (await b.exchange({ subject_token: await b.session({ sub: 'bob', sid: 'sess-b' }) })).json()) as { task_id: string }
    await revokeSession(b, 'sess-1')
    for (const task_id of ['no-such-task', othersTask.task_id, unbound.task_id]) {
      const refused = await b.exchange({ subject_token: await b.session({ sid: 'sess-1' }), task_id })
      assert.equal(refused.status, 400, task_id)
      assert.deepEqual(await refused.json(), REVOKED, task_id)
    }
    // Without a session claim nothing is revoked: the unbound task still mints.
    assert.equal((await b.exchange({ subject_token: await b.session({ sid: null }), task_id: unbound.task_id })).status, 200)
    // Another session of the same user, naming a task of its own, is untouched.
    const second = await b.session({ sid: 'sess-2' })
    const mine = (await (await b.exchange({ subject_token: second })).json()) as { task_id: string }
    assert.equal((await b.exchange({ subject_token: second, task_id: mine.task_id })).status, 200)
  })

  it('a live session naming a task that is not usable is still invalid_grant, as before', async () => {
    const refused = await b.exchange({ subject_token: await b.session({ sid: 'sess-1' }), task_id: 'no-such-task' })
    assert.equal(refused.status, 400)
    assert.deepEqual(await refused.json(), { error: 'invalid_grant', error_description: 'task is not active for this caller' })
  })
})
