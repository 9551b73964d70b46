/**
 * The operator's admin API beyond one task: revoking every open task of a workload
 * (`POST /admin/tasks/revoke`, the CLI's `tasks revoke --workload`), the CLI's `tasks list`
 * filters (the API's, checked by the API's rules), and the signing keys' status
 * (`GET /admin/keys`, the CLI's `keys status`) — which shows no key material.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { argon2Hasher } from '../src/broker.js'
import { DEV } from '../src/dev/dev-setup.js'
import { TASK_QUERY_RULES } from '../src/routes/admin.js'
import { ADMIN_KEY, counts, devCli, NOTES, openTask, testConfig, withBroker, type TestBroker } from './harness.js'

const cli = (dataDir: string, ...args: string[]) => devCli(dataDir, args)

type Json = Record<string, unknown>

const AUDITOR = 'tpa_auditor-key-0123456789'
const OPERATOR = 'tpa_operator-key-0123456789'
let hashes: { auditor: string; operator: string }

const withRoles = (c: ReturnType<typeof testConfig>) => ({
  ...c,
  admin: { ...c.admin, keys: [{ name: 'audit-1', role: 'auditor' as const, hash: hashes.auditor }, { name: 'ops-1', role: 'operator' as const, hash: hashes.operator }] },
})

function as(b: TestBroker, key: string, method: string, path: string, body?: unknown, contentType = 'application/json') {
  return b.app.request(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': contentType } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  })
}

async function openFor(b: TestBroker, agent: string): Promise<string> {
  const res = await openTask(b, { purpose: 'admin api', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { svid: await b.svid(agent) })
  assert.equal(res.status, 201, await res.clone().text())
  return ((await res.json()) as { task_id: string }).task_id
}

async function exchangeIn(b: TestBroker, agent: string, taskId: string) {
  const res = await b.exchange({ actor_token: await b.svid(agent), task_id: taskId })
  return { status: res.status, json: (await res.json()) as Json }
}

const activeTokensOf = async (b: TestBroker, taskId: string) =>
  ((await b.rawQuery('select count(*) as n from tokens where task_id = ? and revoked_at is null', [taskId]))[0] as { n: number }).n

describe('POST /admin/tasks/revoke: every open task of a workload', () => {
  before(async () => {
    hashes = { auditor: await argon2Hasher.hash(AUDITOR), operator: await argon2Hasher.hash(OPERATOR) }
  })

  it('an operator revokes the workload\'s open tasks and their tokens (feed events, audit rows naming it); other workloads\' tasks stay; the next exchange is refused', () =>
    withBroker(withRoles, async (b) => {
      const first = await openFor(b, 'a')
      const second = await openFor(b, 'a')
      const other = await openFor(b, 'b')
      for (const [agent, id] of [['a', first], ['a', second], ['b', other]] as const) assert.equal((await exchangeIn(b, agent, id)).status, 200)
      const feed = await b.count('revocation_events')
      const audit = await b.count('audit_events')

      const res = await as(b, OPERATOR, 'POST', '/admin/tasks/revoke', { workload: 'agent-a' })
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('cache-control'), 'no-store')
      const body = (await res.json()) as { workload: string; tasks_revoked: string[] }
      assert.deepEqual({ ...body, tasks_revoked: [...body.tasks_revoked].sort() }, { workload: 'agent-a', tasks_revoked: [first, second].sort() })

      for (const id of [first, second]) {
        const row = (await b.deps.stores.tasks.get(id))!
        assert.equal(row.status, 'revoked')
        assert.equal(row.endReason, 'revoked by admin:ops-1')
        assert.equal(await activeTokensOf(b, id), 0, 'its tokens are revoked')
      }
      assert.equal((await b.deps.stores.tasks.get(other))!.status, 'active')
      assert.equal(await activeTokensOf(b, other), 1)
      const events = (await b.rawQuery('select kind, task_id from revocation_events order by id')).slice(feed) as { kind: string; task_id: string }[]
      assert.deepEqual(events.map((e) => `${e.kind}:${e.task_id}`).sort(), [first, second].map((id) => `task_revoked:${id}`).sort())
      const rows = (await b.rawQuery('select action, task_id, reason from audit_events order by id')).slice(audit) as { action: string; task_id: string; reason: string }[]
      assert.deepEqual(rows.map((r) => `${r.action}:${r.task_id}`).sort(), [first, second].map((id) => `task.revoke:${id}`).sort())
      assert.ok(rows.every((r) => /^revoked by admin:ops-1; 1 token\(s\) revoked$/.test(r.reason)), JSON.stringify(rows))

      const again = await exchangeIn(b, 'a', first)
      assert.equal(again.status, 400)
      assert.equal(again.json.error, 'invalid_grant')
      // Nothing left open: asked again, nothing changes.
      const before2 = await counts(b)
      const none = await as(b, OPERATOR, 'POST', '/admin/tasks/revoke', { workload: 'agent-a' })
      assert.deepEqual(await none.json(), { workload: 'agent-a', tasks_revoked: [] })
      assert.deepEqual(await counts(b), before2)
    }))

  it('an auditor is refused: 403 insufficient_scope, one admin.refuse row, nothing else changed', () =>
    withBroker(withRoles, async (b) => {
      const id = await openFor(b, 'a')
      const before = await counts(b)
      const res = await as(b, AUDITOR, 'POST', '/admin/tasks/revoke', { workload: 'agent-a' })
      assert.equal(res.status, 403)
      assert.equal(((await res.json()) as Json).error, 'insufficient_scope')
      assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer error="insufficient_scope"/)
      assert.deepEqual(await counts(b), { ...before, audit_events: before.audit_events + 1 })
      const row = (await b.lastAudit())!
      assert.deepEqual([row.action, row.decision], ['admin.refuse', 'deny'])
      assert.match(String(row.reason), /needs operator$/)
      assert.equal((await b.deps.stores.tasks.get(id))!.status, 'active')
      const anonymous = await b.app.request('/admin/tasks/revoke', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ workload: 'agent-a' }) })
      assert.equal(anonymous.status, 401)
      assert.equal(((await anonymous.json()) as Json).error, 'invalid_token')
    }))

  const BAD_BODIES: [string, unknown, string?][] = [
    ['no workload', {}],
    ['an empty workload', { workload: '' }],
    ['a workload too long', { workload: 'w'.repeat(2049) }],
    ['a workload not a string', { workload: 7 }],
    ['an unknown field', { workload: 'agent-a', force: true }],
    ['an array', ['agent-a']],
    ['not JSON', '{', 'application/json'],
    ['a form', 'workload=agent-a', 'application/x-www-form-urlencoded'],
  ]
  for (const [name, body, type] of BAD_BODIES) {
    it(`${name} → 400 invalid_request, nothing changed`, () =>
      withBroker(withRoles, async (b) => {
        const id = await openFor(b, 'a')
        const before = await counts(b)
        const res = await as(b, OPERATOR, 'POST', '/admin/tasks/revoke', body, type)
        assert.equal(res.status, 400)
        const json = (await res.json()) as Json
        assert.equal(json.error, 'invalid_request')
        if (type === undefined) assert.match(String(json.error_description), /"workload"/)
        assert.deepEqual(await counts(b), before)
        assert.equal((await b.deps.stores.tasks.get(id))!.status, 'active')
      }))
  }
})

describe('GET /admin/keys: the signing keys\' status', () => {
  const FIELDS = ['activated_at', 'alg', 'created_at', 'kid', 'publish_until', 'published', 'retired_at', 'state']

  it('any admin key reads every key — current, next, standby, retired, revoked — with its times and whether it is published; no private material', () =>
    withBroker(withRoles, async (b) => {
      const read = async (key = AUDITOR) => {
        const res = await as(b, key, 'GET', '/admin/keys')
        assert.equal(res.status, 200)
        assert.equal(res.headers.get('cache-control'), 'no-store')
        return { text: await res.clone().text(), json: (await res.json()) as { keys: (Json & { kid: string; state: string; published: boolean })[] } }
      }
      const jwksKids = async () => ((await (await b.app.request('/.well-known/jwks.json')).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid)
      const rows = async () => await b.rawQuery('select * from signing_keys') as Json[]

      const first = await read()
      assert.deepEqual(first.json.keys.map((k) => k.state), ['current', 'next', 'standby'])
      assert.deepEqual(first.json.keys.map((k) => k.kid), await jwksKids(), 'in the JWKS order')
      for (const k of first.json.keys) assert.deepEqual(Object.keys(k).sort(), FIELDS)
      const current = first.json.keys[0]!
      const row = (await rows()).find((r) => r.kid === current.kid)!
      assert.deepEqual(current, { kid: row.kid, alg: row.alg, state: 'current', created_at: row.created_at, activated_at: row.activated_at, retired_at: null, publish_until: null, published: true })

      // Rotated: the old current key is retired and still published; revoked: never published again.
      b.clock.advance(400)
      assert.equal((await as(b, ADMIN_KEY, 'POST', '/admin/keys/rotate')).status, 200)
      const rotated = await read(OPERATOR)
      const retired = rotated.json.keys.find((k) => k.kid === current.kid)!
      assert.deepEqual([retired.state, retired.published, retired.retired_at], ['retired', true, b.clock.now()])
      assert.ok(typeof retired.publish_until === 'number' && retired.publish_until > b.clock.now())
      assert.deepEqual(rotated.json.keys.map((k) => k.state), ['current', 'next', 'standby', 'retired'])
      assert.equal((await as(b, ADMIN_KEY, 'POST', `/admin/keys/${current.kid}/revoke`)).status, 200)
      const revoked = (await read(ADMIN_KEY)).json.keys.find((k) => k.kid === current.kid)!
      assert.deepEqual([revoked.state, revoked.published], ['revoked', false])
      assert.ok(!(await jwksKids()).includes(current.kid))

      // No private material in any answer: no private JWK member, no encrypted blob.
      const all = await read()
      for (const r of await rows()) assert.ok(!all.text.includes(String(r.private_jwe)), 'no encrypted private half')
      for (const k of all.json.keys) for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'private_jwe', 'privateJwe', 'public_jwk', 'jwe']) assert.ok(!(member in k), member)
      assert.doesNotMatch(all.text, /eyJ|"d":|private/i)

      const anonymous = await b.app.request('/admin/keys')
      assert.equal(anonymous.status, 401)
      assert.equal(((await anonymous.json()) as Json).error, 'invalid_token')
    }))
})

const DEV_USERS = DEV.userIssuer
const DEV_NOTES = DEV.resource

describe('admin CLI: tasks list filters, tasks revoke --workload, keys status', () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskpass-admin-cli-'))
  const db = () => new Database(join(dir, 'taskpass.db'))

  /** Stores a task straight into the dev database (as the broker would on POST /tasks). */
  function task(id: string, o: { workload: string; user: string; status: string; resources: string[]; createdAgo: number }) {
    const d = db()
    const now = Math.floor(Date.now() / 1000) - o.createdAgo
    d.prepare(
      `insert into tasks (id, user_sub, subject_issuer, sid, workload_id, purpose, resources, status, created_at, expires_at, tokens_minted)
       values (?, ?, ?, 'sess-1', ?, 'cli', ?, ?, ?, ?, 0)`,
    ).run(id, o.user, DEV_USERS, o.workload, JSON.stringify(o.resources.map((resource) => ({ resource, scopes: ['notes:read'] }))), o.status, now, now + 3600)
    d.close()
  }
  const ids = (out: { stdout: string }) => (JSON.parse(out.stdout) as { tasks: { task_id: string }[] }).tasks.map((t) => t.task_id)

  it('tasks list takes the API\'s filters, checked by its rules (exit 64 naming them, nothing printed); the positional status still works', () => {
    assert.equal(cli(dir, 'keys', 'list').status, 0, 'creates the dev database')
    task('t-demo-alice', { workload: 'demo-agent', user: 'alice', status: 'active', resources: [DEV_NOTES], createdAgo: 30 })
    task('t-demo-bob', { workload: 'demo-agent', user: 'bob', status: 'active', resources: ['https://other.example/mcp'], createdAgo: 20 })
    task('t-helper-alice', { workload: 'demo-helper', user: 'alice', status: 'completed', resources: [DEV_NOTES], createdAgo: 10 })

    assert.deepEqual(ids(cli(dir, 'tasks', 'list')), ['t-helper-alice', 't-demo-bob', 't-demo-alice'])
    assert.deepEqual(ids(cli(dir, 'tasks', 'list', '--workload', 'demo-agent')), ['t-demo-bob', 't-demo-alice'])
    assert.deepEqual(ids(cli(dir, 'tasks', 'list', '--user=alice')), ['t-helper-alice', 't-demo-alice'])
    assert.deepEqual(ids(cli(dir, 'tasks', 'list', '--resource', DEV_NOTES, '--status', 'active')), ['t-demo-alice'])
    assert.deepEqual(ids(cli(dir, 'tasks', 'list', 'completed')), ['t-helper-alice'])
    assert.deepEqual(ids(cli(dir, 'tasks', 'list', '--limit', '1', '--json')), ['t-helper-alice'])

    for (const args of [['--status', 'finished'], ['--limit', '0'], ['--limit', '501'], ['--limit', 'ten'], ['--workload', ''], ['--user', 'u'.repeat(1025)], ['frozen']]) {
      const out = cli(dir, 'tasks', 'list', ...args)
      assert.equal(out.status, 64, args.join(' '))
      assert.equal(out.stdout, '')
      assert.ok(out.stderr.startsWith(`taskpass: ${TASK_QUERY_RULES}\n`), out.stderr.slice(0, 200))
    }
    for (const args of [['--status'], ['--status', 'active', '--status', 'revoked'], ['active', '--status', 'active']]) {
      assert.equal(cli(dir, 'tasks', 'list', ...args).status, 64, args.join(' '))
    }
    assert.equal(cli(dir, 'tasks', 'show', 't-demo-bob', '--workload', 'demo-agent').status, 64, 'an option of another command')
    for (const args of [['workloads', 'list', '--limit', '5'], ['audit', '--limit', '5'], ['keys', 'status', '--status', 'current']]) {
      const out = cli(dir, ...args)
      assert.equal(out.status, 64, args.join(' '))
      assert.match(out.stderr, /^taskpass: --\w+: not an option of /)
    }
  })

  it('tasks revoke --workload <id> revokes its open tasks (feed events, audit rows by admin:cli) as POST /admin/tasks/revoke answers; bad use exits 64 and changes nothing', () => {
    const feed = () => (db().prepare("select count(*) as n from revocation_events where kind = 'task_revoked'").get() as { n: number }).n
    const before = feed()
    for (const args of [['--workload', ''], ['t-demo-bob', '--workload', 'demo-agent'], ['--workload', 'demo-agent', '--status', 'active'], []]) {
      assert.equal(cli(dir, 'tasks', 'revoke', ...args).status, 64, args.join(' '))
    }
    assert.equal(feed(), before)
    assert.deepEqual(ids(cli(dir, 'tasks', 'list', '--workload', 'demo-agent', '--status', 'active')), ['t-demo-bob', 't-demo-alice'])

    const out = cli(dir, 'tasks', 'revoke', '--workload', 'demo-agent', '--json')
    assert.equal(out.status, 0, out.stderr)
    assert.deepEqual(JSON.parse(out.stdout), { workload: 'demo-agent', tasks_revoked: ['t-demo-bob', 't-demo-alice'] })
    assert.equal(feed(), before + 2)
    assert.deepEqual(ids(cli(dir, 'tasks', 'list', '--workload', 'demo-agent', '--status', 'revoked')), ['t-demo-bob', 't-demo-alice'])
    assert.deepEqual(ids(cli(dir, 'tasks', 'list', 'completed')), ['t-helper-alice'], 'another workload\'s task untouched')
    const rows = db().prepare("select task_id, reason from audit_events where action = 'task.revoke' order by id").all() as { task_id: string; reason: string }[]
    assert.deepEqual(rows.map((r) => r.task_id), ['t-demo-bob', 't-demo-alice'])
    assert.ok(rows.every((r) => r.reason.startsWith('revoked by admin:cli')))
  })

  it('keys status prints every key as GET /admin/keys does (same fields), no private material', async () => {
    const out = cli(dir, 'keys', 'status', '--json')
    assert.equal(out.status, 0, out.stderr)
    const status = JSON.parse(out.stdout) as { keys: Json[] }
    const rows = db().prepare('select kid, state, private_jwe from signing_keys').all() as { kid: string; state: string; private_jwe: string }[]
    assert.deepEqual(status.keys.map((k) => `${String(k.kid)}:${String(k.state)}`).sort(), rows.map((r) => `${r.kid}:${r.state}`).sort())
    assert.deepEqual(status.keys.map((k) => k.state), ['current', 'next', 'standby'])
    for (const k of status.keys) assert.deepEqual(Object.keys(k).sort(), ['activated_at', 'alg', 'created_at', 'kid', 'publish_until', 'published', 'retired_at', 'state'])
    for (const r of rows) assert.ok(!out.stdout.includes(r.private_jwe))
    assert.doesNotMatch(out.stdout, /eyJ|"d":|private/i)
    // The API answers the same fields (the description above).
    await withBroker(undefined, async (b) => {
      const api = (await (await as(b, ADMIN_KEY, 'GET', '/admin/keys')).json()) as { keys: Json[] }
      assert.deepEqual(Object.keys(api.keys[0]!).sort(), Object.keys(status.keys[0]!).sort())
    })
  })
})
