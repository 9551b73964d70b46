/**
 * The policy cookbook (docs/policy-cookbook.md): every rule in docs/examples/cookbook/ is loaded,
 * alone, as the `policies.file` of a test broker, and asked over HTTP for requests it permits and
 * requests it forbids. A refusal writes nothing but its audit row, and every decision's audit row
 * names the policies that decided it and the version of the set.
 *
 * The cases are tables of plain data in test/cookbook-cases.ts, so that other tests (the dry run,
 * test/dry-run-cookbook.test.ts) iterate the same rows without running these.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, describe, it } from 'node:test'
import { taskFacts } from '../src/tasks/lifecycle.js'
import { assertRefusedAndAudited, counts, exchangeParams, form, startTestServer, USER_ISSUER, withBroker, type TestBroker } from './harness.js'
import {
  COOKBOOK,
  cookbookCases,
  cookbookConfig,
  cookbookKeys,
  grant,
  NOTES,
  openToolCallTask,
  sendCase,
  toolCallCases,
  type CookbookCase,
  type CookbookKeys,
  type CookbookRequest,
  type ToolCallRequest,
} from './cookbook-cases.js'

const PAGE = new URL('../docs/policy-cookbook.md', import.meta.url)

// ── running a row ──

let keys: CookbookKeys
before(async () => {
  keys = await cookbookKeys()
})
const send = (b: TestBroker, r: CookbookRequest) => sendCase(b, keys, r)

/** The audit row names the deciding policies and the version of the set in force. */
function assertDecidedBy(b: TestBroker, audit: Record<string, unknown>, policies: string[]): void {
  assert.equal(audit.policies, policies.length > 0 ? policies.join(' ') : null, 'the deciding policies')
  assert.equal(audit.policy_version, b.deps.policy.version, 'the policy set version')
  assert.match(String(audit.policy_version), /^ps_/)
}

