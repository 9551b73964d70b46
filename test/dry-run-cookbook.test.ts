/**
 * The dry run (`POST /admin/policy/evaluate`, docs/policy.md "Dry run") agrees with the real
 * decision for every row of the cookbook's tables (test/cookbook-cases.ts): each row's rule is
 * loaded into a broker exactly as the HTTP cookbook test loads it, the row's request is put to the
 * dry run as the question the real request would be (who, what, when, from where, with which
 * session and attestation), and the answer must be the row's expectation — permit ⇔ 2xx, the same
 * error, the same deciding policies, the same task status and token lifetime — with nothing
 * written. Then the real request is sent to the same broker, and the two answers must agree.
 * Tool-call rows are asked by the task's intent and by the `task_id` of a task opened over HTTP.
 * Last, two variations of rows the real request answers otherwise than a naive dry run would: a
 * session with no lifetime left, and a task opened earlier, given by its intent and age.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, describe, it } from 'node:test'
import type { DryRunAnswer, DryRunRequest } from '../src/tasks/dry-run.js'
import {
  actorToken,
  COOKBOOK,
  cookbookCases,
  cookbookConfig,
  cookbookKeys,
  DEFAULT_PURPOSE,
  grant,
  HOUR,
  NOTES,
  openToolCallTask,
  sendCase,
  toolCallCases,
  type Actor,
  type CookbookCase,
  type CookbookKeys,
  type ToolCallCase,
} from './cookbook-cases.js'
import { ADMIN_KEY, counts, GH_ISSUER, K8S_ISSUER, openTask, spiffeId, T0, TRUST_DOMAIN, USER_ISSUER, withBroker, type TestBroker } from './harness.js'

let keys: CookbookKeys
before(async () => {
  keys = await cookbookKeys()
})

/** The session every row's user signs in with (TestBroker.session): alice, session sess-1, one hour. */
const USER = { issuer: USER_ISSUER, subject: 'alice', session: 'sess-1' }
const SESSION_LIFETIME = 3600

/**
 * What the row's actor token proves (the tokens test/harness.ts mints): the workload it maps to
 * in the cookbook's configuration, the attestation facts policy sees, and the token's lifetime.
 */
function actorFacts(b: TestBroker, actor: Actor = { spiffe: 'a' }): { workload: string; attestation: NonNullable<DryRunRequest['attestation']>; lifetime: number } {
  const workloadOf = (issuer: string, match: (w: (typeof b.deps.config.workloads)[number]) => boolean) => {
    const found = b.deps.config.workloads.filter((w) => w.attestation?.issuer === issuer && match(w))
    assert.equal(found.length, 1, `one workload for ${JSON.stringify(actor)}`)
    return found[0]!.id
  }
  if ('spiffe' in actor) {
    const issuer = `spiffe://${TRUST_DOMAIN}`
    const subject = spiffeId(actor.spiffe)
    return { workload: workloadOf(issuer, (w) => w.attestation?.subject === subject), attestation: { kind: 'spiffe', issuer, subject }, lifetime: 300 }
  }
  if ('github' in actor) {
    const job = actor.github
    const issuer = job.issuer ?? GH_ISSUER
    const workflowRef = `${job.repository}/.github/workflows/deploy.yml@${job.ref}`
    return {
      workload: workloadOf(issuer, (w) => w.attestation?.claims.repository_id === job.repositoryId),
      attestation: {
        kind: 'github',
        issuer,
        subject: job.environment ? `repo:${job.repository}:environment:${job.environment}` : `repo:${job.repository}:ref:${job.ref}`,
        github: { repository: job.repository, repositoryOwner: job.repository.split('/')[0]!, ref: job.ref, ...(job.environment ? { environment: job.environment } : {}), workflowRef, event: 'push' },
      },
      lifetime: 300,
    }
  }
  const { namespace, serviceAccount } = actor.kubernetes
  const issuer = actor.kubernetes.issuer ?? K8S_ISSUER
  const subject = `system:serviceaccount:${namespace}:${serviceAccount}`
  return {
    workload: workloadOf(issuer, (w) => w.attestation?.subject === subject),
    attestation: { kind: 'kubernetes', issuer, subject, kubernetes: { namespace, serviceAccount, pod: `${serviceAccount}-7c9f8d6b5-x2x9q` } },
    lifetime: 3600,
  }
}

