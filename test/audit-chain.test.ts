/**
 * The audit log as evidence: a hash chain that finds an edited, deleted or slipped-in row, names
 * the first bad one, and survives retention; and a task's evidence export, signed by the broker's
 * key and checked offline with jose alone.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { readFileSync } from 'node:fs'
import { compactVerify, createLocalJWKSet, type JSONWebKeySet } from 'jose'
import { verifyEvidence } from '../examples/verify-evidence.js'
import { ADMIN_KEY, NOTES, openTask, withBroker, type TestBroker, auditStory as story } from './harness.js'

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

  it('an unknown task is 404; without an admin key 401', () =>
    withBroker(undefined, async (b) => {
      const missing = await b.app.request('/admin/tasks/nope/evidence', { headers: admin })
      assert.equal(missing.status, 404)
      assert.equal(((await missing.json()) as { error: string }).error, 'not_found')
      const anonymous = await b.app.request('/admin/audit/verify')
      assert.equal(anonymous.status, 401)
    }))
})
