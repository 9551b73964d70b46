import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { decodeJwt } from 'jose'

/** Runs the admin CLI in dev mode against its own data directory. */
function cli(dataDir: string, ...args: string[]) {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, TASKPASS_DATA_DIR: dataDir, TASKPASS_CONFIG: '' },
  })
  return { status: run.status, stdout: run.stdout, stderr: run.stderr }
}

describe('admin CLI (dev mode)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskpass-cli-'))

  it('dev-tokens prints a session token and a JWT-SVID for the dev issuers, and a working curl', () => {
    const out = cli(dir, 'dev-tokens')
    assert.equal(out.status, 0, out.stderr)
    const session = /export SUBJECT_TOKEN='([^']+)'/.exec(out.stdout)?.[1]
    const svid = /export ACTOR_TOKEN='([^']+)'/.exec(out.stdout)?.[1]
    assert.ok(session && svid)
    assert.equal(decodeJwt(session).sub, 'alice')
    assert.equal(decodeJwt(session).aud, 'http://127.0.0.1:8787')
    assert.equal(decodeJwt(svid).sub, 'spiffe://dev.taskpass.local/agent/demo')
    assert.match(out.stdout, /curl -s http:\/\/127\.0\.0\.1:8787\/token/)
  })

  it('hash-secret prints an argon2id hash', () => {
    const out = cli(dir, 'hash-secret', 's3cret')
    assert.equal(out.status, 0)
    assert.match(out.stdout, /^\$argon2id\$/)
  })

  it('keys: list shows current, next and standby; rotate is refused while the next key is fresh, --force rotates and warns', () => {
    const listed = JSON.parse(cli(dir, 'keys', 'list').stdout) as { keys: { kid: string }[] }
    assert.equal(listed.keys.length, 3)
    const early = cli(dir, 'keys', 'rotate')
    assert.equal(early.status, 1)
    assert.match(early.stderr, /published for less than 300 s/)
    const forced = cli(dir, 'keys', 'rotate', '--force')
    assert.equal(forced.status, 0, forced.stderr)
    const result = JSON.parse(forced.stdout) as { retired: string; current: string; next: string; warning?: string; verifiers_may_refuse_for_seconds?: number }
    assert.deepEqual([result.retired, result.current, result.next], [listed.keys[0]!.kid, listed.keys[1]!.kid, listed.keys[2]!.kid])
    // The keys were generated seconds ago: the answer and stderr say verifiers may refuse new tokens.
    assert.ok((result.verifiers_may_refuse_for_seconds ?? 0) > 250, forced.stdout)
    assert.match(forced.stderr, /^warning: the new signing key \S+ has been in the JWKS for only \d+ s: .*refuses new tokens/m)
    const audit = cli(dir, 'audit').stdout.trim().split('\n').map((l) => JSON.parse(l) as { action: string; reason: string })
    assert.deepEqual(audit.map((e) => e.action), ['keys.rotate'])
    assert.match(audit[0]!.reason, /forced.*only \d+ s/)
  })

  it('keys revoke <kid>: unpublishes the key at once, promotes the next one with a warning; unknown or revoked kids fail and change nothing', () => {
    const [current, next] = (JSON.parse(cli(dir, 'keys', 'list').stdout) as { keys: { kid: string }[] }).keys.map((k) => k.kid)
    const out = cli(dir, 'keys', 'revoke', current!)
    assert.equal(out.status, 0, out.stderr)
    const result = JSON.parse(out.stdout) as { kid: string; was: string; tokens_revoked: number; current: string }
    assert.deepEqual([result.kid, result.was, result.tokens_revoked, result.current], [current, 'current', 0, next])
    assert.match(out.stderr, /^warning: the new signing key /m)
    const after = cli(dir, 'keys', 'list').stdout
    assert.ok(!after.includes(current!))

    const again = cli(dir, 'keys', 'revoke', current!)
    assert.equal(again.status, 1)
    assert.match(again.stderr, /key_already_revoked/)
    const unknown = cli(dir, 'keys', 'revoke', 'no-such-kid')
    assert.equal(unknown.status, 1)
    assert.match(unknown.stderr, /not_found/)
    assert.equal(cli(dir, 'keys', 'revoke').status, 64, 'a kid is required')
    assert.equal(cli(dir, 'keys', 'list').stdout, after, 'the refusals changed nothing')
    const actions = cli(dir, 'audit').stdout.trim().split('\n').map((l) => (JSON.parse(l) as { action: string }).action)
    assert.deepEqual(actions, ['keys.rotate', 'keys.revoke'])
  })

  it('unknown commands say so, print the usage and exit 64; -h/--help print it on stdout (exit 0); --version prints the version', () => {
    const out = cli(dir, 'frobnicate')
    assert.equal(out.status, 64)
    assert.match(out.stderr, /^taskpass: unknown command "frobnicate"\n/)
    assert.match(out.stderr, /taskpass CLI/)
    for (const flag of ['-h', '--help', 'help']) {
      const help = cli(dir, flag)
      assert.equal(help.status, 0, flag)
      assert.match(help.stdout, /taskpass CLI/)
      assert.equal(help.stderr, '')
    }
    const version = cli(dir, '--version')
    assert.equal(version.status, 0)
    assert.equal(version.stdout.trim(), (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version)
  })

  it('audit verify checks the chain (exit 0), names the first bad row after a raw edit (exit 1); tasks evidence prints a signed story', () => {
    cli(dir, 'keys', 'list')
    const intact = cli(dir, 'audit', 'verify')
    assert.equal(intact.status, 0, intact.stderr)
    assert.equal((JSON.parse(intact.stdout) as { ok: boolean }).ok, true)
    const db = new Database(join(dir, 'taskpass.db'))
    const first = (db.prepare('select id from audit_events where hash is not null order by id limit 1').get() as { id: number } | undefined)?.id
    assert.ok(first !== undefined, 'the earlier commands left audit rows')
    db.prepare("update audit_events set reason = 'edited' where id = ?").run(first)
    db.close()
    const broken = cli(dir, 'audit', 'verify')
    assert.equal(broken.status, 1)
    assert.deepEqual((JSON.parse(broken.stdout) as { first_bad: { id: number; problem: string } }).first_bad, { id: first, problem: 'edited', detail: 'its content does not match its hash' })
    const missing = cli(dir, 'tasks', 'evidence', 'no-such-task')
    assert.equal(missing.status, 1)
    assert.equal(JSON.parse(missing.stderr).error, 'not_found')
  })

  it('every failure is one JSON line on stderr in the HTTP API\'s shape; output uses its field names', () => {
    const missing = cli(dir, 'tasks', 'show', 'no-such-task')
    assert.equal(missing.status, 1)
    assert.deepEqual(JSON.parse(missing.stderr), { error: 'not_found', error_description: 'task not found' })
    const revoked = cli(dir, 'tasks', 'revoke', 'no-such-task')
    assert.equal(revoked.status, 1)
    assert.equal(JSON.parse(revoked.stderr).error, 'not_found')
    const bad = cli(dir, 'audit', 'x')
    assert.equal(bad.status, 64)
    const listed = JSON.parse(cli(dir, 'tasks', 'list').stdout) as { tasks: unknown[] }
    assert.ok(Array.isArray(listed.tasks))
    const events = cli(dir, 'audit').stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
    for (const e of events) for (const k of Object.keys(e)) assert.match(k, /^[a-z_]+$/, `snake_case audit field ${k}`)
  })
})