async function runCase(b: TestBroker, c: CookbookCase): Promise<void> {
  const { res, before } = await send(b, c.request)
  const body = (await res.json()) as Record<string, unknown>
  assert.equal(res.status, c.expect.status, JSON.stringify(body))
  if (c.expect.status === 400) {
    assert.equal(body.error, c.expect.error)
    const reason = c.expect.reason ?? `forbidden by policy ${c.expect.policies.join(', ')}`
    const audit = await assertRefusedAndAudited(b, before, { error: c.expect.error!, reason: new RegExp(`^${escape(reason)}$`), action: c.request.action })
    assertDecidedBy(b, audit, c.expect.policies)
    return
  }
  const after = await counts(b)
  const audit = (await b.lastAudit())!
  assert.equal(audit.action, c.request.action)
  assert.equal(audit.decision, 'allow')
  assert.match(String(audit.reason), new RegExp(`permitted by policy ${escape(c.expect.policies.join(', '))}(;|$)`))
  assertDecidedBy(b, audit, c.expect.policies)
  if (c.request.action === 'task.open') {
    assert.equal(after.tasks, before.tasks + 1)
    assert.equal(body.status, c.expect.taskStatus)
  } else {
    assert.equal(after.tokens, before.tokens + 1)
    assert.equal(body.token_type, c.request.dpop ? 'DPoP' : 'Bearer')
    if (c.expect.expiresIn !== undefined) assert.equal(body.expires_in, c.expect.expiresIn)
  }
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')

/** Opens the row's task over HTTP as its workload (approving it when the row says so) and asks the broker's policy about the call. */
async function decideToolCall(b: TestBroker, r: ToolCallRequest) {
  const id = await openToolCallTask(b, r)
  const row = (await b.deps.stores.tasks.get(id))!
  const workload = b.deps.config.workloads.find((w) => w.id === r.workload)!
  const resource = b.deps.config.resources.find((x) => x.uri === r.resource)!
  return b.deps.policy.decide({ user: 'alice', issuer: USER_ISSUER, sid: 'sess-1' }, 'tool.call', resource, { workload, scopes: r.scopes, dpopBound: false, now: b.clock.now(), task: taskFacts(row), tool: r.tool })
}

// ── the tests ──

const rules = readdirSync(COOKBOOK).filter((f) => f.endsWith('.cedar')).sort()

describe('the cookbook tables', () => {
  it('every rule file has a permitted and a forbidden case; every case names a rule file; names are unique', () => {
    const outcomes = new Map<string, Set<string>>(rules.map((r) => [r, new Set()]))
    for (const c of cookbookCases) outcomes.get(c.rule)?.add(c.expect.status === 400 ? 'forbid' : 'permit') ?? assert.fail(`${c.name}: no rule ${c.rule}`)
    for (const c of toolCallCases) outcomes.get(c.rule)?.add(c.expect.allow ? 'permit' : 'forbid') ?? assert.fail(`${c.name}: no rule ${c.rule}`)
    for (const [rule, seen] of outcomes) assert.deepEqual([...seen].sort(), ['forbid', 'permit'], rule)
    const names = [...cookbookCases, ...toolCallCases].map((c) => `${c.rule}: ${c.name}`)
    assert.equal(new Set(names).size, names.length)
    assert.ok(rules.length >= 5)
  })
})

for (const rule of rules) {
  describe(`cookbook: ${rule}`, () => {
    for (const c of cookbookCases.filter((x) => x.rule === rule)) {
      const outcome = c.expect.status === 400 ? `${c.expect.status} ${c.expect.error}` : String(c.expect.status)
      it(`${c.name} → ${outcome}`, () => withBroker(cookbookConfig(keys.platform, rule), (b) => runCase(b, c)))
    }
    for (const c of toolCallCases.filter((x) => x.rule === rule)) {
      it(`call_tool: ${c.name} → ${c.expect.allow ? 'allow' : `deny ${c.expect.code}`}`, () =>
        withBroker(cookbookConfig(keys.platform, rule), async (b) => {
          const d = await decideToolCall(b, c.request)
          assert.equal(d.allow, c.expect.allow, d.reason)
          if (!d.allow) assert.equal(d.code, c.expect.code)
          assert.deepEqual(d.policies, c.expect.policies)
          assert.equal(d.version, b.deps.policy.version)
          assert.equal(d.reason, `${d.allow ? 'permitted' : 'forbidden'} by policy ${c.expect.policies.join(', ')}`)
        }))
    }
  })
}

describe('cookbook: the limits the page names', () => {
  it('a task waiting for approval of delete_note mints nothing: 400 invalid_grant', () =>
    withBroker(cookbookConfig(keys.platform, 'approval-for-destructive-tools.cedar'), async (b) => {
      const { res } = await send(b, { action: 'task.open', resource: NOTES, scopes: ['notes:read', 'notes:delete'], tools: ['delete_note'] })
      const task = (await res.json()) as { task_id: string; status: string }
      assert.equal(task.status, 'pending_approval')
      const before = await counts(b)
      const token = await b.exchange({ resource: NOTES, scope: 'notes:read', task_id: task.task_id })
      assert.equal(token.status, 400)
      assert.equal(((await token.json()) as { error: string }).error, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /^task \S+ is pending_approval$/ })
    }))

  it('the approval permit is @constraint_only: it opens nothing beyond a grant (agent-b, no notes:delete grant → 400 invalid_scope, nothing written)', () =>
    withBroker(cookbookConfig(keys.platform, 'approval-for-destructive-tools.cedar'), async (b) => {
      const before = await counts(b)
      const res = await b.app.request('/tasks', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${await b.session()}`, 'actor-token': await b.svid('b') },
        body: JSON.stringify({ purpose: 'clean up', resources: [{ resource: NOTES, scopes: ['notes:delete'], tools: ['delete_note'] }] }),
      })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_scope')
      await assertRefusedAndAudited(b, before, { error: 'invalid_scope', reason: /^scope beyond the workload's grant: notes:delete$/, action: 'task.open' })
    }))
  it('caller_address is the real TCP peer: over a 127.0.0.1 socket the rule refuses; the same rule for 127.0.0.0/8 allows', async () => {
    const loopback = join(mkdtempSync(join(tmpdir(), 'taskpass-cookbook-')), 'loopback.cedar')
    writeFileSync(loopback, readFileSync(new URL('caller-network.cedar', COOKBOOK), 'utf8').replace('ip("10.0.0.0/8")', 'ip("127.0.0.0/8")'))
    for (const [rule, allow] of [['caller-network.cedar', false], [loopback, true]] as const) {
      const s = await startTestServer({ config: cookbookConfig(keys.platform, rule) })
      try {
        const before = await counts(s)
        const res = await fetch(`${s.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form(await exchangeParams(s, { resource: NOTES, scope: 'notes:read' })) })
        const body = (await res.json()) as { error?: string }
        if (allow) {
          assert.equal(res.status, 200, JSON.stringify(body))
          assert.equal((await counts(s)).tokens, before.tokens + 1)
          assertDecidedBy(s, (await s.lastAudit())!, [grant('agent-a', NOTES)])
        } else {
          assert.equal(res.status, 400)
          assert.equal(body.error, 'invalid_target')
          const audit = await assertRefusedAndAudited(s, before, { error: 'invalid_target', reason: /^forbidden by policy private-network-only$/ })
          assertDecidedBy(s, audit, ['private-network-only'])
        }
      } finally {
        await s.stop()
      }
    }
  })
})

describe('docs/policy-cookbook.md', () => {
  it('shows every cookbook file verbatim, and no Cedar that is not one of them', () => {
    const page = readFileSync(PAGE, 'utf8')
    const blocks = [...page.matchAll(/```cedar\n([\s\S]*?)```/g)].map((m) => m[1]!)
    const files = rules.map((r) => readFileSync(new URL(r, COOKBOOK), 'utf8'))
    for (const [i, text] of files.entries()) assert.equal(blocks.filter((b) => b === text).length, 1, `${rules[i]} is shown once, as it is`)
    for (const block of blocks) assert.ok(files.includes(block), `a Cedar block on the page is not a cookbook file:\n${block}`)
    for (const rule of rules) assert.ok(page.includes(`(examples/cookbook/${rule})`), `${rule} is linked`)
  })
})
