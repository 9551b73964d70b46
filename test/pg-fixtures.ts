/**
 * PostgreSQL for tests: `TASKPASS_TEST_POSTGRES` is the URL of a cluster tests may create
 * databases on (scripts/pg-cluster.sh starts one; CI exports it). Each test gets a database of
 * its own, dropped afterwards. Unset: the PostgreSQL tests are skipped, saying why.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { openPgDatabase } from '../src/store/pg/db.js'

export const testPostgres = process.env.TASKPASS_TEST_POSTGRES
/** The `skip` option of a PostgreSQL test: a reason when no cluster is configured, else false. */
export const skipWithoutPostgres: string | false = testPostgres
  ? false
  : 'TASKPASS_TEST_POSTGRES is not set (start a cluster with scripts/pg-cluster.sh start <dir> and export the URL it prints)'

/** A new, empty database on the test cluster: its URL, and `drop()` (which ends its connections). */
export async function freshPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `taskpass_test_${randomBytes(6).toString('hex')}`
  await admin(`create database ${name}`)
  return { url: databaseUrl(name), drop: () => admin(`drop database if exists ${name} with (force)`) }
}

let template: Promise<string> | undefined

/**
 * A new database with every migration applied, copied from a template this process migrated once
 * (`CREATE DATABASE … TEMPLATE`: a file copy, much faster than migrating each time). The template
 * is dropped when the process ends.
 */
export async function migratedPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  template ??= (async () => {
    const name = `taskpass_template_${randomBytes(6).toString('hex')}`
    await admin(`create database ${name}`)
    const db = await openPgDatabase(databaseUrl(name), { max: 1 })
    await db.close()
    let dropped = false
    process.on('beforeExit', () => {
      if (dropped) return
      dropped = true
      admin(`drop database if exists ${name} with (force)`).catch(() => {})
    })
    return name
  })()
  const from = await template
  const name = `taskpass_test_${randomBytes(6).toString('hex')}`
  await admin(`create database ${name} template ${from}`)
  return { url: databaseUrl(name), drop: () => admin(`drop database if exists ${name} with (force)`) }
}

function databaseUrl(name: string): string {
  if (!testPostgres) throw new Error('TASKPASS_TEST_POSTGRES is not set')
  const url = new URL(testPostgres)
  url.pathname = `/${name}`
  return url.toString()
}

async function admin(statement: string): Promise<void> {
  if (!testPostgres) throw new Error('TASKPASS_TEST_POSTGRES is not set')
  const client = new pg.Client({ connectionString: testPostgres })
  await client.connect()
  try {
    await client.query(statement)
  } finally {
    await client.end()
  }
}
