/**
 * `npm run bench:scale`: the warm exchange against the size of the stored state, and pruning a
 * large backlog of expired rows.
 *
 * Throughput: one SQLite database per size (default 0, 1,000,000 and 10,000,000 rows each in
 * tokens, audit events and tasks), filled in one transaction by recursive-CTE inserts (ordered
 * keys, so every index grows at its end). The rows are live and recent — tokens not expired, audit
 * events and tasks inside their retention — so the broker's periodic prune finds nothing to delete
 * during the measurement; the audit rows carry no hash chain (nothing checks it at start, and an
 * appended row links to the last one whatever it holds). One broker per database
 * (bench/servers/taskpass.ts), all up at once; then the warm exchange in interleaved rounds
 * (bench/lib/rounds.ts): every size once per round, the order rotating, each size reported as its
 * median req/s, p50 and p99 over rounds with their min–max, and its ratio to the smallest size
 * (0 rows) taken per round, then the median.
 *
 * Pruning: a database with `--prune-rows` (default 1,000,000) expired tokens, audit events past
 * their retention and expired replay entries, pruned in this process by pruneStore; every batch
 * statement is timed (it runs on the event loop: SQLite is synchronous) and the event loop's delay
 * is sampled meanwhile. Prints the longest batch and the p99, overall and per store.
 * BENCH_SCALE_AUTOCHECKPOINT=off turns SQLite's automatic WAL checkpoint off for that run (a
 * diagnosis: what the batches cost without the checkpoints a commit may run).
 *
 * Settings: `--rows 0,100000,1000000` or BENCH_SCALE_ROWS; `--rounds N` / BENCH_ROUNDS (default
 * 5); `--seconds S` / BENCH_SECONDS (default 5); BENCH_CONNECTIONS (default 50); BENCH_WARMUP
 * (default 1); `--prune-rows N` / BENCH_SCALE_PRUNE_ROWS (0: no pruning part); `--only
 * throughput|prune`. Results go to the `scale` section of bench/results/latest.json.
 */
import Database from 'better-sqlite3'
import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { openStores } from '../src/store/open.js'
import { PRUNE_BATCH, pruneStore } from '../src/store/retention.js'
import type { Stores } from '../src/store/stores.js'
import { freePort, installWatchdog, killAllServers, startServer, type ServerProcess } from './lib/child.js'
import { nonNegativeInt, positiveInt } from './lib/env.js'
import { exchangeForm, generateBenchKeys, mintActorToken, mintSubjectToken, publicKeys, RESOURCE, SCOPE, USER, USER_ISSUER, WORKLOAD_ID } from './lib/fixtures.js'
import { runLoad } from './lib/load.js'
import { mergeResults } from './lib/results.js'
import { formatSpread, table } from './lib/report.js'
import { ratioSpread, rotation, scenarioStats, spread, type RoundLoads, type ScenarioStats, type Spread } from './lib/rounds.js'

const log = (msg: string) => process.stdout.write(`${msg}\n`)

function flag(name: string): string | undefined {
  const args = process.argv.slice(2)
  const i = args.indexOf(`--${name}`)
  if (i >= 0) return args[i + 1]
  return args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
}

