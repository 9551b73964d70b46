/**
 * Security review by test of the audit hash chain and the signed task evidence. Plain tests: attacks
 * that `verify` or the evidence check find. `todo` tests: findings (they fail on the current code).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { JSONWebKeySet } from 'jose'
import { verifyEvidence } from '../examples/verify-evidence.js'
import { auditHash } from '../src/store/audit-chain.js'
import type { AuditEventRow } from '../src/store/stores.js'
import { ADMIN_KEY, NOTES, openTask, withBroker, type TestBroker, auditStory as story } from './harness.js'

const admin = { authorization: `Bearer ${ADMIN_KEY}` }
type Report = { ok: boolean; rows: number; unchained: number; head: string | null; first_bad?: { id: number; problem: string } }

async function verify(b: TestBroker): Promise<Report> {
  const res = await b.app.request('/admin/audit/verify', { headers: admin })
  assert.equal(res.status, 200)
  return (await res.json()) as Report
}


async function evidence(b: TestBroker, id: string): Promise<{ text: string; jwks: JSONWebKeySet }> {
  const res = await b.app.request(`/admin/tasks/${id}/evidence`, { headers: admin })
  assert.equal(res.status, 200)
  return { text: await res.text(), jwks: (await (await b.app.request('/.well-known/jwks.json')).json()) as JSONWebKeySet }
}

const sql = (b: TestBroker, text: string, ...args: unknown[]) => b.rawQuery(text, [...args])
const all = async (b: TestBroker) => await b.rawQuery('select * from audit_events order by id') as Record<string, unknown>[]
const ids = async (b: TestBroker) => (await all(b)).map((r) => r.id as number)

describe('attack: editing the chain', () => {
  for (const [column, value] of [['at', 1], ['action', 'task.open'], ['decision', 'deny'], ['reason', 'x'], ['error', 'invalid_grant'], ['user_sub', 'mallory'], ['workload_id', 'agent-b'], ['task_id', 'other'], ['jti', 'j'], ['resource', 'https://x.example'], ['policy_version', 'v0'], ['policies', '']] as const) {
    it(`an edit of ${column} alone is named as edited`, () =>
      withBroker(undefined, async (b) => {
        await story(b)
        const target = (await ids(b))[1]!
        await sql(b, `update audit_events set ${column} = ? where id = ?`, value, target)
        const report = await verify(b)
        assert.deepEqual([report.ok, report.first_bad?.id, report.first_bad?.problem], [false, target, 'edited'])
      }))
  }

  it('null turned into the string "null" (a JSON ambiguity) is found', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      const row = (await all(b)).find((r) => r.error === null)!
      await sql(b, "update audit_events set error = 'null' where id = ?", row.id)
      assert.equal((await verify(b)).first_bad?.problem, 'edited')
    }))

  it('two rows swapped by id are found (unlinked)', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      const [, x, y] = await ids(b)
      await sql(b, 'update audit_events set id = -100 where id = ?', x)
      await sql(b, 'update audit_events set id = ? where id = ?', x, y)
      await sql(b, 'update audit_events set id = ? where id = -100', y)
      const report = await verify(b)
      assert.equal(report.ok, false)
      assert.equal(report.first_bad!.problem, 'unlinked')
    }))

  it('the last row edited with its hash recomputed passes verify — only a recorded head shows it (documented limit)', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      const recorded = (await verify(b)).head
      const last = (await all(b)).at(-1)!
      const row = (await b.rawQuery('select * from audit_events where id = ?', [last.id]))[0] as Record<string, unknown>
      const content = { at: row.at, action: row.action, decision: 'deny', reason: 'forged', error: row.error, userSub: row.user_sub, workloadId: row.workload_id, taskId: row.task_id, jti: row.jti, resource: row.resource, policyVersion: row.policy_version, policies: row.policies } as Required<Omit<AuditEventRow, 'id' | 'prevHash' | 'hash'>>
      await sql(b, "update audit_events set decision = 'deny', reason = 'forged', hash = ? where id = ?", auditHash(row.prev_hash as string | null, content), last.id)
      const report = await verify(b)
      assert.equal(report.ok, true)
      assert.notEqual(report.head, recorded)
    }))

  it('a row slipped in at id 0 (below where verify starts reading) is seen by verify', () =>
    withBroker(undefined, async (b) => {
      const task = await story(b)
      await sql(b, "insert into audit_events (id, at, action, decision, reason, task_id) values (0, ?, 'task.approve', 'allow', 'forged approval', ?)", b.clock.now(), task)
      const report = await verify(b)
      assert.ok(report.ok === false || report.unchained === 1, `verify did not see row 0: ${JSON.stringify(report)}`)
    }))

  it('a chained-looking row slipped in at id -1 (hash computed, signed into the task’s evidence) is found by verify', () =>
    withBroker(undefined, async (b) => {
      const task = await story(b)
      const at = b.clock.now()
      const content = { at, action: 'task.approve', decision: 'allow', reason: 'forged approval', error: null, userSub: null, workloadId: null, taskId: task, jti: null, resource: null, policyVersion: null, policies: null } as Required<Omit<AuditEventRow, 'id' | 'prevHash' | 'hash'>>
      await sql(b, "insert into audit_events (id, at, action, decision, reason, task_id, prev_hash, hash) values (-1, ?, 'task.approve', 'allow', 'forged approval', ?, null, ?)", at, task, auditHash(null, content))
      const { text, jwks } = await evidence(b, task)
      const forged = (await verifyEvidence(text, jwks)).find((r) => r.reason === 'forged approval')
      assert.ok(forged && typeof forged.hash === 'string', 'the broker signs the forged row into the evidence, with a hash like any other')
      const report = await verify(b)
      assert.equal(report.ok, false, `verify never read row -1: ${JSON.stringify(report)}`)
    }))

  it('after retention, a row without a hash slipped in before the first kept row is found', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      b.clock.advance(400 * 86_400)
      await story(b)
      assert.ok(await b.deps.stores.audit.pruneBefore(b.clock.now() - 365 * 86_400, 1000) > 0)
      assert.equal((await verify(b)).ok, true)
      await sql(b, "insert into audit_events (id, at, action, decision, reason) values (1, ?, 'task.open', 'allow', 'forged')", b.clock.now())
      assert.equal((await verify(b)).ok, false)
    }))
})

describe('attack: retention', () => {
  it('pruning every row, then writing one: the chain still verifies', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      b.clock.advance(400 * 86_400)
      assert.ok(await b.deps.stores.audit.pruneBefore(b.clock.now() - 365 * 86_400, 1000) > 0)
      assert.equal(await b.count('audit_events'), 0)
      assert.equal((await verify(b)).ok, true)
      await story(b)
      const report = await verify(b)
      assert.equal(report.ok, true, JSON.stringify(report))
    }))

  it('an old task’s evidence after its audit rows were pruned says they were pruned, not that there were none', () =>
    withBroker(undefined, async (b) => {
      const old = await story(b)
      b.clock.advance(400 * 86_400)
      await story(b)
      await b.deps.stores.audit.pruneBefore(b.clock.now() - 365 * 86_400, 1000)
      const res = await b.app.request(`/admin/tasks/${old}/evidence`, { headers: admin })
      if (res.status === 404) return
      const { text, jwks } = { text: await res.text(), jwks: (await (await b.app.request('/.well-known/jwks.json')).json()) as JSONWebKeySet }
      const records = await verifyEvidence(text, jwks)
      const audit = records.filter((r) => r.type === 'audit')
      assert.ok(audit.length > 0 || records.some((r) => r.type !== 'task' && r.type !== 'audit' && r.type !== 'token' && r.type !== 'revocation'), `the evidence of ${old} is signed with ${audit.length} audit rows and no word of retention`)
    }))
})

describe('attack: the evidence signature', () => {
  it('refusals about a task (another workload, a completed task, an ID-JAG-less replay) are lines of its evidence', () =>
    withBroker(undefined, async (b) => {
      const task = await story(b)
      const before = (await b.deps.stores.audit.ofTask(task)).length
      assert.equal((await b.exchange({ task_id: task, actor_token: await b.svid('b') })).status, 400)
      assert.equal((await b.exchange({ task_id: task })).status, 400)
      const { text, jwks } = await evidence(b, task)
      const audit = (await verifyEvidence(text, jwks)).filter((r) => r.type === 'audit')
      assert.equal(audit.length, before + 2, JSON.stringify(audit.slice(-2)))
      assert.ok(audit.slice(-2).every((r) => r.decision === 'deny'))
    }))

  it('a dropped line, a line from another task, CRLF line ends and a task token reframed as evidence are all refused', () =>
    withBroker(undefined, async (b) => {
      const one = await story(b)
      const two = await story(b)
      const a = await evidence(b, one)
      const other = await evidence(b, two)
      const lines = a.text.trimEnd().split('\n')
      const otherLines = other.text.trimEnd().split('\n')
      const join = (ls: string[]) => ls.map((l) => l + '\n').join('')
      assert.ok((await verifyEvidence(a.text, a.jwks)).length > 0)
      // Trailing whitespace after the signature line changes nothing that is vouched for.
      assert.equal((await verifyEvidence(a.text + '\n\n ', a.jwks)).length, lines.length - 1)
      await assert.rejects(verifyEvidence(join([...lines.slice(0, 2), ...lines.slice(3)]), a.jwks))
      await assert.rejects(verifyEvidence(join([...lines.slice(0, -1), otherLines[2]!, lines.at(-1)!]), a.jwks))
      await assert.rejects(verifyEvidence(join([otherLines[0]!, ...lines.slice(1)]), a.jwks))
      await assert.rejects(verifyEvidence(a.text.replace(/\n/g, '\r\n'), a.jwks))
      // The other task's signature over this task's lines.
      await assert.rejects(verifyEvidence(join([...lines.slice(0, -1), otherLines.at(-1)!]), a.jwks))
      // A task token is signed by the same key: as evidence it fails (payload, typ).
      const token = ((await (await b.exchange({ task_id: (await (await openTask(b, { purpose: 'x', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })).json() as { task_id: string }).task_id })).json()) as { access_token: string }).access_token
      const [h, p, s] = token.split('.')
      const reframed = `${Buffer.from(p!, 'base64url').toString()}\n${JSON.stringify({ type: 'signature', jws: `${h}..${s}` })}\n`
      await assert.rejects(verifyEvidence(reframed, a.jwks))
    }))

  it('the evidence of a task that does not exist is 404, and writes nothing', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      const before = await b.count('audit_events')
      for (const id of ['00000000-0000-7000-8000-000000000000', '../../etc/passwd', "x' or 1=1 --", 'a'.repeat(5000)]) {
        const res = await b.app.request(`/admin/tasks/${encodeURIComponent(id)}/evidence`, { headers: admin })
        assert.ok(res.status === 404 || res.status === 400, `${id}: ${res.status}`)
      }
      assert.equal(await b.count('audit_events'), before)
      assert.equal((await verify(b)).ok, true)
    }))
})
