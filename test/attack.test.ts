/**
 * Attacks on the policy, approval and tool-call surfaces: each test is a way in that was found
 * open, and shows it closed. A refusal asserts its status, its `error`, its audit row (with the
 * policy version and the deciding policies) and that nothing else changed.
 */
import assert from 'node:assert/strict'
import { setImmediate as tick } from 'node:timers/promises'
import { describe, it } from 'node:test'
import { ConfigError, parseConfig } from '../src/config.js'
import { createPolicyEngine } from '../src/policy/engine.js'
import { loadAdminPolicies } from '../src/policy/manage.js'
import { fetchToolCallRefusal } from '../packages/verifier/src/gates.js'
import { ADMIN_KEY, CALENDAR, counts, NOTES, openTask, postgresBug, testConfig, testKeys, withBroker, type TestBroker } from './harness.js'

async function putPolicies(b: TestBroker, policies: string): Promise<void> {
  const res = await b.app.request('/admin/policies', { method: 'PUT', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ policies }) })
  assert.equal(res.status, 200, await res.clone().text())
}

describe('attack: the verifier kit\'s tool-call check', () => {
  const auth = { token: 't', extra: { jti: 'j1', task_id: 'task-1', sub_id: { format: 'iss_sub', iss: 'https://idp.example', sub: 'alice' } } }
  const asked: string[] = []
  const pdp = {
    authorize: async (_a: unknown, { tool }: { tool: string }) => {
      asked.push(tool)
      return tool === 'read_note' ? { allowed: true } : { allowed: false, reason: 'tool_not_in_task' }
    },
  }

  it('a body starting with a UTF-8 byte order mark is still checked: the MCP transports strip it (TextDecoder) and would run the call', async () => {
    const call = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'delete_note', arguments: {} } })
    const body = new Uint8Array([0xef, 0xbb, 0xbf, ...Buffer.from(call)])
    const request = () => new Request('https://notes.example/mcp', { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    // What the transports read: the SDKs' readRequestBody decode with `new TextDecoder()`, which drops the BOM.
    assert.equal((JSON.parse(new TextDecoder().decode(body)) as { params: { name: string } }).params.name, 'delete_note', 'the transport sees a tool call')
    asked.length = 0
    const refused = await fetchToolCallRefusal(pdp, auth, request())
    assert.ok(refused, 'the call is refused before the server sees it')
    assert.equal(refused.status, 200)
    assert.equal(((await refused.json()) as { error: { code: number } }).error.code, -32001)
    assert.deepEqual(asked, ['delete_note'])
  })
})

