/**
 * `npm run bench`: the token exchange against its baselines, over loopback, in one run.
 *
 * The throughput scenarios (bench/lib/report.ts SCENARIO_IDS, in this order):
 *   floor                — bare hono endpoint: one ES256 sign + one durable SQLite insert
 *   floor+2verify        — the same plus two ES256 verifies of distinct, pre-minted JWTs
 *   peer                 — node-oidc-provider client_credentials → JWT access token
 *   peer token-exchange  — node-oidc-provider with a registered token-exchange grant doing
 *                          the same two verifies before issuing a JWT access token
 *   taskpass warm        — the broker, same subject and actor token every request (cached)
 *   taskpass pruning     — the warm exchange on a broker issuing 1 s tokens, so its periodic
 *                          pruneStore deletes expired rows while the exchange is measured
 *   taskpass dpop        — the warm exchange with a fresh DPoP proof (RFC 9449) on every request,
 *                          the task bound to the proof key
 *   taskpass dpop shared — the same with replay.shared: each proof's jti also recorded in the
 *                          database (INSERT … ON CONFLICT), as several instances run it
 *   taskpass cold        — the broker, a never-seen subject and actor token every request
 *
 * are measured in interleaved rounds (bench/lib/rounds.ts): every server is started once and
 * kept up; each of `--rounds` rounds (default 5) runs every scenario for BENCH_WARMUP seconds of
 * warm-up (default 1, not counted) and `--seconds` measured (default 5), round r starting at
 * scenario r mod k and wrapping around. Each scenario is reported as its median req/s, p50 and
 * p99 over rounds with their min–max, each ratio as the median of its per-round values with their
 * min–max, and the DESIGN.md verdicts read those medians: a machine that drifts over minutes
 * moves both sides of a per-round ratio, not one scenario of a sequential pass.
 *
 * Then the auth flood: the warm exchange at a fixed rate (open loop: latency, not throughput),
 * quiet and then next to a flood of wrong-secret /introspect requests on BENCH_CONNECTIONS
 * connections, with the broker's default authThrottle; then the same flood against the
 * broker-wide limits alone (per-IP and per-client budgets off: a flood from many IPs and client
 * ids) and with no guard at all (what the flood costs unthrottled); and two controls: GET
 * /healthz (what any unpaced flood costs here) and the same /introspect without a credential
 * (refused before hashing). Reported as latency ratios; each run `--seconds` long.
 *
 * Then the policy part: the warm exchange against the number of Cedar policies in force — a
 * policy file of 1, 100 and 10,000 policies, and for contrast no file at all (the generated grant
 * permits, decided by the native evaluator) — on a broker with 100 more registered resources that
 * the policies are written for (bench/lib/policies.ts: per-resource permits and forbids, and a few
 * policies naming no resource, which land in every resource's bucket). Each size is loaded once by
 * a broker process of its own (never one process loading the sizes in turn). All brokers start
 * first; the measured time is then split into three rounds, each loading every broker in turn (in
 * a rotated order) and timing one decision inside it, so the shared machine's noise falls on every
 * size alike. The table shows each broker's start-up (policy load included), the bench resource's
 * bucket, one decision's cost, req/s and latency; the verdicts compare 100 and 10,000 with 1.
 *
 * Then bench/verifier.ts, in its own process: revocation-to-refusal latency through the
 * revocation feed and the verifier kit's throughput against plain jose (see that file); then
 * bench/endpoints.ts, likewise: introspection throughput (a repeated and a rotating token) and the
 * revocation feed's fan-out to 1,000 streams (time to reach all, broker CPU per event); then
 * bench/instances.ts, likewise: the warm exchange on one and two broker processes behind a
 * round-robin proxy, on SQLite and on PostgreSQL, in interleaved rounds of its own (see that file).
 *
 * Each server runs in its own child process; autocannon runs here. Settings: `--rounds N` or
 * BENCH_ROUNDS (default 5), `--seconds S` or BENCH_SECONDS (older name BENCH_DURATION; seconds
 * measured per scenario per round, default 5), BENCH_CONNECTIONS (default 50), BENCH_WARMUP
 * (seconds of load before each measurement on the same connections, default 1), BENCH_FLOOD_RATE
 * (the legitimate exchange rate of the auth-flood scenario, req/s, default 200);
 * bench/verifier.ts reads its own (BENCH_VERIFIER_*). The policy part measures `--seconds` per
 * size when given, else 6, in three rounds. `npm run bench -- --only http` runs the throughput
 * rounds and the auth flood, `--only flood` the auth-flood scenario alone, `--only verifier` the
 * verifier benchmark alone, `--only policy` the policy part alone, `--only endpoints` introspection
 * and the feed fan-out alone, `--only instances` the several-processes and PostgreSQL part alone.
 * BENCH_WARMUP=0 runs no warm-up. Results also go to
 * bench/results/latest.json (each part replaces its own section and keeps the others').
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, installWatchdog, killAllServers, REPO_ROOT, startServer, type ServerProcess } from './lib/child.js'
import { exchangeForm, form, generateBenchKeys, generateDpopKey, mintActorToken, mintDpopProof, mintDpopProofs, mintSubjectToken, publicKeys, RESOURCE, RESOURCE_CLIENT_ID, SCOPE, TokenPool, USER_ISSUER, type BenchKeys } from './lib/fixtures.js'
import { combineLoads, runLoad, type LoadResult } from './lib/load.js'
import { parseBenchOptions, type BenchOptions } from './lib/options.js'
import { benchPolicyText, otherResources, unscopedCount } from './lib/policies.js'
import { formatPolicyTable, POLICY_SIZES, policyScenarioId, policyTargets, type PolicyRun } from './lib/policy-report.js'
import { cpuPerResponse, otherCpuLoad, processCpu } from './lib/cpu.js'
import { nonNegativeInt, positiveInt } from './lib/env.js'
import { mergeResults } from './lib/results.js'
import { checkTargets, formatRatioTable, formatScenarioTable, formatTargets, SCENARIO_IDS, summarizeRounds, type ScenarioId, type ScenarioResult, type TargetCheck } from './lib/report.js'
import { rotation, type RoundLoads, type ScenarioStats } from './lib/rounds.js'
import { MAIN_PRUNE_INTERVAL_MS } from './lib/taskpass-config.js'
import type { FloorServerConfig } from './servers/floor.js'
import type { PeerServerConfig } from './servers/peer.js'
import type { PruneStats, TaskpassServerConfig } from './servers/taskpass.js'


let options: BenchOptions
try {
  options = parseBenchOptions(process.argv.slice(2), process.env)
} catch (e) {
  process.stderr.write(`bench: ${(e as Error).message}\n`)
  process.exit(2)
}
const only = options.only
const runHttp = only === undefined || only === 'http' || only === 'flood'
const runPolicy = only === undefined || only === 'policy'
const runVerifier = only === undefined || only === 'verifier'
const runEndpoints = only === undefined || only === 'endpoints'
const runInstances = only === undefined || only === 'instances'
/** `--only flood`: the auth-flood scenario alone (its section of latest.json only). */
const floodOnly = only === 'flood'
const rounds = options.rounds
/** Seconds measured per scenario per round (and per auth-flood run). */
const duration = options.seconds
const connections = positiveInt('BENCH_CONNECTIONS', 50)
/** Seconds of load before each measurement, on the same connections, not counted. */
const warmup = nonNegativeInt('BENCH_WARMUP', 1)
const floodRate = positiveInt('BENCH_FLOOD_RATE', 200)
/** The policy part: a few seconds per size unless the seconds are given. */
const policyDuration = options.secondsGiven ? options.seconds : 6
const policyWarmup = nonNegativeInt('BENCH_WARMUP', Math.min(2, Math.max(1, Math.round(policyDuration / 5))))
/** Connections carrying the legitimate, paced exchanges of the auth-flood scenario. */
const FLOOD_LEGIT_CONNECTIONS = 10
const FORM_TYPE = 'application/x-www-form-urlencoded'
const PEER_CLIENT = { id: 'bench-client', secret: 'bench-client-secret-0123456789' }
/** Subject/actor pairs minted up front; the cold scenario's share is topped up before each round. */
const INITIAL_POOL = 20_000
const MAX_POOL = 400_000
/** Requests per second assumed for a scenario before it has run once (to size its proofs or pairs). */
const FIRST_ROUND_RATE = 3000
/**
 * DPoP scenario: proofs are minted just before it (iat = then) and each is accepted once. The
 * bench broker's clockSkew — the proof iat window — is generous so none ages out mid-run.
 */
