/**
 * One admin policy at a time (docs/policy.md "One policy at a time"): read any policy in force,
 * create, replace, disable, enable and delete an admin policy — each validated whole with the rest
 * of the set, stored, audited with the policy before and after, in force for the next decision;
 * the file's and the generated policies are read-only. A change stored by another process is put
 * in force by the refresh, without a reload. The CLI has a command per route.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, describe, it } from 'node:test'
import { argon2Hasher } from '../src/broker.js'
import type { ConfigInput } from '../src/config.js'
import { disabledBlock } from '../src/policy/admin-text.js'
import { refreshPolicies } from '../src/policy/manage.js'
import { ADMIN_KEY, adminRequest as admin, counts, createTestBroker, devCli as cli, NOTES, openTask, withBroker, type TestBroker } from './harness.js'

const dir = mkdtempSync(join(tmpdir(), 'taskpass-policy-crud-'))
const AUDITOR = 'tpa_auditor-key-crud-0123456789'
let auditorHash: string

const NO_BEARER_WRITES = `@id("no-bearer-writes") @error("invalid_scope")
forbid (principal, action == Taskpass::Action::"exchange", resource)
when { context.scopes.contains("notes:write") && !context.dpop_bound };`
/** The same rule without its @id: PUT /admin/policies/{id} gives it the path's. */
const UNNAMED_NO_BEARER_WRITES = NO_BEARER_WRITES.replace('@id("no-bearer-writes") ', '')
const NO_TASKS = `@id("no-tasks") forbid (principal, action == Taskpass::Action::"open_task", resource);`

const path = (id: string) => `/admin/policies/${encodeURIComponent(id)}`
const policySetRows = async (b: TestBroker) => ((await b.rawQuery('select count(*) as n from policy_sets'))[0] as { n: number }).n
const writeStatus = async (b: TestBroker) => (await b.exchange({ scope: 'notes:write' })).status
const openStatus = async (b: TestBroker) => (await openTask(b, { purpose: 'crud', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })).status
const listed = async (b: TestBroker) => (await admin(b, 'GET', '/admin/policies')).body.policies as { id: string; source: string; disabled: boolean; text: string }[]

/** What a refused change must leave: the stored text, the version in force, the rows. */
async function snapshot(b: TestBroker) {
  return { admin: b.deps.policy.adminText, version: b.deps.policy.version, rows: await policySetRows(b), counts: await counts(b) }
}

