/**
 * Usage bounds: a task's `max_tokens` and a resource's `maxTokensPerTask` bound the tokens a task
 * mints; the exchange that would exceed the bound is `invalid_grant`, decided on the count inside
 * the write transaction, so parallel exchanges never over-issue.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { assertRefusedAndAudited, counts, exchangeParams, NOTES, openTask, withBroker, type TestBroker } from './harness.js'

async function task(b: TestBroker, body: Record<string, unknown> = {}): Promise<{ task_id: string; max_tokens?: number; tokens_minted: number }> {
  const res = await openTask(b, { purpose: 'read notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }], ...body })
  assert.equal(res.status, 201, await res.clone().text())
  return (await res.json()) as { task_id: string; max_tokens?: number; tokens_minted: number }
}

describe('usage bounds', () => {
  it('max_tokens: exactly N tokens, then 400 invalid_grant, nothing issued, audited; the view shows the bound and the count', () =>
    withBroker(undefined, async (b) => {
      const t = await task(b, { max_tokens: 2 })
      assert.deepEqual([t.max_tokens, t.tokens_minted], [2, 0])
      for (let i = 0; i < 2; i++) assert.equal((await b.exchange({ task_id: t.task_id })).status, 200)
      const before = await counts(b)
      const res = await b.exchange({ task_id: t.task_id })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /has minted 2 of 2 tokens$/ })
      assert.equal((await b.deps.stores.tasks.get(t.task_id))!.tokensMinted, 2)
    }))

  it('a resource’s maxTokensPerTask bounds every task that includes it; the least bound wins', () =>
    withBroker((c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === NOTES ? { ...r, maxTokensPerTask: 3 } : r)) }), async (b) => {
      assert.equal((await task(b)).max_tokens, 3)
      assert.equal((await task(b, { max_tokens: 1 })).max_tokens, 1)
      assert.equal((await task(b, { max_tokens: 10 })).max_tokens, 3)
      // The implicit task of an exchange is bounded too.
      const first = (await (await b.exchange()).json()) as { task_id: string }
      assert.equal((await b.deps.stores.tasks.get(first.task_id))!.maxTokens, 3)
    }))

  it('holds under 50 parallel exchanges: exactly max_tokens issued, every other one invalid_grant', () =>
    withBroker(undefined, async (b) => {
      const t = await task(b, { max_tokens: 5 })
      // Tokens minted first, so the 50 requests arrive together.
      const forms = await Promise.all(Array.from({ length: 50 }, () => exchangeParams(b, { task_id: t.task_id })))
      const answers = await Promise.all(forms.map((f) => b.post('/token', f as Record<string, string>)))
      const statuses = answers.map((r) => r.status)
      assert.equal(statuses.filter((s) => s === 200).length, 5, JSON.stringify(statuses))
      for (const r of answers.filter((a) => a.status !== 200)) {
        assert.equal(r.status, 400)
        assert.equal(((await r.json()) as { error: string }).error, 'invalid_grant')
      }
      assert.equal(await b.count('tokens'), 5)
      assert.equal((await b.deps.stores.tasks.get(t.task_id))!.tokensMinted, 5)
    }))

  it('a bad max_tokens → 400 invalid_request', () =>
    withBroker(undefined, async (b) => {
      for (const max_tokens of [0, -1, 1.5, '3', 2_000_000]) {
        const res = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }], max_tokens })
        assert.equal(res.status, 400, String(max_tokens))
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
      }
    }))
})
