/**
 * Cedar as the policy decision point (docs/policy.md): the generated default policies decide as
 * the configuration's grants always did; a deployment's own policies add forbids and constraints;
 * a bad policy stops the broker at start.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { ConfigError, parseConfig, type Config, type ConfigInput, type ResourceConfig, type WorkloadConfig } from '../src/config.js'
import { statefulIsAuthorized } from '@cedar-policy/cedar-wasm/nodejs'
import { cedarRequest, compilePolicySet, createCedarPolicy, prepare } from '../src/policy/cedar.js'
import { createPolicyEngine } from '../src/policy/engine.js'
import { delegationPolicy, generateGrantPolicies } from '../src/policy/generate.js'
import { createGrantPolicy } from '../src/policy/grants.js'
import type { Decision, PolicyAction, PolicyContext, TaskFacts } from '../src/policy/decide.js'
import { USER_ISSUER, CALENDAR, counts, createTestBroker, NOTES, openTask, testConfig, testKeys, UNGRANTED, withBroker, assertRefusedAndAudited, type TestBroker } from './harness.js'

const dir = mkdtempSync(join(tmpdir(), 'taskpass-policy-'))
let n = 0
/** Writes a policy file and returns a config transform that loads it. */
function withPolicies(text: string, extra: { replaceDefaults?: boolean } = {}): (c: ConfigInput) => ConfigInput {
  const file = join(dir, `p${++n}.cedar`)
  writeFileSync(file, text)
  return (c) => ({ ...c, policies: { file, ...extra } })
}
const examplePolicies = new URL('../docs/examples/policies.cedar', import.meta.url).pathname

async function json(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>
}

/** The generated set of a configuration, validated (not prepared). */
const generatedSet = (config: Config) => compilePolicySet(generateGrantPolicies(config), [], config.resources.map((r) => r.uri))
let slots = 0
/** Cedar itself over the generated set (the broker decides that set natively). */
const cedarOverGrants = (config: Config) => createCedarPolicy(prepare(generatedSet(config), `policy-test:${++slots}`), () => 'spiffe')
/** A task for decision contexts: opened at 1_799_999_000, an hour long. */
const aTask = (resources: TaskFacts['resources']): TaskFacts => ({ id: 'task-1', purpose: 'p', resources, createdAt: 1_799_999_000, expiresAt: 1_800_002_600, tokensMinted: 0, approved: false })

/** The decision logic the configuration's grants had before Cedar: the oracle the generated policies must agree with. */
function grantOracle(action: PolicyAction, resource: ResourceConfig, { workload, scopes, delegate }: PolicyContext): Decision {
  const d = { reason: '', version: '', policies: [] }
  if (!workload.enabled) return { ...d, allow: false, code: 'unauthorized_client' }
  // A delegation: exactly the workloads of `delegateTo`, on any resource, without constraints.
  if (action === 'task.delegate') return delegate && workload.delegateTo.includes(delegate.id) ? { ...d, allow: true, constraints: { maxTtl: undefined, dpopRequired: false, approvalRequired: false } } : { ...d, allow: false, code: 'unauthorized_client' }
  const grant = workload.grants.find((g) => g.resource === resource.uri)
  if (!grant) return { ...d, allow: false, code: 'invalid_target' }
  if (scopes.some((s) => !grant.scopes.includes(s) || !resource.scopes.includes(s))) return { ...d, allow: false, code: action === 'tool.call' ? 'invalid_target' : 'invalid_scope' }
  const ttls = [resource.maxTtl, workload.maxTtl].filter((t): t is number => t !== undefined)
  return {
    ...d,
    allow: true,
    constraints: { maxTtl: ttls.length ? Math.min(...ttls) : undefined, dpopRequired: resource.requireDpop || workload.requireDpop, approvalRequired: action === 'task.open' && resource.requireApproval },
  }
}

const strip = (d: Decision) => (d.allow ? { allow: true, constraints: d.constraints } : { allow: false, code: d.code })

