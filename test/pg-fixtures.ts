/**
 * PostgreSQL for tests: `TASKPASS_TEST_POSTGRES` is the URL of a cluster tests may create
 * databases on (scripts/pg-cluster.sh starts one; CI exports it). Each test gets a database of
 * its own, dropped afterwards. Unset: the PostgreSQL tests are skipped, saying why.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'

export const testPostgres = process.env.TASKPASS_TEST_POSTGRES
/** The `skip` option of a PostgreSQL test: a reason when no cluster is configured, else false. */
export const skipWithoutPostgres: string | false = testPostgres
  ? false
  : 'TASKPASS_TEST_POSTGRES is not set (start a cluster with scripts/pg-cluster.sh start <dir> and export the URL it prints)'

/** A new, empty database on the test cluster: its URL, and `drop()` (which ends its connections). */
export async function freshPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  if (!testPostgres) throw new Error('TASKPASS_TEST_POSTGRES is not set')
  const name = `taskpass_test_${randomBytes(6).toString('hex')}`
  await admin(`create database ${name}`)
  const url = new URL(testPostgres)
  url.pathname = `/${name}`
  return { url: url.toString(), drop: () => admin(`drop database if exists ${name} with (force)`) }
}

async function admin(statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: testPostgres })
  await client.connect()
  try {
    await client.query(statement)
  } finally {
    await client.end()
  }
}