describe('attack: policies that fail to evaluate', () => {
  it('a @constraint_only permit requiring approval that fails to evaluate does not silently drop the approval: the request is refused', () =>
    withBroker(undefined, async (b) => {
      // Overflows for every request (Cedar: an evaluation error, which Cedar skips).
      await putPolicies(
        b,
        `@id("approve-notes") @constraint_only("true") @approval_required("true")
permit (principal, action == Taskpass::Action::"open_task", resource == Taskpass::Resource::"${NOTES}")
when { context.now * 9223372036854775807 > 0 };`,
      )
      const before = await counts(b)
      const res = await openTask(b, { purpose: 'notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
      const body = (await res.json()) as { error?: string; status?: string }
      assert.equal(res.status, 400, `opened ${body.status ?? ''} without the approval its policy requires`)
      assert.equal(body.error, 'invalid_target')
      assert.deepEqual(await counts(b), { ...before, audit_events: before.audit_events + 1 })
      const audit = (await b.lastAudit())!
      assert.deepEqual([audit.action, audit.decision, audit.error, audit.policy_version, audit.policies], ['task.open', 'deny', 'invalid_target', b.deps.policy.version, 'approve-notes'])
      assert.match(String(audit.reason), /approve-notes failed to evaluate/)
    }))
})

describe('attack: audit rows of decisions', () => {
  it('an implicit task that needs approval: the pending task has its task.open row, the refused exchange names the policy version', () =>
    withBroker((c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }), async (b) => {
      const before = await counts(b)
      const res = await b.exchange({ resource: CALENDAR, scope: 'cal:read' })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_grant')
      const task = (await b.deps.stores.tasks.list({ statuses: ['pending_approval'], limit: 10 }))[0]!
      assert.deepEqual(await counts(b), { ...before, tasks: before.tasks + 1, audit_events: before.audit_events + 2 }, 'the task and two audit rows: its opening and the refused exchange')
      const rows = await b.rawQuery('select * from audit_events order by id') as Record<string, unknown>[]
      const open = rows.find((r) => r.action === 'task.open' && r.task_id === task.id)
      assert.ok(open, 'the pending task\'s opening is audited')
      assert.deepEqual([open.decision, open.policy_version, open.policies], ['allow', b.deps.policy.version, `grant/agent-a/${CALENDAR}`])
      const refused = rows.at(-1)!
      assert.deepEqual([refused.action, refused.decision, refused.error, refused.task_id, refused.policy_version, refused.policies], ['token.exchange', 'deny', 'invalid_grant', task.id, b.deps.policy.version, `grant/agent-a/${CALENDAR}`])
    }))
})

describe('attack: annotation mistakes', () => {
  it('a misspelt @constraint_only is refused, not ignored: ignored, it turns "calendar tasks need approval" into a calendar grant for every workload', () =>
    withBroker(undefined, async (b) => {
      const version = b.deps.policy.version
      const before = await counts(b)
      const text = `@id("calendar-needs-approval") @constraintOnly("true") @approval_required("true")
permit (principal, action in [Taskpass::Action::"open_task", Taskpass::Action::"exchange"], resource == Taskpass::Resource::"${CALENDAR}");`
      const res = await b.app.request('/admin/policies', { method: 'PUT', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ policies: text }) })
      const body = (await res.json()) as { error: string; problems?: string[] }
      // Loaded, agent-b (no calendar grant) could open calendar tasks.
      assert.equal(res.status, 400, `loaded: ${JSON.stringify(body).slice(0, 200)}`)
      assert.equal(body.error, 'invalid_policy')
      assert.ok(body.problems?.some((p) => /@constraintOnly .*did you mean @constraint_only/.test(p)), JSON.stringify(body))
      assert.equal(b.deps.policy.version, version)
      assert.deepEqual(await counts(b), before)
      const refused = await openTask(b, { purpose: 'cal', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] }, { svid: await b.svid('b') })
      assert.equal(refused.status, 400, 'agent-b still has no calendar access')
    }))
})

describe('attack: policies that name nothing', () => {
  it('a forbid on Taskpass::Tool::"delete_note" (no resource) is refused: it matches no request, so delete_note stayed permitted', () =>
    withBroker(undefined, async (b) => {
      const version = b.deps.policy.version
      const before = await counts(b)
      const res = await b.app.request('/admin/policies', {
        method: 'PUT',
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ policies: `@id("no-delete") forbid (principal, action == Taskpass::Action::"call_tool", resource == Taskpass::Tool::"delete_note");` }),
      })
      const body = (await res.json()) as { error: string; problems?: string[] }
      assert.equal(res.status, 400, `loaded: ${JSON.stringify(body).slice(0, 120)}`)
      assert.equal(body.error, 'invalid_policy')
      assert.ok(body.problems?.some((p) => /admin:1:1: policy no-delete: Taskpass::Tool::"delete_note" names no tool/.test(p)), JSON.stringify(body))
      assert.equal(b.deps.policy.version, version)
      assert.deepEqual(await counts(b), before)
      // Named properly, it is loaded.
      await putPolicies(b, `@id("no-delete") forbid (principal, action == Taskpass::Action::"call_tool", resource == Taskpass::Tool::"${NOTES}#delete_note");`)
    }))
})

describe('attack: admin policies and start-up', () => {
  it('an admin policy cannot take a generated grant\'s id: it would pass for a grant in audit rows, and brick start-up once that grant is configured', () =>
    withBroker(undefined, async (b) => {
      // agent-b has no calendar grant today, so the id is free.
      const text = `@id("grant/agent-b/${CALENDAR}") permit (principal == Taskpass::Workload::"agent-b", action, resource in Taskpass::Resource::"${CALENDAR}");`
      const version = b.deps.policy.version
      const rows = async () => ((await b.rawQuery('select count(*) as n from policy_sets'))[0] as { n: number }).n
      const stored = await rows()
      const before = await counts(b)
      const res = await b.app.request('/admin/policies', { method: 'PUT', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ policies: text }) })
      const body = (await res.json()) as { error: string; problems?: string[] }
      assert.equal(res.status, 400, 'refused')
      assert.equal(body.error, 'invalid_policy')
      assert.ok(body.problems?.some((p) => /reserved for the generated grant policies/.test(p)), JSON.stringify(body))
      assert.equal(b.deps.policy.version, version, 'the running set is unchanged')
      assert.equal(await rows(), stored, 'nothing stored')
      assert.deepEqual(await counts(b), before)
      // What accepting it leads to: the next start with that grant configured refuses the stored text.
      const config = parseConfig(testConfig(await testKeys()))
      const granted = { ...config, workloads: config.workloads.map((w) => (w.id === 'agent-b' ? { ...w, grants: [...w.grants, { resource: CALENDAR, scopes: ['cal:read'] }] } : w)) }
      assert.throws(() => createPolicyEngine(granted, { adminText: text }), ConfigError)
    }))
})