describe('admin API: one policy at a time', () => {
  before(async () => {
    auditorHash = await argon2Hasher.hash(AUDITOR)
  })

  it('PUT creates (201) then replaces (200) one admin policy; the next exchange is decided by it; GET reads it', () =>
    withBroker(undefined, async (b) => {
      assert.equal(await writeStatus(b), 200, 'control: writes pass before')
      const created = await admin(b, 'PUT', path('no-bearer-writes'), { policy: NO_BEARER_WRITES })
      assert.equal(created.status, 201, JSON.stringify(created.body))
      assert.equal(created.body.id, 'no-bearer-writes')
      assert.equal(created.body.action, 'create')
      assert.equal(created.body.version, b.deps.policy.version)
      const policy = created.body.policy as Record<string, unknown>
      assert.deepEqual([policy.id, policy.source, policy.effect, policy.disabled, policy.text], ['no-bearer-writes', 'admin', 'forbid', false, NO_BEARER_WRITES])
      assert.equal(await writeStatus(b), 400, 'in force for the next exchange')
      const got = await admin(b, 'GET', path('no-bearer-writes'))
      assert.equal(got.status, 200)
      assert.deepEqual(got.body, policy)
      // Replaced: a permit-side change of the same id; the version moves, the rule is gone.
      const relaxed = NO_BEARER_WRITES.replace('notes:write', 'notes:delete')
      const replaced = await admin(b, 'PUT', path('no-bearer-writes'), { policy: relaxed })
      assert.equal(replaced.status, 200)
      assert.equal(replaced.body.action, 'replace')
      assert.notEqual(replaced.body.version, created.body.version)
      assert.equal(await writeStatus(b), 200)
      assert.equal((await listed(b)).filter((p) => p.id === 'no-bearer-writes').length, 1)
    }))

  it('PUT without an @id takes the path\'s; an @id other than the path\'s → 400 invalid_policy, nothing changed', () =>
    withBroker(undefined, async (b) => {
      const made = await admin(b, 'PUT', path('no-bearer-writes'), { policy: UNNAMED_NO_BEARER_WRITES })
      assert.equal(made.status, 201)
      assert.equal((made.body.policy as { text: string }).text, `@id("no-bearer-writes")\n${UNNAMED_NO_BEARER_WRITES}`)
      assert.equal(await writeStatus(b), 400)
      const was = await snapshot(b)
      const other = await admin(b, 'PUT', path('something-else'), { policy: NO_BEARER_WRITES })
      assert.equal(other.status, 400)
      assert.equal(other.body.error, 'invalid_policy')
      assert.match((other.body.problems as string[])[0]!, /@id\("no-bearer-writes"\) is not the path's something-else/)
      assert.deepEqual(await snapshot(b), was)
    }))

  it('GET /admin/policies/{id} reads any policy in force (generated, file, admin) for any role; unknown → 404 not_found', async () => {
    const file = join(dir, `file-${randomBytes(4).toString('hex')}.cedar`)
    writeFileSync(file, NO_TASKS.replace('no-tasks', 'file-rule'))
    await withBroker((c) => ({ ...c, policies: { file }, admin: { ...c.admin, keys: [{ name: 'audit-1', role: 'auditor' as const, hash: auditorHash }] } }), async (b) => {
      const generated = await admin(b, 'GET', path(`grant/agent-a/${NOTES}`), undefined, AUDITOR)
      assert.equal(generated.status, 200)
      assert.deepEqual([generated.body.source, generated.body.effect, generated.body.disabled], ['(generated)', 'permit', false])
      const fromFile = await admin(b, 'GET', path('file-rule'), undefined, AUDITOR)
      assert.equal(fromFile.status, 200)
      assert.equal(fromFile.body.source, file)
      const unknown = await admin(b, 'GET', path('no-such-policy'), undefined, AUDITOR)
      assert.equal(unknown.status, 404)
      assert.equal(unknown.body.error, 'not_found')
    })
  })

  it('disable takes a policy out of force for the next decision and keeps it listed (disabled: true); enable restores it and its version', () =>
    withBroker(undefined, async (b) => {
      const generatedOnly = b.deps.policy.version
      await admin(b, 'PUT', path('no-tasks'), { policy: NO_TASKS })
      const withIt = b.deps.policy.version
      assert.equal(await openStatus(b), 400, 'control: the forbid decides')
      const off = await admin(b, 'POST', `${path('no-tasks')}/disable`)
      assert.equal(off.status, 200)
      assert.equal(off.body.action, 'disable')
      assert.equal((off.body.policy as { disabled: boolean }).disabled, true)
      assert.equal(b.deps.policy.version, generatedOnly, 'the set in force no longer has it')
      assert.equal(await openStatus(b), 201, 'the next open_task is not decided by it')
      const entry = (await listed(b)).find((p) => p.id === 'no-tasks')!
      assert.deepEqual([entry.source, entry.disabled, entry.text], ['admin', true, NO_TASKS])
      assert.equal((await admin(b, 'GET', path('no-tasks'))).body.disabled, true)
      // Disabled again: already so, nothing written.
      const rows = await policySetRows(b)
      assert.equal((await admin(b, 'POST', `${path('no-tasks')}/disable`)).status, 200)
      assert.equal(await policySetRows(b), rows)
      const on = await admin(b, 'POST', `${path('no-tasks')}/enable`)
      assert.equal(on.status, 200)
      assert.equal(on.body.action, 'enable')
      assert.equal(b.deps.policy.version, withIt)
      assert.equal(await openStatus(b), 400)
    }))

  it('enable of a policy that no longer validates (its resource deleted meanwhile) → 400 invalid_policy; it stays disabled, nothing changed', () =>
    withBroker(undefined, async (b) => {
      const extra = 'https://extra.test.example/mcp'
      assert.equal((await admin(b, 'POST', '/admin/resources', { uri: extra, scopes: ['x:read'] })).status, 201)
      const policy = `@id("extra-off") forbid (principal, action, resource == Taskpass::Resource::"${extra}");`
      assert.equal((await admin(b, 'PUT', path('extra-off'), { policy })).status, 201)
      assert.equal((await admin(b, 'POST', `${path('extra-off')}/disable`)).status, 200)
      // Disabled, it is a comment to Cedar: the resource may go.
      assert.equal((await admin(b, 'DELETE', `/admin/resources/${encodeURIComponent(extra)}`)).status, 200)
      const was = await snapshot(b)
      const r = await admin(b, 'POST', `${path('extra-off')}/enable`)
      assert.equal(r.status, 400)
      assert.equal(r.body.error, 'invalid_policy')
      assert.ok((r.body.problems as string[]).some((p) => p.includes(`unknown resource ${extra}`)), JSON.stringify(r.body.problems))
      assert.deepEqual(await snapshot(b), was)
      assert.equal((await admin(b, 'GET', path('extra-off'))).body.disabled, true)
    }))

  it('DELETE removes an admin policy (enabled or disabled); then it is 404', () =>
    withBroker(undefined, async (b) => {
      await admin(b, 'PUT', path('no-bearer-writes'), { policy: NO_BEARER_WRITES })
      await admin(b, 'PUT', path('no-tasks'), { policy: NO_TASKS })
      await admin(b, 'POST', `${path('no-tasks')}/disable`)
      const gone = await admin(b, 'DELETE', path('no-bearer-writes'))
      assert.equal(gone.status, 200)
      assert.deepEqual([gone.body.action, gone.body.policy], ['delete', undefined])
      assert.equal(await writeStatus(b), 200)
      assert.equal((await admin(b, 'DELETE', path('no-tasks'))).status, 200)
      assert.equal(b.deps.policy.adminText.trim(), '')
      for (const [method, p] of [['GET', path('no-tasks')], ['DELETE', path('no-tasks')], ['POST', `${path('no-tasks')}/disable`], ['POST', `${path('no-tasks')}/enable`]] as const) {
        const r = await admin(b, method, p)
        assert.equal(r.status, 404, `${method} ${p}`)
        assert.equal(r.body.error, 'not_found')
      }
    }))

  it('each change is audited (policy.<action>) with who, the policy and its before/after in detail, and the versions', () =>
    withBroker(undefined, async (b) => {
      const v0 = b.deps.policy.version
      await admin(b, 'PUT', path('no-tasks'), { policy: NO_TASKS })
      const v1 = b.deps.policy.version
      let row = (await b.lastAudit())!
      assert.equal(row.action, 'policy.create')
      assert.equal(row.reason, `policy no-tasks created by admin:key0: ${v0} → ${v1}`)
      assert.equal(row.policy_version, v1)
      let detail = JSON.parse(String(row.detail)) as { kind: string; key: string; before: unknown; after: { text: string; disabled: boolean } }
      assert.deepEqual([detail.kind, detail.key, detail.before, detail.after.text, detail.after.disabled], ['policy', 'no-tasks', null, NO_TASKS, false])
      await admin(b, 'POST', `${path('no-tasks')}/disable`)
      row = (await b.lastAudit())!
      assert.equal(row.action, 'policy.disable')
      detail = JSON.parse(String(row.detail)) as typeof detail
      assert.deepEqual([(detail.before as { disabled: boolean }).disabled, detail.after.disabled], [false, true])
      await admin(b, 'DELETE', path('no-tasks'))
      row = (await b.lastAudit())!
      assert.equal(row.action, 'policy.delete')
      detail = JSON.parse(String(row.detail)) as typeof detail
      assert.deepEqual([(detail.before as { text: string }).text, detail.after], [NO_TASKS, null])
      const view = await admin(b, 'GET', '/admin/audit')
      const events = view.body.events as { action: string; detail?: unknown }[]
      assert.deepEqual(events.filter((e) => e.action.startsWith('policy.')).map((e) => e.action), ['policy.create', 'policy.disable', 'policy.delete'])
      assert.equal((await admin(b, 'GET', '/admin/audit/verify')).body.ok, true)
    }))

  it('an invalid change → 400 invalid_policy naming the problem; stored text, version and audit rows unchanged', () =>
    withBroker(undefined, async (b) => {
      await admin(b, 'PUT', path('no-bearer-writes'), { policy: NO_BEARER_WRITES })
      for (const [id, text, problem] of [
        ['broken', 'forbid (principal, action, resource) when { context.', /admin/],
        ['typo', 'forbid (principal, action == Taskpass::Action::"exchange", resource) when { context.dpop_boud };', /dpop_boud/],
        ['nowhere', 'forbid (principal, action, resource == Taskpass::Resource::"https://nowhere.example/mcp");', /unknown resource/],
        ['two', `${NO_TASKS}\n@id("two") permit (principal, action, resource);`, /exactly one Cedar policy/],
        ['none', '// nothing', /exactly one Cedar policy/],
        [`grant/agent-a/${NOTES}x`, 'forbid (principal, action, resource);', /reserved/],
      ] as const) {
        const was = await snapshot(b)
        const r = await admin(b, 'PUT', path(id), { policy: text })
        assert.equal(r.status, 400, id)
        assert.equal(r.body.error, 'invalid_policy', id)
        assert.ok((r.body.problems as string[]).some((p) => problem.test(p)), `${id}: ${JSON.stringify(r.body.problems)}`)
        assert.deepEqual(await snapshot(b), was, `${id}: nothing changed`)
      }
      assert.equal(await writeStatus(b), 400, 'the running set still decides')
    }))

  it('a body that is not {"policy": text} → 400 invalid_request, nothing changed', () =>
    withBroker(undefined, async (b) => {
      const was = await snapshot(b)
      for (const body of [{}, { policy: 1 }, { policy: NO_TASKS, extra: true }, { policies: NO_TASKS }]) {
        const r = await admin(b, 'PUT', path('no-tasks'), body)
        assert.equal(r.status, 400, JSON.stringify(body))
        assert.equal(r.body.error, 'invalid_request')
      }
      assert.deepEqual(await snapshot(b), was)
    }))

  it('the file\'s and the generated policies, and an admin policy without its own @id, are read-only: 409 conflict, nothing changed', async () => {
    const file = join(dir, `ro-${randomBytes(4).toString('hex')}.cedar`)
    writeFileSync(file, NO_TASKS.replace('no-tasks', 'file-rule'))
    await withBroker((c) => ({ ...c, policies: { file } }), async (b) => {
      await admin(b, 'PUT', '/admin/policies', { policies: 'forbid (principal, action == Taskpass::Action::"exchange", resource) when { context.scopes.contains("notes:delete") };' })
      const [unnamed] = (await listed(b)).filter((p) => p.source === 'admin')
      assert.equal(unnamed!.id, 'admin#1')
      for (const [id, why] of [['file-rule', /the policy file's/], [`grant/agent-a/${NOTES}`, /generated from the configuration's grants/], ['admin#1', /has no @id/]] as const) {
        for (const [method, suffix, body] of [['PUT', '', { policy: 'forbid (principal, action, resource);' }], ['DELETE', '', undefined], ['POST', '/disable', undefined], ['POST', '/enable', undefined]] as const) {
          const was = await snapshot(b)
          const r = await admin(b, method, `${path(id)}${suffix}`, body)
          assert.equal(r.status, 409, `${method} ${id}${suffix}`)
          assert.equal(r.body.error, 'conflict')
          assert.match(String(r.body.error_description), why)
          assert.deepEqual(await snapshot(b), was)
        }
      }
    })
  })

  it('an auditor reads but every write is 403 insufficient_scope, audited, nothing else changed', () =>
    withBroker((c) => ({ ...c, admin: { ...c.admin, keys: [{ name: 'audit-1', role: 'auditor' as const, hash: auditorHash }] } }), async (b) => {
      await admin(b, 'PUT', path('no-tasks'), { policy: NO_TASKS })
      assert.equal((await admin(b, 'GET', path('no-tasks'), undefined, AUDITOR)).status, 200)
      for (const [method, suffix, body] of [['PUT', '', { policy: NO_TASKS }], ['PUT', '-new', { policy: 'forbid (principal, action, resource);' }], ['DELETE', '', undefined], ['POST', '/disable', undefined], ['POST', '/enable', undefined]] as const) {
        const was = await snapshot(b)
        const res = await b.app.request(`${path('no-tasks')}${suffix}`, { method, headers: { authorization: `Bearer ${AUDITOR}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) })
        assert.equal(res.status, 403, `${method} ${suffix}`)
        assert.equal(((await res.json()) as { error: string }).error, 'insufficient_scope')
        assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer error="insufficient_scope"/)
        const now = await snapshot(b)
        assert.deepEqual({ ...now, counts: { ...now.counts, audit_events: was.counts.audit_events } }, was)
        assert.equal(now.counts.audit_events, was.counts.audit_events + 1)
        const row = (await b.lastAudit())!
        assert.deepEqual([row.action, row.decision], ['admin.refuse', 'deny'])
        assert.match(String(row.reason), /needs admin$/)
      }
    }))

  it('a disabled policy stays disabled across a restart', async () => {
    const database = join(dir, `restart-${randomBytes(4).toString('hex')}.db`)
    const kek = randomBytes(32).toString('base64url')
    const config = (c: ConfigInput): ConfigInput => ({ ...c, database, keys: { kek } })
    const first = await createTestBroker({ config })
    await admin(first, 'PUT', path('no-tasks'), { policy: NO_TASKS })
    await admin(first, 'PUT', path('no-bearer-writes'), { policy: NO_BEARER_WRITES })
    await admin(first, 'POST', `${path('no-tasks')}/disable`)
    const version = first.deps.policy.version
    await first.close()
    await withBroker({ config }, async (b) => {
      assert.equal(b.deps.policy.version, version)
      assert.equal((await admin(b, 'GET', path('no-tasks'))).body.disabled, true)
      assert.equal(await openStatus(b), 201)
      assert.equal(await writeStatus(b), 400)
      assert.equal((await admin(b, 'POST', `${path('no-tasks')}/enable`)).status, 200)
      assert.equal(await openStatus(b), 400)
    })
  })

  it('PUT /admin/policies with the whole text keeps the disabled blocks; a malformed block → 400 invalid_policy', () =>
    withBroker(undefined, async (b) => {
      await admin(b, 'PUT', path('no-tasks'), { policy: NO_TASKS })
      await admin(b, 'POST', `${path('no-tasks')}/disable`)
      const whole = b.deps.policy.adminText
      const reloaded = await admin(b, 'PUT', '/admin/policies', { policies: whole })
      assert.equal(reloaded.status, 200)
      assert.equal((await admin(b, 'GET', path('no-tasks'))).body.disabled, true)
      const was = await snapshot(b)
      for (const text of [
        whole.replace(/\/\/ taskpass:disabled-end .*/, ''),
        `${whole}\n${NO_TASKS}`,
        whole.replace('@id("no-tasks")', '@id("other")'),
      ]) {
        const r = await admin(b, 'PUT', '/admin/policies', { policies: text })
        assert.equal(r.status, 400, text)
        assert.equal(r.body.error, 'invalid_policy')
        assert.deepEqual(await snapshot(b), was)
      }
    }))
})

describe('admin policies stored by another process are put in force without a reload', () => {
  it('two brokers on one database: a change at one is in force at the other after its refresh', async () => {
    const database = join(dir, `two-${randomBytes(4).toString('hex')}.db`)
    const kek = randomBytes(32).toString('base64url')
    const config = (c: ConfigInput): ConfigInput => ({ ...c, database, keys: { kek } })
    const a = await createTestBroker({ config })
    const b = await createTestBroker({ config })
    try {
      assert.equal(await writeStatus(b), 200)
      await admin(a, 'PUT', path('no-bearer-writes'), { policy: NO_BEARER_WRITES })
      assert.equal(await writeStatus(b), 200, 'not yet taken up')
      assert.equal(await refreshPolicies(b.deps), true)
      assert.equal(b.deps.policy.version, a.deps.policy.version)
      assert.equal(await writeStatus(b), 400, 'in force at the other broker')
      assert.equal(await refreshPolicies(b.deps), false, 'nothing new: nothing done')
      await admin(a, 'POST', `${path('no-bearer-writes')}/disable`)
      assert.equal(await refreshPolicies(b.deps), true)
      assert.equal(await writeStatus(b), 200)
      assert.equal((await admin(b, 'GET', path('no-bearer-writes'))).body.disabled, true)
      // A change at b builds on what a stored, even before b took it up.
      await admin(a, 'POST', `${path('no-bearer-writes')}/enable`)
      const made = await admin(b, 'PUT', path('no-tasks'), { policy: NO_TASKS })
      assert.equal(made.status, 201)
      assert.equal(await writeStatus(b), 400, 'a\'s enable is part of b\'s change')
      assert.equal(await refreshPolicies(a.deps), true)
      assert.equal(a.deps.policy.version, b.deps.policy.version)
    } finally {
      await a.close()
      await b.close()
    }
  })

  it('stored admin policies that do not validate here leave the running set in force, logged once', async () => {
    const database = join(dir, `bad-${randomBytes(4).toString('hex')}.db`)
    const kek = randomBytes(32).toString('base64url')
    const extra = 'https://extra.test.example/mcp'
    const a = await createTestBroker({ config: (c) => ({ ...c, database, keys: { kek }, resources: [...c.resources!, { uri: extra, scopes: ['x:read'] }] }) })
    const b = await createTestBroker({ config: (c) => ({ ...c, database, keys: { kek } }) })
    try {
      await admin(a, 'PUT', path('extra-off'), { policy: `forbid (principal, action, resource == Taskpass::Resource::"${extra}");` })
      const version = b.deps.policy.version
      assert.equal(await refreshPolicies(b.deps), false)
      assert.equal(await refreshPolicies(b.deps), false)
      assert.equal(b.deps.policy.version, version)
      assert.equal(b.logs.filter((l) => l.msg === 'the stored admin policies do not validate: the running set stays in force').length, 1)
    } finally {
      await a.close()
      await b.close()
    }
  })
})

describe('policy CLI: one command per route, the API\'s fields', () => {
  it('put, get, disable, enable, delete; refusals as the API\'s error line', () => {
    const data = mkdtempSync(join(tmpdir(), 'taskpass-policy-cli-'))
    const file = join(data, 'no-tasks.cedar')
    writeFileSync(file, NO_TASKS)
    const run = (args: string[], input?: string) => {
      const out = cli(data, [...args, '--json'], input)
      assert.equal(out.status, 0, `${args.join(' ')}: ${out.stderr}`)
      return JSON.parse(out.stdout) as Record<string, unknown>
    }
    const made = run(['policy', 'put', 'no-tasks', file])
    assert.deepEqual([made.id, made.action, (made.policy as { text: string }).text], ['no-tasks', 'create', NO_TASKS])
    const fromStdin = run(['policy', 'put', 'no-bearer-writes', '-'], UNNAMED_NO_BEARER_WRITES)
    assert.equal(fromStdin.action, 'create')
    assert.equal((run(['policy', 'get', 'no-tasks']) as { source: string }).source, 'admin')
    assert.equal(((run(['policy', 'disable', 'no-tasks'])).policy as { disabled: boolean }).disabled, true)
    assert.equal((run(['policy', 'get', 'no-tasks']) as { disabled: boolean }).disabled, true)
    assert.equal(((run(['policy', 'enable', 'no-tasks'])).policy as { disabled: boolean }).disabled, false)
    assert.equal(run(['policy', 'delete', 'no-tasks']).action, 'delete')
    const audit = cli(data, ['audit']).stdout.trim().split('\n').map((l) => JSON.parse(l) as { action: string; reason: string })
    assert.deepEqual(audit.filter((e) => e.action.startsWith('policy.')).map((e) => e.action), ['policy.create', 'policy.create', 'policy.disable', 'policy.enable', 'policy.delete'])
    assert.ok(audit.filter((e) => e.action.startsWith('policy.')).every((e) => / by admin:cli: /.test(e.reason)))

    const missing = cli(data, ['policy', 'get', 'no-tasks'])
    assert.equal(missing.status, 1)
    assert.equal((JSON.parse(missing.stderr.trim()) as { error: string }).error, 'not_found')
    const invalid = cli(data, ['policy', 'put', 'broken', '-'], 'forbid (principal, action, resource')
    assert.equal(invalid.status, 2)
    assert.equal((JSON.parse(invalid.stderr.trim()) as { error: string }).error, 'invalid_policy')
    // validate checks what a load checks, the disabled blocks too.
    const orphan = join(data, 'orphan.cedar')
    writeFileSync(orphan, `${NO_TASKS}\n// taskpass:disabled-begin gone\n`)
    const unsure = cli(data, ['policy', 'validate', orphan])
    assert.equal(unsure.status, 2, unsure.stdout)
    assert.match((JSON.parse(unsure.stderr.trim()) as { problems: string[] }).problems[0]!, /not part of a well-formed disabled block/)
    assert.equal(cli(data, ['policy', 'put', 'no-file']).status, 64)
    assert.equal(cli(data, ['policy', 'disable']).status, 64)
  })
})

describe('docs/policy.md "One policy at a time"', () => {
  const page = readFileSync(new URL('../docs/policy.md', import.meta.url), 'utf8')
  const section = /## One policy at a time\n([\s\S]*?)\n## /.exec(page)![1]!
  const example = readFileSync(new URL('../docs/examples/admin-policy.cedar', import.meta.url), 'utf8').trim()

  it('shows docs/examples/admin-policy.cedar disabled as the broker keeps it', async () => {
    const shown = /```cedar\n([\s\S]*?)\n```/.exec(section)![1]!
    assert.equal(shown, disabledBlock('no-bearer-writes', example))
    await withBroker(undefined, async (b) => {
      await admin(b, 'PUT', path('no-bearer-writes'), { policy: example })
      await admin(b, 'POST', `${path('no-bearer-writes')}/disable`)
      assert.equal(b.deps.policy.adminText.trim(), shown)
    })
  })

  it('the commands it shows run as written, each answer in the API\'s fields, each change audited', () => {
    const data = mkdtempSync(join(tmpdir(), 'taskpass-policy-doc-'))
    const block = /```sh\n([\s\S]*?)```/.exec(section)![1]!
    const commands = block.trim().split('\n').map((line) => {
      assert.match(line, /^npm run cli -- /)
      return line.replace(/^npm run cli -- /, '').split(' ')
    })
    assert.deepEqual(commands.map((c) => c[1]), ['put', 'get', 'disable', 'enable', 'delete'])
    const answers = commands.map((args) => {
      const out = cli(data, [...args, '--json'])
      assert.equal(out.status, 0, `${args.join(' ')}: ${out.stderr}`)
      return JSON.parse(out.stdout) as Record<string, unknown>
    })
    assert.deepEqual(answers.map((a) => a.action ?? a.source), ['create', 'admin', 'disable', 'enable', 'delete'])
    assert.equal((answers[0]!.policy as { text: string }).text, example)
    const audit = cli(data, ['audit']).stdout.trim().split('\n').map((l) => JSON.parse(l) as { action: string })
    assert.deepEqual(audit.filter((e) => e.action.startsWith('policy.')).map((e) => e.action), ['policy.create', 'policy.disable', 'policy.enable', 'policy.delete'])
  })
})
