import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres'
import { migrate } from 'drizzle-orm/node-postgres/migrator'
import pg from 'pg'
import { BUSY_TIMEOUT_MS } from '../db.js'
import * as schema from './schema.js'

export type PgDb = NodePgDatabase<typeof schema>

export interface PgDatabase {
  /** The connections: statements outside a transaction take any; a transaction holds one until it ends. */
  pool: pg.Pool
  db: PgDb
  /** Where the pool was opened (a dedicated connection for LISTEN is opened to the same place). */
  url: string
  close(): Promise<void>
}

const migrationsFolder = resolve(dirname(fileURLToPath(import.meta.url)), '../../../migrations/pg')

/**
 * The advisory lock key (`pg_advisory_lock`) every taskpass process takes while it migrates: two
 * instances starting together on a new database cannot both decide to apply the same migration.
 * The second waits, then finds nothing left to do. (A constant of this application: "taskpass" as
 * ASCII, read as a 64-bit integer's low bytes.)
 */
/**
 * How long a statement waits for a pooled connection before it fails as busy (503 + Retry-After),
 * milliseconds: longer than a lock wait, because it includes opening a new connection, which a
 * loaded server may take a while to accept — a broker starting under load must not answer 503s.
 */
export const POOL_WAIT_MS = 5000

export const MIGRATION_LOCK = 0x7461736b70617373n

/**
 * Opens a pool on the PostgreSQL database at `url` and applies the committed migrations
 * (migrations/pg, drizzle's bookkeeping in `drizzle.__drizzle_migrations`) under
 * {@link MIGRATION_LOCK}, on one connection held for the purpose.
 */
export async function openPgDatabase(url: string, options: { max?: number } = {}): Promise<PgDatabase> {
  // A lock wait (a row another instance is ending, the append lock) is bounded as SQLite's busy
  // wait is: past it the statement fails `lock_not_available`, answered 503 + Retry-After.
  // Waiting for a pooled connection (every one held by slow requests) is bounded too, by POOL_WAIT_MS.
  const pool = new pg.Pool({ connectionString: url, max: options.max ?? 10, connectionTimeoutMillis: POOL_WAIT_MS, options: `-c lock_timeout=${BUSY_TIMEOUT_MS}` })
  // An idle connection the server dropped (restart, admin termination) must not crash the process: the pool replaces it.
  pool.on('error', () => {})
  try {
    const client = await pool.connect()
    try {
      // Not the busy bound: another instance's migration takes what it takes (seconds on a loaded
      // machine), and a start waiting for it must not fail on the 1 s lock_timeout.
      await client.query('set lock_timeout = 0')
      try {
        await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK.toString()])
        try {
          await migrate(drizzle(client), { migrationsFolder })
        } finally {
          await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK.toString()])
        }
      } finally {
        await client.query('reset lock_timeout')
      }
    } finally {
      client.release()
    }
  } catch (e) {
    await pool.end()
    throw e
  }
  return { pool, db: drizzle(pool, { schema }), url, close: () => pool.end() }
}