describe('generated default policies', () => {
  it('decide exactly as the grants do, for every workload × resource × scope set × action, constraints included', async () => {
    const keys = await testKeys()
    const base = testConfig(keys)
    const config: Config = parseConfig({
      ...base,
      workloads: [
        ...base.workloads!.map((w) => (w.id === 'agent-b' ? { ...w, maxTtl: 200, requireDpop: true, delegateTo: ['agent-a', 'agent-c'] } : w.id === 'agent-a' ? { ...w, delegateTo: ['agent-b'] } : w)),
        // A second grant for the same resource: the first one is the workload's grant (as before).
        { id: 'agent-c', attestation: { issuer: 'spiffe://test.example', subject: 'spiffe://test.example/agent/c' }, grants: [{ resource: NOTES, scopes: ['notes:read', 'notes:unknown'] }, { resource: NOTES, scopes: ['notes:write'] }] },
      ],
      resources: base.resources!.map((r) => (r.uri === NOTES ? { ...r, maxTtl: 120 } : r.uri === CALENDAR ? { ...r, requireApproval: true, requireDpop: true, maxTtl: 600 } : r)),
    })
    // Cedar on the generated set, against the old grant logic and against the native evaluator the
    // broker uses when the set is only the generated one.
    const policy = cedarOverGrants(config)
    const native = createGrantPolicy(generatedSet(config).version)
    const scopeSets = [[], ['notes:read'], ['notes:read', 'notes:write'], ['notes:delete'], ['notes:unknown'], ['cal:read'], ['x:read'], ['cal:read', 'notes:read']]
    let cases = 0
    for (const workload of config.workloads as WorkloadConfig[]) {
      for (const resource of config.resources) {
        for (const scopes of scopeSets) {
          for (const action of ['task.open', 'token.exchange', 'tool.call', 'task.delegate'] as const) {
            for (const dpopBound of [false, true]) {
              const tool = action === 'tool.call' ? { tool: 'read_note' } : {}
              // A delegation to each workload in turn (dpopBound picks one of two per case).
              const delegate = action === 'task.delegate' ? { delegate: (config.workloads as WorkloadConfig[]).find((w) => w.id === (dpopBound ? 'agent-b' : 'agent-c'))! } : {}
              const context: PolicyContext = { workload, scopes, dpopBound, now: 1_800_000_000, task: aTask([{ resource: resource.uri, scopes }]), sessionStartedAt: 1_799_990_000, callerAddress: '::ffff:127.0.0.1', ...tool, ...delegate }
              const got = policy.decide({ user: 'alice', issuer: 'https://idp.test.example', sid: 'sess-1' }, action, resource, context)
              assert.deepEqual(strip(got), strip(grantOracle(action, resource, context)), `${workload.id} ${action} ${resource.uri} [${scopes.join(' ')}]`)
              const fast = native.decide({ user: 'alice', issuer: 'https://idp.test.example', sid: 'sess-1' }, action, resource, context)
              assert.deepEqual(strip(fast), strip(got), `native ${workload.id} ${action} ${resource.uri} [${scopes.join(' ')}]`)
              if (got.allow && fast.allow) assert.equal(fast.reason, got.reason, 'the native evaluator names the same generated policy')
              assert.deepEqual(fast.policies, got.policies, 'and the same deciding policies')
              assert.equal(fast.version, got.version, 'of the same set version')
              cases++
            }
          }
        }
      }
    }
    assert.equal(cases, 4 * 3 * 8 * 4 * 2)
  })

  it('over HTTP: a grant is permitted and the audit row names the generated policy', () =>
    withBroker(undefined, async (b) => {
      const res = await b.exchange({ scope: 'notes:read' })
      assert.equal(res.status, 200)
      assert.match(String((await b.lastAudit())!.reason), new RegExp(`^permitted by policy grant/agent-a/${NOTES.replace(/[/.]/g, '\\$&')}`))
    }))

  it('over HTTP: no grant → 400 invalid_target; scope beyond the grant → 400 invalid_scope; nothing issued', () =>
    withBroker(undefined, async (b) => {
      let before = await counts(b)
      let res = await b.exchange({ resource: UNGRANTED, scope: 'x:read' })
      assert.equal(res.status, 400)
      assert.equal((await json(res)).error, 'invalid_target')
      await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /agent-a has no grant for https:\/\/ungranted\.test\.example\/mcp$/ })
      before = await counts(b)
      res = await b.exchange({ scope: 'notes:read notes:delete' })
      assert.equal(res.status, 400)
      assert.equal((await json(res)).error, 'invalid_scope')
      await assertRefusedAndAudited(b, before, { error: 'invalid_scope', reason: /beyond the workload's grant: notes:delete$/ })
    }))

  it('over HTTP: a disabled workload → 400 unauthorized_client, nothing written (the policy refuses it too: see the table above)', () =>
    withBroker(undefined, async (b) => {
      const before = await counts(b)
      const res = await b.exchange({ actor_token: await b.svid('off') })
      assert.equal(res.status, 400)
      assert.equal((await json(res)).error, 'unauthorized_client')
      assert.deepEqual(await counts(b), before)
    }))

  it('over HTTP: the constraints of the config carry over — resource maxTtl caps the lifetime, approval makes the task wait', () =>
    withBroker(
      (c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === NOTES ? { ...r, maxTtl: 90 } : r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }),
      async (b) => {
        const res = await b.exchange({ ttl: '600' } as Record<string, string>)
        assert.equal(res.status, 200)
        assert.equal((await json(res)).expires_in, 90)
        const task = await openTask(b, { purpose: 'calendar', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] })
        assert.equal(task.status, 201)
        assert.equal((await json(task)).status, 'pending_approval')
      },
    ))

  it('policies of other resources are not in a resource’s bucket: adding them leaves its preparsed set unchanged', async () => {
    const keys = await testKeys()
    const base = parseConfig(testConfig(keys))
    const many = Array.from({ length: 200 }, (_, i) => ({ uri: `https://r${i}.test.example/mcp`, scopes: ['r:read'], requireApproval: false, requireDpop: false }))
    const big: Config = { ...base, resources: [...base.resources, ...many], workloads: base.workloads.map((w) => (w.id === 'agent-b' ? { ...w, grants: [...w.grants, ...many.map((r) => ({ resource: r.uri, scopes: ['r:read'] }))] } : w)) }
    const small = generatedSet(base)
    const large = generatedSet(big)
    assert.equal(large.policies.size, small.policies.size + 200)
    assert.deepEqual(large.byResource.get(NOTES), small.byResource.get(NOTES), 'NOTES is decided by the same small set')
    const decision = createPolicyEngine(big).decide({ user: 'alice', issuer: 'i', sid: undefined }, 'token.exchange', big.resources.find((r) => r.uri === NOTES)!, { workload: big.workloads[0]!, scopes: ['notes:read'], dpopBound: false, now: 1, task: aTask([{ resource: NOTES, scopes: ['notes:read'] }]) })
    assert.equal(decision.allow, true)
  })
})