describe('attack: approval waits', () => {
  it('a wait on a pending task is answered when the task ends with its session (admin session revoke), not held to its timeout', () =>
    withBroker((c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }), async (b) => {
      const opened = await openTask(b, { purpose: 'cal', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] })
      const id = ((await opened.json()) as { task_id: string; status: string }).task_id
      let settled = false
      const done = Promise.resolve(b.app.request(`/tasks/${id}?wait=60`, { headers: { 'actor-token': await b.svid('a') } })).finally(() => {
        settled = true
      })
      for (let i = 0; i < 10_000 && b.deps.approvals.size() === 0 && !settled; i++) await tick()
      assert.equal(b.deps.approvals.size(), 1, 'the request is held')
      const res = await b.app.request('/admin/sessions/revoke', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ issuer: 'https://idp.test.example', sid: 'sess-1' }) })
      assert.equal(res.status, 200)
      assert.deepEqual(((await res.json()) as { tasks_revoked: string[] }).tasks_revoked, [id])
      for (let i = 0; i < 10_000 && !settled; i++) await tick()
      try {
        assert.equal(settled, true, 'answered at once, not after 60 s')
        assert.equal(((await (await done).json()) as { status: string }).status, 'revoked')
      } finally {
        b.deps.approvals.close()
        await done
      }
    }))
})

