/**
 * Decisions that must hold when several broker instances write to one PostgreSQL database at
 * once (SQLite's one writer makes them hold trivially): each test drives one race between two
 * brokers on one new database, many times, and asserts what must never be left behind.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { ClientMetadataResolver } from '../src/clients/metadata-document.js'
import type { ConfigInput } from '../src/config.js'
import { authorizeQuery, browserFlowConfig, devSignIn, fixedClients, pkce, setField, TestBrowser } from './authorize-fixtures.js'
import { refreshCatalog } from '../src/catalog/catalog.js'
import { ADMIN_KEY, createTestBroker, JWT_TYPE, NOTES, openTask, TOKEN_EXCHANGE, USER_ISSUER, type TestBroker } from './harness.js'
import { freshPgDatabase, skipWithoutPostgres } from './pg-fixtures.js'
import { delegating, PARENT_RESOURCES, subtask, type TaskView } from './subtask-fixtures.js'

/** Races are many requests at once: no rate limit may answer them first. */
const unlimited = (c: ConfigInput): ConfigInput => ({ ...c, rateLimits: { perIp: false, perWorkload: false } })

/** Two brokers on one new PostgreSQL database (one clock: the instances agree on time). */
async function twoInstances(fn: (a: TestBroker, b: TestBroker, query: (text: string, values?: unknown[]) => Promise<number>) => Promise<void>, more: (c: ConfigInput) => ConfigInput = (c) => c, clientMetadata?: ClientMetadataResolver): Promise<void> {
  const database = await freshPgDatabase()
  const config = (c: ConfigInput) => more(unlimited({ ...c, database: database.url }))
  const a = await createTestBroker({ config, ...(clientMetadata ? { clientMetadata } : {}) })
  const b = await createTestBroker({ clock: a.clock, config: (c) => ({ ...config(c), keys: { kek: a.deps.config.keys.kek! } }), ...(clientMetadata ? { clientMetadata } : {}) })
  /** The number a `select count(*)::int as n …` answers. */
  const query = async (text: string, values: unknown[] = []) => ((await a.deps.database.pool.query(text, values)).rows[0] as { n: number }).n
  try {
    await fn(a, b, query)
  } finally {
    await Promise.all([a.deps.database.close(), b.deps.database.close()])
    await database.drop()
  }
}

/**
 * Runs `workers` loops of `attempt` until `decisive` has answered (and one attempt more each,
 * started after it): attempts fall before, during and after the decisive write. Returns its answer.
 */
async function racing<T>(workers: number, attempt: () => Promise<unknown>, decisive: () => Promise<T>): Promise<T> {
  let settled = false
  let done = 0
  let warm!: () => void
  // Once every loop has answered once, attempts are under way all the time: then the decisive write.
  const warmed = new Promise<void>((r) => (warm = r))
  const loops = Array.from({ length: workers }, async () => {
    for (let last = false; !last; ) {
      last = settled
      await attempt()
      if (++done === workers) warm()
    }
  })
  await warmed
  const answer = await decisive().finally(() => (settled = true))
  await Promise.all(loops)
  return answer
}

const ROUNDS = 8