const DPOP_CLOCK_SKEW = 300
const MAX_PROOFS_PER_ROUND = 60_000
/**
 * The pruning scenario's broker: tokens expire a second after issue and the clock skew is one
 * second, so every prune deletes the rows of the seconds before it.
 */
const PRUNE_TOKEN_TTL = 1
const PRUNE_CLOCK_SKEW = 1
/** bench/verifier.ts is stopped if it runs longer than this. */
const VERIFIER_TIMEOUT_SECONDS = 240
/** bench/endpoints.ts likewise. */
const ENDPOINTS_TIMEOUT_SECONDS = 300
/** bench/instances.ts likewise: start-up of its brokers (and of a PostgreSQL cluster), then its rounds. */
const INSTANCES_TIMEOUT_SECONDS = 300 + rounds * 6 * (duration + warmup + 5)

/** Decisions each policy-part broker times in its process after each load run (bench/servers/taskpass.ts). */
const POLICY_DECISIONS = 300
/** The policy part's measured seconds are split into this many rounds over all sizes. */
const POLICY_ROUNDS = 3
/** A broker loading 10,000 policies validates and prepares them all before it listens: give it time. */
const POLICY_START_TIMEOUT_MS = 240_000

/** Safety net: the run stops by itself (and kills its servers) whatever happens. */
const watchdogSeconds =
  (runHttp ? 120 + rounds * (SCENARIO_IDS.length * (duration + warmup + 5) + 60) + 6 * (duration + warmup + 30) : 0) +
  (runPolicy ? (POLICY_SIZES.length + 1) * (policyDuration + policyWarmup + 60) + POLICY_START_TIMEOUT_MS / 1000 + 60 : 0) +
  (runVerifier ? VERIFIER_TIMEOUT_SECONDS + 30 : 0) +
  (runEndpoints ? ENDPOINTS_TIMEOUT_SECONDS + 30 : 0) +
  (runInstances ? INSTANCES_TIMEOUT_SECONDS + 30 : 0)
const watchdog = installWatchdog('bench', watchdogSeconds)

const log = (msg: string) => process.stdout.write(`${msg}\n`)

function note(scenario: ScenarioResult<string>, text: string): void {
  scenario.notes.push(text)
  log(`  note: ${text}`)
}

/** How one scenario is driven once its server is up. */
interface Workload {
  headers: Record<string, string>
  nextBody: () => string
  /** Per-request headers (a fresh DPoP proof). */
  nextHeaders?: () => Record<string, string>
  /** The `token_type` the smoke request must get (`DPoP` for a bound token). */
  tokenType?: string
}

async function smoke(server: ServerProcess, w: Workload): Promise<void> {
  const res = await fetch(`${server.url}/token`, { method: 'POST', headers: { ...w.headers, ...w.nextHeaders?.() }, body: w.nextBody() })
  const text = await res.text()
  let parsed: { access_token?: unknown; token_type?: unknown } = {}
  try {
    parsed = JSON.parse(text) as typeof parsed
  } catch {
    // not JSON: reported below
  }
  if (res.status !== 200 || typeof parsed.access_token !== 'string') throw new Error(`smoke request got HTTP ${res.status}: ${text.slice(0, 300)}`)
  if (w.tokenType !== undefined && parsed.token_type !== w.tokenType) throw new Error(`smoke request got token_type ${JSON.stringify(parsed.token_type)}, expected ${w.tokenType}`)
}

function summary(r: LoadResult): string {
  const errors = r.non2xx + r.errors > 0 ? ` — ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts ${JSON.stringify(r.statusCodes)}` : ''
  const cpu = r.cpu ? `; server CPU per response ${Math.round(r.cpu.mainUs)} µs event loop, ${Math.round(r.cpu.totalUs)} µs all threads` : ''
  return `${Math.round(r.rps).toLocaleString('en-US')} req/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms (${r.ok} ok in ${r.seconds} s)${cpu}${errors}`
}

/** Opens the task the exchange requests name, with the given session and attestation (and DPoP proof: the task is then bound to its key). */
async function openTask(server: ServerProcess, subjectToken: string, actorToken: string, dpopProof?: string): Promise<string> {
  const res = await fetch(`${server.url}/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${subjectToken}`, 'actor-token': actorToken, ...(dpopProof ? { dpop: dpopProof } : {}) },
    body: JSON.stringify({ purpose: 'benchmark', resources: [{ resource: RESOURCE, scopes: [SCOPE] }] }),
  })
  const body = (await res.json()) as { task_id?: string; dpop_jkt?: string }
  if (res.status !== 201 || !body.task_id) throw new Error(`opening the task got HTTP ${res.status}: ${JSON.stringify(body)}`)
  if (dpopProof && !body.dpop_jkt) throw new Error(`the task opened with a DPoP proof is not bound to its key: ${JSON.stringify(body)}`)
  return body.task_id
}