function count(text: string, what: string): number {
  const n = Number(text.replace(/_/g, ''))
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${what}: "${text}" is not a row count`)
  return n
}

const sizes = [...new Set((flag('rows') ?? process.env.BENCH_SCALE_ROWS ?? '0,1000000,10000000').split(',').map((s) => count(s.trim(), '--rows')))].sort((a, b) => a - b)
const rounds = Number(flag('rounds') ?? positiveInt('BENCH_ROUNDS', 5))
const duration = Number(flag('seconds') ?? positiveInt('BENCH_SECONDS', 5))
const connections = positiveInt('BENCH_CONNECTIONS', 50)
const warmup = nonNegativeInt('BENCH_WARMUP', 1)
const pruneRows = count(flag('prune-rows') ?? process.env.BENCH_SCALE_PRUNE_ROWS ?? '1000000', '--prune-rows')
const only = flag('only')
if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(duration) || duration < 1) throw new Error('--rounds and --seconds must be positive integers')
if (only !== undefined && only !== 'throughput' && only !== 'prune') throw new Error(`--only ${only}: expected throughput or prune`)

// Filling: a few seconds per million rows and table; pruning: up to a few minutes per million; then the rounds.
installWatchdog('bench:scale', 300 + Math.ceil(sizes.reduce((a, b) => a + b, 0) / 1e6) * 30 + Math.ceil(pruneRows / 1e6) * 300 + rounds * sizes.length * (duration + warmup + 10))

const dataDir = mkdtempSync(join(tmpdir(), 'taskpass-scale-'))
process.on('exit', () => rmSync(dataDir, { recursive: true, force: true }))

/** Creates the schema (the broker's migrations), closes it; then bulk inserts run on a connection of their own. */
async function migrated(path: string): Promise<Database.Database> {
  const { database } = await openStores(path)
  await database.close()
  const sqlite = new Database(path)
  sqlite.pragma('journal_mode = WAL')
  sqlite.pragma('synchronous = OFF')
  sqlite.pragma('cache_size = -262144') // 256 MiB: the indexes being built stay in memory
  return sqlite
}

type Table = 'tokens' | 'audit' | 'tasks' | 'replay'

/** `n` rows per table, in one transaction: ids `t000000000042`, ordered like the rowids. Times are SQL expressions. */
function fill(sqlite: Database.Database, n: number, times: { tokenExp: string; auditAt: string; taskExpires: string; replayUntil?: string }, tables: readonly Table[]): void {
  const series = `with recursive s(i) as (select 1 union all select i + 1 from s where i < ${n})`
  const sql: Record<Table, string> = {
    tasks:
      `insert into tasks (id, user_sub, subject_issuer, workload_id, purpose, resources, status, created_at, expires_at) ${series} ` +
      `select printf('t%012d', i), '${USER}', '${USER_ISSUER}', '${WORKLOAD_ID}', 'stored', '[{"resource":"${RESOURCE}","scopes":["${SCOPE}"]}]', 'completed', (${times.taskExpires}) - 3600, ${times.taskExpires} from s`,
    tokens:
      `insert into tokens (jti, task_id, sub, workload_id, aud, scope, iat, exp, status) ${series} ` +
      `select printf('j%012d', i), printf('t%012d', i), '${USER}', '${WORKLOAD_ID}', '${RESOURCE}', '${SCOPE}', (${times.tokenExp}) - 300, ${times.tokenExp}, 'active' from s`,
    audit:
      `insert into audit_events (at, action, decision, reason, user_sub, workload_id, task_id, jti, resource) ${series} ` +
      `select ${times.auditAt}, 'token.exchange', 'allow', 'granted', '${USER}', '${WORKLOAD_ID}', printf('t%012d', i), printf('j%012d', i), '${RESOURCE}' from s`,
    replay: `insert into replay_entries (key, until) ${series} select printf('r%012d', i), ${times.replayUntil ?? 0} from s`,
  }
  sqlite.transaction(() => {
    for (const t of tables) sqlite.exec(sql[t])
  })()
  sqlite.pragma('wal_checkpoint(TRUNCATE)')
  // Filled with synchronous OFF: hundreds of MB are still dirty in the OS's page cache, and the
  // broker's first WAL checkpoint (synchronous NORMAL fsyncs the database file) would write them
  // all back inside one prune batch (a 150–260 ms batch the broker itself never causes: its WAL
  // holds at most about a checkpoint's worth of pages). Written out here, before anything is timed.
  const fd = openSync(sqlite.name, 'r+')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

interface SizeResult {
  rows: number
  fillSeconds: number
  dbMegabytes: number
  startupMs?: number
  stats?: ScenarioStats
  ratioToSmallest?: Spread
  rounds: Array<{ round: number; position: number; rps: number; p50: number; p99: number; ok: number; non2xx: number; errors: number } | null>
  error?: string
}

const label = (rows: number) => `${rows.toLocaleString('en-US')} rows`

async function throughput(): Promise<{ sizes: SizeResult[]; settings: Record<string, unknown> }> {
  const keys = await generateBenchKeys()
  const issuer = `http://127.0.0.1:${await freePort()}`
  const subject = await mintSubjectToken(keys, issuer)
  const actor = await mintActorToken(keys, issuer)
  const results: SizeResult[] = sizes.map((rows) => ({ rows, fillSeconds: 0, dbMegabytes: 0, rounds: [] }))
  const servers = new Map<number, { server: ServerProcess; body: string }>()
  try {
    for (const r of results) {
      const path = join(dataDir, `scale-${r.rows}.db`)
      const t = performance.now()
      const sqlite = await migrated(path)
      // Live, recent state: nothing in it is due for pruning while the broker runs.
      if (r.rows > 0) fill(sqlite, r.rows, { tokenExp: 'unixepoch() + 86400', auditAt: 'unixepoch() - 3600', taskExpires: 'unixepoch() + 86400' }, ['tasks', 'tokens', 'audit'])
      r.dbMegabytes = Math.round(((sqlite.pragma('page_count', { simple: true }) as number) * (sqlite.pragma('page_size', { simple: true }) as number)) / 1e6)
      sqlite.close()
      r.fillSeconds = Number(((performance.now() - t) / 1000).toFixed(1))
      log(`  ${label(r.rows).padStart(18)}: filled in ${r.fillSeconds} s (${r.dbMegabytes} MB)`)
    }
    for (const r of results) {
      try {
        const server = await startServer(label(r.rows), 'taskpass', { port: await freePort(), issuer, database: join(dataDir, `scale-${r.rows}.db`), keys: publicKeys(keys) }, 240_000)
        const res = await fetch(`${server.url}/tasks`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${subject}`, 'actor-token': actor },
          body: JSON.stringify({ purpose: 'benchmark', resources: [{ resource: RESOURCE, scopes: [SCOPE] }] }),
        })
        const task = (await res.json()) as { task_id?: string }
        if (res.status !== 201 || !task.task_id) throw new Error(`opening the task got HTTP ${res.status}: ${JSON.stringify(task)}`)
        const body = `${exchangeForm(subject, actor)}&task_id=${encodeURIComponent(task.task_id)}`
        const smoke = await fetch(`${server.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body })
        if (smoke.status !== 200) throw new Error(`smoke exchange got HTTP ${smoke.status}: ${(await smoke.text()).slice(0, 300)}`)
        servers.set(r.rows, { server, body })
        r.startupMs = server.startupMs
        log(`  ${label(r.rows).padStart(18)}: broker up on ${server.url} in ${server.startupMs} ms`)
      } catch (e) {
        r.error = e instanceof Error ? e.message : String(e)
        log(`  ${label(r.rows).padStart(18)}: FAILED: ${r.error}`)
      }
    }
    const roundLoads: Array<RoundLoads<string>> = []
    for (let round = 0; round < rounds; round++) {
      const order = rotation(results, round)
      log(`\n▶ round ${round + 1}/${rounds}: ${order.map((r) => label(r.rows)).join(' → ')}`)
      const loads: RoundLoads<string> = {}
      for (const [position, r] of order.entries()) {
        const s = servers.get(r.rows)
        if (!s || r.error) continue
        const load = await runLoad({ url: s.server.url, path: '/token', connections, warmup, duration, headers: { 'content-type': 'application/x-www-form-urlencoded' }, nextBody: () => s.body })
        loads[label(r.rows)] = load
        r.rounds[round] = { round: round + 1, position: position + 1, rps: load.rps, p50: load.p50, p99: load.p99, ok: load.ok, non2xx: load.non2xx, errors: load.errors }
        const bad = load.non2xx + load.errors > 0 ? ` — ${load.non2xx} non-2xx, ${load.errors} errors ${JSON.stringify(load.statusCodes)}` : ''
        log(`  ${label(r.rows).padStart(18)} ${Math.round(load.rps).toLocaleString('en-US')} req/s, p50 ${load.p50.toFixed(2)} ms, p99 ${load.p99.toFixed(2)} ms${bad}`)
      }
      for (const r of results) r.rounds[round] ??= null
      roundLoads.push(loads)
    }
    const base = label(sizes[0]!)
    for (const r of results) {
      const stats = scenarioStats(roundLoads, label(r.rows))
      if (stats) r.stats = stats
      const ratio = ratioSpread(roundLoads, { id: `${label(r.rows)} / ${base}`, numerator: label(r.rows), denominator: base, metric: 'rps' })
      if (ratio) r.ratioToSmallest = ratio
    }
  } finally {
    await Promise.all([...servers.values()].map((s) => s.server.stop()))
    killAllServers()
  }
  const ms = (v: number) => v.toFixed(2)
  const rps = (v: number) => Math.round(v).toLocaleString('en-US')
  const x = (v: number) => `${v.toFixed(2)}×`
  log(`\n=== warm exchange against stored rows (each of tokens, audit events, tasks), over ${rounds} rounds: median (min–max) ===`)
  log(
    table(
      ['rows per table', 'req/s', 'p50 ms', 'p99 ms', `req/s ÷ ${label(sizes[0]!)} (per round)`, 'non-2xx/err'],
      results.map((r) =>
        r.stats
          ? [label(r.rows), formatSpread(r.stats.rps, rps), r.stats.p50 ? formatSpread(r.stats.p50, ms) : '—', r.stats.p99 ? formatSpread(r.stats.p99, ms) : '—', formatSpread(r.ratioToSmallest, x), `${r.stats.non2xx}/${r.stats.errors}`]
          : [label(r.rows), `FAILED: ${r.error ?? 'no round ran'}`],
      ),
      (row) => row.length === 2,
    ),
  )
  return { sizes: results, settings: { rounds, seconds: duration, warmup, connections } }
}

