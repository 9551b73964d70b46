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
   * Runs `fn` (synchronous statements) once no transaction is open on the connection. Every
   * statement outside a transaction goes through here: an async transaction spans awaits, and a
   * statement run in between on the one connection would join it — see uncommitted rows, or be
   * rolled back with it. Immediate when the connection is free; waits at most
   * {@link BUSY_TIMEOUT_MS} otherwise (then fails as busy: 503).
   */
  exclusive<T>(fn: () => T): Promise<T>
  /**
   * Runs `fn` in one write transaction (`BEGIN IMMEDIATE`) committed with `synchronous=FULL`:
   * task and revocation state survive power loss, not only a process crash. Everything else
   * commits with `NORMAL` (WAL: safe against a crash of the process, which is what issuance rows
   * need). `fn` may await only the transaction's own statements: hash and sign before.
   */
  durably<T>(fn: () => Promise<T>): Promise<T>
  /** Runs `fn` in one write transaction under the default `synchronous=NORMAL`. */
  transaction<T>(fn: () => Promise<T>): Promise<T>
  /**
   * The open write transaction of {@link durably} or {@link transaction}: a number no other
   * transaction of this connection has had, or undefined when none is open. What a store keeps
   * about its own uncommitted writes is valid for that transaction only.
   */
  transactionId(): number | undefined
  close(): void
}

/** Thrown when a statement waited past {@link BUSY_TIMEOUT_MS} for this process's own open transaction. */
class ConnectionBusy extends Error {
  readonly code = 'SQLITE_BUSY_CONNECTION'
  constructor() {
    super('the database connection stayed in a transaction past the busy timeout')
  }
}

const migrationsFolder = resolve(dirname(fileURLToPath(import.meta.url)), '../../migrations')

/**
 * How long a write waits for another process's write lock, milliseconds. Every write transaction
 * takes the lock up front (`BEGIN IMMEDIATE`), so waiting is all a writer ever does: no deferred
 * transaction can find its snapshot stale and fail at its first write.
 */
export const BUSY_TIMEOUT_MS = 1000

/**
 * PostgreSQL's answers that mean "try again" (SQLSTATE): a lock wait past `lock_timeout`
 * (55P03), a deadlock it broke by aborting this transaction (40P01), a serialisation failure (40001).
 */
const PG_RETRYABLE = new Set(['55P03', '40P01', '40001'])

/**
 * Whether `e` means the database is busy and the request may simply be sent again: SQLite's
 * "database is locked" (another process held the write lock past {@link BUSY_TIMEOUT_MS}), or
 * PostgreSQL's lock timeout, deadlock or serialisation failure. Answered 503 + Retry-After.
 */
export function isDatabaseBusy(e: unknown): boolean {
  return hasErrorCode(e, (code) => code.startsWith('SQLITE_BUSY') || PG_RETRYABLE.has(code)) || inErrorChain(e, (err) => err instanceof Error && PG_POOL_TIMEOUTS.has(err.message))
}

/**
 * node-postgres's answers (no SQLSTATE: its own, by message) when no connection came within the
 * pool's `connectionTimeoutMillis`: every pooled connection stayed in use, or a new one did not
 * open in time. Busy as a lock wait is: the request may be sent again.
 */
const PG_POOL_TIMEOUTS = new Set(['timeout exceeded when trying to connect', 'Connection terminated due to connection timeout'])


/**
 * Whether `e` is PostgreSQL refusing a value its `text` cannot hold: a NUL character (U+0000) in
 * a request's value (SQLSTATE 22021, or 22P05). SQLite stores such a value; PostgreSQL refuses the
 * statement, so the request is refused as invalid (400) and its transaction has written nothing.
 */
export function isUnstorableText(e: unknown): boolean {
  return hasErrorCode(e, (code) => code === '22021' || code === '22P05')
}

/** Whether `e` is a unique-index violation: PostgreSQL's `unique_violation` (23505) or SQLite's. */
export function isUniqueViolation(e: unknown): boolean {
  return hasErrorCode(e, (code) => code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY')
}

/**
 * Whether `e`, or an error it wraps, carries a driver code `test` accepts: drizzle wraps a
 * driver's error (DrizzleQueryError) with the driver's as its `cause`. A few levels only, so a
 * cause chain that loops ends.
 */
export function hasErrorCode(e: unknown, test: (code: string) => boolean): boolean {
  return inErrorChain(e, (err) => {
    const code = (err as { code?: unknown }).code
    return typeof code === 'string' && test(code)
  })
}

/** Whether `e` or an error it wraps (a few `cause` levels only, so a chain that loops ends) passes `test`. */
function inErrorChain(e: unknown, test: (err: object) => boolean): boolean {
  for (let err = e, depth = 0; err !== null && typeof err === 'object' && depth < 4; err = (err as { cause?: unknown }).cause, depth++) {
    if (test(err)) return true
  }
  return false
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

  // One async transaction at a time on the connection, and no statement while one is open.
  let held = false
  const waiting: { go: () => void; timer: NodeJS.Timeout }[] = []
  function acquire(): Promise<void> {
    if (!held) {
      held = true
      return Promise.resolve()
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        go: resolve,
        timer: setTimeout(() => {
          waiting.splice(waiting.indexOf(waiter), 1)
          reject(new ConnectionBusy())
        }, BUSY_TIMEOUT_MS),
      }
      waiting.push(waiter)
    })
  }
  function release(): void {
    const next = waiting.shift()
    if (!next) {
      held = false
      return
    }
    clearTimeout(next.timer)
    next.go() // the lock passes straight to the next waiter
  }
  let transactions = 0
  let open: number | undefined
  async function inTransaction<T>(fn: () => Promise<T>, durable: boolean): Promise<T> {
    await acquire()
    try {
      if (durable) sqlite.pragma('synchronous = FULL')
      sqlite.exec('BEGIN IMMEDIATE')
      open = ++transactions
      try {
        const value = await fn()
        sqlite.exec('COMMIT')
        return value
      } catch (e) {
        try {
          if (sqlite.inTransaction) sqlite.exec('ROLLBACK')
        } catch {
          // SQLite rolled back already (or cannot): the caller hears of what went wrong first
        }
        throw e
      }
    } finally {
      open = undefined
      // Released whatever happens here: a gate left held would refuse every later statement.
      try {
        if (durable) sqlite.pragma('synchronous = NORMAL')
      } finally {
        release()
      }
    }
  }

  return {
    sqlite,
    db,
    exclusive<T>(fn: () => T): Promise<T> {
      if (!held) {
        try {
          return Promise.resolve(fn())
        } catch (e) {
          return Promise.reject(e)
        }
      }
      return acquire().then(() => {
        try {
          return fn()
        } finally {
          release()
        }
      })
    },
    durably: (fn) => inTransaction(fn, true),
    transaction: (fn) => inTransaction(fn, false),
    transactionId: () => open,
    close: () => sqlite.close(),
  }
}
