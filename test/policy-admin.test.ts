/**
 * Policies at run time (docs/policy.md "Loading policies", "Dry run"): the admin API replaces the
 * admin policies — validated whole, refused with positions, the running set kept — and every
 * decision's audit row names the set version and the deciding policies; the dry run answers what
 * the real request would get, writing nothing.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import Database from 'better-sqlite3'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { decodeJwt } from 'jose'
import type { ConfigInput } from '../src/config.js'
import { ADMIN_KEY, adminRequest as admin, CALENDAR, counts, createTestBroker, NOTES, openTask, T0, USER_ISSUER, withBroker, type TestBroker } from './harness.js'

const dir = mkdtempSync(join(tmpdir(), 'taskpass-policy-admin-'))

const NO_BEARER_WRITES = `@id("no-bearer-writes") @error("invalid_scope")
forbid (principal, action == Taskpass::Action::"exchange", resource)
when { context.scopes.contains("notes:write") && !context.dpop_bound };`

const policySetRows = async (b: TestBroker) => ((await b.rawQuery('select count(*) as n from policy_sets'))[0] as { n: number }).n

describe('admin API: the policy set in force', () => {
  it('GET /admin/policies shows the version and every policy with its source; an admin key is required', () =>
    withBroker(undefined, async (b) => {
      const { status, body } = await admin(b, 'GET', '/admin/policies')
      assert.equal(status, 200)
      assert.match(String(body.version), /^ps_[A-Za-z0-9_-]{22}$/)
      assert.equal(body.version, b.deps.policy.version)
      const policies = body.policies as { id: string; source: string; effect: string }[]
      assert.ok(policies.some((p) => p.id === `grant/agent-a/${NOTES}` && p.source === '(generated)' && p.effect === 'permit'))
      assert.equal(body.admin_policies, '')
      const anon = await b.app.request('/admin/policies')
      assert.equal(anon.status, 401)
    }))

  it('PUT /admin/policies puts a set in force for the next decision, stores it, audits the change with both versions', () =>
    withBroker(undefined, async (b) => {
      assert.equal((await b.exchange({ scope: 'notes:write' })).status, 200, 'control: writes pass before')
      const before = b.deps.policy.version
      const { status, body } = await admin(b, 'PUT', '/admin/policies', { policies: NO_BEARER_WRITES })
      assert.equal(status, 200)
      assert.notEqual(body.version, before)
      assert.equal(b.deps.policy.version, body.version)
      assert.ok((body.policies as { id: string; source: string }[]).some((p) => p.id === 'no-bearer-writes' && p.source === 'admin'))
      assert.equal(body.admin_loaded_by, 'admin:key0')
      const audit = (await b.lastAudit())!
      assert.equal(audit.action, 'policy.load')
      assert.match(String(audit.reason), new RegExp(`admin policies loaded by admin:key0: ${before} → ${body.version}`))
      assert.equal(audit.policy_version, body.version)
      const refused = await b.exchange({ scope: 'notes:write' })
      assert.equal(refused.status, 400)
      assert.equal(((await refused.json()) as { error: string }).error, 'invalid_scope')
      const row = (await b.lastAudit())!
      assert.equal(row.policies, 'no-bearer-writes')
      assert.equal(row.policy_version, body.version)
      // "" clears them: back to the generated set (the same version as before).
      const cleared = await admin(b, 'PUT', '/admin/policies', { policies: '' })
      assert.equal(cleared.body.version, before)
      assert.equal((await b.exchange({ scope: 'notes:write' })).status, 200)
    }))

  it('an invalid set → 400 invalid_policy with the position and message; nothing stored, the running set still decides', () =>
    withBroker(undefined, async (b) => {
      await admin(b, 'PUT', '/admin/policies', { policies: NO_BEARER_WRITES })
      const version = b.deps.policy.version
      const rows = await policySetRows(b)
      for (const [text, problem] of [
        ['permit (principal, action, resource);\nforbid (principal, action, resource) when { context.', /admin:2:\d+: /],
        ['@id("typo") forbid (principal, action == Taskpass::Action::"exchange", resource) when { context.dpop_boud };', /policy typo: admin:1:\d+: .*dpop_boud/],
        ['@id("x") @max_ttl("soon") permit (principal, action == Taskpass::Action::"exchange", resource);', /policy x: @max_ttl\("soon"\) must be/],
        [`@id("grant/agent-a/${NOTES}") forbid (principal, action == Taskpass::Action::"exchange", resource);`, /duplicate policy id/],
        ['forbid (principal, action == Taskpass::Action::"exchange", resource == Taskpass::Resource::"https://nowhere.example/mcp");', /unknown resource https:\/\/nowhere\.example\/mcp/],
      ] as const) {
        const before = await counts(b)
        const { status, body } = await admin(b, 'PUT', '/admin/policies', { policies: text })
        assert.equal(status, 400, text)
        assert.equal(body.error, 'invalid_policy')
        assert.ok((body.problems as string[]).some((p) => problem.test(p)), `${JSON.stringify(body.problems)} ~ ${problem}`)
        assert.deepEqual(await counts(b), before, 'no audit row, nothing written')
        assert.equal(await policySetRows(b), rows, 'nothing stored')
        assert.equal(b.deps.policy.version, version, 'the running set is kept')
      }
      const still = await b.exchange({ scope: 'notes:write' })
      assert.equal(((await still.json()) as { error: string }).error, 'invalid_scope', 'and still decides')
    }))

  it('PUT with a body that is not {"policies": text} → 400 invalid_request', () =>
    withBroker(undefined, async (b) => {
      for (const body of [{}, { policies: 1 }, { policies: '', extra: true }]) {
        const r = await admin(b, 'PUT', '/admin/policies', body)
        assert.equal(r.status, 400)
        assert.equal(r.body.error, 'invalid_request')
      }
    }))

  it('policy sets get their own body limit (policies.maxBodyBytes): above the broker-wide one is accepted, above it → 413, nothing stored', () =>
    withBroker((c) => ({ ...c, bodyLimit: 4096, policies: { maxBodyBytes: 32_768 } }), async (b) => {
      // Valid Cedar of about 10 KB: a comment pads one forbid.
      const padded = `// ${'x'.repeat(10_000)}\n${NO_BEARER_WRITES}`
      const ok = await admin(b, 'PUT', '/admin/policies', { policies: padded })
      assert.equal(ok.status, 200, 'above the broker-wide 4 KiB, within the policy limit')
      const rows = await policySetRows(b)
      const big = await admin(b, 'PUT', '/admin/policies', { policies: `// ${'x'.repeat(40_000)}\n${NO_BEARER_WRITES}` })
      assert.equal(big.status, 413)
      assert.equal(big.body.error, 'invalid_request')
      assert.equal(await policySetRows(b), rows, 'nothing stored')
      // Other routes keep the broker-wide limit.
      const other = await b.app.request('/admin/sessions/revoke', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ issuer: 'x', sid: 'y'.repeat(5000) }) })
      assert.equal(other.status, 413)
    }))

  it('admin policies survive a restart (stored in the database)', async () => {
    const database = join(dir, `restart-${randomBytes(4).toString('hex')}.db`)
    const kek = randomBytes(32).toString('base64url')
    const config = (c: Parameters<NonNullable<Parameters<typeof createTestBroker>[0]>['config'] & object>[0]) => ({ ...c, database, keys: { kek } })
    const first = await createTestBroker({ config })
    const loaded = await admin(first, 'PUT', '/admin/policies', { policies: NO_BEARER_WRITES })
    await first.close()
    await withBroker({ config }, async (b) => {
      assert.equal(b.deps.policy.version, loaded.body.version)
      const res = await b.exchange({ scope: 'notes:write' })
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_scope')
    })
  })

  it('POST /admin/policies/reload re-reads the policy file: a good file takes effect, a bad one → 400 and the old set stays', async () => {
    const file = join(dir, `reload-${randomBytes(4).toString('hex')}.cedar`)
    writeFileSync(file, '// nothing yet\n')
    await withBroker((c) => ({ ...c, policies: { file } }), async (b) => {
      assert.equal((await b.exchange({ scope: 'notes:write' })).status, 200)
      writeFileSync(file, NO_BEARER_WRITES)
      const r = await admin(b, 'POST', '/admin/policies/reload')
      assert.equal(r.status, 200)
      assert.ok((r.body.policies as { source: string }[]).some((p) => p.source === file))
      assert.equal((await b.lastAudit())!.action, 'policy.load')
      assert.equal((await b.exchange({ scope: 'notes:write' })).status, 400)
      const version = b.deps.policy.version
      writeFileSync(file, 'forbid (principal, action, resource')
      const bad = await admin(b, 'POST', '/admin/policies/reload')
      assert.equal(bad.status, 400)
      assert.equal(bad.body.error, 'invalid_policy')
      assert.equal(b.deps.policy.version, version)
      assert.equal((await b.exchange({ scope: 'notes:read' })).status, 200)
    })
  })
})

describe('audit rows name the policy set version and the deciding policies', () => {
  it('task.open and token.exchange, allow and deny', () =>
    withBroker(undefined, async (b) => {
      const version = b.deps.policy.version
      assert.equal((await openTask(b, { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })).status, 201)
      let row = (await b.lastAudit())!
      assert.equal(row.action, 'task.open')
      assert.equal(row.policy_version, version)
      assert.equal(row.policies, `grant/agent-a/${NOTES}`)
      assert.equal((await b.exchange({ scope: 'notes:read' })).status, 200)
      row = (await b.lastAudit())!
      assert.deepEqual([row.action, row.decision, row.policy_version, row.policies], ['token.exchange', 'allow', version, `grant/agent-a/${NOTES}`])
      // A deny by no permit: the version, and no deciding policy.
      assert.equal((await b.exchange({ scope: 'notes:delete' })).status, 400)
      row = (await b.lastAudit())!
      assert.deepEqual([row.decision, row.error, row.policy_version, row.policies], ['deny', 'invalid_scope', version, null])
    }))
})

/** A dry run through the admin API. */
async function evaluate(b: TestBroker, body: Record<string, unknown>) {
  return admin(b, 'POST', '/admin/policy/evaluate', { user: { issuer: USER_ISSUER, subject: 'alice' }, workload: 'agent-a', ...body })
}

