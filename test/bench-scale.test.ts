/**
 * `npm run bench:scale` runs end to end, tiny: two sizes (0 and 1,000 rows per table), one round
 * of one second on four connections, and a pruning backlog of 5,000 rows per table. The figures
 * are not checked (a shared CI machine), only that every part ran and wrote its section.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { it } from 'node:test'

it('bench:scale fills the databases, measures each size in a round, and prunes a backlog in batches', { timeout: 60_000 }, () => {
  const results = join(mkdtempSync(join(tmpdir(), 'taskpass-scale-test-')), 'latest.json')
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'bench/scale.ts', '--rows', '0,1000', '--rounds', '1', '--seconds', '1', '--prune-rows', '5000'], {
    env: { ...process.env, BENCH_CONNECTIONS: '4', BENCH_WARMUP: '0', BENCH_RESULTS_FILE: results },
    encoding: 'utf8',
    timeout: 55_000,
  })
  assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`)
  assert.match(run.stdout, /req\/s ÷ 0 rows \(per round\)/)
  const scale = (JSON.parse(readFileSync(results, 'utf8')) as { scale: { throughput: { sizes: Array<{ rows: number; stats?: { ok: number } }> }; prune: { deleted: Record<string, number>; batches: number } } }).scale
  assert.deepEqual(scale.throughput.sizes.map((s) => s.rows), [0, 1000])
  for (const s of scale.throughput.sizes) assert.ok((s.stats?.ok ?? 0) > 0, `no successful exchange at ${s.rows} rows`)
  assert.equal(scale.prune.deleted.tokens, 5000)
  assert.equal(scale.prune.deleted.audit, 5000)
  assert.equal(scale.prune.deleted.replay, 5000)
  assert.ok(scale.prune.batches > 3, 'the backlog is deleted in several batches')
})