describe('admin CLI: approvals', () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskpass-cli-approvals-'))

  /** Stores a pending_approval task straight into the dev database (as the broker would on POST /tasks). */
  function pendingTask(id: string) {
    const db = new Database(join(dir, 'taskpass.db'))
    const now = Math.floor(Date.now() / 1000)
    db.prepare(
      `insert into tasks (id, user_sub, subject_issuer, sid, workload_id, purpose, resources, status, created_at, expires_at, tokens_minted, approval_expires_at)
       values (?, 'alice', 'dev', 'sess-1', 'demo', 'cal', '[]', 'pending_approval', ?, ?, 0, ?)`,
    ).run(id, now, now + 3600, now + 900)
    db.close()
  }
  const show = (id: string) => JSON.parse(cli(dir, 'tasks', 'show', id).stdout) as { status: string; end_reason?: string }

  it('tasks approve <id> [reason…] and tasks deny <id> <reason…>: decided once, audited; refusals change nothing', () => {
    assert.equal(cli(dir, 'keys', 'list').status, 0, 'creates the dev database')
    pendingTask('task-approve')
    pendingTask('task-deny')

    const approved = cli(dir, 'tasks', 'approve', 'task-approve', 'looks', 'right')
    assert.equal(approved.status, 0, approved.stderr)
    assert.equal((JSON.parse(approved.stdout) as { status: string }).status, 'active')

    assert.equal(cli(dir, 'tasks', 'deny', 'task-deny').status, 64, 'a reason is required')
    assert.equal(show('task-deny').status, 'pending_approval')
    const denied = cli(dir, 'tasks', 'deny', 'task-deny', 'not', 'this', 'week')
    assert.equal(denied.status, 0, denied.stderr)
    const view = JSON.parse(denied.stdout) as { status: string; end_reason: string }
    assert.deepEqual([view.status, view.end_reason], ['denied', 'denied by admin:cli: not this week'])

    for (const [how, id] of [['approve', 'task-deny'], ['deny', 'task-approve'], ['approve', 'task-approve']] as const) {
      const again = cli(dir, 'tasks', how, id, 'again')
      assert.equal(again.status, 1, `${how} ${id}`)
      assert.match(again.stderr, /task_not_active/)
    }
    assert.deepEqual([show('task-approve').status, show('task-deny').status], ['active', 'denied'])
    const listed = (JSON.parse(cli(dir, 'tasks', 'list', 'denied').stdout) as { tasks: { task_id: string }[] }).tasks
    assert.deepEqual(listed.map((t) => t.task_id), ['task-deny'])

    const audit = cli(dir, 'audit').stdout.trim().split('\n').map((l) => JSON.parse(l) as { action: string; decision: string; reason: string; error: string | null })
    assert.deepEqual(audit.map((e) => `${e.action}:${e.decision}:${e.error ?? ''}`), ['task.approve:allow:', 'task.deny:allow:', 'task.approve:deny:task_not_active', 'task.deny:deny:task_not_active', 'task.approve:deny:task_not_active'])
    assert.equal(audit[0]!.reason, 'approved by admin:cli: looks right')
  })
})
