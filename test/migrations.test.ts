/**
 * Upgrading a database keeps what it knew: feed events written before the subject issuer was
 * recorded get it from their task or their revoked session, so verifiers reading the feed again
 * still deny those sessions.
 */
import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { drizzle } from 'drizzle-orm/better-sqlite3'
import { migrate } from 'drizzle-orm/better-sqlite3/migrator'
import { createHash } from 'node:crypto'
import { openDatabase } from '../src/store/db.js'
import { createStores } from '../src/store/stores.js'
import { sqliteOnly } from './harness.js'

/** A new database in `dir` with only the migrations before number `before` applied (as an older release left it). */
function databaseBefore(dir: string, before: number): { file: string; sqlite: Database.Database } {
  const old = join(dir, 'migrations')
  cpSync(new URL('../migrations/', import.meta.url), old, { recursive: true })
  const journalFile = join(old, 'meta', '_journal.json')
  const journal = JSON.parse(readFileSync(journalFile, 'utf8')) as { entries: { idx: number }[] }
  journal.entries = journal.entries.filter((e) => e.idx < before)
  writeFileSync(journalFile, JSON.stringify(journal))
  const file = join(dir, 'broker.db')
  const sqlite = new Database(file)
  migrate(drizzle(sqlite), { migrationsFolder: old })
  return { file, sqlite }
}

describe('migration 0003', { skip: sqliteOnly('SQLite migrations applied to an older SQLite database') }, () => {
  it('fills in the subject issuer of earlier task and session events', () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-migrate-'))
    try {
      // A database as the broker left it before 0003: the first three migrations only.
      const { file, sqlite } = databaseBefore(dir, 3)
      sqlite.prepare("insert into tasks (id, user_sub, subject_issuer, sid, workload_id, purpose, resources, status, created_at, expires_at) values ('t1', 'alice', 'https://idp.example', 's1', 'w', 'p', '[]', 'revoked', 1, 2)").run()
      sqlite.prepare("insert into revocation_events (at, kind, task_id, sid, sub, audiences, relevant_until) values (5, 'task_revoked', 't1', 's1', 'alice', 'https://r.example', 9)").run()
      sqlite.prepare("insert into revoked_sessions (subject_issuer, sid, at, relevant_until) values ('https://idp.example', 's1', 5, 99)").run()
      sqlite.prepare("insert into revocation_events (at, kind, sid, sub, audiences, relevant_until) values (5, 'session_revoked', 's1', 'alice', 'https://r.example', 9)").run()
      sqlite.close()

      const upgraded = openDatabase(file)
      const rows = upgraded.sqlite.prepare('select kind, subject_issuer from revocation_events order by id').all()
      upgraded.close()
      assert.deepEqual(rows, [
        { kind: 'task_revoked', subject_issuer: 'https://idp.example' },
        { kind: 'session_revoked', subject_issuer: 'https://idp.example' },
      ])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('migration 0008', { skip: sqliteOnly('SQLite migrations applied to an older SQLite database') }, () => {
  it('keeps the audit chain of an earlier database verifiable, and chains rows with a detail onto it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-migrate-'))
    try {
      // A database as the broker left it before 0008, with chained audit rows written then.
      const { file, sqlite } = databaseBefore(dir, 8)
      let prev: string | null = null
      for (const [at, action] of [[1, 'task.open'], [2, 'task.complete']] as const) {
        // The hash as the broker computed it before 0008 (no detail), written out here on purpose.
        const hash: string = createHash('sha256').update(JSON.stringify([prev, at, action, 'allow', 'r', null, 'alice', 'w', 't1', null, null, null, null])).digest('hex')
        sqlite.prepare('insert into audit_events (at, action, decision, reason, user_sub, workload_id, task_id, prev_hash, hash) values (?, ?, ?, ?, ?, ?, ?, ?, ?)').run(at, action, 'allow', 'r', 'alice', 'w', 't1', prev, hash)
        prev = hash
      }
      sqlite.close()

      const upgraded = openDatabase(file)
      try {
        const stores = createStores(upgraded)
        assert.deepEqual({ ok: (await stores.audit.verify()).ok, rows: (await stores.audit.verify()).rows }, { ok: true, rows: 2 })
        await stores.audit.insert({ at: 3, action: 'catalog.create', decision: 'allow', reason: 'workload w2 created', detail: JSON.stringify({ before: null, after: { key: 'w2' } }) })
        assert.equal((await stores.audit.verify()).ok, true)
        // The detail is covered by the hash: changing it is found.
        upgraded.sqlite.prepare("update audit_events set detail = '{\"before\":null,\"after\":{\"key\":\"w3\"}}' where action = 'catalog.create'").run()
        assert.deepEqual((await stores.audit.verify()).first_bad?.problem, 'edited')
        assert.deepEqual(upgraded.sqlite.prepare('select count(*) as n from catalog_objects').get(), { n: 0 })
      } finally {
        upgraded.close()
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
