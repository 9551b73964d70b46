/**
 * Opening a PostgreSQL database applies the migrations once, however many broker processes start
 * on it together: the migration runs under an advisory lock.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { readMigrationFiles } from 'drizzle-orm/migrator'
import { BUSY_TIMEOUT_MS, isDatabaseBusy } from '../src/store/db.js'
import { openPgDatabase, POOL_WAIT_MS } from '../src/store/pg/db.js'
import { createPgStores } from '../src/store/pg/stores.js'
import { freshPgDatabase, skipWithoutPostgres } from './pg-fixtures.js'

describe('openPgDatabase', { skip: skipWithoutPostgres }, () => {
  it('two instances opening one new database together both succeed, and the migrations are recorded once', async () => {
    const fresh = await freshPgDatabase()
    try {
      const [a, b] = await Promise.all([openPgDatabase(fresh.url), openPgDatabase(fresh.url)])
      try {
        const expected = readMigrationFiles({ migrationsFolder: 'migrations/pg' })
        const { rows } = await a.pool.query<{ hash: string; n: string }>('select hash, count(*) as n from drizzle.__drizzle_migrations group by hash')
        assert.equal(rows.length, expected.length)
        assert.deepEqual(rows.map((r) => r.n), expected.map(() => '1'))
        assert.deepEqual(rows.map((r) => r.hash).sort(), expected.map((m) => m.hash).sort())
        // Both see the schema: the partial unique index among it.
        const index = await b.pool.query("select indexdef from pg_indexes where indexname = 'signing_keys_one_per_signing_state'")
        assert.match(String(index.rows[0]?.indexdef), /UNIQUE INDEX .* WHERE/)
      } finally {
        await Promise.all([a.close(), b.close()])
      }
      // A later start finds nothing to apply.
      const c = await openPgDatabase(fresh.url)
      try {
        const { rows } = await c.pool.query<{ n: string }>('select count(*) as n from drizzle.__drizzle_migrations')
        assert.equal(rows[0]?.n, '1')
      } finally {
        await c.close()
      }
    } finally {
      await fresh.drop()
    }
  })

  it('a lock wait past the busy timeout fails as busy (answered 503, as SQLite\'s busy wait is), and writes nothing', async () => {
    const fresh = await freshPgDatabase()
    const database = await openPgDatabase(fresh.url)
    const holder = await database.pool.connect()
    try {
      const stores = createPgStores(database)
      // Another instance holds the audit chain's append lock and does not let go.
      await holder.query('begin')
      await holder.query('select pg_advisory_xact_lock($1)', [0x74706c6f67])
      const started = Date.now()
      const error = await stores.audit.insert({ at: 1, action: 'task.open', decision: 'allow', reason: 'waits' }).then(
        () => undefined,
        (e: unknown) => e,
      )
      const waited = Date.now() - started
      assert.ok(isDatabaseBusy(error), `not busy: ${String(error)}`)
      assert.ok(waited >= BUSY_TIMEOUT_MS - 50 && waited < BUSY_TIMEOUT_MS * 5, `waited ${waited} ms`)
      await holder.query('rollback')
      assert.deepEqual(await stores.audit.list({ limit: 10 }), [])
    } finally {
      holder.release()
      await database.close()
      await fresh.drop()
    }
  })
  it('every pooled connection held: a statement waits at most POOL_WAIT_MS, then fails as busy (503), it does not wait forever', async () => {
    const fresh = await freshPgDatabase()
    const database = await openPgDatabase(fresh.url, { max: 2 })
    const held = [await database.pool.connect(), await database.pool.connect()]
    try {
      const stores = createPgStores(database)
      const started = Date.now()
      const error = await stores.audit.list({ limit: 1 }).then(
        () => undefined,
        (e: unknown) => e,
      )
      const waited = Date.now() - started
      assert.ok(isDatabaseBusy(error), `not busy: ${String(error)}`)
      assert.ok(waited >= POOL_WAIT_MS - 50 && waited < POOL_WAIT_MS * 2, `waited ${waited} ms`)
    } finally {
      for (const c of held) c.release()
      await database.close()
      await fresh.drop()
    }
  })
})