describe('dry run: POST /admin/policy/evaluate', () => {
  it('answers permit with the constraints, the lifetime and the deciding policy, and writes nothing', () =>
    withBroker((c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === NOTES ? { ...r, maxTtl: 120 } : r)) }), async (b) => {
      const before = await counts(b)
      const { status, body } = await evaluate(b, { action: 'exchange', resource: NOTES, scopes: ['notes:read'], ttl: 600 })
      assert.equal(status, 200)
      assert.deepEqual(body, {
        decision: 'permit',
        reason: `permitted by policy grant/agent-a/${NOTES}`,
        policies: [`grant/agent-a/${NOTES}`],
        policy_version: b.deps.policy.version,
        constraints: { max_ttl: 120, dpop_required: false, approval_required: false },
        ttl: 120,
        scope: 'notes:read',
        candidate: false,
      })
      assert.deepEqual(await counts(b), before, 'nothing written')
    }))

  it('forbid: the error and the deciding policy; open_task answers the status a task would open in', () =>
    withBroker((c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }), async (b) => {
      await admin(b, 'PUT', '/admin/policies', { policies: NO_BEARER_WRITES })
      const before = await counts(b)
      const write = await evaluate(b, { action: 'exchange', resource: NOTES, scopes: ['notes:write'] })
      assert.deepEqual([write.body.decision, write.body.error, write.body.policies], ['forbid', 'invalid_scope', ['no-bearer-writes']])
      const bound = await evaluate(b, { action: 'exchange', resource: NOTES, scopes: ['notes:write'], dpop_bound: true })
      assert.equal(bound.body.decision, 'permit')
      const cal = await evaluate(b, { action: 'open_task', task: { purpose: 'calendar', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] } })
      assert.deepEqual([cal.body.decision, cal.body.task_status], ['permit', 'pending_approval'])
      const none = await evaluate(b, { action: 'exchange', resource: NOTES, scopes: ['notes:delete'] })
      assert.deepEqual([none.body.decision, none.body.error, none.body.policies], ['forbid', 'invalid_scope', []])
      assert.deepEqual(await counts(b), before, 'nothing written')
    }))

  it('call_tool: a tool outside the task’s declared tools is refused, one inside is permitted', () =>
    withBroker(undefined, async (b) => {
      const task = { purpose: 'read a note', resources: [{ resource: NOTES, scopes: ['notes:read'], tools: ['read_note'] }] }
      const ok = await evaluate(b, { action: 'call_tool', resource: NOTES, tool: 'read_note', task })
      assert.equal(ok.body.decision, 'permit')
      const out = await evaluate(b, { action: 'call_tool', resource: NOTES, tool: 'delete_note', task })
      assert.deepEqual([out.body.decision, out.body.error], ['forbid', 'invalid_target'])
      assert.match(String(out.body.reason), /delete_note is not among the tools/)
    }))

  it('a candidate set is decided with, not loaded; an invalid candidate → 400 invalid_policy', () =>
    withBroker(undefined, async (b) => {
      const version = b.deps.policy.version
      const r = await evaluate(b, { action: 'exchange', resource: NOTES, scopes: ['notes:write'], policies: NO_BEARER_WRITES })
      assert.deepEqual([r.body.decision, r.body.candidate, r.body.policies], ['forbid', true, ['no-bearer-writes']])
      assert.notEqual(r.body.policy_version, version)
      assert.equal(b.deps.policy.version, version, 'the set in force is unchanged')
      assert.equal((await b.exchange({ scope: 'notes:write' })).status, 200)
      const bad = await evaluate(b, { action: 'exchange', resource: NOTES, policies: 'permit (' })
      assert.equal(bad.status, 400)
      assert.equal(bad.body.error, 'invalid_policy')
    }))

  it('time and context: `at`, `caller_address`, `session_age` and the task state reach the policy', () =>
    withBroker(undefined, async (b) => {
      await admin(b, 'PUT', '/admin/policies', {
        policies: `@id("office-net") forbid (principal, action == Taskpass::Action::"exchange", resource) unless { context has caller_address && context.caller_address.isInRange(ip("10.0.0.0/8")) };
@id("fresh-sessions") forbid (principal, action == Taskpass::Action::"exchange", resource) when { context has session_age && context.session_age > 28800 };
@id("three-tokens") forbid (principal, action == Taskpass::Action::"exchange", resource) when { context.task.tokens_minted >= 3 };
@id("nights") forbid (principal, action == Taskpass::Action::"exchange", resource) when { context.time.toTime() >= duration("22h") };`,
      })
      const ask = (extra: Record<string, unknown>) => evaluate(b, { action: 'exchange', resource: NOTES, scopes: ['notes:read'], caller_address: '10.1.2.3', session_age: 60, ...extra })
      assert.equal((await ask({})).body.decision, 'permit')
      assert.deepEqual((await ask({ caller_address: '192.0.2.1' })).body.policies, ['office-net'])
      assert.deepEqual((await ask({ session_age: 9 * 3600 })).body.policies, ['fresh-sessions'])
      assert.deepEqual((await ask({ task: { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }], tokens_minted: 3 } })).body.policies, ['three-tokens'])
      // T0 is 08:00 UTC; 15 hours later it is 23:00.
      assert.deepEqual((await ask({ at: T0 + 15 * 3600 })).body.policies, ['nights'])
    }))

  it('bad requests → 400 invalid_request (unknown workload, unknown issuer, no resource, bad address, task and task_id)', () =>
    withBroker(undefined, async (b) => {
      for (const body of [
        { action: 'exchange', resource: NOTES, workload: 'nobody' },
        { action: 'exchange', resource: NOTES, user: { issuer: 'https://elsewhere.example', subject: 'x' } },
        { action: 'exchange' },
        { action: 'exchange', resource: NOTES, caller_address: 'not-an-ip' },
        { action: 'call_tool', resource: NOTES },
        { action: 'exchange', resource: NOTES, task_id: 'x', task: { purpose: 'p', resources: [{ resource: NOTES }] } },
        { action: 'delete_everything', resource: NOTES },
      ]) {
        const before = await counts(b)
        const r = await evaluate(b, body)
        assert.equal(r.status, 400, JSON.stringify(body))
        assert.equal(r.body.error, 'invalid_request', JSON.stringify(body))
        assert.deepEqual(await counts(b), before)
      }
    }))
})

