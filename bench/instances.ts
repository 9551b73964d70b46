/**
 * `npm run bench -- --only instances` (or `tsx bench/instances.ts`): the warm exchange on more
 * than one broker process, and on PostgreSQL, against the same exchange on one process and
 * SQLite, in interleaved rounds (bench/lib/rounds.ts), every broker a process of its own
 * (bench/servers/taskpass.ts, wired as src/main.ts) on a fresh database:
 *
 *   sqlite-1      one broker on SQLite, no proxy (the HTTP part's `taskpass warm`)
 *   sqlite-1proc  one broker on SQLite behind the round-robin proxy
 *   sqlite-2proc  two brokers on one SQLite file (`replay.shared`, one key-encryption key)
 *                 behind the same proxy: what a second process adds, the proxy's cost cancelling
 *   pg-1          one broker on PostgreSQL, no proxy
 *   pg-1-proxy    one broker on PostgreSQL behind the proxy
 *   pg-2          two brokers on one PostgreSQL database behind the proxy
 *
 * The proxy (bench/lib/proxy.ts, one process, one listener per proxied scenario) hands each
 * connection to the next broker in turn. PostgreSQL: the cluster TASKPASS_BENCH_POSTGRES names,
 * else TASKPASS_TEST_POSTGRES's, else one started here with scripts/pg-cluster.sh (PostgreSQL's
 * default durability) and removed at the end; TASKPASS_BENCH_POSTGRES=none, or no PostgreSQL
 * server binaries, skips the pg-* scenarios saying so. Every scenario database is created for the
 * run and dropped after it (the role needs CREATEDB).
 *
 * Each round runs every scenario BENCH_WARMUP s (default 1, 0 allowed) + BENCH_SECONDS s (default
 * 5) on BENCH_CONNECTIONS (default 50), BENCH_ROUNDS rounds (default 5), the order rotating. Every
 * non-2xx response is classified: a 503 with Retry-After is counted apart, anything else (a 500
 * above all) fails the scenario and the run (exit code 1). Results go to the `instances` section of
 * bench/results/latest.json.
 *
 * Two cores: autocannon, the proxy and every broker process loaded share them, so a second process
 * adds at most what the cores left over allow; the table says so, it does not hide it.
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { freePort, installWatchdog, killAllServers, REPO_ROOT, startServer, type ServerProcess } from './lib/child.js'
import { otherCpuLoad } from './lib/cpu.js'
import { nonNegativeInt, positiveInt } from './lib/env.js'
import { exchange, openTask, type Broker } from './lib/broker-http.js'
import { exchangeForm, generateBenchKeys, mintActorToken, mintSubjectToken, publicKeys } from './lib/fixtures.js'
import { countResponse, formatInstanceRatios, formatInstancesTable, INSTANCE_SCENARIO_IDS, instancesTargets, noRefusals, PG_SCENARIO_IDS, summarizeInstances, type InstanceScenarioId, type Refusals } from './lib/instances-report.js'
import { runLoad, type LoadResult } from './lib/load.js'
import { formatTargets } from './lib/report.js'
import { mergeResults } from './lib/results.js'
import { rotation, type RoundLoads } from './lib/rounds.js'
import type { ProxyServerConfig, ProxyStats } from './servers/proxy.js'
import type { TaskpassServerConfig } from './servers/taskpass.js'

const ROUNDS = positiveInt('BENCH_ROUNDS', 5)
const SECONDS = positiveInt('BENCH_SECONDS', 5)
const WARMUP = nonNegativeInt('BENCH_WARMUP', 1)
const CONNECTIONS = positiveInt('BENCH_CONNECTIONS', 50)
/** Every broker starts at once (two on one database together): give a loaded machine time. */
const START_TIMEOUT_MS = 180_000

const watchdog = installWatchdog('bench/instances', 300 + ROUNDS * INSTANCE_SCENARIO_IDS.length * (SECONDS + WARMUP + 5))
const log = (msg: string) => process.stdout.write(`${msg}\n`)