describe('deployment policies from policies.file', () => {
  const dpopForWrites = `@id("no-bearer-writes")
forbid (principal, action == Taskpass::Action::"exchange", resource)
when { context.scopes.contains("notes:write") && !context.dpop_bound };`

  it('a forbid refuses the exchange → 400 invalid_target, nothing issued, the audit row names the policy; control: a read passes', () =>
    withBroker(withPolicies(dpopForWrites), async (b) => {
      const before = await counts(b)
      const res = await b.exchange({ scope: 'notes:write' })
      assert.equal(res.status, 400)
      assert.equal((await json(res)).error, 'invalid_target')
      await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /^forbidden by policy no-bearer-writes$/ })
      const ok = await b.exchange({ scope: 'notes:read' })
      assert.equal(ok.status, 200)
    }))

  it('@error on a forbid chooses the error: invalid_scope', () =>
    withBroker(withPolicies(`@error("invalid_scope")\n${dpopForWrites}`), async (b) => {
      const before = await counts(b)
      const res = await b.exchange({ scope: 'notes:write' })
      assert.equal(res.status, 400)
      assert.equal((await json(res)).error, 'invalid_scope')
      await assertRefusedAndAudited(b, before, { error: 'invalid_scope', reason: /no-bearer-writes/ })
    }))

  it('a forbid on open_task refuses POST /tasks → 400, no task, audited with the policy id', () =>
    withBroker(withPolicies(`@id("no-bob") forbid (principal, action == Taskpass::Action::"open_task", resource) when { context.user.subject == "bob" };`), async (b) => {
      const before = await counts(b)
      const res = await openTask(b, { purpose: 'x', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session: await b.session({ sub: 'bob' }) })
      assert.equal(res.status, 400)
      assert.equal((await json(res)).error, 'invalid_target')
      await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /forbidden by policy no-bob/, action: 'task.open' })
      assert.equal((await openTask(b, { purpose: 'x', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })).status, 201)
    }))

  it('@max_ttl on a permit caps the token lifetime (added to the defaults: the strictest matching permit wins)', () =>
    withBroker(
      withPolicies(`@id("short-notes") @max_ttl("45")
permit (principal, action in [Taskpass::Action::"open_task", Taskpass::Action::"exchange"], resource == Taskpass::Resource::"${NOTES}")
when { ["notes:read"].containsAll(context.scopes) };`),
      async (b) => {
        const res = await b.exchange({ scope: 'notes:read', ttl: '300' } as Record<string, string>)
        assert.equal(res.status, 200)
        assert.equal((await json(res)).expires_in, 45)
        assert.match(String((await b.lastAudit())!.reason), /short-notes/)
        // The other permit does not match notes:write: only the generated grant's (absent) limit applies.
        const write = await b.exchange({ scope: 'notes:write', ttl: '300' } as Record<string, string>)
        assert.equal((await json(write)).expires_in, 300)
      },
    ))

  it('replaceDefaults: only the file decides — its permit (with @max_ttl) allows, the grants no longer do', () =>
    withBroker(
      withPolicies(
        `@id("agent-a-reads-notes") @max_ttl("120")
permit (principal == Taskpass::Workload::"agent-a", action in [Taskpass::Action::"open_task", Taskpass::Action::"exchange"], resource == Taskpass::Resource::"${NOTES}")
when { ["notes:read"].containsAll(context.scopes) };`,
        { replaceDefaults: true },
      ),
      async (b) => {
        const res = await b.exchange({ scope: 'notes:read' })
        assert.equal(res.status, 200)
        assert.equal((await json(res)).expires_in, 120)
        let before = await counts(b)
        const write = await b.exchange({ scope: 'notes:write' })
        assert.equal((await json(write)).error, 'invalid_scope')
        await assertRefusedAndAudited(b, before, { error: 'invalid_scope', reason: /scope/ })
        before = await counts(b)
        const cal = await b.exchange({ resource: CALENDAR, scope: 'cal:read' })
        assert.equal((await json(cal)).error, 'invalid_target')
        await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /no grant for https:\/\/calendar/ })
      },
    ))

  it('the example file docs/examples/policies.cedar loads; business hours use context.time (UTC)', () =>
    withBroker(
      (c) => ({ ...c, policies: { file: examplePolicies } }),
      async (b: TestBroker) => {
        // T0 is 08:00 UTC: inside business hours.
        assert.equal((await b.exchange({ scope: 'notes:read' })).status, 200)
        let before = await counts(b)
        const write = await b.exchange({ scope: 'notes:write' })
        assert.equal((await json(write)).error, 'invalid_scope')
        await assertRefusedAndAudited(b, before, { error: 'invalid_scope', reason: /^forbidden by policy dpop-for-writes$/ })
        b.clock.advance(12 * 3600) // 20:00 UTC
        before = await counts(b)
        const late = await b.exchange({ scope: 'notes:read' })
        assert.equal(late.status, 400)
        assert.equal((await json(late)).error, 'invalid_target')
        await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /^forbidden by policy business-hours$/ })
      },
    ))
})

