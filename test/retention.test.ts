/**
 * What the broker stores is bounded: unauthenticated requests store nothing, every audit field
 * has a maximum length, and evidence (audit rows, tasks) is pruned only after its retention —
 * never a row younger than it.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { openDatabase } from '../src/store/db.js'
import { AUDIT_FIELD_LIMITS, createStores } from '../src/store/stores.js'
import { PRUNE_BATCH, pruneStore } from '../src/store/retention.js'
import { counts, NOTES, openTask, sqliteOnly, withBroker } from './harness.js'

describe('unauthenticated traffic does not grow the database', () => {
  it('a 15 KB refused /token request without a valid attestation writes no row and is counted', () =>
    withBroker({}, async (b) => {
      const big = `https://x.example/${'a'.repeat(5000)}`
      const before = await counts(b)
      const res = await b.exchange({ actor_token: 'x'.repeat(100), resource: big, task_id: 't'.repeat(5000), subject_token: await b.session({ iss: `https://${'e'.repeat(4000)}.example` }) })
      assert.equal(res.status, 400)
      assert.deepEqual(await counts(b), before)
      assert.match(await b.deps.metrics.registry.getSingleMetricAsString('taskpass_unauthenticated_refusals_total'), /endpoint="token",error="invalid_request"\} 1/)
    }),
  )

  it('an authenticated caller\'s refusal is audited with every field cut to its bound', () =>
    withBroker({}, async (b) => {
      const big = `https://x.example/${'a'.repeat(8000)}`
      const res = await b.exchange({ resource: big, task_id: 't'.repeat(3000) })
      assert.equal(res.status, 400)
      const row = (await b.lastAudit())!
      assert.equal(row.decision, 'deny')
      assert.equal(String(row.resource).length, AUDIT_FIELD_LIMITS.resource)
      assert.equal(String(row.task_id).length, AUDIT_FIELD_LIMITS.taskId)
      assert.ok(String(row.reason).length <= AUDIT_FIELD_LIMITS.reason)
      assert.ok(String(row.resource).endsWith('…'), 'a cut value says it was cut')
      const total = Object.values(row).reduce<number>((n, v) => n + (typeof v === 'string' ? v.length : 0), 0)
      assert.ok(total < 4096, `the row holds ${total} characters`)
    }),
  )
})

describe('retention', () => {
  it('audit rows are pruned only once older than retention.audit; the boundary row is kept', () =>
    withBroker((c) => ({ ...c, retention: { audit: 86_400, tasks: 3600 } }), async (b) => {
      const t0 = b.clock.now()
      assert.equal((await b.exchange()).status, 200)
      const rows = await b.count('audit_events')
      assert.equal(rows, 1)
      assert.equal((await pruneStore(b.deps.stores, b.deps.config, t0 + 86400)).audit, 0, 'exactly the retention old: kept')
      assert.equal(await b.count('audit_events'), 1)
      assert.equal((await pruneStore(b.deps.stores, b.deps.config, t0 + 86401)).audit, 1)
      assert.equal(await b.count('audit_events'), 0)
    }),
  )

  it('tasks are pruned once retention.tasks has passed since they expired, ended or not; open ones never', () =>
    withBroker((c) => ({ ...c, retention: { audit: 86_400 * 400, tasks: 3600 } }), async (b) => {
      const t0 = b.clock.now()
      const open = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }], ttl: 600 })
      const { task_id: ended } = (await open.json()) as { task_id: string }
      const revoked = await b.app.request(`/tasks/${ended}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${await b.session()}` } })
      assert.equal(revoked.status, 200)
      const longer = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }], ttl: 86_400 })
      const { task_id: running } = (await longer.json()) as { task_id: string }

      assert.equal((await pruneStore(b.deps.stores, b.deps.config, t0 + 600 + 3600)).tasks, 0, 'expired exactly the retention ago: kept')
      assert.equal((await pruneStore(b.deps.stores, b.deps.config, t0 + 600 + 3601)).tasks, 1)
      assert.equal(await b.deps.stores.tasks.get(ended), undefined)
      assert.ok(await b.deps.stores.tasks.get(running), 'a task that has not expired is never pruned')
      assert.ok(await b.count('audit_events') > 0, 'its audit rows stay, under their own retention')
    }),
  )

  it('retention below its minimum is a configuration error', () =>
    withBroker({}, async () => {
      const { parseConfig, ConfigError } = await import('../src/config.js')
      assert.throws(() => parseConfig({ issuer: 'https://b.example', retention: { audit: 60 } }), (e: unknown) => e instanceof ConfigError && /retention\.audit/.test(e.message))
    }),
  )
})

describe('pruning a backlog', () => {
  it(`deletes it all in batches of ${PRUNE_BATCH}, letting the event loop run between them`, () =>
    withBroker({}, async (b) => {
      const backlog = PRUNE_BATCH * 2 + 500
      const { task_id } = (await (await b.exchange()).json()) as { task_id: string }
      const row = (await b.deps.stores.tokens.ofTask(task_id))[0]!
      await b.deps.stores.transaction(async (tx) => {
        for (let i = 0; i < backlog; i++) await tx.tokens.insert({ ...row, jti: `backlog-${i}`, exp: b.clock.now() - 3600 })
      })
      // Something else the process has to do, scheduled before pruning starts: it must not wait for the whole backlog.
      let ranAt: number | undefined
      let batchesDone = 0
      setImmediate(() => (ranAt = batchesDone))
      const prune = b.deps.stores.tokens.pruneExpired
      b.deps.stores.tokens.pruneExpired = async (before, limit) => {
        const n = await prune(before, limit)
        batchesDone++
        return n
      }
      const result = await pruneStore(b.deps.stores, b.deps.config, b.clock.now())
      assert.equal(result.tokens, backlog)
      assert.equal(batchesDone, 3)
      // (On SQLite a batch is synchronous, so the callback runs right after the first; PostgreSQL's batches await the network, so it may run before it.)
      assert.ok(ranAt !== undefined && ranAt <= 1, `the waiting callback ran after at most the first batch, not after the last (after ${ranAt})`)
      assert.equal((await b.deps.stores.tokens.ofTask(task_id)).length, 1, 'the live token is kept')
    }))
})

describe('pruning a backlog on SQLite', { skip: sqliteOnly('the write-ahead log is SQLite\'s') }, () => {
  it('checkpoints the write-ahead log after each full batch, so no batch runs the automatic checkpoint', () =>
    withBroker((c) => ({ ...c, database: join(mkdtempSync(join(tmpdir(), 'taskpass-wal-')), 'broker.db') }), async (b) => {
      const backlog = PRUNE_BATCH * 2 + 500
      const { task_id } = (await (await b.exchange()).json()) as { task_id: string }
      const row = (await b.deps.stores.tokens.ofTask(task_id))[0]!
      await b.deps.stores.transaction(async (tx) => {
        for (let i = 0; i < backlog; i++) await tx.tokens.insert({ ...row, jti: `backlog-${i}`, exp: b.clock.now() - 3600 })
      })
      const sqlite = b.deps.database.sqlite!
      // What the log holds that is not in the database yet, in frames: [busy, log, checkpointed].
      const notBackfilled = () => {
        const [status] = sqlite.pragma('wal_checkpoint(NOOP)') as { busy: number; log: number; checkpointed: number }[]
        return status!.log - status!.checkpointed
      }
      const seen: number[] = []
      const checkpoint = b.deps.stores.checkpoint
      b.deps.stores.checkpoint = async () => {
        await checkpoint()
        seen.push(notBackfilled())
      }
      const result = await pruneStore(b.deps.stores, b.deps.config, b.clock.now())
      assert.equal(result.tokens, backlog)
      assert.deepEqual(seen, [0, 0], 'after each of the two full batches, the log is all in the database')
    }))
})

describe('an audit prune batch across a gap in ids', { skip: sqliteOnly('the SQLite store\'s prune, on a SQLite database it opens itself') }, () => {
  it('still deletes a whole batch (counted by rows, not by the id range)', async () => {
    const database = openDatabase(':memory:')
    try {
      const stores = createStores(database)
      for (let i = 0; i < 10; i++) await stores.audit.insert({ at: 1_000 + i, action: 'task.open', decision: 'allow', reason: `r${i}` })
      database.sqlite.prepare('delete from audit_events where id in (2, 3)').run() // a gap (the chain is broken there; pruning must not care)
      assert.equal(await stores.audit.pruneBefore(2_000, 4), 4)
      assert.deepEqual(database.sqlite.prepare('select id from audit_events order by id').pluck().all(), [7, 8, 9, 10])
    } finally {
      database.close()
    }
  })
})
