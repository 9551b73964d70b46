/**
 * A diagnosis of the prune tail: times the tokens prune statement batch by batch on a copy of a
 * filled database, with better-sqlite3 directly, one setting changed at a time.
 *   npx tsx bench/prune-probe.ts fill <path> <rows>
 *   npx tsx bench/prune-probe.ts run <path> <setting>
 * Settings: default (the broker's pragmas), nockpt (wal_autocheckpoint 0), manualckpt (no
 * autocheckpoint, a PASSIVE checkpoint timed after every batch), cache64m, noexpidx, notaskidx
 * (the index dropped first), stores (the broker's own tokens/replay prune through openStores).
 * PROBE_TABLE=tokens|replay_entries, PROBE_LIMIT (default 1000), PROBE_NOCOPY=1 (time the file
 * itself, not a copy: e.g. right after a fill, dirty pages and all).
 */
import Database from 'better-sqlite3'
import { copyFileSync, existsSync, rmSync, statSync } from 'node:fs'
import { openStores } from '../src/store/open.js'

const [mode, path, arg] = process.argv.slice(2)
if (!mode || !path) throw new Error('usage: fill|run <path> <rows|setting>')

if (mode === 'fill') {
  const n = Number(arg ?? 1_000_000)
  rmSync(path, { force: true })
  const { database } = await openStores(path)
  await database.close()
  const s = new Database(path)
  s.pragma('journal_mode = WAL')
  s.pragma('synchronous = OFF')
  s.pragma('cache_size = -262144')
  const series = `with recursive s(i) as (select 1 union all select i + 1 from s where i < ${n})`
  s.transaction(() => {
    s.exec(`insert into tokens (jti, task_id, sub, workload_id, aud, scope, iat, exp, status) ${series} select printf('j%012d', i), printf('t%012d', i), 'u', 'w', 'https://r', 's', unixepoch() - 86700, unixepoch() - 86400, 'active' from s`)
    s.exec(`insert into audit_events (at, action, decision, reason, user_sub, workload_id, task_id, jti, resource) ${series} select unixepoch() - 3 * 86400, 'token.exchange', 'allow', 'granted', 'u', 'w', printf('t%012d', i), printf('j%012d', i), 'https://r' from s`)
    s.exec(`insert into replay_entries (key, until) ${series} select printf('r%012d', i), unixepoch() - 86400 from s`)
  })()
  s.pragma('wal_checkpoint(TRUNCATE)')
  s.close()
  process.exit(0)
}

const setting = arg ?? 'default'
const work = process.env.PROBE_NOCOPY ? path : `${path}.work`
if (!process.env.PROBE_NOCOPY) {
  for (const suffix of ['', '-wal', '-shm']) rmSync(work + suffix, { force: true })
  copyFileSync(path, work)
}
const opened = setting.startsWith('stores') ? await openStores(work) : undefined
const s = opened ? opened.database.sqlite : new Database(work)
s.pragma('journal_mode = WAL')
s.pragma('synchronous = NORMAL')
s.pragma('foreign_keys = ON')
if (setting === 'nockpt' || setting === 'manualckpt') s.pragma('wal_autocheckpoint = 0')
if (setting === 'cache64m') s.pragma('cache_size = -65536')
if (setting === 'noexpidx') s.exec('drop index tokens_exp_idx')
if (setting === 'notaskidx') s.exec('drop index tokens_task_idx')
const table = process.env.PROBE_TABLE ?? 'tokens'
const col = table === 'tokens' ? 'exp' : 'until'
const limit = Number(process.env.PROBE_LIMIT ?? 1000)
const del = s.prepare(`delete from ${table} where rowid in (select rowid from ${table} where ${col} < ? limit ?)`)
const ckpt = s.prepare('pragma wal_checkpoint(PASSIVE)')
const before = Math.floor(Date.now() / 1000)
const times: number[] = []
const ckptTimes: number[] = []
const slow: string[] = []
const walSize = () => (existsSync(`${work}-wal`) ? statSync(`${work}-wal`).size : 0)
for (;;) {
  const w0 = walSize()
  const t = performance.now()
  const n = opened && setting === 'stores' ? await (table === 'tokens' ? opened.stores.tokens.pruneExpired(before, limit) : opened.stores.replay.pruneExpired(before, limit)) : del.run(before, limit).changes
  const ms = performance.now() - t
  times.push(ms)
  if (ms > 20) slow.push(`batch ${times.length}: ${ms.toFixed(1)} ms, wal ${(w0 / 1e6).toFixed(1)} → ${(walSize() / 1e6).toFixed(1)} MB, freelist ${s.pragma('freelist_count', { simple: true })}`)
  if (setting === 'manualckpt') {
    const c = performance.now()
    ckpt.all()
    ckptTimes.push(performance.now() - c)
  }
  if (n < limit) break
}
const q = (a: number[], p: number) => { const x = [...a].sort((u, v) => u - v); return x[Math.min(x.length - 1, Math.floor(p * x.length))] ?? 0 }
console.log(`${setting} ${table} limit ${limit}: ${times.length} batches, median ${q(times, 0.5).toFixed(2)} p99 ${q(times, 0.99).toFixed(2)} max ${q(times, 1).toFixed(2)} ms, >20ms: ${times.filter((t) => t > 20).length}, total ${(times.reduce((a, b) => a + b, 0) / 1000).toFixed(1)} s`)
if (ckptTimes.length) console.log(`  checkpoints: median ${q(ckptTimes, 0.5).toFixed(2)} p99 ${q(ckptTimes, 0.99).toFixed(2)} max ${q(ckptTimes, 1).toFixed(2)} ms`)
for (const l of slow.slice(0, 15)) console.log(`  ${l}`)
s.close()
if (!process.env.PROBE_NOCOPY) for (const suffix of ['', '-wal', '-shm']) rmSync(work + suffix, { force: true })