describe('dry run agrees with the real request', () => {
  // Each case: what the real exchange over HTTP answers, and what the dry run answers for the same question.
  const cases: { name: string; form: Record<string, string>; dry: Record<string, unknown> }[] = [
    { name: 'a granted read', form: { scope: 'notes:read' }, dry: { scopes: ['notes:read'] } },
    { name: 'a bearer write (forbidden)', form: { scope: 'notes:write' }, dry: { scopes: ['notes:write'] } },
    { name: 'a scope beyond the grant', form: { scope: 'notes:delete' }, dry: { scopes: ['notes:delete'] } },
    { name: 'an ungranted resource', form: { resource: CALENDAR.replace('calendar', 'ungranted'), scope: 'x:read' }, dry: { resource: CALENDAR.replace('calendar', 'ungranted'), scopes: ['x:read'] } },
    { name: 'a long ttl', form: { scope: 'notes:read', ttl: '4000' }, dry: { scopes: ['notes:read'], ttl: 4000 } },
  ]
  let lastSession: string | undefined
  it('for every case: the same permit/forbid, error, lifetime and deciding policies', () =>
    withBroker(undefined, async (b) => {
      await admin(b, 'PUT', '/admin/policies', { policies: NO_BEARER_WRITES })
      for (const c of cases) {
        const session = await b.session()
        lastSession = session
        const real = await b.exchange({ subject_token: session, ...c.form })
        const body = (await real.json()) as Record<string, unknown>
        const audit = (await b.lastAudit())!
        const { exp: sessionExp } = decodeJwt(String(lastSession))
        const dry = (await evaluate(b, { action: 'exchange', resource: NOTES, session_exp: sessionExp, attestation_exp: b.clock.now() + 300, ...c.dry })).body
        assert.equal(dry.decision, real.status === 200 ? 'permit' : 'forbid', c.name)
        if (real.status === 200) assert.equal(dry.ttl, body.expires_in, c.name)
        else assert.equal(dry.error, body.error, c.name)
        assert.deepEqual(dry.policies, audit.policies ? String(audit.policies).split(' ') : [], c.name)
        assert.equal(dry.policy_version, audit.policy_version, c.name)
      }
    }))
})

