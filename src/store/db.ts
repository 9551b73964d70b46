import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3'
import { readMigrationFiles } from 'drizzle-orm/migrator'
import * as schema from './schema.js'

export type Db = BetterSQLite3Database<typeof schema>

export interface Database_ {
  sqlite: Database.Database
  db: Db
  /**
   * Runs `fn` in one transaction committed with `synchronous=FULL`: task and revocation state
   * survive power loss, not only a process crash. Everything else commits with `NORMAL`
   * (WAL: safe against a crash of the process, which is what issuance rows need).
   */
  durably<T>(fn: () => T): T
  /** Runs `fn` in one transaction under the default `synchronous=NORMAL`. */
  transaction<T>(fn: () => T): T
  close(): void
}

const migrationsFolder = resolve(dirname(fileURLToPath(import.meta.url)), '../../migrations')

/**
 * How long a write waits for another process's write lock, milliseconds. Every write transaction
 * takes the lock up front (`BEGIN IMMEDIATE`), so waiting is all a writer ever does: no deferred
 * transaction can find its snapshot stale and fail at its first write.
 */
export const BUSY_TIMEOUT_MS = 1000

/** Whether `e` is SQLite's "database is locked": another process held the write lock past {@link BUSY_TIMEOUT_MS}. */
export function isDatabaseBusy(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY')
}

/**
 * Applies the committed drizzle-kit migrations not yet applied, in drizzle's own bookkeeping
 * (`__drizzle_migrations`, by each migration's timestamp) — but under the write lock, taken
 * before the applied ones are read: two processes starting together on a new file cannot both
 * decide to apply the same migration. The second waits, then finds nothing left to do.
 */
function applyMigrations(sqlite: Database.Database): void {
  const migrations = readMigrationFiles({ migrationsFolder })
  sqlite.transaction(() => {
    sqlite.exec('CREATE TABLE IF NOT EXISTS "__drizzle_migrations" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)')
    const last = sqlite.prepare('SELECT created_at FROM "__drizzle_migrations" ORDER BY created_at DESC LIMIT 1').get() as { created_at: number } | undefined
    for (const migration of migrations) {
      if (last !== undefined && Number(last.created_at) >= migration.folderMillis) continue
      for (const statement of migration.sql) if (statement.trim() !== '') sqlite.exec(statement)
      sqlite.prepare('INSERT INTO "__drizzle_migrations" ("hash", "created_at") VALUES (?, ?)').run(migration.hash, migration.folderMillis)
    }
  }).immediate()
}

/** Opens the SQLite database (WAL, NORMAL, foreign keys, busy timeout) and applies the committed migrations. */
export function openDatabase(path: string): Database_ {
  if (path !== ':memory:') mkdirSync(dirname(resolve(path)), { recursive: true })
  const sqlite = new Database(path)
  sqlite.pragma('journal_mode = WAL')
  sqlite.pragma('synchronous = NORMAL')
  sqlite.pragma('foreign_keys = ON')
  // Waits are synchronous (the whole process waits): bounded well below a request's patience,
  // and answered 503 + Retry-After when exceeded (isDatabaseBusy).
  sqlite.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`)
  const db = drizzle(sqlite, { schema })
  applyMigrations(sqlite)
  return {
    sqlite,
    db,
    durably(fn) {
      sqlite.pragma('synchronous = FULL')
      try {
        return sqlite.transaction(fn).immediate()
      } finally {
        sqlite.pragma('synchronous = NORMAL')
      }
    },
    transaction(fn) {
      return sqlite.transaction(fn).immediate()
    },
    close: () => sqlite.close(),
  }
}