/** The stores with every prune statement timed (each is one synchronous statement on the event loop), by store. */
function timedPrunes(stores: Stores, batches: Array<{ store: string; ms: number }>): Stores {
  const wrap = <T extends object>(name: string, store: T): T =>
    new Proxy(store, {
      get(target, key, receiver) {
        const value: unknown = Reflect.get(target, key, receiver)
        if (typeof value !== 'function' || typeof key !== 'string' || !key.startsWith('prune')) return value
        return async (...args: unknown[]) => {
          const t = performance.now()
          const out: unknown = await (value as (...a: unknown[]) => unknown).apply(target, args)
          batches.push({ store: name, ms: performance.now() - t })
          return out
        }
      },
    })
  return new Proxy(stores, {
    get(target, key, receiver) {
      const value: unknown = Reflect.get(target, key, receiver)
      return typeof value === 'object' && value !== null && typeof key === 'string' ? wrap(key, value) : value
    },
  })
}

interface PruneResult {
  rows: number
  batchRows: number
  autocheckpoint: boolean
  fillSeconds: number
  deleted: Record<string, number>
  seconds: number
  batches: number
  batchMs: { max: number; p99: number; median: number }
  /** Batch statements and the longest, per store. */
  byStore: Record<string, { batches: number; maxMs: number; totalMs: number; over5Ms: number }>
  eventLoopDelayMs: { max: number; p99: number }
}

