/**
 * Opening a PostgreSQL database applies the migrations once, however many broker processes start
 * on it together: the migration runs under an advisory lock.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { readMigrationFiles } from 'drizzle-orm/migrator'
import { openPgDatabase } from '../src/store/pg/db.js'
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
})
