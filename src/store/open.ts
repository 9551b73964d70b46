/**
 * Where the broker keeps its state: a SQLite file (the embedded default) or a PostgreSQL
 * database (several instances sharing one), chosen by the `database` setting. Both give the same
 * {@link Stores}; nothing above this module knows which it got.
 */
import type Database from 'better-sqlite3'
import { openDatabase } from './db.js'
import { openPgDatabase, type PgDatabase } from './pg/db.js'
import { createPgStores } from './pg/stores.js'
import { createStores, type Stores } from './stores.js'

/** The opened database, as the broker holds it to close it (and tests to look inside). */
export interface BrokerDatabase {
  readonly dialect: 'sqlite' | 'postgres'
  /** The SQLite connection, for SQLite-only tools and tests; reading it on PostgreSQL throws. */
  readonly sqlite: Database.Database
  /** The PostgreSQL pool; reading it on SQLite throws. */
  readonly pool: PgDatabase['pool']
  /** Ends every connection (waits and streams held on it are answered first by the broker). */
  close(): Promise<void>
}

/** Whether a `database` setting names a PostgreSQL database (a `postgres://` or `postgresql://` URL). */
export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//i.test(location)
}

/** Opens (and migrates) the database `location` names, and the stores on it. */
export async function openStores(location: string): Promise<{ database: BrokerDatabase; stores: Stores }> {
  if (isPostgresUrl(location)) {
    const pg = await openPgDatabase(location)
    const stores = createPgStores(pg)
    return { database: handle('postgres', { pool: pg.pool }, () => pg.close()), stores }
  }
  const sqlite = openDatabase(location)
  return { database: handle('sqlite', { sqlite: sqlite.sqlite }, async () => sqlite.close()), stores: createStores(sqlite) }
}

function handle(dialect: BrokerDatabase['dialect'], has: { sqlite?: Database.Database; pool?: PgDatabase['pool'] }, close: () => Promise<void>): BrokerDatabase {
  return {
    dialect,
    get sqlite() {
      if (!has.sqlite) throw new Error('this broker runs on PostgreSQL: there is no SQLite connection')
      return has.sqlite
    },
    get pool() {
      if (!has.pool) throw new Error('this broker runs on SQLite: there is no PostgreSQL pool')
      return has.pool
    },
    close,
  }
}