describe('session claims as User tags (subjectIssuers[].policyClaims)', () => {
  const financeOnly = `@id("finance-only") forbid (principal, action == Taskpass::Action::"exchange", resource)
unless { context.user.hasTag("department") && context.user.getTag("department") == "finance" };`
  it('a mapped claim decides; an unmapped claim is invisible to policy; a non-scalar claim is left out', () =>
    withBroker(
      (c) => ({ ...withPolicies(financeOnly)(c), subjectIssuers: c.subjectIssuers!.map((i) => ({ ...i, policyClaims: ['department', 'groups'] })) }),
      async (b) => {
        assert.equal((await b.exchange({ subject_token: await b.session({ department: 'finance' }) })).status, 200)
        let before = await counts(b)
        const other = await b.exchange({ subject_token: await b.session({ department: 'sales' }) })
        assert.equal(other.status, 400)
        await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /^forbidden by policy finance-only$/ })
        before = await counts(b)
        const none = await b.exchange({ subject_token: await b.session({ team: 'finance', groups: ['finance'] }) })
        assert.equal(none.status, 400)
        await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /finance-only/ })
      },
    ))

  it('without policyClaims no claim reaches policy', () =>
    withBroker(withPolicies(financeOnly), async (b) => {
      const res = await b.exchange({ subject_token: await b.session({ department: 'finance' }) })
      assert.equal(res.status, 400)
    }))
})

