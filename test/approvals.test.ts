/**
 * Human approval inside the flow: who may approve or deny a `pending_approval` task, expiry of
 * the request, the final `denied` state, the audit rows, and `GET /tasks/{id}?wait=` woken by a
 * decision. Every refusal asserts its status, `error`, its audit row and that nothing else changed.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setImmediate as tick } from 'node:timers/promises'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { openDatabase } from '../src/store/db.js'
import { createStores } from '../src/store/stores.js'
import { createApprovalWaiters } from '../src/tasks/approvals.js'
import { ConfigError, parseConfig } from '../src/config.js'
import { ADMIN_KEY, assertRefusedAndAudited, CALENDAR, counts, createTestBroker, NOTES, openTask, startTestServer, T0, testConfig, testKeys, withBroker, type TestBroker } from './harness.js'

const admin = { authorization: `Bearer ${ADMIN_KEY}` }

interface View {
  task_id: string
  status: string
  expires_at: number
  approval_expires_at?: number
  ended_at?: number
  end_reason?: string
}

async function json<T = View>(res: Response): Promise<T> {
  return (await res.json()) as T
}

describe('approvals', () => {
  let b: TestBroker
  beforeEach(async () => {
    b = await createTestBroker({ config: (c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }) })
  })
  afterEach(() => b.close())

  /** Opens a calendar task (approval required) with alice's session `sess-1`, as agent-a. */
  async function pending(extra: Record<string, unknown> = {}, opts: { session?: string } = {}): Promise<View> {
    const res = await openTask(b, { purpose: 'read my calendar', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }], ...extra }, opts)
    assert.equal(res.status, 201)
    const task = await json(res)
    assert.equal(task.status, 'pending_approval')
    return task
  }

  /** alice, from another session than the agent's (`sess-2`): the user deciding. */
  const aliceElsewhere = () => b.session({ sid: 'sess-2' })

  async function decide(id: string, how: 'approve' | 'deny', opts: { session?: string; headers?: Record<string, string>; body?: unknown } = {}): Promise<Response> {
    const headers: Record<string, string> = opts.headers ?? { authorization: `Bearer ${opts.session ?? (await aliceElsewhere())}` }
    const body = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body)
    return b.app.request(`/tasks/${id}/${how}`, { method: 'POST', headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers }, body })
  }

  const adminDecide = (id: string, how: 'approve' | 'deny', body?: unknown) =>
    b.app.request(`/admin/tasks/${id}/${how}`, { method: 'POST', headers: { ...admin, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) })

  const exchangeFor = (id: string) => b.exchange({ task_id: id, resource: CALENDAR, scope: 'cal:read' })

  /** A refusal: exact status and error, one deny audit row of `action`, and the task row unchanged. */
  async function assertRefused(res: Response, id: string, before: Awaited<ReturnType<typeof counts>>, row: unknown, expect: { status: number; error: string; reason: RegExp; action: string }) {
    assert.equal(res.status, expect.status)
    assert.equal((await json<{ error: string }>(res)).error, expect.error)
    const audit = await assertRefusedAndAudited(b, before, { error: expect.error, reason: expect.reason, action: expect.action })
    assert.equal(audit.task_id, id)
    assert.deepEqual(await b.deps.stores.tasks.get(id), row, 'the task is unchanged')
    return audit
  }

  it('the request expires with approvalTtl, never after the task; the view shows approval_expires_at', async () => {
    const task = await pending()
    assert.equal(task.approval_expires_at, T0 + 900)
    assert.equal((await b.deps.stores.tasks.get(task.task_id))!.approvalExpiresAt, T0 + 900)
    const short = await pending({ ttl: 600 })
    assert.equal(short.approval_expires_at, T0 + 600, 'capped at the task expiry')
    // The implicit task of /token too.
    const implicit = await b.exchange({ resource: CALENDAR, scope: 'cal:read' })
    assert.equal(implicit.status, 400)
    assert.equal((await json<{ error: string }>(implicit)).error, 'invalid_grant')
    const stored = (await b.deps.stores.tasks.list({ statuses: ['pending_approval'], limit: 10 })).find((t) => t.purpose.startsWith('implicit'))!
    assert.equal(stored.approvalExpiresAt, T0 + 900)
    // A task that needs no approval has none.
    const plain = await json(await openTask(b, { purpose: 'notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }))
    assert.equal(plain.status, 'active')
    assert.equal(plain.approval_expires_at, undefined)
  })

  it('tasks.approvalTtl: at most tasks.maxTtl (named when not), default 900 or maxTtl when shorter', async () => {
    const keys = await testKeys()
    const base = testConfig(keys)
    assert.equal(parseConfig(base).tasks.approvalTtl, 900)
    assert.equal(parseConfig({ ...base, tasks: { maxTtl: 600, defaultTtl: 300 } }).tasks.approvalTtl, 600)
    assert.equal(parseConfig({ ...base, tasks: { approvalTtl: 120 } }).tasks.approvalTtl, 120)
    assert.throws(() => parseConfig({ ...base, tasks: { maxTtl: 600, defaultTtl: 300, approvalTtl: 601 } }), (e: unknown) => e instanceof ConfigError && e.issues.some((i) => /^tasks\.approvalTtl: .*maxTtl/.test(i)))
    for (const bad of [0, -1, 1.5, '900']) assert.throws(() => parseConfig({ ...base, tasks: { approvalTtl: bad as number } }), ConfigError, String(bad))
    await withBroker((c) => ({ ...c, tasks: { approvalTtl: 60 }, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }), async (short) => {
      const res = await openTask(short, { purpose: 'cal', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] })
      assert.equal((await json(res)).approval_expires_at, T0 + 60)
    })
  })

  it('the user approves from another session: exchange is invalid_grant before, works after; audited with who and why', async () => {
    const task = await pending()
    const early = await exchangeFor(task.task_id)
    assert.equal(early.status, 400)
    assert.equal((await json<{ error: string }>(early)).error, 'invalid_grant')
    assert.equal(await b.count('tokens'), 0)

    const res = await decide(task.task_id, 'approve', { body: { reason: 'yes, read it' } })
    assert.equal(res.status, 200)
    const approved = await json(res)
    assert.equal(approved.status, 'active')
    assert.equal(approved.approval_expires_at, T0 + 900, 'kept after the approval: policy reads it as task.approved')
    const audit = (await b.lastAudit())!
    assert.deepEqual([audit.action, audit.decision, audit.reason, audit.user_sub, audit.workload_id, audit.task_id], ['task.approve', 'allow', 'approved by user:alice: yes, read it', 'alice', 'agent-a', task.task_id])

    const ok = await exchangeFor(task.task_id)
    assert.equal(ok.status, 200)
    assert.equal(await b.count('tokens'), 1)
  })

  it('an admin approves, with or without a reason, and denies', async () => {
    const a = await pending()
    assert.equal((await adminDecide(a.task_id, 'approve', { reason: 'ok by security' })).status, 200)
    assert.match(String((await b.lastAudit())!.reason), /^approved by admin:\S+: ok by security$/)
    const c = await pending()
    const bare = await adminDecide(c.task_id, 'approve')
    assert.equal(bare.status, 200)
    assert.equal((await json(bare)).status, 'active')
    assert.match(String((await b.lastAudit())!.reason), /^approved by admin:\S+$/)
    const d = await pending()
    const denied = await adminDecide(d.task_id, 'deny', { reason: 'not this week' })
    assert.equal(denied.status, 200)
    const view = await json(denied)
    assert.equal(view.status, 'denied')
    assert.match(view.end_reason!, /^denied by admin:\S+: not this week$/)
    assert.equal((await exchangeFor(a.task_id)).status, 200)
    assert.equal((await exchangeFor(c.task_id)).status, 200)
  })

  it('the user denies: the task ends denied (final), exchange is invalid_grant and nothing is minted', async () => {
    const task = await pending()
    const res = await decide(task.task_id, 'deny', { body: { reason: 'not now' } })
    assert.equal(res.status, 200)
    const view = await json(res)
    assert.deepEqual([view.status, view.ended_at, view.end_reason], ['denied', T0, 'denied by user:alice: not now'])
    const audit = (await b.lastAudit())!
    assert.deepEqual([audit.action, audit.decision, audit.reason, audit.task_id], ['task.deny', 'allow', 'denied by user:alice: not now', task.task_id])

    const before = await counts(b)
    const ex = await exchangeFor(task.task_id)
    assert.equal(ex.status, 400)
    assert.equal((await json<{ error: string }>(ex)).error, 'invalid_grant')
    await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /is denied/ })
    assert.equal(await b.count('tokens'), 0)
    // Listed as denied, by the admin filter too.
    const listed = await json<{ tasks: View[] }>(await b.app.request('/admin/tasks?status=denied', { headers: admin }))
    assert.deepEqual(listed.tasks.map((t) => `${t.task_id}:${t.status}`), [`${task.task_id}:denied`])
    // The user's session that opened it may deny too (it could revoke the task anyway).
    const other = await pending()
    assert.equal((await decide(other.task_id, 'deny', { session: await b.session(), body: { reason: 'changed my mind' } })).status, 200)
  })

  it('a request that expired (clock moved) is expired: approve and deny are 409 task_not_active, exchange invalid_grant', async () => {
    const task = await pending()
    b.clock.advance(899)
    assert.equal((await json(await b.app.request(`/tasks/${task.task_id}`, { headers: { 'actor-token': await b.svid('a') } }))).status, 'pending_approval')
    b.clock.advance(1)
    const view = await json(await b.app.request(`/tasks/${task.task_id}`, { headers: { 'actor-token': await b.svid('a') } }))
    assert.equal(view.status, 'expired')
    assert.ok(view.expires_at > b.clock.now(), 'the task itself has time left: the approval request lapsed')
    const row = await b.deps.stores.tasks.get(task.task_id)
    const attempts = [
      { how: 'approve', send: async () => decide(task.task_id, 'approve', { body: { reason: 'late' } }) },
      { how: 'deny', send: async () => decide(task.task_id, 'deny', { body: { reason: 'late' } }) },
      { how: 'approve', send: () => adminDecide(task.task_id, 'approve') },
      { how: 'deny', send: () => adminDecide(task.task_id, 'deny', { reason: 'late' }) },
    ] as const
    for (const { how, send } of attempts) {
      const before = await counts(b)
      await assertRefused(await send(), task.task_id, before, row, { status: 409, error: 'task_not_active', reason: /task is expired/, action: `task.${how}` })
    }
    const before = await counts(b)
    const ex = await exchangeFor(task.task_id)
    assert.equal((await json<{ error: string }>(ex)).error, 'invalid_grant')
    await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /is expired/ })
    // The admin filter derives it too.
    const ids = async (q: string) => (await json<{ tasks: View[] }>(await b.app.request(`/admin/tasks?status=${q}`, { headers: admin }))).tasks.map((t) => t.task_id)
    assert.deepEqual(await ids('expired'), [task.task_id])
    assert.deepEqual(await ids('pending_approval'), [])
  })

  it('the store decides conditionally: a decision after another one, or after the request expired, changes nothing', async () => {
    const { stores } = b.deps
    const one = await pending()
    assert.equal(await stores.tasks.deny(one.task_id, T0, 'denied by test'), true)
    assert.equal(await stores.tasks.approve(one.task_id, T0), false, 'approve after deny')
    assert.equal(await stores.tasks.deny(one.task_id, T0, 'again'), false, 'deny after deny')
    assert.deepEqual([(await stores.tasks.get(one.task_id))!.status, (await stores.tasks.get(one.task_id))!.endReason], ['denied', 'denied by test'])
    const two = await pending()
    assert.equal(await stores.tasks.approve(two.task_id, T0 + 900), false, 'the approval request lapsed at T0+900')
    assert.equal(await stores.tasks.deny(two.task_id, T0 + 900, 'late'), false)
    assert.equal((await stores.tasks.get(two.task_id))!.status, 'pending_approval')
    assert.equal(await stores.tasks.approve(two.task_id, T0 + 899), true)
    assert.equal(await stores.tasks.approve(two.task_id, T0 + 899), false, 'approve twice')
    assert.equal(await stores.tasks.deny(two.task_id, T0 + 899, 'x'), false, 'deny after approve')
    // A pending task without an approval deadline (opened before requests expired): the task's own expiry bounds it.
    const legacy = await pending({ ttl: 1000 })
    await b.rawQuery('update tasks set approval_expires_at = null where id = ?', [legacy.task_id])
    assert.equal(await stores.tasks.approve(legacy.task_id, T0 + 1000), false, 'the task itself expired')
    assert.equal(await stores.tasks.approve(legacy.task_id, T0 + 10), true)
    assert.equal((await stores.tasks.get(legacy.task_id))!.approvalExpiresAt, T0 + 10, 'set on approval, so policy reads it as approved')
  })

  it('decided once: approve after deny, deny after deny, deny after approve, approve twice are 409 task_not_active and write nothing else', async () => {
    const denied = await pending()
    assert.equal((await decide(denied.task_id, 'deny', { body: { reason: 'no' } })).status, 200)
    const approved = await pending()
    assert.equal((await decide(approved.task_id, 'approve')).status, 200)
    const cases = [
      { id: denied.task_id, how: 'approve', state: 'denied' },
      { id: denied.task_id, how: 'deny', state: 'denied' },
      { id: approved.task_id, how: 'deny', state: 'active' },
      { id: approved.task_id, how: 'approve', state: 'active' },
    ] as const
    for (const k of cases) {
      for (const send of [() => decide(k.id, k.how, { body: { reason: 'again' } }), () => adminDecide(k.id, k.how, { reason: 'again' })]) {
        const before = await counts(b)
        const row = await b.deps.stores.tasks.get(k.id)
        await assertRefused(await send(), k.id, before, row, { status: 409, error: 'task_not_active', reason: new RegExp(`task is ${k.state}$`), action: `task.${k.how}` })
      }
    }
  })

  it('the workload never decides its own task (403 unauthorized_client); another workload or user gets 404', async () => {
    const task = await pending()
    const row = await b.deps.stores.tasks.get(task.task_id)
    const cases = [
      // The workload can read its task (GET /tasks/{id}): 403 tells it nothing it does not know.
      { who: 'own workload', headers: { 'actor-token': await b.svid('a') }, how: 'approve', status: 403, error: 'unauthorized_client', reason: /^workload:agent-a: workload agent-a tried to approve its own task$/ },
      { who: 'own workload, with the user session too', headers: { 'actor-token': await b.svid('a'), authorization: `Bearer ${await aliceElsewhere()}` }, how: 'approve', status: 403, error: 'unauthorized_client', reason: /tried to approve its own task/ },
      { who: 'own workload denying', headers: { 'actor-token': await b.svid('a') }, how: 'deny', status: 403, error: 'unauthorized_client', reason: /tried to deny its own task/ },
      // The session the agent holds (the task's own): a decision with it could be the agent's.
      { who: "the task's own session", headers: { authorization: `Bearer ${await b.session()}` }, how: 'approve', status: 403, error: 'unauthorized_client', reason: /the task's own session sess-1/ },
      // Tasks a caller cannot see are indistinguishable from missing ones (getTaskFor).
      { who: 'another workload', headers: { 'actor-token': await b.svid('b') }, how: 'approve', status: 404, error: 'not_found', reason: /^workload:agent-b: task not found$/ },
      { who: 'another user', headers: { authorization: `Bearer ${await b.session({ sub: 'bob', sid: 'bob-1' })}` }, how: 'approve', status: 404, error: 'not_found', reason: /^user:bob: task not found$/ },
      { who: 'another user denying', headers: { authorization: `Bearer ${await b.session({ sub: 'bob', sid: 'bob-1' })}` }, how: 'deny', status: 404, error: 'not_found', reason: /^user:bob: task not found$/ },
    ] as const
    for (const k of cases) {
      const before = await counts(b)
      const res = await decide(task.task_id, k.how, { headers: { ...k.headers }, body: { reason: 'mine' } })
      const audit = await assertRefused(res, task.task_id, before, row, { status: k.status, error: k.error, reason: k.reason, action: `task.${k.how}` })
      if ('actor-token' in k.headers) assert.equal(audit.workload_id, k.who === 'another workload' ? 'agent-b' : 'agent-a', k.who)
    }
    // Without any credential: 401 and nothing at all written.
    const before = await counts(b)
    const anon = await decide(task.task_id, 'approve', { headers: {} })
    assert.equal(anon.status, 401)
    assert.equal((await json<{ error: string }>(anon)).error, 'invalid_token')
    assert.deepEqual(await counts(b), before)
    // Still pending: the user can approve it.
    assert.equal((await decide(task.task_id, 'approve')).status, 200)
  })

  it('a task bound to no session is approved by an admin only', async () => {
    const task = await pending({}, { session: await b.session({ sid: null }) })
    const row = await b.deps.stores.tasks.get(task.task_id)
    const before = await counts(b)
    await assertRefused(await decide(task.task_id, 'approve', { session: await b.session({ sid: null }) }), task.task_id, before, row, { status: 403, error: 'unauthorized_client', reason: /bound to no session/, action: 'task.approve' })
    assert.equal((await adminDecide(task.task_id, 'approve')).status, 200)
  })

  it('bad decision bodies are 400 invalid_request, audited, and change nothing', async () => {
    const task = await pending()
    const row = await b.deps.stores.tasks.get(task.task_id)
    const cases: { how: 'approve' | 'deny'; body?: unknown; reason: RegExp }[] = [
      { how: 'deny', reason: /"reason" is required/ },
      { how: 'deny', body: {}, reason: /"reason" is required/ },
      { how: 'deny', body: { reason: '' }, reason: /1 to 500 characters/ },
      { how: 'approve', body: { reason: '' }, reason: /1 to 500 characters/ },
      { how: 'approve', body: { reason: 'x'.repeat(501) }, reason: /1 to 500 characters/ },
      { how: 'deny', body: { reason: 'two\nlines' }, reason: /control characters/ },
      { how: 'approve', body: { reason: 42 }, reason: /body must be/ },
      { how: 'approve', body: { reason: 'ok', extra: 1 }, reason: /body must be/ },
      { how: 'approve', body: '{"reason":', reason: /malformed JSON/ },
    ]
    for (const k of cases) {
      for (const send of [() => decide(task.task_id, k.how, { body: k.body }), () => adminDecide(task.task_id, k.how, k.body)]) {
        const before = await counts(b)
        await assertRefused(await send(), task.task_id, before, row, { status: 400, error: 'invalid_request', reason: k.reason, action: `task.${k.how}` })
      }
    }
    // A body without a content type.
    const before = await counts(b)
    const res = await b.app.request(`/tasks/${task.task_id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${await aliceElsewhere()}` }, body: '{"reason":"ok"}' })
    await assertRefused(res, task.task_id, before, row, { status: 400, error: 'invalid_request', reason: /content type/, action: 'task.approve' })
    // 500 characters (code points, not UTF-16 units) is fine.
    assert.equal((await decide(task.task_id, 'approve', { body: { reason: '✓'.repeat(250) + '😀'.repeat(250) } })).status, 200)
  })

  describe('GET /tasks/{id}?wait=', () => {
    /** Starts a held GET as the workload; resolves once the broker holds it (no sleeping: it waits for the waiter to appear). */
    async function startWait(id: string, seconds = 30, init: RequestInit = {}): Promise<{ done: Promise<Response>; settled: () => boolean }> {
      const held = b.deps.approvals.size()
      let isSettled = false
      const done = Promise.resolve(b.app.request(`/tasks/${id}?wait=${seconds}`, { headers: { 'actor-token': await b.svid('a') }, ...init })).finally(() => {
        isSettled = true
      })
      for (let i = 0; i < 10_000 && b.deps.approvals.size() === held && !isSettled; i++) await tick()
      assert.equal(b.deps.approvals.size(), held + 1, 'the request is held')
      return { done, settled: () => isSettled }
    }

    /** The held request has been answered — within a bounded number of turns of the event loop, not after its timer. */
    async function answeredSoon(w: { done: Promise<Response>; settled: () => boolean }): Promise<Response> {
      for (let i = 0; i < 10_000 && !w.settled(); i++) await tick()
      assert.equal(w.settled(), true, 'answered at once, not at the end of the wait')
      return w.done
    }

    it('returns when the user approves', async () => {
      const task = await pending()
      const w = await startWait(task.task_id)
      await tick()
      assert.equal(w.settled(), false, 'held while pending')
      assert.equal((await decide(task.task_id, 'approve')).status, 200)
      const res = await answeredSoon(w)
      assert.equal(res.status, 200)
      assert.equal((await json(res)).status, 'active')
      assert.equal(b.deps.approvals.size(), 0)
    })

    it('returns when the task ends instead (revoked by an admin while it waited)', async () => {
      const task = await pending()
      const w = await startWait(task.task_id)
      const revoked = await b.app.request(`/admin/tasks/${task.task_id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(revoked.status, 200)
      assert.equal((await json(await answeredSoon(w))).status, 'revoked')
    })

    it('returns when the user denies (and when an admin approves)', async () => {
      const task = await pending()
      const w = await startWait(task.task_id)
      assert.equal((await decide(task.task_id, 'deny', { body: { reason: 'no' } })).status, 200)
      assert.equal((await json(await answeredSoon(w))).status, 'denied')
      const other = await pending()
      const w2 = await startWait(other.task_id)
      assert.equal((await adminDecide(other.task_id, 'approve')).status, 200)
      assert.equal((await json(await answeredSoon(w2))).status, 'active')
    })

    /** A `?wait=` request that must not be held: answered within a bounded number of turns of the event loop. */
    async function answeredAtOnce(id: string, seconds = 60): Promise<View> {
      const svid = await b.svid('a')
      let settled = false
      const done = Promise.resolve(b.app.request(`/tasks/${id}?wait=${seconds}`, { headers: { 'actor-token': svid } })).finally(() => {
        settled = true
      })
      for (let i = 0; i < 10_000 && !settled; i++) await tick()
      assert.equal(settled, true, 'not held')
      const res = await done
      assert.equal(res.status, 200)
      return json(res)
    }

    it('answers at once when the task is not pending, or its request has expired', async () => {
      const active = await json(await openTask(b, { purpose: 'notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }))
      assert.equal((await answeredAtOnce(active.task_id)).status, 'active')
      const task = await pending()
      b.clock.advance(900)
      assert.equal((await answeredAtOnce(task.task_id)).status, 'expired')
      assert.equal(b.deps.approvals.size(), 0)
    })

    it('holds at most 8 waits per task: the 9th is answered at once; a decision releases them all', async () => {
      const task = await pending()
      const waits = []
      for (let i = 0; i < 8; i++) waits.push(await startWait(task.task_id))
      assert.equal((await answeredAtOnce(task.task_id, 30)).status, 'pending_approval', 'the 9th is answered at once')
      assert.equal(b.deps.approvals.size(), 8)
      assert.equal((await decide(task.task_id, 'approve')).status, 200)
      for (const w of waits) assert.equal((await json(await answeredSoon(w))).status, 'active')
      assert.equal(b.deps.approvals.size(), 0)
    })

    it('a client that goes away releases its wait; closing the broker releases the rest', async () => {
      const task = await pending()
      const abort = new AbortController()
      const w = await startWait(task.task_id, 30, { signal: abort.signal })
      abort.abort()
      assert.equal(b.deps.approvals.size(), 0, 'released on abort')
      await answeredSoon(w)
      const w2 = await startWait(task.task_id)
      await b.close()
      assert.equal(b.deps.approvals.size(), 0, 'released on close')
      const res = await answeredSoon(w2)
      assert.equal(res.status, 200)
      assert.equal((await json(res)).status, 'pending_approval', 'answered as read: the database is closed')
      assert.equal(b.deps.approvals.size(), 0)
    })

    it('wait must be an integer from 1 to 60, given once: otherwise 400 invalid_request', async () => {
      const task = await pending()
      for (const q of ['wait=0', 'wait=61', 'wait=1.5', 'wait=-1', 'wait=', 'wait=abc', 'wait=1e1', 'wait=060', 'wait=5&wait=6']) {
        const res = await b.app.request(`/tasks/${task.task_id}?${q}`, { headers: { 'actor-token': await b.svid('a') } })
        assert.equal(res.status, 400, q)
        assert.equal((await json<{ error: string }>(res)).error, 'invalid_request', q)
      }
      assert.equal(b.deps.approvals.size(), 0)
      const held = [await startWait(task.task_id, 1), await startWait(task.task_id, 60)]
      assert.equal(b.deps.approvals.size(), 2)
      assert.equal((await decide(task.task_id, 'approve')).status, 200)
      for (const w of held) assert.equal((await json(await answeredSoon(w))).status, 'active')
      assert.equal(b.deps.approvals.size(), 0)
    })

    it('over a real socket, a client that hangs up releases its wait at once', async () => {
      const s = await startTestServer({ config: (c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }) })
      // Real time here (the socket's events): wait for each event, bounded.
      const until = async (what: string, ok: () => boolean) => {
        const deadline = Date.now() + 5_000
        while (!ok()) {
          assert.ok(Date.now() < deadline, what)
          await new Promise((r) => setTimeout(r, 5))
        }
      }
      try {
        const task = await json(await fetch(`${s.url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${await s.session()}`, 'actor-token': await s.svid('a') }, body: JSON.stringify({ purpose: 'cal', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] }) }))
        assert.equal(task.status, 'pending_approval')
        const abort = new AbortController()
        const held = fetch(`${s.url}/tasks/${task.task_id}?wait=60`, { headers: { 'actor-token': await s.svid('a') }, signal: abort.signal }).catch((e: unknown) => e)
        await until('the wait is held', () => s.deps.approvals.size() === 1)
        abort.abort()
        assert.ok((await held) instanceof Error, 'the client gave up')
        await until('the wait is released when the client hangs up', () => s.deps.approvals.size() === 0)
      } finally {
        await s.stop()
      }
    })

    it('a decision committed by another process (the CLI, another instance) ends the wait too', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'taskpass-approvals-'))
      const path = join(dir, 'taskpass.db')
      const onFile = await createTestBroker({ config: (c) => ({ ...c, database: path, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }) })
      const other = openDatabase(path)
      try {
        const task = await json(await openTask(onFile, { purpose: 'cal', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] }))
        const done = Promise.resolve(onFile.app.request(`/tasks/${task.task_id}?wait=60`, { headers: { 'actor-token': await onFile.svid('a') } }))
        for (let i = 0; i < 10_000 && onFile.deps.approvals.size() === 0; i++) await tick()
        assert.equal(onFile.deps.approvals.size(), 1)
        // Another connection: this process's notifier never hears of it.
        assert.equal(await createStores(other).tasks.approve(task.task_id, T0), true)
        // A cross-process wake-up is real time: wait for it, bounded (the watch looks every 250 ms).
        let timer: NodeJS.Timeout | undefined
        const res = await Promise.race([done, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('the wait was not woken')), 5_000)))])
        clearTimeout(timer)
        assert.equal((await json(res)).status, 'active')
        assert.equal(onFile.deps.approvals.size(), 0)
      } finally {
        other.close()
        await onFile.close()
        rmSync(dir, { recursive: true, force: true })
      }
    })

    it('the waiters are bounded broker-wide too', async () => {
      const waiters = createApprovalWaiters({ total: 2, perTask: 8 })
      const a = waiters.wait('t1', 30_000)
      const c = waiters.wait('t2', 30_000)
      assert.equal(await waiters.wait('t3', 30_000), 'full')
      assert.equal(waiters.size(), 2)
      waiters.notify('t1')
      assert.equal(await a, 'decided')
      waiters.close()
      assert.equal(await c, 'closed')
      assert.equal(await waiters.wait('t1', 30_000), 'closed', 'after close, answered at once')
    })

    it('a decision committed between the caller\'s read and its wait\'s registration notified nobody: the wait reads the task again and ends decided', async () => {
      // The watch says the task no longer awaits a decision, and nothing will ever notify.
      const waiters = createApprovalWaiters(undefined, { intervalMs: 60_000, changed: () => false, isPending: async () => false })
      try {
        const started = Date.now()
        assert.equal(await waiters.wait('t1', 3000), 'decided')
        assert.ok(Date.now() - started < 1000, 'answered at once, not at the wait\'s end')
      } finally {
        waiters.close()
      }
    })

    it('a change the watch saw while the waited task could not be read is read at the next look: the wait ends decided', async () => {
      // One change (then none), the first read refused, the decision on record.
      let changes = 1
      let reads = 0
      const waiters = createApprovalWaiters(undefined, {
        intervalMs: 20,
        changed: () => changes-- > 0,
        isPending: async () => {
          reads++
          if (reads === 1) return true // the wait's own read right after registering: still pending
          if (reads === 2) throw new Error('database is locked')
          return false
        },
      })
      try {
        assert.equal(await waiters.wait('t1', 3000), 'decided')
        assert.equal(reads, 3)
      } finally {
        waiters.close()
      }
    })

    it('a subscriber whose answer rejects (its read of the task refused) is no unhandled rejection: the process lives on', async () => {
      const waiters = createApprovalWaiters()
      const unhandled: unknown[] = []
      const onUnhandled = (e: unknown) => void unhandled.push(e)
      process.on('unhandledRejection', onUnhandled)
      try {
        waiters.subscribe({ changed: async () => { throw new Error('database is locked') }, closed: () => {} })
        const heard: string[] = []
        waiters.subscribe({ changed: (id) => void heard.push(id), closed: () => {} })
        waiters.notify('t1')
        await tick()
        await tick()
        assert.deepEqual(unhandled, [])
        assert.deepEqual(heard, ['t1'], 'the others hear of it all the same')
      } finally {
        process.off('unhandledRejection', onUnhandled)
        waiters.close()
      }
    })

    it('subscribers hear of every notification and of the close; a failing one spoils nothing', async () => {
      const waiters = createApprovalWaiters()
      const heard: string[] = []
      const listener = { changed: (id: string) => void heard.push(id), closed: () => void heard.push('closed') }
      const unsubscribe = waiters.subscribe(listener)
      waiters.subscribe({ changed: () => { throw new Error('a stream gone') }, closed: () => {} })
      const held = waiters.wait('t1', 30_000)
      waiters.notify('t1')
      assert.equal(await held, 'decided', 'the waiter is woken despite the failing subscriber')
      waiters.notify('t2')
      assert.deepEqual(heard, ['t1', 't2'])
      unsubscribe()
      waiters.notify('t3')
      assert.deepEqual(heard, ['t1', 't2'], 'unsubscribed')
      waiters.subscribe(listener)
      waiters.close()
      assert.deepEqual(heard, ['t1', 't2', 'closed'])
      waiters.subscribe(listener)
      assert.deepEqual(heard, ['t1', 't2', 'closed', 'closed'], 'after close, told at once')
    })
  })
})
