/**
 * Upgrading from any earlier schema ends where a fresh database starts: a SQLite database left at
 * every earlier migration, holding a task, a token, an audit row and a feed event written with
 * that schema, is upgraded by the broker's own start (openDatabase) to exactly the fresh schema —
 * tables, columns, indexes, triggers — and keeps its rows. The PostgreSQL schema has one migration
 * so far: a fresh database is the only starting point (test/pg-db.test.ts opens one from two
 * instances at once).
 */
import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { drizzle } from 'drizzle-orm/better-sqlite3'
import { migrate } from 'drizzle-orm/better-sqlite3/migrator'
import { openDatabase } from '../src/store/db.js'

interface Journal {
  entries: { idx: number; tag: string }[]
}
const journal = JSON.parse(readFileSync(new URL('../migrations/meta/_journal.json', import.meta.url), 'utf8')) as Journal

/** A database in `dir` with only the migrations before `before` applied, as an older broker left it. */
function databaseBefore(dir: string, before: number): { file: string; sqlite: Database.Database } {
  const old = join(dir, 'migrations')
  cpSync(new URL('../migrations/', import.meta.url), old, { recursive: true })
  const cut: Journal = { ...journal, entries: journal.entries.filter((e) => e.idx < before) }
  writeFileSync(join(old, 'meta', '_journal.json'), JSON.stringify(cut))
  const file = join(dir, 'broker.db')
  const sqlite = new Database(file)
  migrate(drizzle(sqlite), { migrationsFolder: old })
  return { file, sqlite }
}

/** The schema as SQLite states it: every table, index and trigger with its columns, SQL aside (ALTER TABLE rewrites it). */
function schemaOf(sqlite: Database.Database): unknown {
  const objects = sqlite
    .prepare("select type, name, tbl_name from sqlite_master where name not like 'sqlite_%' and name not like '__drizzle%' order by type, name")
    .all() as { type: string; name: string; tbl_name: string }[]
  return objects.map((o) => ({
    ...o,
    ...(o.type === 'table' ? { columns: sqlite.prepare(`select name, type, "notnull", dflt_value, pk from pragma_table_info(?) order by cid`).all(o.name).sort(byName) } : {}),
    ...(o.type === 'index' ? { columns: sqlite.prepare('select name from pragma_index_info(?) order by seqno').all(o.name), unique: (sqlite.prepare(`select "unique" from pragma_index_list(?) where name = ?`).get(o.tbl_name, o.name) as { unique: number } | undefined)?.unique } : {}),
  }))
}
const byName = (a: unknown, b: unknown) => String((a as { name: string }).name).localeCompare(String((b as { name: string }).name))

/** Rows every schema since the first can hold, written with that schema's columns. */
function writeRows(sqlite: Database.Database): void {
  sqlite.prepare("insert into tasks (id, user_sub, subject_issuer, workload_id, purpose, resources, status, created_at, expires_at) values ('t1', 'alice', 'https://idp.example', 'w', 'p', '[]', 'active', 1, 99)").run()
  sqlite.prepare("insert into tokens (jti, task_id, sub, workload_id, aud, scope, iat, exp, status) values ('j1', 't1', 'alice', 'w', 'https://r.example', 'notes:read', 1, 99, 'active')").run()
  sqlite.prepare("insert into audit_events (at, action, decision, reason) values (1, 'task.open', 'allow', 'r')").run()
}

describe('upgrading a SQLite database', () => {
  const fresh = (() => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-fresh-'))
    try {
      const db = openDatabase(join(dir, 'broker.db'))
      const schema = schemaOf(db.sqlite)
      db.close()
      return schema
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })()

  it('has migrations numbered without a gap', () => {
    assert.deepEqual(journal.entries.map((e) => e.idx), journal.entries.map((_, i) => i))
  })

  for (const entry of journal.entries.slice(1)) {
    it(`from the schema before ${entry.tag} reaches the fresh schema and keeps its rows`, () => {
      const dir = mkdtempSync(join(tmpdir(), 'taskpass-upgrade-'))
      try {
        const { file, sqlite } = databaseBefore(dir, entry.idx)
        writeRows(sqlite)
        sqlite.close()
        const upgraded = openDatabase(file)
        try {
          assert.deepEqual(schemaOf(upgraded.sqlite), fresh)
          const row = (sql: string) => upgraded.sqlite.prepare(sql).get()
          assert.deepEqual(row("select id, status, expires_at from tasks where id = 't1'"), { id: 't1', status: 'active', expires_at: 99 })
          assert.deepEqual(row("select jti, task_id, aud, status from tokens where jti = 'j1'"), { jti: 'j1', task_id: 't1', aud: 'https://r.example', status: 'active' })
          assert.deepEqual(row('select count(*) as n from audit_events'), { n: 1 })
        } finally {
          upgraded.close()
        }
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    })
  }
})
