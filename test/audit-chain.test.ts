/**
 * The audit log as evidence: a hash chain that finds an edited, deleted or slipped-in row, names
 * the first bad one, and survives retention; and a task's evidence export, signed by the broker's
 * key and checked offline with jose alone.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { readFileSync } from 'node:fs'
import { compactVerify, createLocalJWKSet, decodeJwt, type JSONWebKeySet } from 'jose'
import { verifyEvidence } from '../examples/verify-evidence.js'
import { ADMIN_KEY, NOTES, NOTES_SECRET, openTask, withBroker, type TestBroker, auditStory as story } from './harness.js'

const admin = { authorization: `Bearer ${ADMIN_KEY}` }

async function verify(b: TestBroker): Promise<{ ok: boolean; rows: number; head: string | null; first_bad?: { id: number; problem: string } }> {
  const res = await b.app.request('/admin/audit/verify', { headers: admin })
  assert.equal(res.status, 200)
  return (await res.json()) as { ok: boolean; rows: number; head: string | null; first_bad?: { id: number; problem: string } }
}


const sql = (b: TestBroker, text: string, ...args: unknown[]) => b.rawQuery(text, [...args])
const ids = async (b: TestBroker) => (await b.rawQuery('select id from audit_events order by id') as { id: number }[]).map((r) => r.id)

describe('audit hash chain', () => {
  it('an intact chain verifies, and its head is the last row’s hash', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      const report = await verify(b)
      assert.equal(report.ok, true)
      assert.equal(report.rows, await b.count('audit_events'))
      const last = (await b.rawQuery('select hash from audit_events order by id desc limit 1'))[0] as { hash: string }
      assert.equal(report.head, last.hash)
      assert.match(last.hash, /^[0-9a-f]{64}$/)
    }))

  it('a row edited with raw SQL is named, as edited', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      const target = (await ids(b))[2]!
      await sql(b, "update audit_events set reason = 'nothing to see' where id = ?", target)
      const report = await verify(b)
      assert.equal(report.ok, false)
      assert.deepEqual([report.first_bad!.id, report.first_bad!.problem], [target, 'edited'])
    }))

  it('a row deleted with raw SQL is found at the next row, as unlinked; so is the first row', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      const [first, second, third, fourth] = await ids(b)
      await sql(b, 'delete from audit_events where id = ?', third)
      let report = await verify(b)
      assert.equal(report.ok, false)
      assert.deepEqual([report.first_bad!.id, report.first_bad!.problem], [fourth, 'unlinked'])
      await sql(b, 'delete from audit_events where id >= ?', third)
      assert.equal((await verify(b)).ok, true, 'a truncated tail is a consistent chain: only the recorded head shows it')
      await sql(b, 'delete from audit_events where id = ?', first)
      report = await verify(b)
      assert.deepEqual([report.first_bad!.id, report.first_bad!.problem], [second, 'unlinked'])
    }))

  it('a row slipped in without a hash is named, as unchained', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      await sql(b, "insert into audit_events (at, action, decision, reason) values (?, 'token.exchange', 'allow', 'forged')", b.clock.now())
      const report = await verify(b)
      assert.equal(report.first_bad!.problem, 'unchained')
      assert.equal(report.first_bad!.id, (await ids(b)).at(-1))
    }))

  it('retention prunes a prefix and keeps the chain verifiable from its anchor; removing the next row is still found', () =>
    withBroker(undefined, async (b) => {
      await story(b)
      b.clock.advance(400 * 86_400)
      await story(b)
      const before = await ids(b)
      const pruned = await b.deps.stores.audit.pruneBefore(b.clock.now() - 365 * 86_400, 1000)
      assert.ok(pruned > 0 && pruned < before.length)
      const report = await verify(b)
      assert.equal(report.ok, true)
      assert.equal(report.rows, before.length - pruned)
      await sql(b, 'delete from audit_events where id = ?', (await ids(b))[0])
      assert.equal((await verify(b)).first_bad!.problem, 'unlinked')
    }))
})

describe('task evidence', () => {
  it('is the task’s whole story as JSON Lines, signed by the broker’s key; jose alone verifies it; a changed byte fails', () =>
    withBroker(undefined, async (b) => {
      const id = await story(b)
      const res = await b.app.request(`/admin/tasks/${id}/evidence`, { headers: admin })
      assert.equal(res.status, 200)
      assert.match(res.headers.get('content-type')!, /^application\/x-ndjson/)
      const text = await res.text()
      const lines = text.trimEnd().split('\n')
      const signature = JSON.parse(lines.at(-1)!) as { type: string; jws: string }
      assert.equal(signature.type, 'signature')
      const body = lines.slice(0, -1).map((l) => l + '\n').join('')
      const jwks = (await (await b.app.request('/.well-known/jwks.json')).json()) as JSONWebKeySet
      // examples/verify-evidence.ts, as docs/audit-evidence.md shows it.
      assert.equal((await verifyEvidence(text, jwks)).length, lines.length - 1)
      const page = readFileSync(new URL('../docs/audit-evidence.md', import.meta.url), 'utf8')
      const shown = /```ts\n([\s\S]*?)```/.exec(page)![1]!
      assert.ok(readFileSync(new URL('../examples/verify-evidence.ts', import.meta.url), 'utf8').includes(shown), 'the page shows the example verbatim')
      const [header, , sig] = signature.jws.split('.')
      const checked = await compactVerify(`${header}.${Buffer.from(body).toString('base64url')}.${sig}`, createLocalJWKSet(jwks))
      assert.equal(checked.protectedHeader.typ, 'taskpass-evidence+jsonl')
      const records = lines.slice(0, -1).map((l) => JSON.parse(l) as Record<string, unknown>)
      assert.deepEqual(records[0]!.type, 'task')
      assert.equal(records[0]!.status, 'completed')
      const audit = records.filter((r) => r.type === 'audit')
      assert.deepEqual(audit.map((r) => `${r.action}:${r.decision}`), ['task.open:allow', 'token.exchange:allow', 'token.exchange:allow', 'token.exchange:deny', 'task.complete:allow'])
      assert.ok(audit.every((r) => typeof r.hash === 'string' && 'prev_hash' in r), 'each row with its place in the chain')
      const tokens = records.filter((r) => r.type === 'token')
      assert.equal(tokens.length, 2)
      assert.ok(tokens.every((t) => t.status === 'revoked' && t.aud === NOTES && t.scope === 'notes:read'))
      assert.deepEqual(records.filter((r) => r.type === 'revocation').map((r) => r.kind), ['task_completed'])

      const tampered = body.replace('"token.exchange","decision":"deny"', '"token.exchange","decision":"allow"')
      assert.notEqual(tampered, body)
      await assert.rejects(compactVerify(`${header}.${Buffer.from(tampered).toString('base64url')}.${sig}`, createLocalJWKSet(jwks)))
      await assert.rejects(verifyEvidence(tampered + lines.at(-1)! + '\n', jwks))
    }))

  it('matches the database row for row: the opening, each decision with its reason and policies, every token minted (jti, aud, scope, exp as issued), every refusal, the ending and every revocation', () =>
    withBroker(undefined, async (b) => {
      const opened = await openTask(b, { purpose: 'read and write notes', resources: [{ resource: NOTES, scopes: ['notes:read', 'notes:write'] }] })
      assert.equal(opened.status, 201)
      const id = ((await opened.json()) as { task_id: string }).task_id
      const issued: Record<string, unknown>[] = []
      for (const scope of ['notes:read', 'notes:write']) {
        b.clock.advance(5)
        const res = await b.exchange({ task_id: id, scope })
        assert.equal(res.status, 200)
        issued.push(decodeJwt(((await res.json()) as { access_token: string }).access_token))
      }
      b.clock.advance(5)
      const refused = await b.exchange({ task_id: id, scope: 'notes:delete' })
      assert.equal(refused.status, 400)
      assert.equal(((await refused.json()) as { error: string }).error, 'invalid_scope')
      // One token revoked by its resource (RFC 7009), then the whole task by an admin.
      b.clock.advance(5)
      const first = await b.exchange({ task_id: id })
      assert.equal(first.status, 200)
      const third = ((await first.json()) as { access_token: string }).access_token
      issued.push(decodeJwt(third))
      const basic = `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}`
      assert.equal((await b.post('/revoke', { token: third }, { authorization: basic })).status, 200)
      b.clock.advance(5)
      assert.equal((await b.app.request(`/admin/tasks/${id}/revoke`, { method: 'POST', headers: admin })).status, 200)

      // Verified with jose alone: the broker's JWKS and compactVerify over the detached payload.
      const text = await (await b.app.request(`/admin/tasks/${id}/evidence`, { headers: admin })).text()
      const lines = text.trimEnd().split('\n')
      const { jws } = JSON.parse(lines.at(-1)!) as { jws: string }
      const [header, , sig] = jws.split('.')
      const jwks = (await (await b.app.request('/.well-known/jwks.json')).json()) as JSONWebKeySet
      const signed = lines.slice(0, -1).map((l) => l + '\n').join('')
      assert.equal((await compactVerify(`${header}.${Buffer.from(signed).toString('base64url')}.${sig}`, createLocalJWKSet(jwks))).protectedHeader.typ, 'taskpass-evidence+jsonl')
      const records = lines.slice(0, -1).map((l) => JSON.parse(l) as Record<string, unknown>)
      const ofType = (type: string) => records.filter((r) => r.type === type).map(({ type: _t, ...rest }) => rest)

      // The task as stored.
      const [task] = (await b.rawQuery('select * from tasks where id = ?', [id])) as [Record<string, unknown>]
      const [shown] = ofType('task') as [Record<string, unknown>]
      assert.deepEqual([shown.task_id, shown.status, shown.created_at, shown.ended_at, shown.end_reason, shown.tokens_minted], [task.id, 'revoked', task.created_at, task.ended_at, task.end_reason, 3])

      // Every audit row of the task, in order, exactly as stored — its reasons, errors, policies and chain hashes.
      const rows = await b.rawQuery('select id, at, action, decision, reason, error, user_sub, workload_id, task_id, jti, resource, policy_version, policies, prev_hash, hash from audit_events where task_id = ? order by id', [id])
      assert.deepEqual(ofType('audit'), rows)
      assert.deepEqual(rows.map((r) => `${String(r.action)}:${String(r.decision)}:${String(r.error ?? '')}`), ['task.open:allow:', 'token.exchange:allow:', 'token.exchange:allow:', 'token.exchange:deny:invalid_scope', 'token.exchange:allow:', 'token.revoke:allow:', 'task.revoke:allow:'])
      // Each allow names the policies that permitted it, in its reason too; the refusal says why, with its error.
      const allowed = rows.filter((r) => (r.action === 'task.open' || r.action === 'token.exchange') && r.decision === 'allow')
      assert.equal(allowed.length, 4)
      for (const r of allowed) {
        assert.match(String(r.policy_version), /^ps_/)
        assert.equal(r.policies, `grant/agent-a/${NOTES}`)
        assert.ok(String(r.reason).includes(`permitted by policy ${String(r.policies)}`), String(r.reason))
      }
      assert.equal(rows.find((r) => r.decision === 'deny')!.reason, 'beyond task: notes:delete')
      const minted = rows.filter((r) => r.action === 'token.exchange' && r.decision === 'allow')
      assert.deepEqual(minted.map((r) => r.jti), issued.map((t) => t.jti), 'each mint\'s audit row names its token')
      assert.match(String(rows.at(-1)!.reason), /^revoked by admin:key0; 2 token\(s\) revoked$/)

      // Every token minted, as issued (the JWT's own claims) and as stored.
      const tokens = ofType('token')
      assert.deepEqual(tokens.map((t) => [t.jti, t.aud, t.scope, t.exp, t.iat]), issued.map((t) => [t.jti, t.aud, t.scope, t.exp, t.iat]))
      assert.deepEqual(tokens, await b.rawQuery('select jti, aud, scope, workload_id, iat, exp, status, revoked_at, cnf_jkt, kid from tokens where task_id = ? order by iat, jti', [id]))
      assert.ok(tokens.every((t) => t.status === 'revoked' && typeof t.revoked_at === 'number'))

      // Every revocation event: the resource's token revocation and the task's.
      const events = ofType('revocation')
      assert.deepEqual(events, await b.rawQuery('select id, at, kind, jti from revocation_events where task_id = ? order by id', [id]))
      assert.deepEqual(events.map((e) => `${String(e.kind)}:${String(e.jti ?? '')}`), [`token_revoked:${String(issued[2]!.jti)}`, 'task_revoked:'])
    }))

  it('an unknown task is 404; without an admin key 401', () =>
    withBroker(undefined, async (b) => {
      const missing = await b.app.request('/admin/tasks/nope/evidence', { headers: admin })
      assert.equal(missing.status, 404)
      assert.equal(((await missing.json()) as { error: string }).error, 'not_found')
      const anonymous = await b.app.request('/admin/audit/verify')
      assert.equal(anonymous.status, 401)
    }))
})
