/**
 * `npm run bench`: the token exchange against its baselines, over loopback, in one run.
 *
 *   1. floor                — bare hono endpoint: one ES256 sign + one durable SQLite insert
 *   2. floor+2verify        — the same plus two ES256 verifies of distinct, pre-minted JWTs
 *   3. peer                 — node-oidc-provider client_credentials → JWT access token
 *   4. taskpass warm        — the broker, same subject and actor token every request (cached)
 *   5. taskpass dpop        — the warm exchange with a fresh DPoP proof (RFC 9449) on every request,
 *                             the task bound to the proof key
 *   6. taskpass cold        — the broker, a never-seen subject and actor token every request
 *   7. peer token-exchange  — node-oidc-provider with a registered token-exchange grant doing
 *                             the same two verifies before issuing a JWT access token
 *   8. auth flood           — the warm exchange at a fixed rate (open loop: latency, not
 *                             throughput), quiet and then next to a flood of wrong-secret
 *                             /introspect requests on BENCH_CONNECTIONS connections, with the
 *                             broker's default authThrottle; then the same flood against the
 *                             broker-wide limits alone (per-IP and per-client budgets off: a
 *                             flood from many IPs and client ids) and with no guard at all (what
 *                             the flood costs unthrottled); and two controls: GET /healthz (what
 *                             any unpaced flood costs here) and the same /introspect without a
 *                             credential (refused before hashing). Reported as latency ratios.
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
 * revocation feed and the verifier kit's throughput against plain jose (see that file).
 *
 * Each server runs in its own child process; autocannon runs here. Settings: BENCH_DURATION
 * (seconds measured per scenario, default 10), BENCH_CONNECTIONS (default 50), BENCH_WARMUP
 * (seconds of load before each measurement on the same connections; default 2, 1 for runs under
 * 8 s), BENCH_FLOOD_RATE (the legitimate exchange rate of the auth-flood scenario, req/s,
 * default 200); bench/verifier.ts reads its own (BENCH_VERIFIER_*). The policy part measures
 * BENCH_DURATION seconds per size when it is set, else 6, in three rounds. `npm run bench -- --only http` runs
 * the HTTP scenarios alone, `--only verifier` the verifier benchmark alone, `--only flood` the
 * auth-flood scenario alone, `--only policy` the policy part alone. Results also go to
 * bench/results/latest.json (each part replaces its own section and keeps the others').
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, installWatchdog, killAllServers, REPO_ROOT, startServer, type ServerProcess } from './lib/child.js'
import { exchangeForm, form, generateBenchKeys, generateDpopKey, mintActorToken, mintDpopProof, mintDpopProofs, mintSubjectToken, publicKeys, RESOURCE, RESOURCE_CLIENT_ID, SCOPE, TokenPool, USER_ISSUER, type BenchKeys } from './lib/fixtures.js'
import { combineLoads, runLoad, type LoadResult } from './lib/load.js'
import { benchPolicyText, otherResources, unscopedCount } from './lib/policies.js'
import { formatPolicyTable, POLICY_SIZES, policyScenarioId, policyTargets, type PolicyRun } from './lib/policy-report.js'
import { mergeResults } from './lib/results.js'
import { checkTargets, formatTable, formatTargets, type Results, type ScenarioId, type ScenarioResult, type TargetCheck } from './lib/report.js'
import type { FloorServerConfig } from './servers/floor.js'
import type { PeerServerConfig } from './servers/peer.js'
import type { TaskpassServerConfig } from './servers/taskpass.js'

function positiveInt(name: string, fallback: number): number {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${text}"`)
  return n
}

const PARTS = ['http', 'verifier', 'flood', 'policy'] as const

/** `--only http` / `--only verifier` / `--only flood` / `--only policy` (also `--only=…`): one part of the run. */
function onlyPart(argv: readonly string[]): (typeof PARTS)[number] | undefined {
  let value: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--only') value = argv[++i] ?? ''
    else if (arg.startsWith('--only=')) value = arg.slice('--only='.length)
    else throw new Error(`unknown argument "${arg}" (usage: npm run bench [-- --only ${PARTS.join('|')}])`)
  }
  if (value === undefined) return undefined
  const part = PARTS.find((p) => p === value)
  if (part === undefined) throw new Error(`--only takes ${PARTS.map((p) => `"${p}"`).join(', ')}, got "${value}"`)
  return part
}

