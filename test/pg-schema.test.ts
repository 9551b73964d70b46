/**
 * The PostgreSQL schema mirrors the SQLite one: the same tables with the same columns (TypeScript
 * and SQL names), nullability, defaults, primary keys and indexes, and row types that are
 * interchangeable, so every store method's row type is one type for both dialects.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { getTableColumns, is, type Table } from 'drizzle-orm'
import { getTableConfig as pgConfig, PgTable } from 'drizzle-orm/pg-core'
import { getTableConfig as sqliteConfig, SQLiteTable } from 'drizzle-orm/sqlite-core'
import * as pg from '../src/store/pg/schema.js'
import * as lite from '../src/store/schema.js'

/** true only when each type is assignable to the other. */
type Mutual<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
type Rows<K extends keyof typeof lite & keyof typeof pg> = Mutual<(typeof lite)[K]['$inferSelect'], (typeof pg)[K]['$inferSelect']>
type Inserts<K extends keyof typeof lite & keyof typeof pg> = Mutual<(typeof lite)[K]['$inferInsert'], (typeof pg)[K]['$inferInsert']>

// Compile-time: `npm run typecheck` fails when a row type of one dialect drifts from the other's.
const sameRows: { [K in keyof typeof lite & keyof typeof pg]: Rows<K> } = {
  tasks: true, tokens: true, signingKeys: true, auditEvents: true, revocationEvents: true, revokedSessions: true,
  brokerMeta: true, policySets: true, authorizationCodes: true, refreshTokens: true, catalogObjects: true, replayEntries: true,
}
const sameInserts: { [K in keyof typeof lite & keyof typeof pg]: Inserts<K> } = {
  tasks: true, tokens: true, signingKeys: true, auditEvents: true, revocationEvents: true, revokedSessions: true,
  brokerMeta: true, policySets: true, authorizationCodes: true, refreshTokens: true, catalogObjects: true, replayEntries: true,
}

function tablesOf(module: Record<string, unknown>): Map<string, Table> {
  return new Map(Object.entries(module).filter(([, v]) => is(v, SQLiteTable) || is(v, PgTable)) as [string, Table][])
}

/** Each column as both dialects can state it: TypeScript name → SQL name, nullability, default, primary key. */
function columnsOf(table: Table) {
  return Object.fromEntries(
    Object.entries(getTableColumns(table)).map(([prop, c]) => [prop, { name: c.name, notNull: c.notNull, default: c.default, primary: c.primary }]),
  )
}

describe('the PostgreSQL schema', () => {
  const liteTables = tablesOf(lite)
  const pgTables = tablesOf(pg)

  it('has the same tables, under the same exported names', () => {
    assert.deepEqual([...pgTables.keys()].sort(), [...liteTables.keys()].sort())
    assert.equal(Object.keys(sameRows).length, liteTables.size)
    assert.equal(Object.keys(sameInserts).length, liteTables.size)
  })

  for (const [name, liteTable] of liteTables) {
    describe(name, () => {
      const pgTable = pgTables.get(name)!
      const l = sqliteConfig(liteTable as SQLiteTable)
      const p = pgConfig(pgTable as PgTable)

      it('has the same SQL name', () => assert.equal(p.name, l.name))

      it('has the same columns: TypeScript and SQL names, nullability, defaults, primary key', () => {
        assert.deepEqual(columnsOf(pgTable), columnsOf(liteTable))
      })

      it('has the same composite primary key', () => {
        const keys = (pks: { columns: { name: string }[] }[]) => pks.map((k) => k.columns.map((c) => c.name))
        assert.deepEqual(keys(p.primaryKeys), keys(l.primaryKeys))
      })

      it('has the same indexes: names, columns, uniqueness and partial condition', () => {
        const indexes = (list: { config: { name?: string | undefined; unique: boolean; columns: unknown[]; where?: unknown } }[]) =>
          list
            .map(({ config }) => ({
              name: config.name,
              unique: config.unique,
              columns: config.columns.map((c) => (c as { name: string }).name),
              partial: config.where !== undefined,
            }))
            .sort((a, b) => String(a.name).localeCompare(String(b.name)))
        assert.deepEqual(indexes(p.indexes), indexes(l.indexes))
      })
    })
  }

  it('keeps the partial unique index on the signing states', () => {
    const index = pgConfig(pg.signingKeys).indexes.find((i) => i.config.name === 'signing_keys_one_per_signing_state')
    assert.ok(index?.config.unique)
    assert.ok(index.config.where)
  })
})
