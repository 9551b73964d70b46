/**
 * A broker starting while another instance migrates the same new database waits for that
 * migration however long it takes: the migration lock is not bounded by the 1 s lock wait that
 * requests get (a start failing on it left one of two instances started together down).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pg from 'pg'
import { BUSY_TIMEOUT_MS } from '../src/store/db.js'
import { MIGRATION_LOCK, openPgDatabase } from '../src/store/pg/db.js'
import { freshPgDatabase, skipWithoutPostgres } from './pg-fixtures.js'

describe('openPgDatabase while another instance migrates', { skip: skipWithoutPostgres }, () => {
  it('waits for the migration lock past the busy timeout, then opens; requests keep the 1 s bound', async () => {
    const fresh = await freshPgDatabase()
    const other = new pg.Client({ connectionString: fresh.url })
    await other.connect()
    try {
      await other.query('select pg_advisory_lock($1)', [MIGRATION_LOCK.toString()])
      const opening = openPgDatabase(fresh.url)
      // The other instance's migration outlasts the busy bound, then ends.
      await new Promise((resolve) => setTimeout(resolve, BUSY_TIMEOUT_MS + 700))
      await other.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK.toString()])
      const database = await opening
      try {
        const { rows } = await database.pool.query<{ n: string; timeout: string }>("select (select count(*) from drizzle.__drizzle_migrations) as n, current_setting('lock_timeout') as timeout")
        assert.ok(Number(rows[0]!.n) >= 1, 'the migrations were applied')
        assert.equal(rows[0]!.timeout, `${BUSY_TIMEOUT_MS / 1000}s`, "the pool's connections keep the busy bound")
      } finally {
        await database.close()
      }
    } finally {
      await other.end()
      await fresh.drop()
    }
  })
})