/** The row's request as a dry-run question, at the moment the row's request is sent (the broker's clock plus `after`). */
function question(b: TestBroker, c: CookbookCase): DryRunRequest {
  const r = c.request
  const at = b.clock.now() + (r.after ?? 0)
  const { workload, attestation, lifetime } = actorFacts(b, r.actor)
  const declared = { resource: r.resource, scopes: r.scopes, ...(r.tools ? { tools: r.tools } : {}) }
  // The row's ttl is asked of the task too (test/cookbook-cases.ts `sendCase` opens it with it).
  const ttl = r.ttl !== undefined ? { ttl: r.ttl } : {}
  // open_task: the task being opened; an exchange with a task: that task (opened just before, having
  // minted `minted` tokens); an exchange without: no task, it runs under its implicit one.
  const task =
    r.action === 'task.open'
      ? { purpose: r.purpose ?? DEFAULT_PURPOSE, resources: [declared], ...ttl }
      : r.task
        ? { purpose: r.task.purpose, resources: [declared], ...ttl, tokens_minted: r.task.minted }
        : undefined
  return {
    action: r.action === 'task.open' ? 'open_task' : 'exchange',
    user: USER,
    workload,
    attestation,
    resource: r.resource,
    scopes: r.scopes,
    ...(r.ttl !== undefined ? { ttl: r.ttl } : {}),
    dpop_bound: r.dpop ?? false,
    ...(task ? { task } : {}),
    at,
    session_age: r.signedInAgo ?? 0,
    session_exp: at + SESSION_LIFETIME,
    attestation_exp: at + lifetime,
    ...(r.callerAddress !== undefined ? { caller_address: r.callerAddress } : {}),
  }
}

/**
 * A tool-call row as a dry-run question, called with the token's scopes under the row's task:
 * given as its intent and state (declared tools, whether it was approved), or by `task_id`, a
 * task opened (and approved) over HTTP.
 */
function toolQuestion(b: TestBroker, c: ToolCallCase, taskId?: string): DryRunRequest {
  const r = c.request
  const { attestation } = actorFacts(b, { spiffe: r.workload.replace(/^agent-/, '') })
  const declared = { resource: r.resource, scopes: r.task.scopes, ...(r.task.tools ? { tools: r.task.tools } : {}) }
  const task = taskId !== undefined ? { task_id: taskId } : { task: { purpose: DEFAULT_PURPOSE, resources: [declared], approved: r.task.approved } }
  return { action: 'call_tool', user: USER, workload: r.workload, attestation, resource: r.resource, tool: r.tool, scopes: r.scopes, dpop_bound: false, ...task }
}

/**
 * Rows the dry run answers otherwise than the row expects, and why. A tool call is only ever made
 * with a token of an active task; a task that declares delete_note opens pending_approval under
 * this rule and mints nothing until approved, so the dry run answers such a call invalid_grant
 * (no token could exist) where the row, asking the policy about the pending task directly,
 * expects the policy's own forbid.
 */
/**
 * Rows the dry run answers earlier than the policy the row asks directly: a tool call under a task
 * still awaiting approval never reaches policy (no token of such a task exists; the dry run, like
 * the exchange, refuses the task itself with `invalid_grant`).
 */
const PENDING_TASK_ROWS = new Set(['approval-for-destructive-tools.cedar: delete_note for a task awaiting approval'])

async function evaluate(b: TestBroker, q: DryRunRequest): Promise<DryRunAnswer> {
  const res = await b.app.request('/admin/policy/evaluate', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(q) })
  const body = (await res.json()) as DryRunAnswer
  assert.equal(res.status, 200, `the dry run answers: ${JSON.stringify(body)}`)
  return body
}

/** Asks the dry run, asserting it wrote nothing. */
async function dryRun(b: TestBroker, q: DryRunRequest): Promise<DryRunAnswer> {
  const before = await counts(b)
  const answer = await evaluate(b, q)
  assert.deepEqual(await counts(b), before, 'the dry run wrote nothing')
  assert.equal(answer.policy_version, b.deps.policy.version, 'decided by the set in force')
  return answer
}

const show = (q: unknown, a: unknown) => `question ${JSON.stringify(q)}\nanswer ${JSON.stringify(a)}`

/** The dry run's answer is the row's expectation. */
function assertExpected(c: CookbookCase, q: DryRunRequest, a: DryRunAnswer): void {
  const e = c.expect
  const why = show(q, a)
  assert.equal(a.decision, e.status === 400 ? 'forbid' : 'permit', why)
  assert.equal(a.error, e.error, why)
  assert.deepEqual(a.policies, e.policies, why)
  if (a.decision === 'forbid') assert.equal(a.reason, e.reason ?? `forbidden by policy ${e.policies.join(', ')}`, why)
  else assert.match(a.reason, new RegExp(`^permitted by policy ${escape(e.policies.join(', '))}(;|$)`), why)
  if (e.taskStatus !== undefined) assert.equal(a.task_status, e.taskStatus, why)
  if (e.expiresIn !== undefined) assert.equal(a.ttl, e.expiresIn, why)
  if (c.request.action === 'token.exchange' && a.decision === 'permit') assert.equal(a.scope, c.request.scopes.join(' '), why)
}