describe('attack: races at the exchange', () => {
  it('concurrent exchanges of one task cannot all pass a tokens-per-task rule: each is decided on the task as its write finds it', () =>
    withBroker(undefined, async (b) => {
      await putPolicies(b, `@id("five-tokens-per-task") forbid (principal, action == Taskpass::Action::"exchange", resource) when { context.task.tokens_minted >= 5 };`)
      const opened = await openTask(b, { purpose: 'notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
      const id = ((await opened.json()) as { task_id: string }).task_id
      for (let i = 0; i < 4; i++) assert.equal((await b.exchange({ task_id: id })).status, 200)
      const before = await counts(b)
      const answers = await Promise.all([0, 1, 2, 3].map(() => b.exchange({ task_id: id })))
      const statuses = answers.map((r) => r.status).sort()
      assert.deepEqual(statuses, [200, 400, 400, 400], 'one more token, the fifth')
      for (const r of answers) if (r.status === 400) assert.equal(((await r.json()) as { error: string }).error, 'invalid_target')
      assert.equal((await b.deps.stores.tasks.get(id))!.tokensMinted, 5)
      assert.deepEqual(await counts(b), { ...before, tokens: before.tokens + 1, audit_events: before.audit_events + 4 })
      const rows = await b.rawQuery("select * from audit_events where action = 'token.exchange' and decision = 'deny'") as Record<string, unknown>[]
      assert.equal(rows.length, 3)
      for (const row of rows) assert.deepEqual([row.error, row.policies, row.policy_version], ['invalid_target', 'five-tokens-per-task', b.deps.policy.version])
    }))

  it('a tokens-per-task rule that spells the name with an escape is counted too: concurrent exchanges cannot all pass it', () =>
    withBroker(undefined, async (b) => {
      await putPolicies(b, `@id("five-tokens-escaped") forbid (principal, action == Taskpass::Action::"exchange", resource) when { context.task["tokens\\u{5f}minted"] >= 5 };`)
      const opened = await openTask(b, { purpose: 'notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
      const id = ((await opened.json()) as { task_id: string }).task_id
      for (let i = 0; i < 4; i++) assert.equal((await b.exchange({ task_id: id })).status, 200)
      const before = await counts(b)
      const answers = await Promise.all([0, 1, 2, 3].map(() => b.exchange({ task_id: id })))
      assert.deepEqual(answers.map((r) => r.status).sort(), [200, 400, 400, 400], 'one more token, the fifth')
      for (const r of answers) if (r.status === 400) assert.equal(((await r.json()) as { error: string }).error, 'invalid_target')
      assert.equal((await b.deps.stores.tasks.get(id))!.tokensMinted, 5)
      assert.deepEqual(await counts(b), { ...before, tokens: before.tokens + 1, audit_events: before.audit_events + 4 })
    }))

  it("a tokens-per-task rule of another resource does not decide this resource's exchanges a second time", () =>
    withBroker(undefined, async (b) => {
      await putPolicies(b, `@id("calendar-five-tokens") forbid (principal, action == Taskpass::Action::"exchange", resource == Taskpass::Resource::"${CALENDAR}") when { context.task.tokens_minted >= 5 };`)
      const opened = await openTask(b, { purpose: 'notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
      const id = ((await opened.json()) as { task_id: string }).task_id
      const engine = b.deps.policy
      const decide = engine.decide.bind(engine)
      const asked: string[] = []
      engine.decide = (principal, action, resource, context) => {
        asked.push(`${action} ${resource.uri}`)
        return decide(principal, action, resource, context)
      }
      try {
        // Concurrent: each write finds the count moved by the one before it.
        const answers = await Promise.all([0, 1, 2, 3].map(() => b.exchange({ task_id: id })))
        assert.deepEqual(answers.map((r) => r.status), [200, 200, 200, 200])
        assert.deepEqual(asked, Array(4).fill(`token.exchange ${NOTES}`), 'one decision per exchange')
        assert.equal((await b.deps.stores.tasks.get(id))!.tokensMinted, 4)
      } finally {
        engine.decide = decide
      }
    }))

  it('a forbid loaded while an exchange is signing applies to it: no token is committed under the set it replaced', () =>
    withBroker(undefined, async (b) => {
      const opened = await openTask(b, { purpose: 'notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
      const id = ((await opened.json()) as { task_id: string }).task_id
      const keys = b.deps.keys
      const current = keys.current.bind(keys)
      let load = 0
      // The admin's load lands after the exchange was decided, while its token is being signed.
      keys.current = async () => {
        keys.current = current
        // Loaded here, in force before the exchange writes (on every dialect, however many round trips the load takes).
        await loadAdminPolicies(b.deps, `@id("stop-notes-${++load}") forbid (principal, action == Taskpass::Action::"exchange", resource == Taskpass::Resource::"${NOTES}") when { context.task.purpose == "notes" };`, 'admin:test')
        return current()
      }
      let before = await counts(b)
      const res = await b.exchange({ task_id: id, resource: NOTES, scope: 'notes:read' })
      assert.equal(keys.current, current, 'the load happened mid-exchange')
      assert.equal(res.status, 400, 'minted under the replaced set')
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_target')
      // The policy load and the deny: no token.
      assert.deepEqual(await counts(b), { ...before, audit_events: before.audit_events + 2 })
      const audit = (await b.lastAudit())!
      assert.deepEqual([audit.action, audit.decision, audit.policies, audit.policy_version], ['token.exchange', 'deny', 'stop-notes-1', b.deps.policy.version])

      // The implicit task of /token: decided by the replaced set, neither it nor a token is kept; asked again, the new set decides.
      keys.current = async () => {
        keys.current = current
        // Loaded here, in force before the exchange writes (on every dialect, however many round trips the load takes).
        await loadAdminPolicies(b.deps, `@id("stop-notes-${++load}") forbid (principal, action == Taskpass::Action::"exchange", resource == Taskpass::Resource::"${NOTES}");`, 'admin:test')
        return current()
      }
      before = await counts(b)
      const implicit = await b.exchange({ resource: NOTES, scope: 'notes:read' })
      assert.equal(keys.current, current)
      assert.equal(implicit.status, 503)
      assert.equal(((await implicit.json()) as { error: string }).error, 'temporarily_unavailable')
      assert.deepEqual(await counts(b), { ...before, audit_events: before.audit_events + 2 })
      const again = await b.exchange({ resource: NOTES, scope: 'notes:read' })
      assert.equal(again.status, 400)
      assert.equal((await b.lastAudit())!.policies, 'stop-notes-2')
    }))
})