let only: ReturnType<typeof onlyPart>
try {
  only = onlyPart(process.argv.slice(2))
} catch (e) {
  process.stderr.write(`bench: ${(e as Error).message}\n`)
  process.exit(2)
}
const runHttp = only === undefined || only === 'http' || only === 'flood'
const runPolicy = only === undefined || only === 'policy'
const runVerifier = only === undefined || only === 'verifier'
/** `--only flood`: the auth-flood scenario alone (its section of latest.json only). */
const floodOnly = only === 'flood'
const duration = positiveInt('BENCH_DURATION', 10)
const connections = positiveInt('BENCH_CONNECTIONS', 50)
const warmup = positiveInt('BENCH_WARMUP', Math.min(2, Math.max(1, Math.round(duration / 5))))
const floodRate = positiveInt('BENCH_FLOOD_RATE', 200)
/** The policy part: a few seconds per size unless BENCH_DURATION says otherwise. */
const policyDuration = positiveInt('BENCH_DURATION', 6)
const policyWarmup = positiveInt('BENCH_WARMUP', Math.min(2, Math.max(1, Math.round(policyDuration / 5))))
/** Connections carrying the legitimate, paced exchanges of the auth-flood scenario. */
const FLOOD_LEGIT_CONNECTIONS = 10
const FORM_TYPE = 'application/x-www-form-urlencoded'
const PEER_CLIENT = { id: 'bench-client', secret: 'bench-client-secret-0123456789' }
/** Subject/actor pairs minted up front; the cold scenario's share is topped up from the measured floor+2verify rate. */
const INITIAL_POOL = 20_000
const MAX_POOL = 250_000
/**
 * DPoP scenario: proofs are minted just before it (iat = then) and each is accepted once. The
 * bench broker's clockSkew — the proof iat window — is generous so none ages out mid-run.
 */
const DPOP_CLOCK_SKEW = 300
const MAX_PROOFS = 250_000
/** bench/verifier.ts is stopped if it runs longer than this. */
const VERIFIER_TIMEOUT_SECONDS = 240

/** Decisions each policy-part broker times in its process after each load run (bench/servers/taskpass.ts). */
const POLICY_DECISIONS = 300
/** The policy part's measured seconds are split into this many rounds over all sizes. */
const POLICY_ROUNDS = 3
/** A broker loading 10,000 policies validates and prepares them all before it listens: give it time. */
const POLICY_START_TIMEOUT_MS = 240_000

/** Safety net: the run stops by itself (and kills its servers) whatever happens. */
const watchdogSeconds =
  (runHttp ? 11 * (duration + warmup + 45) + 90 : 0) +
  (runPolicy ? (POLICY_SIZES.length + 1) * (policyDuration + policyWarmup + 60) + POLICY_START_TIMEOUT_MS / 1000 + 60 : 0) +
  (runVerifier ? VERIFIER_TIMEOUT_SECONDS + 30 : 0)
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