/** Where the pg-* scenarios' databases are created, or why they are skipped. */
type Cluster = { url: string; source: string; stop?: () => void } | { skipped: string; failed?: boolean }

function postgresCluster(): Cluster {
  const bench = process.env.TASKPASS_BENCH_POSTGRES
  if (bench === 'none') return { skipped: 'TASKPASS_BENCH_POSTGRES=none' }
  if (bench) return { url: bench, source: 'TASKPASS_BENCH_POSTGRES' }
  if (process.env.TASKPASS_TEST_POSTGRES) return { url: process.env.TASKPASS_TEST_POSTGRES, source: 'TASKPASS_TEST_POSTGRES' }
  const script = join(REPO_ROOT, 'scripts', 'pg-cluster.sh')
  const dir = mkdtempSync(join(tmpdir(), 'taskpass-bench-pg-'))
  const started = spawnSync('bash', [script, 'start', dir, '--durable'], { encoding: 'utf8', timeout: 120_000 })
  const stop = () => {
    spawnSync('bash', [script, 'stop', dir], { encoding: 'utf8', timeout: 60_000 })
    rmSync(dir, { recursive: true, force: true })
  }
  if (started.status !== 0) {
    stop()
    const why = (started.stderr || started.error?.message || '').trim().split('\n').slice(-3).join(' ⏎ ')
    if (/no PostgreSQL server binaries/.test(why)) return { skipped: 'no PostgreSQL (no TASKPASS_BENCH_POSTGRES or TASKPASS_TEST_POSTGRES, and no initdb: set PG_BIN or install postgresql)' }
    return { skipped: `scripts/pg-cluster.sh start failed: ${why}`, failed: true }
  }
  process.on('exit', stop)
  return { url: started.stdout.trim().split('\n').pop()!, source: `a cluster of its own (scripts/pg-cluster.sh start ${dir} --durable)`, stop }
}

async function onCluster<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** One scenario: its brokers (one or two processes on one database), where the load goes, its figures. */
interface Scenario {
  id: InstanceScenarioId
  description: string
  processes: 1 | 2
  proxied: boolean
  /** SQLite file or PostgreSQL URL, fresh for this run. */
  database: string
  configs: TaskpassServerConfig[]
  brokers: ServerProcess[]
  proxyPort?: number
  url?: string
  body?: string
  refusals: Refusals
  error?: string
  notes: string[]
  rounds: Array<(Omit<LoadResult, 'latencies'> & { round: number; position: number }) | null>
}