/** The dry run's answer is what the real request got: status, error, deciding policies (its audit row), task status, token lifetime and scope. */
async function assertSameAsReal(b: TestBroker, c: CookbookCase, q: DryRunRequest, a: DryRunAnswer): Promise<void> {
  const { res } = await sendCase(b, keys, c.request)
  const body = (await res.json()) as Record<string, unknown>
  const audit = (await b.lastAudit())!
  const why = `real ${res.status} ${JSON.stringify(body)}\n${show(q, a)}`
  assert.equal(a.decision, res.ok ? 'permit' : 'forbid', why)
  assert.equal(a.error, body.error, why)
  assert.deepEqual(a.policies, audit.policies ? String(audit.policies).split(' ') : [], why)
  assert.equal(a.policy_version, audit.policy_version, why)
  if (!res.ok) assert.equal(a.reason, audit.reason, why)
  else if (c.request.action === 'task.open') assert.equal(a.task_status, body.status, why)
  else assert.deepEqual([a.ttl, a.scope], [body.expires_in, body.scope], why)
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')

describe('the dry-run questions are what the real tokens prove', () => {
  it('for every actor of the tables: the workload the actor token maps to, and its attestation facts', () =>
    withBroker(cookbookConfig(keys.platform, 'business-hours.cedar'), async (b) => {
      const actors = new Map<string, Actor | undefined>(cookbookCases.map((c) => [JSON.stringify(c.request.actor ?? null), c.request.actor]))
      assert.ok(actors.size >= 8, 'SPIFFE, GitHub and Kubernetes actors')
      for (const actor of actors.values()) {
        const proved = await b.deps.actorTokens.verify(await actorToken(b, keys, actor))
        const facts = actorFacts(b, actor)
        assert.equal(facts.workload, proved.workload.id, JSON.stringify(actor))
        assert.deepEqual(facts.attestation, proved.attestation, JSON.stringify(actor))
        assert.equal(b.clock.now() + facts.lifetime, proved.exp, JSON.stringify(actor))
      }
    }))
})

for (const rule of [...new Set([...cookbookCases, ...toolCallCases].map((c) => c.rule))].sort()) {
  describe(`dry run of the cookbook: ${rule}`, () => {
    for (const c of cookbookCases.filter((x) => x.rule === rule)) {
      const outcome = c.expect.status === 400 ? `forbid ${c.expect.error}` : 'permit'
      it(`${c.name} → ${outcome}, as the real request`, () =>
        withBroker(cookbookConfig(keys.platform, rule), async (b) => {
          const q = question(b, c)
          const a = await dryRun(b, q)
          assertExpected(c, q, a)
          await assertSameAsReal(b, c, q, a)
        }))
    }
    for (const c of toolCallCases.filter((x) => x.rule === rule)) {
      const pending = PENDING_TASK_ROWS.has(`${rule}: ${c.name}`)
      const assertToolCall = (q: DryRunRequest, a: DryRunAnswer) => {
        const why = show(q, a)
        if (pending) {
          assert.deepEqual([a.decision, a.error, a.policies], ['forbid', 'invalid_grant', []], why)
          assert.match(a.reason, /pending_approval$/, why)
          return
        }
        assert.equal(a.decision, c.expect.allow ? 'permit' : 'forbid', why)
        assert.equal(a.error, c.expect.code, why)
        assert.deepEqual(a.policies, c.expect.policies, why)
        assert.equal(a.reason, `${c.expect.allow ? 'permitted' : 'forbidden'} by policy ${c.expect.policies.join(', ')}`, why)
      }
      const outcome = pending ? 'forbid invalid_grant (the task awaits approval)' : c.expect.allow ? 'permit' : `forbid ${c.expect.code}`
      it(`call_tool: ${c.name} → ${outcome}`, () =>
        withBroker(cookbookConfig(keys.platform, rule), async (b) => {
          const q = toolQuestion(b, c)
          assertToolCall(q, await dryRun(b, q))
        }))
      it(`call_tool: ${c.name}, its task opened over HTTP and named by task_id → ${outcome}`, () =>
        withBroker(cookbookConfig(keys.platform, rule), async (b) => {
          const q = toolQuestion(b, c, await openToolCallTask(b, c.request))
          assertToolCall(q, await dryRun(b, q))
        }))
    }
  })
}

describe('dry run of the cookbook rows with an expired session', () => {
  // The real request verifies a session token expired by less than the clock skew, then refuses
  // it: it has no lifetime left to lend a task or a token (400 invalid_request, audited).
  const rows = [
    cookbookCases.find((c) => c.rule === 'business-hours.cedar' && c.name === 'exchange at 08:00 UTC')!,
    cookbookCases.find((c) => c.rule === 'purpose-ticket.cedar' && c.name === 'a task for a ticket')!,
  ]
  for (const c of rows) {
    it(`${c.rule}: ${c.name}, the session expired 1 s ago → forbid invalid_request, as the real request`, () =>
      withBroker(cookbookConfig(keys.platform, c.rule), async (b) => {
        const now = b.clock.now()
        const q = { ...question(b, c), session_exp: now - 1 }
        const a = await dryRun(b, q)
        const session = await b.session({ iat: now - SESSION_LIFETIME, exp: now - 1 })
        const r = c.request
        assert.equal(r.after ?? r.actor ?? r.tools ?? r.task, undefined, 'a row asked at the broker\'s clock, by agent-a, without tools or task')
        const real =
          r.action === 'task.open'
            ? await b.app.request('/tasks', {
                method: 'POST',
                headers: { 'content-type': 'application/json', authorization: `Bearer ${session}`, 'actor-token': await b.svid('a') },
                body: JSON.stringify({ purpose: r.purpose ?? DEFAULT_PURPOSE, resources: [{ resource: r.resource, scopes: r.scopes }] }),
              })
            : await b.exchange({ subject_token: session, resource: r.resource, scope: r.scopes.join(' ') })
        const body = (await real.json()) as Record<string, unknown>
        const audit = (await b.lastAudit())!
        const why = `real ${real.status} ${JSON.stringify(body)}\n${show(q, a)}`
        assert.deepEqual([real.status, body.error], [400, 'invalid_request'], why)
        assert.deepEqual([a.decision, a.error, a.policies], ['forbid', 'invalid_request', []], why)
        assert.equal(audit.error, 'invalid_request', why)
        assert.match(a.reason, /^subject_token expired 1s /, why)
      }))
  }
})

describe('dry run of a task opened earlier, given by its intent and age', () => {
  it('the opening is decided at the moment it opened: business hours for opening tasks only, a task opened at 18:50, a token at 19:10 → permit, as the real request', () => {
    // The cookbook's business-hours rule, narrowed to opening tasks: a task opened in hours mints after them.
    const openOnly = join(mkdtempSync(join(tmpdir(), 'taskpass-dry-run-')), 'open-hours.cedar')
    const text = readFileSync(new URL('business-hours.cedar', COOKBOOK), 'utf8')
    assert.ok(text.includes('action in [Taskpass::Action::"open_task", Taskpass::Action::"exchange"]'))
    writeFileSync(openOnly, text.replace('action in [Taskpass::Action::"open_task", Taskpass::Action::"exchange"]', 'action == Taskpass::Action::"open_task"'))
    return withBroker(cookbookConfig(keys.platform, openOnly), async (b) => {
      const declared = [{ resource: NOTES, scopes: ['notes:read'] }]
      b.clock.advance(10 * HOUR + 50 * 60)
      const opened = await openTask(b, { purpose: DEFAULT_PURPOSE, resources: declared })
      assert.equal(opened.status, 201)
      const { task_id: taskId } = (await opened.json()) as { task_id: string }
      b.clock.advance(20 * 60)
      const now = b.clock.now()
      const base: DryRunRequest = { action: 'exchange', user: USER, workload: 'agent-a', resource: NOTES, scopes: ['notes:read'], dpop_bound: false, at: now, session_exp: now + SESSION_LIFETIME, attestation_exp: now + 300 }
      const byIntent = await dryRun(b, { ...base, task: { purpose: DEFAULT_PURPOSE, resources: declared, age: 20 * 60 } })
      const byId = await dryRun(b, { ...base, task_id: taskId })
      const real = await b.exchange({ resource: NOTES, scope: 'notes:read', task_id: taskId })
      const body = (await real.json()) as Record<string, unknown>
      assert.equal(real.status, 200, JSON.stringify(body))
      for (const a of [byId, byIntent]) {
        assert.deepEqual([a.decision, a.error, a.policies, a.ttl], ['permit', undefined, [grant('agent-a', NOTES)], body.expires_in], JSON.stringify(a))
      }
      // A task said to have opened at 06:50 (a token asked at 07:10) could not have opened: the dry run says so.
      const at = T0 + 23 * HOUR + 10 * 60
      const early = await dryRun(b, { ...base, at, session_exp: at + SESSION_LIFETIME, attestation_exp: at + 300, task: { purpose: DEFAULT_PURPOSE, resources: declared, age: 20 * 60 } })
      assert.deepEqual([early.decision, early.error, early.policies], ['forbid', 'invalid_target', ['business-hours']], JSON.stringify(early))
    })
  })
})