async function measure(id: ScenarioId, description: string, start: () => Promise<ServerProcess>, prepare: (server: ServerProcess) => Promise<Workload>): Promise<ScenarioResult> {
  const scenario: ScenarioResult = { id, description, notes: [] }
  log(`\n▶ ${id} — ${description}`)
  let server: ServerProcess | undefined
  try {
    scenario.idleCpuBusy = await otherCpuLoad()
    if (scenario.idleCpuBusy > 25) log(`  warning: ${scenario.idleCpuBusy}% of the CPUs busy with other work before the start — figures will be noisy`)
    const t0 = performance.now()
    server = await start()
    scenario.startupMs = server.startupMs
    if (server.info) scenario.serverInfo = server.info
    const w = await prepare(server)
    await smoke(server, w)
    log(`  server up on ${server.url} in ${Math.round(performance.now() - t0)} ms; ${warmup} s warm-up then ${duration} s measured, ${connections} connections`)
    const result = await runLoad({ url: server.url, path: '/token', connections, warmup, duration, headers: w.headers, nextBody: w.nextBody, nextHeaders: w.nextHeaders })
    if (result.warmup.ok < result.warmup.responses) note(scenario, `warm-up: ${result.warmup.responses - result.warmup.ok} non-2xx ${JSON.stringify(result.warmup.statusCodes)}`)
    scenario.result = result
    log(`  ${summary(result)}`)
    const exit = server.exited()
    if (exit) note(scenario, `server exited during the run (code ${exit.code}, signal ${exit.signal})`)
  } catch (e) {
    scenario.error = e instanceof Error ? e.message : String(e)
    log(`  FAILED: ${scenario.error}`)
  } finally {
    await server?.stop()
  }
  if (server && server.log.lines > 0) {
    scenario.serverLog = server.log
    // oidc-provider's start-up notices (runtime version, in-memory adapter) are expected; anything else is shown.
    const unexpected = server.log.first.filter((line) => !/^oidc-provider (WARNING|NOTICE):/.test(line))
    const shown = unexpected.length > 0 ? `; first: ${unexpected.slice(0, 3).join(' ⏎ ')}` : ' (start-up notices only)'
    log(`  server wrote ${server.log.lines} log line(s)${shown}`)
  }
  return scenario
}

/** Percentage of all CPUs busy over `ms` while no benchmark process is working: other users of the machine. */
async function otherCpuLoad(ms = 500): Promise<number> {
  const sample = () => cpus().reduce((acc, c) => ({ idle: acc.idle + c.times.idle, total: acc.total + c.times.user + c.times.nice + c.times.sys + c.times.irq + c.times.idle }), { idle: 0, total: 0 })
  const a = sample()
  await new Promise((resolve) => setTimeout(resolve, ms))
  const b = sample()
  const total = b.total - a.total
  return total <= 0 ? 0 : Math.round((100 * (total - (b.idle - a.idle))) / total)
}