async function pruning(): Promise<PruneResult> {
  const path = join(dataDir, 'prune.db')
  const t0 = performance.now()
  const sqlite = await migrated(path)
  // A backlog: tokens long expired, audit events past a one-day retention, replay entries expired.
  fill(sqlite, pruneRows, { tokenExp: 'unixepoch() - 86400', auditAt: 'unixepoch() - 3 * 86400', taskExpires: 'unixepoch() + 86400', replayUntil: 'unixepoch() - 86400' }, ['tokens', 'audit', 'replay'])
  sqlite.close()
  const fillSeconds = Number(((performance.now() - t0) / 1000).toFixed(1))
  log(`  filled ${pruneRows.toLocaleString('en-US')} expired rows each in tokens, audit events and replay entries in ${fillSeconds} s`)
  const { database, stores } = await openStores(path)
  // A diagnosis, not the broker's setting: with SQLite's automatic WAL checkpoint off, what the batches cost alone.
  const autocheckpoint = process.env.BENCH_SCALE_AUTOCHECKPOINT !== 'off'
  if (!autocheckpoint) database.sqlite.pragma('wal_autocheckpoint = 0')
  const batches: Array<{ store: string; ms: number }> = []
  const delay = monitorEventLoopDelay({ resolution: 1 })
  let deleted: Record<string, number>
  const t = performance.now()
  delay.enable()
  try {
    deleted = await pruneStore(timedPrunes(stores, batches), { clockSkew: 60, retention: { audit: 86_400, tasks: 30 * 86_400 } }, Math.floor(Date.now() / 1000))
  } finally {
    delay.disable()
    await database.close()
  }
  const seconds = (performance.now() - t) / 1000
  const round2 = (v: number) => Number(v.toFixed(2))
  const sorted = batches.map((b) => b.ms).sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0
  const byStore: Record<string, { batches: number; maxMs: number; totalMs: number; over5Ms: number }> = {}
  for (const b of batches) byStore[b.store] = { batches: (byStore[b.store]?.batches ?? 0) + 1, maxMs: round2(Math.max(byStore[b.store]?.maxMs ?? 0, b.ms)), totalMs: round2((byStore[b.store]?.totalMs ?? 0) + b.ms), over5Ms: (byStore[b.store]?.over5Ms ?? 0) + (b.ms > 5 ? 1 : 0) }
  const result: PruneResult = {
    rows: pruneRows,
    batchRows: PRUNE_BATCH,
    autocheckpoint,
    fillSeconds,
    deleted,
    seconds: round2(seconds),
    batches: batches.length,
    batchMs: { max: round2(at(1)), p99: round2(at(0.99)), median: round2(spread(sorted)?.median ?? 0) },
    byStore,
    // The histogram's figures are nanoseconds.
    eventLoopDelayMs: { max: round2(delay.max / 1e6), p99: round2(delay.percentile(99) / 1e6) },
  }
  log(`\n=== pruning a backlog of ${pruneRows.toLocaleString('en-US')} expired rows per table, PRUNE_BATCH ${PRUNE_BATCH}${autocheckpoint ? '' : ', WAL autocheckpoint off'} ===`)
  log(`  deleted ${Object.entries(deleted).filter(([, n]) => n > 0).map(([k, n]) => `${n.toLocaleString('en-US')} ${k}`).join(', ')} in ${result.seconds} s, ${result.batches} batch statements`)
  log(`  per batch: max ${result.batchMs.max} ms, p99 ${result.batchMs.p99} ms, median ${result.batchMs.median} ms; event-loop delay while pruning: max ${result.eventLoopDelayMs.max} ms, p99 ${result.eventLoopDelayMs.p99} ms`)
  log(`  longest batch per store: ${Object.entries(byStore).filter(([, b]) => b.batches > 1).map(([k, b]) => `${k} ${b.maxMs} ms (${b.batches} batches, ${b.over5Ms} over 5 ms, ${(b.totalMs / 1000).toFixed(1)} s in all)`).join(', ')}`)
  return result
}

log(`taskpass bench:scale — node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown cpu'})`)
const scale: Record<string, unknown> = { startedAt: new Date().toISOString() }
if (only !== 'prune') {
  log(`\n▶ throughput: ${sizes.map(label).join(', ')} in each of tokens, audit events, tasks; ${rounds} rounds × ${warmup} s warm-up + ${duration} s, ${connections} connections`)
  scale.throughput = await throughput()
}
if (only !== 'throughput' && pruneRows > 0) {
  log('\n▶ pruning')
  scale.prune = await pruning()
}
scale.finishedAt = new Date().toISOString()
log(`\nwrote ${mergeResults({ scale })}`)
process.exit(0)