describe('CLI: policy show / validate / load / evaluate / clear', () => {
  const data = mkdtempSync(join(tmpdir(), 'taskpass-policy-cli-'))
  const cli = (...args: string[]) => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, TASKPASS_DATA_DIR: data, TASKPASS_CONFIG: '' } })
    return { status: run.status, stdout: run.stdout, stderr: run.stderr }
  }
  const file = (name: string, text: string) => {
    const path = join(data, name)
    writeFileSync(path, text)
    return path
  }
  const writes = `@id("no-writes") forbid (principal, action == Taskpass::Action::"exchange", resource) when { context.scopes.contains("notes:write") };`
  const question = (scopes: string[]) =>
    file(`q-${scopes.join('-')}.json`, JSON.stringify({ action: 'exchange', user: { issuer: 'https://users.dev.taskpass.local', subject: 'alice' }, workload: 'demo-agent', resource: 'http://127.0.0.1:8788/mcp', scopes }))

  it('stored admin policies that no longer validate stop the broker (and the CLI); `policy clear` recovers without starting it', () => {
    const broken = mkdtempSync(join(tmpdir(), 'taskpass-policy-cli-broken-'))
    const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, TASKPASS_DATA_DIR: broken, TASKPASS_CONFIG: '' } })
    assert.equal(run('policy', 'show').status, 0, 'creates the dev database')
    // As if the configuration changed under a stored set: it names a resource no longer registered.
    const db = new Database(join(broken, 'taskpass.db'))
    db.prepare('insert into policy_sets (version, text, loaded_at, loaded_by) values (?, ?, ?, ?)').run('ps_old', 'forbid (principal, action, resource == Taskpass::Resource::"https://gone.example/mcp");', 1, 'admin:test')
    db.close()
    const refused = run('policy', 'show')
    assert.equal(refused.status, 2, 'a configuration the broker refuses to start with')
    assert.equal(JSON.parse(refused.stderr).error, 'invalid_config')
    assert.match(refused.stderr, /unknown resource https:\/\/gone\.example\/mcp/)
    const cleared = run('policy', 'clear')
    assert.equal(cleared.status, 0, cleared.stderr)
    assert.deepEqual(JSON.parse(cleared.stdout), { admin_policies: '', cleared: 'offline' })
    const shown = run('policy', 'show')
    assert.equal(shown.status, 0, shown.stderr)
    assert.equal(JSON.parse(shown.stdout).admin_policies, '')
  })

  it('an invalid file is refused with its position (exit 2) and nothing is loaded; a valid one loads, decides the dry run, and clears', () => {
    const shown = cli('policy', 'show')
    assert.equal(shown.status, 0, shown.stderr)
    const version = JSON.parse(shown.stdout).version as string
    const bad = cli('policy', 'load', file('bad.cedar', 'forbid (principal, action, resource) when { context.'))
    assert.equal(bad.status, 2)
    const refusal = JSON.parse(bad.stderr) as { error: string; problems: string[] }
    assert.equal(refusal.error, 'invalid_policy')
    assert.match(refusal.problems[0]!, /admin:1:\d+/)
    assert.equal(JSON.parse(cli('policy', 'show').stdout).version, version)
    assert.equal(cli('policy', 'validate', file('good.cedar', writes)).status, 0)
    const loaded = cli('policy', 'load', join(data, 'good.cedar'))
    assert.equal(loaded.status, 0, loaded.stderr)
    assert.notEqual(JSON.parse(loaded.stdout).version, version)
    const forbid = JSON.parse(cli('policy', 'evaluate', question(['notes:write'])).stdout)
    assert.deepEqual([forbid.decision, forbid.policies], ['forbid', ['no-writes']])
    assert.equal(JSON.parse(cli('policy', 'evaluate', question(['notes:read'])).stdout).decision, 'permit')
    const cleared = cli('policy', 'clear')
    assert.equal(cleared.status, 0, cleared.stderr)
    assert.equal(JSON.parse(cleared.stdout).version, version)
  })
})