describe('races across instances on one PostgreSQL database', { skip: skipWithoutPostgres }, () => {
  it('a session revoked at A while B opens tasks and exchanges for it: no open task and no active token of the revoked session is left', () =>
    twoInstances(async (a, b, count) => {
      const answered = new Map<number, number>()
      for (let round = 0; round < ROUNDS; round++) {
        const sid = `race-${round}`
        const session = await b.session({ sid })
        const svid = await b.svid('a')
        const exchange = { grant_type: TOKEN_EXCHANGE, subject_token: session, subject_token_type: JWT_TYPE, actor_token: svid, actor_token_type: JWT_TYPE, resource: NOTES, scope: 'notes:read' }
        assert.equal((await b.post('/token', exchange)).status, 200, 'warm')
        let turn = 0
        const revoked = await racing(
          6,
          async () => {
            // Implicit tasks through the exchange, and tasks opened at POST /tasks (a revoked session: 400 at the one, 401 at the other).
            const res = turn++ % 3 === 2 ? await openTask(b, { purpose: 'race', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session, svid }) : await b.post('/token', exchange)
            answered.set(res.status, (answered.get(res.status) ?? 0) + 1)
          },
          async () => a.app.request('/admin/sessions/revoke', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ issuer: USER_ISSUER, sid }) }),
        )
        assert.equal(revoked.status, 200)
        assert.equal(await count("select count(*)::int as n from tasks where sid = $1 and status in ('active', 'pending_approval')", [sid]), 0, `round ${round}: an open task of the revoked session`)
        assert.equal(await count("select count(*)::int as n from tokens t join tasks k on k.id = t.task_id where k.sid = $1 and t.status = 'active'", [sid]), 0, `round ${round}: an active token of the revoked session`)
      }
      assert.deepEqual([...answered.keys()].filter((s) => ![200, 201, 400, 401, 503].includes(s)), [], `answers: ${JSON.stringify([...answered])}`)
    }))

  it('sub-tasks opened at A and B at once at the limit of open sub-tasks: never more open than the limit', () =>
    twoInstances(async (a, b, count) => {
      const { MAX_OPEN_SUBTASKS } = await import('../src/tasks/subtasks.js')
      const parent = (await (await openTask(a, { purpose: 'fan out', resources: PARENT_RESOURCES, ttl: 1800 })).json()) as TaskView
      for (let i = 0; i < MAX_OPEN_SUBTASKS - 4; i++) assert.equal((await subtask(a, parent.task_id, {})).status, 201)
      for (let round = 0; round < ROUNDS; round++) {
        const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => subtask(i % 2 ? a : b, parent.task_id, {})))
        const opened = answers.filter((r) => r.status === 201).length
        for (const r of answers) assert.ok([201, 400].includes(r.status), `answered ${r.status}`)
        const open = await count("select count(*)::int as n from tasks where parent_task_id = $1 and status in ('active', 'pending_approval')", [parent.task_id])
        assert.ok(open <= MAX_OPEN_SUBTASKS, `round ${round}: ${open} open sub-tasks, ${opened} opened by this round`)
        assert.equal(open, MAX_OPEN_SUBTASKS, 'the limit is reached')
        // Room for four again: the oldest open ones are revoked.
        const oldest = await a.deps.database.pool.query("select id from tasks where parent_task_id = $1 and status = 'active' order by created_at, id limit 4", [parent.task_id])
        for (const { id } of oldest.rows as { id: string }[]) assert.equal((await a.app.request(`/admin/tasks/${id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 200)
      }
    }, delegating))

  it('a task completed at A while B opens sub-tasks of it: no open sub-task of the ended task is left', () =>
    twoInstances(async (a, b, count) => {
      for (let round = 0; round < ROUNDS; round++) {
        const parent = (await (await openTask(a, { purpose: `delegate ${round}`, resources: PARENT_RESOURCES, ttl: 1800 })).json()) as TaskView
        const svid = await a.svid('a')
        const completed = await racing(
          4,
          async () => {
            const res = await subtask(b, parent.task_id, {}, { svid })
            assert.ok([201, 400, 409].includes(res.status), `sub-task answered ${res.status}: ${await res.text()}`)
          },
          async () => a.app.request(`/tasks/${parent.task_id}/complete`, { method: 'POST', headers: { 'actor-token': svid } }),
        )
        assert.equal(completed.status, 200)
        assert.equal(await count("select count(*)::int as n from tasks where parent_task_id = $1 and status in ('active', 'pending_approval')", [parent.task_id]), 0, `round ${round}: an open sub-task of the completed task`)
      }
    }, delegating))

  it('a workload disabled at A while B opens tasks and exchanges for it: no open task and no active token of the disabled workload is left', () =>
    twoInstances(async (a, b, count) => {
      const answered = new Map<number, number>()
      for (let round = 0; round < ROUNDS; round++) {
        const session = await b.session({ sid: `catalog-${round}` })
        const svid = await b.svid('a')
        const exchange = { grant_type: TOKEN_EXCHANGE, subject_token: session, subject_token_type: JWT_TYPE, actor_token: svid, actor_token_type: JWT_TYPE, resource: NOTES, scope: 'notes:read' }
        let turn = 0
        const disabled = await racing(
          6,
          async () => {
            const res = turn++ % 3 === 2 ? await openTask(b, { purpose: 'race', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session, svid }) : await b.post('/token', exchange)
            answered.set(res.status, (answered.get(res.status) ?? 0) + 1)
          },
          async () => a.app.request('/admin/workloads/agent-a/disable', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } }),
        )
        assert.equal(disabled.status, 200, await disabled.text())
        // A sweep that failed on a busy database (a lock wait past its bound) is run again by the refresh timer: as here.
        if (a.deps.catalog.sweepPending) await refreshCatalog(a.deps)
        assert.equal(await count("select count(*)::int as n from tasks where workload_id = 'agent-a' and status in ('active', 'pending_approval')"), 0, `round ${round}: an open task of the disabled workload`)
        assert.equal(await count("select count(*)::int as n from tokens where workload_id = 'agent-a' and status = 'active'"), 0, `round ${round}: an active token of the disabled workload`)
        // Enabled again for the next round, at both (B takes up A's changes as its refresh would).
        assert.equal((await a.app.request('/admin/workloads/agent-a/enable', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 200)
        await refreshCatalog(b.deps)
      }
      assert.deepEqual([...answered.keys()].filter((s) => ![200, 201, 503].includes(s)), [], `answers: ${JSON.stringify([...answered])}`)
    }))

  it('the two last admin keys disabled at once, one at A and one at B: one of them stays', () =>
    twoInstances(
      async (a, b) => {
        const api = (at: TestBroker, path: string, key: string, body?: unknown) =>
          at.app.request(path, { method: 'POST', headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
        // Two admin keys: the file's, and one made through the API.
        const made = await api(a, '/admin/admin-keys', ADMIN_KEY, { name: 'second', role: 'admin' })
        assert.equal(made.status, 201, await made.clone().text())
        const keys = { boot: ADMIN_KEY, second: ((await made.json()) as { admin_key: string }).admin_key }
        await refreshCatalog(b.deps)
        const adminKeys = (at: TestBroker) => at.deps.config.admin.keys.filter((k) => k.role === 'admin').map((k) => k.name)
        for (let round = 0; round < ROUNDS; round++) {
          // A disables the API's key with the file's, B the file's with the API's.
          const answers = await Promise.all([api(a, '/admin/admin-keys/second/disable', keys.boot), api(b, '/admin/admin-keys/boot/disable', keys.second)])
          const statuses = answers.map((r) => r.status)
          await Promise.all([refreshCatalog(a.deps), refreshCatalog(b.deps)])
          const left = adminKeys(a)
          assert.equal(left.length, 1, `round ${round}: admin keys left: ${JSON.stringify(left)} (answers ${statuses.join(', ')})`)
          // The other is refused: 409 (it would leave none), or 401 (its own key was switched off first).
          assert.ok(statuses.filter((s) => s === 200).length === 1 && statuses.every((s) => [200, 401, 409].includes(s)), `round ${round}: answers ${statuses.join(', ')}`)
          const kept = left[0] as keyof typeof keys
          const off = kept === 'boot' ? 'second' : 'boot'
          assert.equal((await api(a, `/admin/admin-keys/${off}/enable`, keys[kept])).status, 200)
          await refreshCatalog(b.deps)
        }
      },
      (c) => ({ ...c, admin: { apiKeyHashes: [], keys: [{ name: 'boot', role: 'admin', hash: c.admin!.apiKeyHashes![0]! }] } }),
    ))

  it('an approved consent\'s wait page reloaded at A and at B at once: one authorization code, the other answer refused 409', () =>
    twoInstances(
      async (a, b, count) => {
        for (let round = 0; round < ROUNDS; round++) {
          const atA = new TestBrowser((p, i) => a.app.request(p, i))
          const login = await atA.get(`/authorize?${authorizeQuery(pkce().challenge)}`)
          const signedIn = await atA.submit(await login.text(), '/authorize/login', devSignIn())
          const page = await (await atA.get(signedIn.headers.get('location')!)).text()
          const allow = (f: [string, string][]) => [...setField('scope', 'notes:read')(f), ['decision', 'allow']] as [string, string][]
          const pending = await atA.submit(page, '/authorize/consent', allow)
          assert.equal(pending.status, 200, 'waits for approval')
          const wait = /href="(\/authorize\/pending\?[^"]+)"/.exec(await pending.text())![1]!.replaceAll('&amp;', '&')
          const task = (await a.deps.database.pool.query("select id from tasks where status = 'pending_approval'")).rows[0] as { id: string }
          assert.equal((await a.app.request(`/admin/tasks/${task.id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 200)
          const atB = new TestBrowser((p, i) => b.app.request(p, i))
          for (const [k, v] of atA.cookies) atB.cookies.set(k, v)
          const answers = await Promise.all([atA.get(wait), atB.get(wait), atA.get(wait), atB.get(wait)])
          const statuses = answers.map((r) => r.status).sort()
          assert.deepEqual(statuses, [303, 409, 409, 409], `round ${round}: answers ${statuses.join(', ')}`)
          assert.equal(await count('select count(*)::int as n from authorization_codes where task_id = $1', [task.id]), 1, `round ${round}: one code per consent`)
        }
      },
      (c) => ({ ...browserFlowConfig(c), resources: c.resources!.map((r) => (r.uri === NOTES ? { ...r, requireApproval: true } : r)) }),
      fixedClients(),
    ))
  it('admin policies changed at A and at B at once, each a different policy: every change is kept', () =>
    twoInstances(async (a, b) => {
      const put = (broker: TestBroker, id: string) =>
        broker.app.request(`/admin/policies/${id}`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
          body: JSON.stringify({ policy: `@id("${id}") forbid (principal, action == Taskpass::Action::"open_task", resource) when { context.task.purpose == "${id}" };` }),
        })
      const ids: string[] = []
      for (let round = 0; round < ROUNDS; round++) {
        const pair = [`race-${round}-a`, `race-${round}-b`]
        ids.push(...pair)
        const answers = await Promise.all([put(a, pair[0]!), put(b, pair[1]!)])
        for (const res of answers) if (res.status !== 201) assert.fail(`PUT answered ${res.status}: ${await res.text()}`)
      }
      const stored = (await a.deps.stores.policySets.latest())?.text ?? ''
      assert.deepEqual(ids.filter((id) => !stored.includes(`@id("${id}")`)), [], 'every change in the stored admin policies')
    }))
})