function summary(r: LoadResult): string {
  const errors = r.non2xx + r.errors > 0 ? ` — ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts ${JSON.stringify(r.statusCodes)}` : ''
  return `${Math.round(r.rps).toLocaleString('en-US')} req/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms (${r.ok} ok in ${r.seconds} s)${errors}`
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

async function httpScenarios(): Promise<void> {
  const startedAt = new Date()
  log(`taskpass bench — ${duration} s per scenario (+${warmup} s warm-up), ${connections} connections, node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown cpu'})`)
  const keys: BenchKeys = await generateBenchKeys()
  const pub = publicKeys(keys)
  const taskpassPort = await freePort()
  const issuer = `http://127.0.0.1:${taskpassPort}`
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

  const results: Results = {}
  let authFlood: AuthFloodResult | undefined
  const floorConfig = (verify: boolean): FloorServerConfig => ({ verify, issuer, userIssuer: USER_ISSUER, keys: pub })
  const peerConfig: PeerServerConfig = { clientId: PEER_CLIENT.id, clientSecret: PEER_CLIENT.secret, audience: issuer, userIssuer: USER_ISSUER, keys: pub }
  const taskpassConfig = (db: string): TaskpassServerConfig => ({ port: taskpassPort, issuer, database: join(dataDir, db), keys: pub })

  if (floodOnly) {
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

  try {
    results.floor = await measure('floor', 'hono + one ES256 SignJWT + one SQLite insert (WAL, synchronous=NORMAL)', () => startServer('floor', 'floor', floorConfig(false)), async () => ({
      headers: formHeaders,
      nextBody: () => warmBody,
    }))

    results['floor+2verify'] = await measure('floor+2verify', 'floor + two ES256 jwtVerify of distinct pre-minted tokens', () => startServer('floor+2verify', 'floor', floorConfig(true)), async () => ({
      headers: formHeaders,
      nextBody: rotating(),
    }))

    results.peer = await measure('peer', 'oidc-provider v9 client_credentials, JWT access token (ES256), client_secret_basic', () => startServer('peer', 'peer', peerConfig), async () => {
      const body = form({ grant_type: 'client_credentials', resource: RESOURCE, scope: SCOPE })
      return { headers: peerHeaders, nextBody: () => body }
    })

    results['taskpass warm'] = await measure('taskpass warm', 'the broker, same subject + actor token every request (task_id of an open task)', () => startServer('taskpass warm', 'taskpass', taskpassConfig('warm.db')), async (server) => {
      const body = `${warmBody}&task_id=${encodeURIComponent(await openTask(server, warmPair.subject, warmPair.actor))}`
      return { headers: formHeaders, nextBody: () => body }
    })

    // DPoP: the warm request plus one never-used proof per request, by one ES256 key, for
    // POST <issuer>/token; enough for the warm rate plus margin, minted now (iat = now).
    const dpopKey = await generateDpopKey()
    const warmRate = results['taskpass warm']?.result?.rps ?? results.floor?.result?.rps ?? 5000
    const proofsNeeded = Math.min(MAX_PROOFS, Math.ceil(warmRate * (duration + warmup) * 1.25) + connections + 1000)
    t = performance.now()
    const proofs = await mintDpopProofs(dpopKey, `${issuer}/token`, proofsNeeded)
    log(`\nminted ${proofs.length.toLocaleString('en-US')} DPoP proofs (one ES256 key, unique jti, iat now) in ${((performance.now() - t) / 1000).toFixed(1)} s`)
    let proofsUsed = 0
    const dpopConfig: TaskpassServerConfig = { ...taskpassConfig('dpop.db'), clockSkew: DPOP_CLOCK_SKEW, dpopReplayCacheSize: Math.max(100_000, proofs.length + 10_000) }
    results['taskpass dpop'] = await measure('taskpass dpop', `the warm exchange + a fresh DPoP proof per request (ES256, one key; task bound to it; clockSkew ${DPOP_CLOCK_SKEW})`, () => startServer('taskpass dpop', 'taskpass', dpopConfig), async (server) => {
      const body = `${warmBody}&task_id=${encodeURIComponent(await openTask(server, warmPair.subject, warmPair.actor, await mintDpopProof(dpopKey, `${issuer}/tasks`)))}`
      return { headers: formHeaders, nextBody: () => body, nextHeaders: () => ({ dpop: proofs[proofsUsed++ % proofs.length]! }), tokenType: 'DPoP' }
    })
    const dpop = results['taskpass dpop']
    if (dpop) {
      note(dpop, `${proofsUsed.toLocaleString('en-US')} pre-minted proofs sent (incl. smoke and warm-up), ${proofs.length.toLocaleString('en-US')} minted`)
      if (proofsUsed > proofs.length) note(dpop, `WARNING: the proofs ran out — ${proofsUsed - proofs.length} requests replayed a proof (refused): raise MAX_PROOFS or lower BENCH_DURATION`)
    }

    // Cold needs a never-seen pair per request: enough for its measured ceiling (floor+2verify) plus margin.
    const ceiling = results['floor+2verify']?.result?.rps ?? results.floor?.result?.rps ?? 5000
    const needed = Math.min(MAX_POOL, Math.ceil(ceiling * (duration + warmup) * 1.25) + 1000)
    if (needed > pool.size) {
      t = performance.now()
      await pool.fill(needed)
      const s = (performance.now() - t) / 1000
      mintSeconds += s
      log(`\nminted pairs up to ${pool.size.toLocaleString('en-US')} for the cold scenario in ${s.toFixed(1)} s`)
    }
    let coldUsed = 0
    results['taskpass cold'] = await measure('taskpass cold', 'the broker, a never-seen subject + actor token every request', () => startServer('taskpass cold', 'taskpass', taskpassConfig('cold.db')), async (server) => {
      const taskParam = `&task_id=${encodeURIComponent(await openTask(server, await mintSubjectToken(keys, issuer), await mintActorToken(keys, issuer)))}`
      return { headers: formHeaders, nextBody: () => pool.body(coldUsed++) + taskParam }
    })
    const cold = results['taskpass cold']
    if (cold) {
      note(cold, `${coldUsed.toLocaleString('en-US')} pre-minted pairs sent (incl. smoke and warm-up), pool ${pool.size.toLocaleString('en-US')}`)
      if (coldUsed > pool.size) note(cold, `WARNING: the pool ran out — ${coldUsed - pool.size} requests reused a pair (warm, not cold): raise MAX_POOL or lower BENCH_DURATION`)
    }

    results['peer token-exchange'] = await measure('peer token-exchange', 'oidc-provider v9 + registerGrantType(token-exchange): two ES256 jwtVerify, JWT access token', () => startServer('peer token-exchange', 'peer', peerConfig), async () => ({
      headers: peerHeaders,
      nextBody: rotating(),
    }))

    authFlood = await authFloodScenario(taskpassConfig, warmPair, warmBody)
  } finally {
    killAllServers()
  }

  const targets = checkTargets(results, connections)
  log('\n=== results (req/s: successful responses per second; latency over successful responses) ===')
  log(formatTable(results))
  if (authFlood) {
    log('\n=== auth flood: warm exchange latency at a fixed rate, quiet vs. next to a wrong-secret /introspect flood ===')
    log(formatAuthFlood(authFlood))
    targets.push(...authFloodTargets(authFlood))
  }
  log('\n=== DESIGN.md performance targets ===')
  log(formatTargets(targets))
  const busiest = Math.max(0, ...Object.values(results).map((r) => r.idleCpuBusy ?? 0))
  if (busiest > 25) log(`  caution: other processes kept up to ${busiest}% of the CPUs busy between scenarios — these ratios are unreliable; rerun on a quiet machine.`)
  log('\nnotes:')
  log('  - peer = oidc-provider client_credentials (persists nothing); peer-TE = the same provider running a registered')
  log('    token-exchange grant that verifies subject and actor token (no cache) and issues a JWT access token with `act`.')
  log('  - taskpass warm/cold use task_id of a task opened beforehand; each exchange reads the task and writes token + audit rows.')
  log('  - taskpass dpop = the warm request plus a never-used DPoP proof (one ES256 key, pre-minted) per request, its task bound')
  log('    to that key: the broker verifies the proof (signature with the embedded JWK, thumbprint, replay cache) and binds the token.')
  log('  - the machine is shared and noisy: compare ratios within one run, not absolute numbers across runs.')

  // The HTTP part's keys of latest.json; a verifier section from an earlier run is dropped when
  // this run measures the verifier too (so a failed verifier part cannot pass for a fresh one).
  const file = mergeResults(
    {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      settings: { duration, warmup, connections },
      machine: { node: process.version, cores: availableParallelism(), cpu: cpus()[0]?.model },
      tokenPool: { pairs: pool.size, mintSeconds: Number(mintSeconds.toFixed(2)) },
      scenarios: results,
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
  taskpassConfig: (db: string) => TaskpassServerConfig,
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
      server = await startServer(`auth flood ${variant.id}`, 'taskpass', { ...taskpassConfig(`flood-${i}.db`), ...(variant.authThrottle ? { authThrottle: variant.authThrottle } : {}) })
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
function verifierBenchmark(): Promise<void> {
  return new Promise((resolve, reject) => {
    log(`\n${'='.repeat(100)}\nverifier benchmark (bench/verifier.ts)`)
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'verifier.ts')], { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'] })
    const timer = setTimeout(() => {
      process.stderr.write(`bench: bench/verifier.ts still running after ${VERIFIER_TIMEOUT_SECONDS} s, stopping it\n`)
      child.kill('SIGTERM')
      setTimeout(() => child.kill('SIGKILL'), 3000).unref()
    }, VERIFIER_TIMEOUT_SECONDS * 1000)
    const stop = () => child.kill('SIGTERM')
    process.once('exit', stop)
    child.once('error', reject)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      process.off('exit', stop)
      if (code === 0) resolve()
      else reject(new Error(`bench/verifier.ts exited with code ${code}${signal ? `, signal ${signal}` : ''}`))
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
  if (runVerifier) await verifierBenchmark()
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