describe('docs/policy.md: the dry-run example', () => {
  it('is docs/examples/questions/dry-run.json verbatim, and the broker answers it as the page says', async () => {
    const page = readFileSync(new URL('../docs/policy.md', import.meta.url), 'utf8')
    const question = readFileSync(new URL('../docs/examples/questions/dry-run.json', import.meta.url), 'utf8')
    assert.ok(page.includes('```json\n' + question + '```'), 'the page shows the file verbatim')
    // The example's names: the test broker's issuer and resource renamed to the page's.
    const rename = (c: ConfigInput): ConfigInput => JSON.parse(JSON.stringify(c).replaceAll(USER_ISSUER, 'https://idp.example.com').replaceAll(NOTES, 'https://notes.example.com/mcp')) as ConfigInput
    await withBroker((c) => ({ ...rename(c), policies: { file: new URL('../docs/examples/policies.cedar', import.meta.url).pathname } }), async (b) => {
      const res = await b.app.request('/admin/policy/evaluate', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: question })
      const answer = (await res.json()) as Record<string, unknown>
      const shown = /it answers \(`policy_version` shortened\):\n\n```json\n([\s\S]*?)```/.exec(page)![1]!
      const expected = JSON.parse(shown.replace('"ps_…"', JSON.stringify(answer.policy_version))) as Record<string, unknown>
      assert.deepEqual(answer, expected)
    })
  })
})