/** One throughput scenario of the rounds: its server (started once, kept up across rounds) and how it is driven. */
interface RoundScenario {
  id: ScenarioId
  description: string
  start: () => Promise<ServerProcess>
  prepare: (server: ServerProcess) => Promise<Workload>
  /** Before each round, outside every measurement: fresh DPoP proofs, more never-seen token pairs. */
  beforeRound?: (round: number) => Promise<void>
  /** Just before each of its runs. */
  beforeRun?: (server: ServerProcess) => Promise<void>
  /** After each of its runs: what the run used up, what the server did meanwhile. */
  afterRun?: (server: ServerProcess, load: LoadResult, record: RoundRecord) => Promise<void>
  result: ScenarioResult & { stats?: ScenarioStats; rounds: Array<RoundRecord | null> }
  server?: ServerProcess
  workload?: Workload
}

/** One scenario's run in one round, as latest.json keeps it. */
type RoundRecord = Omit<LoadResult, 'latencies'> & { round: number; position: number; prunes?: PruneStats }

async function httpScenarios(): Promise<void> {
  const startedAt = new Date()
  const perRound = SCENARIO_IDS.length * (duration + warmup)
  log(
    `taskpass bench — ${rounds} interleaved rounds × ${SCENARIO_IDS.length} scenarios, each ${warmup} s warm-up + ${duration} s measured per round (about ${Math.round((rounds * perRound) / 60)} min of load), ` +
      `${connections} connections, node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown cpu'})`,
  )
  const keys: BenchKeys = await generateBenchKeys()
  const pub = publicKeys(keys)
  // Every broker of the run names the same issuer (the audience of the pre-minted tokens and the
  // DPoP proofs' htu) and listens on a port of its own: they are all up at once.
  const issuer = `http://127.0.0.1:${await freePort()}`
  const dataDir = mkdtempSync(join(tmpdir(), 'taskpass-bench-'))
  process.on('exit', () => rmSync(dataDir, { recursive: true, force: true }))

  let t = performance.now()
  const pool = new TokenPool(keys, issuer)
  if (!floodOnly) await pool.fill(INITIAL_POOL)
  let mintSeconds = (performance.now() - t) / 1000
  log(`minted ${pool.size.toLocaleString('en-US')} subject/actor token pairs in ${mintSeconds.toFixed(1)} s`)
  const warmPair = { subject: await mintSubjectToken(keys, issuer), actor: await mintActorToken(keys, issuer) }
  const warmBody = exchangeForm(warmPair.subject, warmPair.actor)
  const formHeaders = { 'content-type': FORM_TYPE }
  const peerHeaders = { ...formHeaders, authorization: `Basic ${Buffer.from(`${encodeURIComponent(PEER_CLIENT.id)}:${encodeURIComponent(PEER_CLIENT.secret)}`).toString('base64')}` }
  const rotating = () => {
    let i = 0
    return () => pool.body(i++)
  }

  const floorConfig = (verify: boolean): FloorServerConfig => ({ verify, issuer, userIssuer: USER_ISSUER, keys: pub })
  const peerConfig: PeerServerConfig = { clientId: PEER_CLIENT.id, clientSecret: PEER_CLIENT.secret, audience: issuer, userIssuer: USER_ISSUER, keys: pub }
  const taskpassConfig = async (db: string): Promise<TaskpassServerConfig> => ({ port: await freePort(), issuer, database: join(dataDir, db), keys: pub })

  if (floodOnly) {
    let authFlood: AuthFloodResult
    try {
      authFlood = await authFloodScenario(taskpassConfig, warmPair, warmBody)
    } finally {
      killAllServers()
    }
    log('\n=== auth flood: warm exchange latency at a fixed rate, quiet vs. next to a wrong-secret /introspect flood ===')
    log(formatAuthFlood(authFlood))
    log(formatTargets(authFloodTargets(authFlood)))
    log(`\nwrote ${mergeResults({ authFlood })}`)
    return
  }

  /** Requests one run of a scenario sends at `rps` (warm-up included), with room for a faster round. */
  const runRequests = (rps: number) => Math.ceil(rps * (duration + warmup) * 1.5)
  const fastest = (id: ScenarioId, fallback: number) => Math.max(0, ...roundLoads.map((r) => r[id]?.rps ?? 0)) || fallback
  const roundLoads: Array<RoundLoads<ScenarioId>> = []

  // DPoP: one never-used proof per request, by one ES256 key, for POST <issuer>/token; minted
  // before each round (iat = then, well inside the broker's window), enough for that round.
  // Each DPoP scenario mints and counts its own proofs, so neither broker ever sees a proof twice.
  const dpopKey = await generateDpopKey()
  const proofRuns = new Map<ScenarioId, { proofs: string[]; used: number; sent: number }>()
  // Cold: a never-seen subject and actor token per request, from the pool, topped up before each round.
  let coldUsed = 0
  let poolRanOut = false
  const pruneIntervalMs = Math.min(MAIN_PRUNE_INTERVAL_MS, Math.max(1000, Math.floor((duration * 1000) / 2)))

  const scenario = (id: ScenarioId, description: string, rest: Omit<RoundScenario, 'id' | 'description' | 'result'>): RoundScenario => ({ id, description, result: { id, description, notes: [], rounds: [] }, ...rest })
  // The warm exchange + a fresh DPoP proof per request; with `replayShared`, every proof's jti is
  // also recorded in the database (`replay.shared`, as several instances run), so its cost shows.
  const dpopScenario = (id: ScenarioId, database: string, replayShared: boolean): RoundScenario => {
    const run = { proofs: [] as string[], used: 0, sent: 0 }
    proofRuns.set(id, run)
    const replay = replayShared ? 'jtis recorded in the database too (replay.shared)' : 'the in-process replay cache'
    const self = scenario(id, `the warm exchange + a fresh DPoP proof per request (ES256, one key; task bound to it; clockSkew ${DPOP_CLOCK_SKEW}; ${replay})`, {
      start: async () => startServer(id, 'taskpass', { ...(await taskpassConfig(database)), clockSkew: DPOP_CLOCK_SKEW, dpopReplayCacheSize: rounds * MAX_PROOFS_PER_ROUND + 10_000, replayShared }),
      prepare: async (server) => {
        const body = `${warmBody}&task_id=${encodeURIComponent(await openTask(server, warmPair.subject, warmPair.actor, await mintDpopProof(dpopKey, `${issuer}/tasks`)))}`
        run.proofs = await mintDpopProofs(dpopKey, `${issuer}/token`, 10) // the smoke request's
        return { headers: formHeaders, nextBody: () => body, nextHeaders: () => ({ dpop: run.proofs[run.used++ % run.proofs.length]! }), tokenType: 'DPoP' }
      },
      beforeRound: async () => {
        run.sent += run.used
        const t0 = performance.now()
        run.proofs = await mintDpopProofs(dpopKey, `${issuer}/token`, Math.min(MAX_PROOFS_PER_ROUND, runRequests(fastest(id, FIRST_ROUND_RATE)) + connections + 1000))
        run.used = 0
        log(`  minted ${run.proofs.length.toLocaleString('en-US')} DPoP proofs for ${id} this round in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
      },
      afterRun: async (_server, _load, record) => {
        if (run.used > run.proofs.length) note(self.result, `round ${record.round}: the proofs ran out — ${run.used - run.proofs.length} requests replayed a proof (refused)`)
      },
    })
    return self
  }
  const openedTask = async (server: ServerProcess) => `${warmBody}&task_id=${encodeURIComponent(await openTask(server, warmPair.subject, warmPair.actor))}`
  const scenarios: RoundScenario[] = [
    scenario('floor', 'hono + one ES256 SignJWT + one SQLite insert (WAL, synchronous=NORMAL)', {
      start: () => startServer('floor', 'floor', floorConfig(false)),
      prepare: async () => ({ headers: formHeaders, nextBody: () => warmBody }),
    }),
    scenario('floor+2verify', 'floor + two ES256 jwtVerify of distinct pre-minted tokens', {
      start: () => startServer('floor+2verify', 'floor', floorConfig(true)),
      prepare: async () => ({ headers: formHeaders, nextBody: rotating() }),
    }),
    scenario('peer', 'oidc-provider v9 client_credentials, JWT access token (ES256), client_secret_basic', {
      start: () => startServer('peer', 'peer', peerConfig),
      prepare: async () => {
        const body = form({ grant_type: 'client_credentials', resource: RESOURCE, scope: SCOPE })
        return { headers: peerHeaders, nextBody: () => body }
      },
    }),
    scenario('peer token-exchange', 'oidc-provider v9 + registerGrantType(token-exchange): two ES256 jwtVerify, JWT access token', {
      start: () => startServer('peer token-exchange', 'peer', peerConfig),
      prepare: async () => ({ headers: peerHeaders, nextBody: rotating() }),
    }),
    scenario('taskpass warm', 'the broker, same subject + actor token every request (task_id of an open task); tokens of the default ttl, so pruning finds nothing to delete', {
      start: async () => startServer('taskpass warm', 'taskpass', await taskpassConfig('warm.db')),
      prepare: async (server) => {
        const body = await openedTask(server)
        return { headers: formHeaders, nextBody: () => body }
      },
    }),
    scenario('taskpass pruning', `the warm exchange on a broker issuing ${PRUNE_TOKEN_TTL} s tokens (clockSkew ${PRUNE_CLOCK_SKEW}) and running pruneStore every ${pruneIntervalMs / 1000} s: expired rows deleted during the measurement`, {
      start: async () => startServer('taskpass pruning', 'taskpass', { ...(await taskpassConfig('pruning.db')), tokenTtl: PRUNE_TOKEN_TTL, clockSkew: PRUNE_CLOCK_SKEW, pruneIntervalMs }),
      prepare: async (server) => {
        const body = await openedTask(server)
        return { headers: formHeaders, nextBody: () => body }
      },
      // What the prunes of this run did: the count starts over just before it.
      beforeRun: async (server) => {
        await server.ask('prune-stats')
      },
      afterRun: async (server, _load, record) => {
        record.prunes = (await server.ask('prune-stats')) as PruneStats
      },
    }),
    dpopScenario('taskpass dpop', 'dpop.db', false),
    dpopScenario('taskpass dpop shared', 'dpop-shared.db', true),
    scenario('taskpass cold', 'the broker, a never-seen subject + actor token every request', {
      start: async () => startServer('taskpass cold', 'taskpass', await taskpassConfig('cold.db')),
      prepare: async (server) => {
        const taskParam = `&task_id=${encodeURIComponent(await openTask(server, await mintSubjectToken(keys, issuer), await mintActorToken(keys, issuer)))}`
        return { headers: formHeaders, nextBody: () => pool.body(coldUsed++) + taskParam }
      },
      beforeRound: async () => {
        const needed = Math.min(MAX_POOL, coldUsed + runRequests(fastest('taskpass cold', FIRST_ROUND_RATE)) + 1000)
        if (needed <= pool.size) return
        const t0 = performance.now()
        await pool.fill(needed)
        const s = (performance.now() - t0) / 1000
        mintSeconds += s
        log(`  minted subject/actor pairs up to ${pool.size.toLocaleString('en-US')} for the cold scenario in ${s.toFixed(1)} s`)
      },
      afterRun: async (_server, _load, record) => {
        if (coldUsed > pool.size && !poolRanOut) {
          poolRanOut = true
          note(coldScenario.result, `round ${record.round}: the pool ran out — ${coldUsed - pool.size} requests reused a pair (warm, not cold): raise MAX_POOL or lower --seconds`)
        }
      },
    }),
  ]
  const coldScenario = scenarios.find((s) => s.id === 'taskpass cold')!

  let authFlood: AuthFloodResult | undefined
  const cpuBusy: number[] = []
  try {
    // Every server up once, one after the other (start-up figures undisturbed), each checked with one request.
    log('\n▶ starting every server')
    for (const s of scenarios) {
      try {
        const server = await s.start()
        s.server = server
        s.result.startupMs = server.startupMs
        if (server.info) s.result.serverInfo = server.info
        s.workload = await s.prepare(server)
        await smoke(server, s.workload)
        log(`  ${s.id.padEnd(20)} up on ${server.url} in ${server.startupMs} ms — ${s.description}`)
      } catch (e) {
        s.result.error = e instanceof Error ? e.message : String(e)
        log(`  ${s.id.padEnd(20)} FAILED: ${s.result.error}`)
        await s.server?.stop()
      }
    }

    for (let round = 0; round < rounds; round++) {
      const order = rotation(scenarios, round)
      log(`\n▶ round ${round + 1}/${rounds}: ${order.map((s) => s.id).join(' → ')}`)
      for (const s of scenarios) if (!s.result.error) await s.beforeRound?.(round)
      const busy = await otherCpuLoad()
      cpuBusy.push(busy)
      if (busy > 25) log(`  warning: ${busy}% of the CPUs busy with other work before the round — figures will be noisy`)
      const loads: RoundLoads<ScenarioId> = {}
      for (const [position, s] of order.entries()) {
        if (s.result.error || !s.server || !s.workload) continue
        try {
          const w = s.workload
          await s.beforeRun?.(s.server)
          const cpuBefore = processCpu(s.server.pid)
          const load = await runLoad({ url: s.server.url, path: '/token', connections, warmup, duration, headers: w.headers, nextBody: w.nextBody, nextHeaders: w.nextHeaders })
          load.cpu = cpuPerResponse(cpuBefore, processCpu(s.server.pid), load.responses + load.warmup.responses)
          const record: RoundRecord = { ...load, round: round + 1, position: position + 1 }
          await s.afterRun?.(s.server, load, record)
          loads[s.id] = load
          s.result.rounds[round] = record
          if (load.warmup.ok < load.warmup.responses) note(s.result, `round ${round + 1} warm-up: ${load.warmup.responses - load.warmup.ok} non-2xx ${JSON.stringify(load.warmup.statusCodes)}`)
          const pruned = record.prunes ? `; ${record.prunes.runs} prune(s) deleted ${record.prunes.tokens.toLocaleString('en-US')} token rows, longest ${record.prunes.maxMs} ms (one batch at most ${record.prunes.maxBatchMs} ms)` : ''
          log(`  ${s.id.padEnd(20)} ${summary(load)}${pruned}`)
          const exit = s.server.exited()
          if (exit) throw new Error(`server exited during the run (code ${exit.code}, signal ${exit.signal})`)
        } catch (e) {
          s.result.error = `round ${round + 1}: ${e instanceof Error ? e.message : String(e)}`
          log(`  ${s.id.padEnd(20)} FAILED: ${s.result.error}`)
        }
      }
      for (const s of scenarios) s.result.rounds[round] ??= null
      roundLoads.push(loads)
    }
    for (const [id, run] of proofRuns) {
      run.sent += run.used
      note(scenarios.find((s) => s.id === id)!.result, `${run.sent.toLocaleString('en-US')} pre-minted proofs sent over the rounds (smoke and warm-ups included), minted fresh before each round`)
    }
    note(coldScenario.result, `${coldUsed.toLocaleString('en-US')} never-seen pairs sent (smoke and warm-ups included), pool ${pool.size.toLocaleString('en-US')}`)
  } finally {
    await Promise.all(scenarios.map(async (s) => s.server?.stop()))
  }
  for (const s of scenarios) {
    const log_ = s.server?.log
    if (!log_ || log_.lines === 0) continue
    s.result.serverLog = log_
    // oidc-provider's start-up notices (runtime version, in-memory adapter) and the broker's
    // info-level request log are expected; anything else among the first lines is shown.
    const unexpected = log_.first.filter((line) => !/^oidc-provider (WARNING|NOTICE):/.test(line) && !line.startsWith('{"level":"info",'))
    if (unexpected.length > 0) log(`  ${s.id}: the server wrote ${log_.lines} log line(s); first unexpected: ${unexpected.slice(0, 3).join(' ⏎ ')}`)
  }

  try {
    authFlood = await authFloodScenario(taskpassConfig, warmPair, warmBody)
  } finally {
    killAllServers()
  }

  const summaryOfRounds = summarizeRounds(roundLoads)
  for (const s of scenarios) {
    const stats = summaryOfRounds.scenarios[s.id]
    if (stats) s.result.stats = stats
  }
  const targets = checkTargets(summaryOfRounds, connections)
  const errors = Object.fromEntries(scenarios.flatMap((s) => (s.result.error ? [[s.id, s.result.error]] : []))) as Partial<Record<ScenarioId, string>>
  log(`\n=== results over ${rounds} rounds: median (min–max); req/s = successful responses per second, latency over successful responses ===`)
  log(formatScenarioTable(summaryOfRounds, errors))
  log('\n=== ratios: taken within each round, then the median over rounds (min–max) ===')
  log(formatRatioTable(summaryOfRounds))
  const pruning = scenarios.find((s) => s.id === 'taskpass pruning')!.result.rounds.flatMap((r) => (r?.prunes ? [r.prunes] : []))
  if (pruning.length > 0) {
    const rows = pruning.reduce((n, p) => n + p.tokens, 0)
    log(
      `  pruning: ${pruning.reduce((n, p) => n + p.runs, 0)} prunes during the ${pruning.length} pruning runs (every ${pruneIntervalMs / 1000} s, warm-ups included) deleted ` +
        `${rows.toLocaleString('en-US')} token rows; the longest took ${Math.max(...pruning.map((p) => p.maxMs))} ms start to end, requests served between its batches, and no batch statement more than ${Math.max(...pruning.map((p) => p.maxBatchMs))} ms (per run: ${pruning.map((p) => `${p.runs}×, ${p.tokens.toLocaleString('en-US')} rows, max ${p.maxMs} ms, batch ≤ ${p.maxBatchMs} ms`).join('; ')})`,
    )
  }
  log('  req/s per round (round 1 first): ' + scenarios.map((s) => `${s.id} ${s.result.rounds.map((r) => (r ? Math.round(r.rps) : '—')).join('/')}`).join('; '))
  if (authFlood) {
    log('\n=== auth flood: warm exchange latency at a fixed rate, quiet vs. next to a wrong-secret /introspect flood ===')
    log(formatAuthFlood(authFlood))
    targets.push(...authFloodTargets(authFlood))
  }
  log('\n=== DESIGN.md performance targets (verdicts on the medians over rounds) ===')
  log(formatTargets(targets))
  const busiest = Math.max(0, ...cpuBusy)
  if (busiest > 25) log(`  caution: other processes kept up to ${busiest}% of the CPUs busy before a round (per round: ${cpuBusy.map((b) => `${b}%`).join(', ')}) — absolute figures are unreliable; the per-round ratios are the figures to read.`)
  log('\nnotes:')
  log(`  - ${rounds} rounds; each round runs every scenario once for ${warmup} s warm-up (not measured) + ${duration} s measured, round r starting at`)
  log('    scenario r mod k of the list above and wrapping around; every server started once before round 1 and kept up to the end.')
  log('  - peer = oidc-provider client_credentials (persists nothing); peer token-exchange = the same provider running a registered')
  log('    token-exchange grant that verifies subject and actor token (no cache) and issues a JWT access token with `act`.')
  log('  - taskpass warm/cold use task_id of a task opened beforehand; each exchange reads the task and writes token + audit rows.')
  log(`  - taskpass pruning = the warm exchange with ${PRUNE_TOKEN_TTL} s tokens, so pruneStore (every ${pruneIntervalMs / 1000} s here, every 10 s in src/main.ts) deletes`)
  log('    expired token rows while it is measured; taskpass warm issues 300 s tokens, which no prune of the run deletes.')
  log('  - taskpass dpop = the warm request plus a never-used DPoP proof (one ES256 key, pre-minted) per request, its task bound')
  log('    to that key: the broker verifies the proof (signature with the embedded JWK, thumbprint, replay cache) and binds the token.')
  log('  - taskpass dpop shared = the same on a broker with replay.shared: every proof jti is also one conditional insert in the database.')

  // The HTTP part's keys of latest.json; a verifier section from an earlier run is dropped when
  // this run measures the verifier too (so a failed verifier part cannot pass for a fresh one).
  const file = mergeResults(
    {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      settings: { rounds, seconds: duration, warmup, connections, pruneIntervalMs, pruneTokenTtl: PRUNE_TOKEN_TTL },
      machine: { node: process.version, cores: availableParallelism(), cpu: cpus()[0]?.model, cpuBusyBeforeRounds: cpuBusy },
      tokenPool: { pairs: pool.size, mintSeconds: Number(mintSeconds.toFixed(2)) },
      scenarios: Object.fromEntries(scenarios.map((s) => [s.id, s.result])),
      ratios: summaryOfRounds.ratios,
      authFlood,
      targets,
    },
    runVerifier ? ['verifier'] : [],
  )
  log(`\nwrote ${file}`)
}

/** One broker configuration of the auth-flood scenario. */
interface FloodVariant {
  id: 'control: /healthz flood' | 'control: no-credential flood' | 'default throttle' | 'broker-wide limits only' | 'no guard'
  description: string
  /**
   * The flood: wrong-secret /introspect; or a control: GET /healthz (the cheapest route), or
   * /introspect with the same body and no credential (refused before any hashing).
   */
  flood: 'introspect' | 'healthz' | 'no-credential'
  authThrottle?: TaskpassServerConfig['authThrottle']
  /** Measure the quiet baseline on this server first. */
  quiet: boolean
}

interface AuthFloodResult {
  rate: number
  legitConnections: number
  floodConnections: number
  quiet?: LoadResult
  variants: Array<{ id: FloodVariant['id']; description: string; legit?: LoadResult; flood?: LoadResult; error?: string }>
}

const FLOOD_VARIANTS: FloodVariant[] = [
  // What any unpaced flood on these connections costs (request handling, the load generator's
  // own CPU on this shared machine), whatever the route: the floor the others compare with.
  { id: 'control: /healthz flood', description: 'GET /healthz on the flood connections: the cost of the flood itself, no authentication', flood: 'healthz', quiet: true },
  // The same request as the wrong-secret flood without its Authorization header: refused (401)
  // before any hashing, so what the two cost differently is the secret check alone.
  { id: 'control: no-credential flood', description: '/introspect with no credential on the flood connections: the same request refused before any hashing', flood: 'no-credential', quiet: false },
  { id: 'default throttle', description: 'authThrottle defaults (failure budgets per IP and client id, one verification at a time)', flood: 'introspect', quiet: false },
  { id: 'broker-wide limits only', description: 'per-IP and per-client budgets off (a flood spread over many IPs and client ids): the broker-wide budget and concurrency cap alone', flood: 'introspect', authThrottle: { perIp: false, perClient: false }, quiet: false },
  { id: 'no guard', description: 'every budget off, 64 concurrent verifications: every flood request runs argon2 (the unguarded broker)', flood: 'introspect', authThrottle: { perIp: false, perClient: false, perBroker: false, maxConcurrent: 64 }, quiet: false },
]

/**
 * The warm exchange, paced at BENCH_FLOOD_RATE on a few connections so its latency measures
 * waiting (for the event loop, for the libuv threadpool that ES256 signing shares with argon2),
 * not the server's throughput; first alone, then next to an unpaced flood of /introspect
 * requests with a wrong secret for the registered resource's client id.
 */
async function authFloodScenario(
  taskpassConfig: (db: string) => Promise<TaskpassServerConfig>,
  pair: { subject: string; actor: string },
  warmBody: string,
): Promise<AuthFloodResult> {
  const out: AuthFloodResult = { rate: floodRate, legitConnections: FLOOD_LEGIT_CONNECTIONS, floodConnections: connections, variants: [] }
  const floodHeaders = {
    'content-type': FORM_TYPE,
    authorization: `Basic ${Buffer.from(`${encodeURIComponent(RESOURCE_CLIENT_ID)}:${encodeURIComponent('not-the-secret')}`).toString('base64')}`,
  }
  const floodBody = form({ token: 'not-a-token' })
  for (const [i, variant] of FLOOD_VARIANTS.entries()) {
    log(`\n▶ auth flood: ${variant.id} — ${variant.description}`)
    let server: ServerProcess | undefined
    const entry: AuthFloodResult['variants'][number] = { id: variant.id, description: variant.description }
    out.variants.push(entry)
    try {
      server = await startServer(`auth flood ${variant.id}`, 'taskpass', { ...(await taskpassConfig(`flood-${i}.db`)), ...(variant.authThrottle ? { authThrottle: variant.authThrottle } : {}) })
      const body = `${warmBody}&task_id=${encodeURIComponent(await openTask(server, pair.subject, pair.actor))}`
      const legit = { headers: { 'content-type': FORM_TYPE }, nextBody: () => body }
      await smoke(server, legit)
      const refused = await fetch(`${server.url}/introspect`, { method: 'POST', headers: floodHeaders, body: floodBody })
      if (refused.status !== 401) throw new Error(`a wrong secret at /introspect got HTTP ${refused.status}, expected 401`)
      const paced = { url: server.url, path: '/token', connections: FLOOD_LEGIT_CONNECTIONS, warmup, duration, overallRate: floodRate, ...legit }
      if (variant.quiet) {
        out.quiet = await runLoad(paced)
        log(`  quiet:  ${summary(out.quiet)}`)
      }
      const [legitResult, floodResult] = await Promise.all([
        runLoad(paced),
        variant.flood === 'healthz'
          ? runLoad({ url: server.url, path: '/healthz', method: 'GET', connections, warmup, duration, headers: {}, nextBody: () => '' })
          : runLoad({ url: server.url, path: '/introspect', connections, warmup, duration, headers: variant.flood === 'no-credential' ? { 'content-type': FORM_TYPE } : floodHeaders, nextBody: () => floodBody }),
      ])
      entry.legit = legitResult
      entry.flood = floodResult
      log(`  legit:  ${summary(legitResult)}`)
      log(`  flood:  ${floodResult.responses.toLocaleString('en-US')} responses in ${floodResult.seconds} s ${JSON.stringify(floodResult.statusCodes)}`)
      const exit = server.exited()
      if (exit) entry.error = `server exited during the run (code ${exit.code}, signal ${exit.signal})`
    } catch (e) {
      entry.error = e instanceof Error ? e.message : String(e)
      log(`  FAILED: ${entry.error}`)
    } finally {
      await server?.stop()
    }
  }
  return out
}

function formatAuthFlood(r: AuthFloodResult): string {
  const q = r.quiet
  const control = r.variants.find((v) => v.id === 'control: no-credential flood')?.legit
  const x = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || Number.isNaN(a) || Number.isNaN(b) || b === 0 ? '—' : `${(a / b).toFixed(2)}×`)
  const ms = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '—' : v.toFixed(2))
  const rows = [
    ['run', 'legit req/s', 'p50 ms', 'p99 ms', 'p50 vs quiet', 'p99 vs quiet', 'p50 vs no-cred', 'legit non-2xx', 'flood answers (status: count)'],
    ['quiet (no flood)', q ? Math.round(q.rps).toString() : '—', ms(q?.p50), ms(q?.p99), '1.00×', '1.00×', '—', q ? String(q.non2xx) : '—', '—'],
    ...r.variants.map((v) =>
      v.legit
        ? [v.id, Math.round(v.legit.rps).toString(), ms(v.legit.p50), ms(v.legit.p99), x(v.legit.p50, q?.p50), x(v.legit.p99, q?.p99), x(v.legit.p50, control?.p50), String(v.legit.non2xx), JSON.stringify(v.flood?.statusCodes ?? {})]
        : [v.id, `FAILED: ${v.error ?? 'no result'}`, '', '', '', '', '', '', ''],
    ),
  ]
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => (row[1]!.startsWith('FAILED') && i > 0 ? 0 : row[i]!.length))))
  const line = (cells: string[]) => (cells[1]!.startsWith('FAILED') ? `${cells[0]!.padEnd(widths[0]!)} | ${cells[1]}` : cells.map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | '))
  return [
    `  ${r.rate} legitimate warm exchanges/s on ${r.legitConnections} connections; each flood unpaced on ${r.floodConnections} connections`,
    line(rows[0]!),
    widths.map((w) => '-'.repeat(w)).join('-|-'),
    ...rows.slice(1).map(line),
  ].join('\n')
}

/**
 * DESIGN.md: "legitimate latency flat under a flood of failed authentications". Any unpaced
 * flood costs CPU on a 2-core machine shared with the load generator (the /healthz control
 * shows how much); the target is that a wrong-secret flood costs the legitimate exchange no more
 * than the same requests without a credential, refused before any hashing — the argon2
 * amplification is gone.
 */
function authFloodTargets(r: AuthFloodResult): TargetCheck[] {
  const q = r.quiet
  const control = r.variants.find((v) => v.id === 'control: no-credential flood')?.legit
  return r.variants.map((v): TargetCheck => {
    const guarded = v.id === 'default throttle' || v.id === 'broker-wide limits only'
    const target = guarded ? `auth flood, ${v.id}: warm exchange p50 ≤ 1.5× under the no-credential flood, every exchange 2xx` : `auth flood, ${v.id} (informational)`
    if (!q || !control || !v.legit || [q.p50, control.p50, v.legit.p50].some(Number.isNaN)) return { target, value: 'missing figures', verdict: 'n/a' }
    const vsControl = v.legit.p50 / control.p50
    const value = `p50 ${(v.legit.p50 / q.p50).toFixed(2)}× quiet, ${vsControl.toFixed(2)}× no-credential flood; p99 ${(v.legit.p99 / q.p99).toFixed(2)}× quiet; ${v.legit.non2xx} non-2xx`
    if (!guarded) return { target, value, verdict: 'info' }
    return { target, value, verdict: vsControl <= 1.5 && v.legit.non2xx === 0 ? 'PASS' : 'FAIL' }
  })
}

/** One broker of the policy part, up and with its task open. */
interface PolicyBroker {
  run: PolicyRun
  server: ServerProcess
  body: string
  loads: LoadResult[]
}

/**
 * The warm exchange against the size of the policy file: no file (native grants), then 1, 100 and
 * 10,000 policies, each loaded once by a broker process of its own, all with the same 101
 * registered resources. All brokers are started first; then BENCH_DURATION is measured in
 * POLICY_ROUNDS rounds, each round loading every broker in turn (in a rotated order) and timing
 * one decision inside it, so other work on this shared machine falls on every size alike.
 */
async function policyScenarios(): Promise<void> {
  const startedAt = new Date()
  const rounds = Math.max(1, Math.min(POLICY_ROUNDS, Math.floor(policyDuration)))
  const perRound = policyDuration / rounds
  log(`taskpass bench, policy part — ${policyDuration} s measured per size in ${rounds} round(s) (+${policyWarmup} s warm-up in the first), ${connections} connections, node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown cpu'})`)
  const keys = await generateBenchKeys()
  const dataDir = mkdtempSync(join(tmpdir(), 'taskpass-bench-policy-'))
  process.on('exit', () => rmSync(dataDir, { recursive: true, force: true }))
  const extraResources = otherResources()
  const files = new Map<number, string>()
  for (const size of POLICY_SIZES) {
    const file = join(dataDir, `policies-${size}.cedar`)
    const text = benchPolicyText(size, extraResources)
    writeFileSync(file, text)
    files.set(size, file)
    log(`wrote ${file}: ${policyScenarioId(size)} (${unscopedCount(size)} naming no resource), ${(Buffer.byteLength(text) / 1024).toLocaleString('en-US', { maximumFractionDigits: 1 })} KiB`)
  }
  const headers = { 'content-type': FORM_TYPE }

  const runs: PolicyRun[] = []
  const brokers: PolicyBroker[] = []
  try {
    for (const size of [undefined, ...POLICY_SIZES]) {
      const file = size === undefined ? undefined : files.get(size)
      const run: PolicyRun = {
        id: policyScenarioId(size),
        size,
        description: file ? `the warm exchange, Cedar over ${file.slice(dataDir.length + 1)} + the generated grant permit` : 'the warm exchange, no policy file: the generated grant permit, decided natively',
        notes: [],
        rounds: [],
      }
      runs.push(run)
      log(`\n▶ ${run.id} — ${run.description}`)
      // Every broker its own process and port: a process never loads more than one set.
      const port = await freePort()
      const config: TaskpassServerConfig = { port, issuer: `http://127.0.0.1:${port}`, database: join(dataDir, `policy-${size ?? 'none'}.db`), keys: publicKeys(keys), extraResources, ...(file ? { policyFile: file } : {}) }
      try {
        run.idleCpuBusy = await otherCpuLoad()
        const server = await startServer(`policy ${run.id}`, 'taskpass', config, POLICY_START_TIMEOUT_MS)
        run.startupMs = server.startupMs
        if (server.info) run.serverInfo = server.info
        const subject = await mintSubjectToken(keys, config.issuer)
        const actor = await mintActorToken(keys, config.issuer)
        const body = `${exchangeForm(subject, actor)}&task_id=${encodeURIComponent(await openTask(server, subject, actor))}`
        await smoke(server, { headers, nextBody: () => body })
        brokers.push({ run, server, body, loads: [] })
        const info = server.info ?? {}
        log(`  up in ${server.startupMs} ms (createBroker ${String(info.createBrokerMs)} ms); ${String(info.policies)} in force (generated grant permit included), ${String(info.evaluator)}; the bench resource's bucket ${String(info.benchBucket)}, the largest ${String(info.largestBucket)}`)
      } catch (e) {
        run.error = e instanceof Error ? e.message : String(e)
        log(`  FAILED: ${run.error}`)
      }
    }

    for (let round = 0; round < rounds; round++) {
      const busy = await otherCpuLoad()
      log(`\n▶ round ${round + 1}/${rounds}: ${perRound.toFixed(1)} s per size${round === 0 ? ` after ${policyWarmup} s warm-up` : ''}${busy > 25 ? ` — warning: ${busy}% of the CPUs busy with other work` : ''}`)
      const order = brokers.map((_, i) => brokers[(i + round) % brokers.length]!)
      for (const b of order) {
        const { run, server } = b
        if (run.error) continue
        try {
          const load = await runLoad({ url: server.url, path: '/token', connections, warmup: round === 0 ? policyWarmup : 0, duration: perRound, headers, nextBody: () => b.body, keepLatencies: true })
          b.loads.push(load)
          const micros = Number(await server.ask(`time-decisions ${POLICY_DECISIONS}`))
          run.rounds.push({ rps: Math.round(load.rps), p50: load.p50, p99: load.p99, ok: load.ok, non2xx: load.non2xx, decisionMicros: micros, cpuBusyBefore: busy })
          log(`  ${run.id.padEnd(16)} ${summary(load)}; one decision ${micros} µs`)
          const exit = server.exited()
          if (exit) throw new Error(`server exited during the run (code ${exit.code}, signal ${exit.signal})`)
        } catch (e) {
          run.error = e instanceof Error ? e.message : String(e)
          log(`  ${run.id}: FAILED: ${run.error}`)
        }
      }
    }
    for (const b of brokers) {
      if (b.loads.length > 0) b.run.result = combineLoads(b.loads)
      const micros = b.run.rounds.map((r) => r.decisionMicros).sort((x, y) => x - y)
      if (micros.length > 0) b.run.decisionMicros = micros[Math.floor(micros.length / 2)]!
      const warm = b.loads[0]?.warmup
      if (warm && warm.ok < warm.responses) note(b.run, `warm-up: ${warm.responses - warm.ok} non-2xx ${JSON.stringify(warm.statusCodes)}`)
    }
  } finally {
    await Promise.all(brokers.map((b) => b.server.stop()))
    killAllServers()
  }
  for (const b of brokers) {
    if (b.server.log.lines > 0) {
      b.run.serverLog = b.server.log
      log(`  ${b.run.id}: the server wrote ${b.server.log.lines} log line(s); first: ${b.server.log.first.slice(0, 3).join(' ⏎ ')}`)
    }
  }

  const targets = policyTargets(runs)
  log('\n=== policy: warm exchange vs. the number of Cedar policies (each size on its own broker process) ===')
  log(formatPolicyTable(runs))
  log(formatTargets(targets))
  const busiest = Math.max(0, ...runs.map((r) => r.idleCpuBusy ?? 0), ...runs.flatMap((r) => r.rounds.map((x) => x.cpuBusyBefore)))
  if (busiest > 25) log(`  caution: other processes kept up to ${busiest}% of the CPUs busy before a start or a round — absolute figures are unreliable; the rounds spread that noise over every size, so the ratios are the figures to read.`)
  log(`  decide µs: one warm-exchange decision (deps.policy.decide) timed inside the broker's process after each of its load runs, median of ${POLICY_DECISIONS}-call batch means, median over rounds.`)
  log('  start-up ms: spawn to listening (tsx, config, argon2 hashes, database, policy load); createBroker ms: the broker alone, policy load included.')
  log("  bench bucket: the policies Cedar evaluates for the benchmark's resource (its generated grant permit + the policies naming no resource); largest: the biggest bucket of any resource.")
  log('  req/s per round: ' + runs.map((r) => `${r.id} ${r.rounds.map((x) => x.rps).join('/')}`).join('; '))
  log(
    `\nwrote ${mergeResults({
      policy: {
        startedAt: startedAt.toISOString(),
        finishedAt: new Date().toISOString(),
        settings: { duration: policyDuration, warmup: policyWarmup, rounds, connections, decisions: POLICY_DECISIONS, otherResources: extraResources.length },
        runs,
        targets,
      },
    })}`,
  )
}

/**
 * bench/verifier.ts in its own process (a fresh heap and event loop, nothing left over from
 * autocannon), its output passed through; stopped after VERIFIER_TIMEOUT_SECONDS.
 */
/** Runs `bench/<script>.ts` in its own process (the verifier and endpoints parts), stopped after `timeoutSeconds`. */
function childBenchmark(title: string, script: string, timeoutSeconds: number, env: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    log(`\n${'='.repeat(100)}\n${title} (bench/${script}.ts)`)
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', `${script}.ts`)], { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, ...env } })
    const timer = setTimeout(() => {
      process.stderr.write(`bench: bench/${script}.ts still running after ${timeoutSeconds} s, stopping it\n`)
      child.kill('SIGTERM')
      setTimeout(() => child.kill('SIGKILL'), 3000).unref()
    }, timeoutSeconds * 1000)
    const stop = () => child.kill('SIGTERM')
    process.once('exit', stop)
    child.once('error', reject)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      process.off('exit', stop)
      if (code === 0) resolve()
      else reject(new Error(`bench/${script}.ts exited with code ${code}${signal ? `, signal ${signal}` : ''}`))
    })
  })
}

async function main(): Promise<void> {
  let failure = false
  if (runHttp) {
    try {
      await httpScenarios()
    } catch (e) {
      // Reported here, and the verifier part still runs.
      failure = true
      process.stderr.write(`bench (HTTP scenarios) failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    } finally {
      killAllServers()
    }
  }
  if (runPolicy) {
    try {
      await policyScenarios()
    } catch (e) {
      failure = true
      process.stderr.write(`bench (policy part) failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    } finally {
      killAllServers()
    }
  }
  if (runVerifier) await childBenchmark('verifier benchmark', 'verifier', VERIFIER_TIMEOUT_SECONDS)
  if (runEndpoints) {
    try {
      await childBenchmark('introspection and feed fan-out', 'endpoints', ENDPOINTS_TIMEOUT_SECONDS, { BENCH_ROUNDS: String(Math.min(rounds, 3)), BENCH_SECONDS: String(duration) })
    } catch (e) {
      failure = true
      process.stderr.write(`bench (endpoints part) failed: ${e instanceof Error ? e.message : String(e)}\n`)
    }
  }
  if (runInstances) {
    try {
      await childBenchmark('several processes and PostgreSQL', 'instances', INSTANCES_TIMEOUT_SECONDS, { BENCH_ROUNDS: String(rounds), BENCH_SECONDS: String(duration), BENCH_WARMUP: String(warmup) })
    } catch (e) {
      failure = true
      process.stderr.write(`bench (instances part) failed: ${e instanceof Error ? e.message : String(e)}\n`)
    }
  }
  if (failure) process.exitCode = 1
}

try {
  await main()
} catch (e) {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
  process.exitCode = 1
} finally {
  clearTimeout(watchdog)
  killAllServers()
}