describe('docs/policy.md', () => {
  it('shows the example policy file as it is', () => {
    const page = readFileSync(new URL('../docs/policy.md', import.meta.url), 'utf8')
    const shown = /is a working example[\s\S]*?```cedar\n([\s\S]*?)```/.exec(page)?.[1]
    assert.ok(shown, 'the example block is on the page')
    assert.ok(readFileSync(examplePolicies, 'utf8').includes(shown), 'the page shows the file verbatim')
  })

  it('shows the generated delegation policy as the broker generates it', async () => {
    const page = readFileSync(new URL('../docs/policy.md', import.meta.url), 'utf8')
    const shown = /`grant\/<workload id>\/delegation`:\n\n```cedar\n([\s\S]*?)\n```/.exec(page)?.[1]
    assert.ok(shown, 'the block is on the page')
    const base = testConfig(await testKeys())
    const config = parseConfig({ ...base, workloads: base.workloads!.map((w) => (w.id === 'agent-a' ? { ...w, delegateTo: ['agent-b'] } : w)) })
    assert.equal(shown, delegationPolicy(config.workloads[0]!).text)
  })
})

describe('a bad policy is a start-up ConfigError', () => {
  const refuses = async (text: string, message: RegExp, extra: { replaceDefaults?: boolean } = {}) => {
    await assert.rejects(createTestBroker({ config: withPolicies(text, extra) }), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e))
      assert.match(e.message, message)
      return true
    })
  }

  it('a syntax error, with file, line and column', () => refuses('permit (principal, action, resource);\nforbid (principal, action, resource) when { context.', /p\d+\.cedar:2:\d+: /))

  it('a schema violation (an attribute the schema lacks), naming the policy and its position', () =>
    refuses('@id("typo") forbid (principal, action == Taskpass::Action::"exchange", resource) when { context.dpop_boud };', /policy typo: .*p\d+\.cedar:1:\d+: .*dpop_boud/))

  it('a context attribute used with an action that lacks it (complete_task has no dpop_bound)', () => refuses('@id("all-actions") forbid (principal, action, resource) unless { context.dpop_bound };', /policy all-actions: .*dpop_bound/))

  it('a bad constraint annotation', () => refuses('@id("bad-ttl") @max_ttl("ten minutes") permit (principal, action == Taskpass::Action::"exchange", resource);', /policy bad-ttl: @max_ttl\("ten minutes"\) must be a positive whole number/))

  it('a bad @error', () => refuses('@id("bad-error") @error("access_denied") forbid (principal, action == Taskpass::Action::"exchange", resource);', /@error\("access_denied"\) must be invalid_target/))

  it('a duplicate id, and a resource that is not registered', async () => {
    await refuses('@id("x") forbid (principal, action == Taskpass::Action::"exchange", resource);\n@id("x") forbid (principal, action == Taskpass::Action::"open_task", resource);', /policy x .*duplicate policy id/)
    await refuses('forbid (principal, action == Taskpass::Action::"exchange", resource == Taskpass::Resource::"https://nowhere.example/mcp");', /p\d+\.cedar#1 .*unknown resource https:\/\/nowhere\.example\/mcp/)
  })

  it('an unreadable file; replaceDefaults without a file', async () => {
    await assert.rejects(createTestBroker({ config: (c) => ({ ...c, policies: { file: join(dir, 'missing.cedar') } }) }), (e: unknown) => e instanceof ConfigError && /policies\.file: cannot read .*missing\.cedar/.test(e.message))
    const keys = await testKeys()
    assert.throws(() => parseConfig({ ...testConfig(keys), policies: { replaceDefaults: true } }), (e: unknown) => e instanceof ConfigError && /policies\.replaceDefaults: replaceDefaults needs a policy file/.test(e.message))
  })
})

