import type Database from 'better-sqlite3'
import { getTableColumns, getTableName } from 'drizzle-orm'
import type { SQLiteTable } from 'drizzle-orm/sqlite-core'

/**
 * Whole-row statements on a table, for the few that every token exchange runs (the task read, the
 * token and audit inserts): the SQL drizzle generates for them, on the better-sqlite3 connection,
 * bound by position and read as arrays, so a call skips drizzle's placeholder filling and row
 * mapping. The columns come from the drizzle schema (plain text and integer columns, which drizzle
 * maps as they are), so a column added there is read and written here too.
 */
function columnsOf(table: SQLiteTable, omit: readonly string[] = []): { keys: string[]; names: string } {
  const columns = Object.entries(getTableColumns(table)).filter(([key]) => !omit.includes(key))
  return { keys: columns.map(([key]) => key), names: columns.map(([, c]) => quote(c.name)).join(', ') }
}

function quote(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

/** Reads one whole row of `table` (the first) that `where` (SQL with `?` parameters) selects. */
export function rowReader<Row>(sqlite: Database.Database, table: SQLiteTable, where: string): (...params: (string | number)[]) => Row | undefined {
  const { keys, names } = columnsOf(table)
  const statement = sqlite.prepare<unknown[], unknown[]>(`select ${names} from ${quote(getTableName(table))} where ${where}`).raw()
  return (...params) => {
    const values = statement.get(...params)
    if (values === undefined) return undefined
    const row: Record<string, unknown> = {}
    for (let i = 0; i < keys.length; i++) row[keys[i]!] = values[i]
    return row as Row
  }
}

/**
 * {@link rowReader} with one more value in the same statement: `flag`, a scalar SQL expression
 * (its `?` parameters bound first, then those of `where`), answered whether or not a row is
 * selected (then `row` is undefined). One statement instead of two is one read transaction
 * instead of two, which is most of what a point read costs outside a transaction.
 */
export function flaggedRowReader<Row>(sqlite: Database.Database, table: SQLiteTable, flag: string, where: string): (...params: (string | number)[]) => { flag: unknown; row: Row | undefined } {
  const { keys, names } = columnsOf(table)
  const primary = Object.values(getTableColumns(table)).find((c) => c.primary)
  if (!primary) throw new Error(`table ${getTableName(table)} has no single-column primary key`)
  // One row always: the flag's, with the table's row joined when `where` selects one (its primary key then not null).
  const statement = sqlite.prepare<unknown[], unknown[]>(`select (${flag}), ${quote(getTableName(table))}.${quote(primary.name)} is not null, ${names} from (select 1) left join ${quote(getTableName(table))} on ${where} limit 1`).raw()
  return (...params) => {
    const values = statement.get(...params)!
    if (values[1] === 0) return { flag: values[0], row: undefined }
    const row: Record<string, unknown> = {}
    for (let i = 0; i < keys.length; i++) row[keys[i]!] = values[i + 2]
    return { flag: values[0], row: row as Row }
  }
}

/** Inserts a row of `table`: every column but `omit` (an autoincrement id), each from the row's value under the schema's key. */
export function rowInserter<Row extends object>(sqlite: Database.Database, table: SQLiteTable, omit: readonly string[] = []): (row: Row) => Database.RunResult {
  const { keys, names } = columnsOf(table, omit)
  const statement = sqlite.prepare<unknown[]>(`insert into ${quote(getTableName(table))} (${names}) values (${keys.map(() => '?').join(', ')})`)
  return (row) => {
    const values: unknown[] = new Array(keys.length)
    for (let i = 0; i < keys.length; i++) values[i] = (row as Record<string, unknown>)[keys[i]!]
    return statement.run(values)
  }
}