async function main(): Promise<boolean> {
  const startedAt = new Date()
  log(
    `taskpass bench, instances part — ${ROUNDS} interleaved round(s), each scenario ${WARMUP} s warm-up + ${SECONDS} s measured, ${CONNECTIONS} connections, ` +
      `node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown cpu'})`,
  )
  const keys = await generateBenchKeys()
  const pub = publicKeys(keys)
  const issuer = `http://127.0.0.1:${await freePort()}`
  const dataDir = mkdtempSync(join(tmpdir(), 'taskpass-bench-instances-'))
  process.on('exit', () => rmSync(dataDir, { recursive: true, force: true }))
  const subject = await mintSubjectToken(keys, issuer)
  const actor = await mintActorToken(keys, issuer)
  const warmBody = exchangeForm(subject, actor)

  const cluster = postgresCluster()
  let pgInfo: Record<string, string> | undefined
  const pgDatabases: string[] = []
  let failed = false
  if ('skipped' in cluster) {
    log(`PostgreSQL scenarios ${cluster.failed ? 'FAILED' : 'skipped'}: ${cluster.skipped}`)
    failed ||= cluster.failed === true
  } else {
    const row = await onCluster(cluster.url, async (c) => (await c.query<Record<string, string>>("select current_setting('server_version') as version, current_setting('fsync') as fsync, current_setting('synchronous_commit') as synchronous_commit, current_setting('full_page_writes') as full_page_writes")).rows[0]!)
    pgInfo = { ...row, source: cluster.source }
    log(`PostgreSQL ${row.version} from ${cluster.source}: fsync=${row.fsync}, synchronous_commit=${row.synchronous_commit}, full_page_writes=${row.full_page_writes}`)
  }
  const freshPg = async (id: string): Promise<string> => {
    if ('skipped' in cluster) throw new Error('no cluster')
    const name = `taskpass_bench_${id.replace(/-/g, '_')}_${randomBytes(4).toString('hex')}`
    await onCluster(cluster.url, (c) => c.query(`create database ${name}`))
    pgDatabases.push(name)
    const url = new URL(cluster.url)
    url.pathname = `/${name}`
    return url.toString()
  }

  const defs: Array<Pick<Scenario, 'id' | 'description' | 'processes' | 'proxied'>> = [
    { id: 'sqlite-1', description: 'one broker on SQLite, no proxy (the warm exchange)', processes: 1, proxied: false },
    { id: 'sqlite-1proc', description: 'one broker on SQLite behind the round-robin proxy', processes: 1, proxied: true },
    { id: 'sqlite-2proc', description: 'two broker processes on one SQLite file (replay.shared) behind the proxy', processes: 2, proxied: true },
    { id: 'pg-1', description: 'one broker on PostgreSQL, no proxy', processes: 1, proxied: false },
    { id: 'pg-1-proxy', description: 'one broker on PostgreSQL behind the proxy', processes: 1, proxied: true },
    { id: 'pg-2', description: 'two broker processes on one PostgreSQL database behind the proxy', processes: 2, proxied: true },
  ]
  const scenarios: Scenario[] = []
  for (const d of defs) {
    const onPg = PG_SCENARIO_IDS.includes(d.id)
    if (onPg && 'skipped' in cluster) continue
    const database = onPg ? await freshPg(d.id) : join(dataDir, `${d.id}.db`)
    // The processes of one scenario share the database, so its signing keys and their key-encryption key.
    const kek = randomBytes(32).toString('base64url')
    const configs: TaskpassServerConfig[] = []
    for (let i = 0; i < d.processes; i++) configs.push({ port: await freePort(), issuer, database, keys: pub, kek, ...(!onPg && d.proxied ? { replayShared: true } : {}) })
    scenarios.push({ ...d, database, configs, brokers: [], refusals: noRefusals(), notes: [], rounds: [] })
  }

  const proxied = scenarios.filter((s) => s.proxied)
  const proxyConfig: ProxyServerConfig = { listeners: [] }
  for (const s of proxied) {
    s.proxyPort = await freePort()
    proxyConfig.listeners.push({ port: s.proxyPort, upstreams: s.configs.map((c) => c.port) })
  }

  let proxy: ServerProcess | undefined
  let proxyStats: ProxyStats | undefined
  const roundLoads: Array<RoundLoads<InstanceScenarioId>> = []
  const cpuBusy: number[] = []
  try {
    log(`\n▶ starting ${scenarios.reduce((n, s) => n + s.processes, 0)} broker processes and the proxy, all at once`)
    const t0 = performance.now()
    const proxyStart = proxied.length > 0 ? startServer('proxy', 'proxy', proxyConfig, START_TIMEOUT_MS) : undefined
    await Promise.all(
      scenarios.map(async (s) => {
        const started = await Promise.allSettled(s.configs.map((c, i) => startServer(`${s.id}#${i + 1}`, 'taskpass', c, START_TIMEOUT_MS)))
        for (const r of started) if (r.status === 'fulfilled') s.brokers.push(r.value)
        const failure = started.find((r) => r.status === 'rejected')
        if (failure) s.error = String(failure.reason instanceof Error ? failure.reason.message : failure.reason)
      }),
    )
    if (proxyStart) proxy = await proxyStart
    log(`  up in ${((performance.now() - t0) / 1000).toFixed(1)} s`)

    for (const s of scenarios) {
      if (s.error) {
        log(`  ${s.id.padEnd(13)} FAILED: ${s.error}`)
        continue
      }
      try {
        s.url = s.proxied ? `http://127.0.0.1:${s.proxyPort}` : s.brokers[0]!.url
        const at = (url: string): Broker => ({ server: s.brokers[0]!, issuer: url, subject, actor })
        const taskId = await openTask(at(s.url), 'instances benchmark')
        s.body = `${warmBody}&task_id=${encodeURIComponent(taskId)}`
        // The task opened through the proxy is served by every process (one database), and through the proxy.
        for (const b of s.brokers) await exchange(at(b.url), taskId)
        await exchange(at(s.url), taskId)
        log(`  ${s.id.padEnd(13)} ${s.brokers.map((b) => `${b.url} (${b.startupMs} ms)`).join(' + ')}${s.proxied ? ` behind ${s.url}` : ''} — ${s.description}`)
      } catch (e) {
        s.error = e instanceof Error ? e.message : String(e)
        log(`  ${s.id.padEnd(13)} FAILED: ${s.error}`)
      }
    }

    for (let round = 0; round < ROUNDS; round++) {
      const order = rotation(scenarios, round)
      const busy = await otherCpuLoad()
      cpuBusy.push(busy)
      log(`\n▶ round ${round + 1}/${ROUNDS}: ${order.map((s) => s.id).join(' → ')}${busy > 25 ? ` — warning: ${busy}% of the CPUs busy with other work, figures will be noisy` : ''}`)
      const loads: RoundLoads<InstanceScenarioId> = {}
      for (const [position, s] of order.entries()) {
        if (s.error || !s.url || !s.body) continue
        const body = s.body
        const before = s.refusals.serverErrors
        try {
          const load = await runLoad({ url: s.url, path: '/token', connections: CONNECTIONS, warmup: WARMUP, duration: SECONDS, headers: { 'content-type': 'application/x-www-form-urlencoded' }, nextBody: () => body, onResponse: (status, headers) => countResponse(s.refusals, status, headers) })
          loads[s.id] = load
          const { latencies: _, ...record } = load
          s.rounds[round] = { ...record, round: round + 1, position: position + 1 }
          const codes = load.non2xx + load.errors > 0 ? ` — ${load.non2xx} non-2xx, ${load.errors} socket errors ${JSON.stringify(load.statusCodes)}` : ''
          log(`  ${s.id.padEnd(13)} ${Math.round(load.rps).toLocaleString('en-US')} req/s, p50 ${load.p50.toFixed(2)} ms, p99 ${load.p99.toFixed(2)} ms (${load.ok} ok in ${load.seconds} s)${codes}`)
          if (s.refusals.serverErrors > before) log(`  !!! FAILURE: ${s.id} answered ${s.refusals.serverErrors - before} server error(s) (a 500, or a 503 without Retry-After) in this run: ${JSON.stringify(s.refusals.statusCodes)}`)
          const gone = s.brokers.find((b) => b.exited())
          if (gone) throw new Error(`${gone.name} exited during the run (code ${gone.exited()!.code}, signal ${gone.exited()!.signal})`)
        } catch (e) {
          s.error = `round ${round + 1}: ${e instanceof Error ? e.message : String(e)}`
          log(`  ${s.id.padEnd(13)} FAILED: ${s.error}`)
        }
      }
      for (const s of scenarios) s.rounds[round] ??= null
      roundLoads.push(loads)
    }
    if (proxy) proxyStats = (await proxy.ask('stats')) as ProxyStats
  } finally {
    await Promise.all([...scenarios.flatMap((s) => s.brokers.map((b) => b.stop())), proxy?.stop()])
    killAllServers()
    if (!('skipped' in cluster)) {
      for (const name of pgDatabases) await onCluster(cluster.url, (c) => c.query(`drop database if exists ${name} with (force)`)).catch(() => {})
      cluster.stop?.()
    }
  }

  for (const s of scenarios) {
    const stats = proxyStats?.find((p) => p.port === s.proxyPort)
    if (stats) {
      s.notes.push(`proxy: ${stats.connections.join(' + ')} connections to its ${stats.connections.length} broker(s), ${stats.failures} failed to connect`)
      if (stats.connections.some((n) => n === 0)) s.notes.push('proxy: a broker received no connection')
    }
    for (const b of s.brokers) {
      const unexpected = b.log.first.filter((line) => !line.startsWith('{"level":"info",'))
      if (unexpected.length > 0) s.notes.push(`${b.name} wrote ${b.log.lines} log line(s); first unexpected: ${unexpected.slice(0, 3).join(' ⏎ ')}`)
    }
  }

  const summary = summarizeInstances(roundLoads)
  const refusals = Object.fromEntries(scenarios.map((s) => [s.id, s.refusals])) as Partial<Record<InstanceScenarioId, Refusals>>
  const errors = Object.fromEntries(scenarios.flatMap((s) => (s.error ? [[s.id, s.error]] : []))) as Partial<Record<InstanceScenarioId, string>>
  const targets = instancesTargets(summary, refusals)
  log(`\n=== instances: the warm exchange over ${ROUNDS} round(s), median (min–max); non-2xx and 503+Retry-After over every run, warm-ups included ===`)
  log(formatInstancesTable(summary, refusals, errors))
  log('\n=== ratios: taken within each round, then the median over rounds (min–max) ===')
  log(formatInstanceRatios(summary))
  log('')
  log(formatTargets(targets))
  for (const s of scenarios) for (const n of s.notes) log(`  ${s.id}: ${n}`)
  if ('skipped' in cluster) log(`  pg-1, pg-1-proxy, pg-2: ${cluster.failed ? 'FAILED' : 'skipped'} — ${cluster.skipped}`)
  log(`  req/s per round (round 1 first): ${scenarios.map((s) => `${s.id} ${s.rounds.map((r) => (r ? Math.round(r.rps) : '—')).join('/')}`).join('; ')}`)
  const busiest = Math.max(0, ...cpuBusy)
  if (busiest > 25) log(`  caution: other processes kept up to ${busiest}% of the CPUs busy before a round — absolute figures are unreliable; read the per-round ratios.`)
  log(`  ${availableParallelism()} cores: autocannon, the proxy and the loaded broker process(es) share them — with two brokers on two cores the load generator competes with both.`)

  const failures = targets.some((t) => t.verdict === 'FAIL') || scenarios.some((s) => s.error !== undefined)
  log(
    `\nwrote ${mergeResults({
      instances: {
        startedAt: startedAt.toISOString(),
        finishedAt: new Date().toISOString(),
        settings: { rounds: ROUNDS, seconds: SECONDS, warmup: WARMUP, connections: CONNECTIONS },
        machine: { node: process.version, cores: availableParallelism(), cpu: cpus()[0]?.model, cpuBusyBeforeRounds: cpuBusy },
        postgres: 'skipped' in cluster ? { skipped: cluster.skipped } : pgInfo,
        scenarios: Object.fromEntries(scenarios.map((s) => [s.id, { description: s.description, processes: s.processes, proxied: s.proxied, startupMs: s.brokers.map((b) => b.startupMs), stats: summary.scenarios[s.id], refusals: s.refusals, notes: s.notes, rounds: s.rounds, ...(s.error ? { error: s.error } : {}) }])),
        ratios: summary.ratios,
        targets,
      },
    })}`,
  )
  return !failures && !failed
}

try {
  if (!(await main())) process.exitCode = 1
} catch (e) {
  process.stderr.write(`bench/instances failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
  process.exitCode = 1
} finally {
  clearTimeout(watchdog)
  killAllServers()
}