describe('@constraint_only permits', () => {
  const constraintOnly = (extra = '') => `@id("short") @max_ttl("30") ${extra}
permit (principal, action in [Taskpass::Action::"open_task", Taskpass::Action::"exchange"], resource);`
  it('add their constraints to what the grants permit, and permit nothing by themselves', () =>
    withBroker(withPolicies(constraintOnly('@constraint_only("true")')), async (b) => {
      const res = await b.exchange({ scope: 'notes:read', ttl: '300' } as Record<string, string>)
      assert.equal(res.status, 200)
      assert.equal(((await res.json()) as { expires_in: number }).expires_in, 30, 'the constraint applies')
      let before = await counts(b)
      const ungranted = await b.exchange({ resource: UNGRANTED, scope: 'x:read' })
      assert.equal(((await ungranted.json()) as { error: string }).error, 'invalid_target')
      await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /has no grant for/ })
      before = await counts(b)
      const beyond = await b.exchange({ scope: 'notes:delete' })
      assert.equal(((await beyond.json()) as { error: string }).error, 'invalid_scope')
      await assertRefusedAndAudited(b, before, { error: 'invalid_scope', reason: /beyond the workload's grant: notes:delete/ })
    }))
  it('control: the same permit without @constraint_only permits the ungranted resource', () =>
    withBroker(withPolicies(constraintOnly()), async (b) => {
      assert.equal((await b.exchange({ resource: UNGRANTED, scope: 'x:read' })).status, 200)
    }))
})

describe('the requests the broker asks Cedar are shaped by the schema', () => {
  it('every action, with and without each optional part, validates against the shipped schema (decisions skip that check)', async () => {
    const keys = await testKeys()
    const base = testConfig(keys)
    const config = parseConfig({ ...base, workloads: base.workloads!.map((w) => (w.id === 'agent-a' ? { ...w, delegateTo: ['agent-b'] } : w)) })
    const set = generatedSet(config)
    const prepared = prepare(set, `policy-test:${++slots}`)
    const resource = config.resources.find((r) => r.uri === NOTES)!
    const attestations: (PolicyContext['attestation'])[] = [
      undefined,
      { kind: 'spiffe', issuer: 'spiffe://test.example', subject: 'spiffe://test.example/agent/a' },
      { kind: 'kubernetes', issuer: 'https://k8s.example', subject: 'system:serviceaccount:prod:agent', kubernetes: { namespace: 'prod', serviceAccount: 'agent', pod: 'agent-1' } },
      { kind: 'github', issuer: 'https://token.actions.githubusercontent.com', subject: 'repo:acme/x:ref:refs/heads/main', github: { repository: 'acme/x', repositoryOwner: 'acme', ref: 'refs/heads/main', environment: 'prod', workflowRef: 'acme/x/.github/workflows/d.yml@refs/heads/main', event: 'push' } },
      { kind: 'github', issuer: 'https://token.actions.githubusercontent.com', subject: 'repo:acme/x', github: { repository: 'acme/x', repositoryOwner: 'acme' } },
    ]
    let asked = 0
    for (const action of ['task.open', 'token.exchange', 'tool.call', 'task.delegate'] as const) {
      for (const attestation of attestations) {
        for (const optional of [false, true]) {
          const context: PolicyContext = {
            workload: config.workloads[0]!,
            scopes: ['notes:read'],
            dpopBound: optional,
            now: 1_800_000_000,
            attestation,
            task: { ...aTask([{ resource: NOTES, scopes: ['notes:read'], ...(optional ? { tools: ['read_note'] } : {}) }]), ...(optional ? { depth: 1, parentId: 'task-0' } : {}) },
            ...(optional ? { ttl: 60, sessionStartedAt: 1_799_990_000, callerAddress: '::ffff:10.1.2.3' } : {}),
            ...(action === 'tool.call' ? { tool: 'read_note' } : {}),
            ...(action === 'task.delegate' ? { delegate: config.workloads[1]! } : {}),
          }
          const principal = { user: 'alice', issuer: USER_ISSUER, sid: optional ? 'sess-1' : undefined, ...(optional ? { claims: { department: 'finance' } } : {}) }
          const request = cedarRequest(principal, action, NOTES, resource.scopes, context, () => 'spiffe')
          const answer = statefulIsAuthorized({ ...request, preparsedPolicySetId: prepared.buckets.get(NOTES)!, preparsedSchemaName: 'taskpass', validateRequest: true })
          assert.equal(answer.type, 'success', `${action} ${attestation?.kind ?? 'no attestation'} optional=${optional}: ${JSON.stringify(answer.type === 'failure' ? answer.errors : '')}`)
          if (answer.type === 'success') assert.equal(answer.response.decision, 'allow', 'and the grant permits it')
          asked++
        }
      }
    }
    assert.equal(asked, 4 * 5 * 2)
  })
})
