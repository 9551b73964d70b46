/**
 * The verifier kit (`@taskpass/verifier`) as an MCP server runs it, against the real broker
 * (bench/servers/taskpass.ts, in a child process on 127.0.0.1). Run by `npm run bench` after the
 * HTTP scenarios, or alone: `npm run bench -- --only verifier` (or `tsx bench/verifier.ts`).
 *
 * (a) Revocation-to-refusal latency. A verifier with `revocation: {mode: 'feed'}` (SSE stream,
 *     default options) follows the broker's feed. For each of BENCH_VERIFIER_TASKS tasks (100):
 *     open a task, exchange a token in it, verify it (accepted), then send
 *     POST /tasks/{id}/complete and, from the moment it is sent, call `verifyAccessToken` every
 *     ~1 ms (setTimeout 1) until it refuses the token as revoked (bounded: BENCH_VERIFIER_BOUND_MS,
 *     default 5000). Reported: median, p90 and max of that time, and for context when the
 *     broker's 200 arrived and when the feed event was applied (the `onEvent` hook; no polling
 *     granularity in it).
 * (b) Throughput, verifications per second for BENCH_VERIFIER_SECONDS (2) per figure, after a
 *     short untimed warm-up, with the JWKS fetched and the deny-set current (it holds the tasks
 *     ended in (a)): the verifier on one token repeated, on BENCH_VERIFIER_TOKENS (1000) distinct
 *     broker tokens cycled (the verifier keeps verified tokens in memory, so both are cache hits
 *     after the first pass), and on the same tokens with that cache off (`cacheMaxEntries: 1`: a
 *     signature check every time) — against plain jose `jwtVerify` with the broker's public key
 *     imported locally, on the same tokens, in the same run. Each figure is taken with one
 *     sequential `await` loop and with BENCH_VERIFIER_CONCURRENCY (16) such loops at once
 *     (ES256 verification runs on libuv's thread pool, so concurrency can use both cores).
 *
 * Figures go to the `verifier` section of bench/results/latest.json.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { decodeProtectedHeader, importJWK, jwtVerify, type JWK } from 'jose'
import { createTaskTokenVerifier, VerifierError, type TaskTokenVerifier, type TaskTokenVerifierOptions } from '@taskpass/verifier'
import { freePort, installWatchdog, killAllServers, startServer, type ServerProcess } from './lib/child.js'
import { generateBenchKeys, mintActorToken, mintSubjectToken, publicKeys, RESOURCE, RESOURCE_CLIENT_ID, RESOURCE_SECRET, SCOPE } from './lib/fixtures.js'
import { exchange, expectJson, openTask, type Broker } from './lib/broker-http.js'
import { positiveInt } from './lib/env.js'
import { mergeResults } from './lib/results.js'
import type { TaskpassServerConfig } from './servers/taskpass.js'

const TASKS = positiveInt('BENCH_VERIFIER_TASKS', 100)
const BOUND_MS = positiveInt('BENCH_VERIFIER_BOUND_MS', 5000)
const SECONDS = positiveInt('BENCH_VERIFIER_SECONDS', 2)
const DISTINCT = positiveInt('BENCH_VERIFIER_TOKENS', 1000)
const CONCURRENCY = positiveInt('BENCH_VERIFIER_CONCURRENCY', 16)
const POLL_MS = 1
const WARMUP_MS = 300
const REVOKED = 'token has been revoked'

const watchdogSeconds = 60 + TASKS * ((BOUND_MS + 2000) / 1000) + 10 * (SECONDS + 1) + DISTINCT / 100
const watchdog = installWatchdog('bench/verifier', watchdogSeconds)

const log = (msg: string) => process.stdout.write(`${msg}\n`)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

// ── the broker over HTTP ─────────────────────────────────────────────────────────────────────

function completeTask(b: Broker, taskId: string): Promise<Response> {
  return fetch(`${b.issuer}/tasks/${encodeURIComponent(taskId)}/complete`, { method: 'POST', headers: { 'actor-token': b.actor } })
}

// ── statistics ───────────────────────────────────────────────────────────────────────────────

interface Distribution {
  n: number
  min: number
  median: number
  p90: number
  max: number
  mean: number
}

/** Nearest-rank percentiles, as bench/lib/load.ts computes them. */
function distribution(values: number[]): Distribution | undefined {
  if (values.length === 0) return undefined
  const sorted = [...values].sort((a, b) => a - b)
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
  const round = (v: number) => Number(v.toFixed(3))
  return { n: sorted.length, min: round(sorted[0]!), median: round(at(50)), p90: round(at(90)), max: round(sorted.at(-1)!), mean: round(sorted.reduce((a, v) => a + v, 0) / sorted.length) }
}

const fmtDist = (d: Distribution | undefined) => (d ? `median ${d.median.toFixed(2)} ms, p90 ${d.p90.toFixed(2)} ms, max ${d.max.toFixed(2)} ms (min ${d.min.toFixed(2)})` : '—')

// ── (a) revocation-to-refusal ────────────────────────────────────────────────────────────────

interface RevocationResult {
  tasks: number
  refused: number
  /** Tasks whose token was still accepted BOUND_MS after the complete request was sent. */
  timeouts: number
  /** Whether the feed's SSE stream was open when the measurement started (else: polling, 1 s). */
  streamingAtStart: boolean
  /** From sending POST /tasks/{id}/complete to the first refusal seen by polling the verifier. */
  refusalMs?: Distribution | undefined
  /** From sending it to the broker's 200. */
  completeAnsweredMs?: Distribution | undefined
  /** From sending it to the verifier applying the task_completed event (onEvent). */
  eventAppliedMs?: Distribution | undefined
  /** Refusals seen before the complete request's 200 had been read. */
  refusedBeforeAnswer: number
}

async function revocationLatency(b: Broker, verifier: TaskTokenVerifier, applied: Map<string, number>): Promise<RevocationResult> {
  const refusal: number[] = []
  const answered: number[] = []
  const eventApplied: number[] = []
  let timeouts = 0
  let refusedBeforeAnswer = 0
  const streamingAtStart = verifier.revocationStatus().feed?.streaming === true
  for (let i = 0; i < TASKS; i++) {
    const taskId = await openTask(b, 'verifier benchmark')
    const token = await exchange(b, taskId)
    await verifier.verifyAccessToken(token)

    const t0 = performance.now()
    let answeredAt: number | undefined
    const done = completeTask(b, taskId).then(async (res) => {
      answeredAt = performance.now()
      await expectJson(res, 200, `completing task ${taskId}`)
    })
    let refusedAt: number | undefined
    for (;;) {
      try {
        await verifier.verifyAccessToken(token)
      } catch (e) {
        if (!(e instanceof VerifierError) || e.description !== REVOKED) throw new Error(`task ${taskId}: the verifier refused with something else than revocation: ${e instanceof VerifierError ? e.description : String(e)}`)
        refusedAt = performance.now()
        break
      }
      if (performance.now() - t0 > BOUND_MS) break
      await sleep(POLL_MS)
    }
    await done
    if (refusedAt === undefined) {
      timeouts++
    } else {
      refusal.push(refusedAt - t0)
      if (answeredAt === undefined || refusedAt < answeredAt) refusedBeforeAnswer++
    }
    answered.push(answeredAt! - t0)
    const appliedAt = applied.get(taskId)
    if (appliedAt !== undefined) eventApplied.push(appliedAt - t0)
  }
  return {
    tasks: TASKS,
    refused: refusal.length,
    timeouts,
    streamingAtStart,
    refusalMs: distribution(refusal),
    completeAnsweredMs: distribution(answered),
    eventAppliedMs: distribution(eventApplied),
    refusedBeforeAnswer,
  }
}

// ── (b) throughput ───────────────────────────────────────────────────────────────────────────

interface Rate {
  verifications: number
  errors: number
  seconds: number
  perSecond: number
  firstError?: string
}

/** `workers` loops calling `fn` back to back for `seconds`, after an untimed warm-up. */
async function rate(fn: (i: number) => Promise<unknown>, seconds: number, workers: number): Promise<Rate> {
  let next = 0
  let count = 0
  let errors = 0
  let firstError: string | undefined
  const run = async (until: number, counting: boolean) => {
    const worker = async () => {
      while (performance.now() < until) {
        try {
          await fn(next++)
          if (counting) count++
        } catch (e) {
          if (counting) errors++
          firstError ??= e instanceof VerifierError ? `${e.code}: ${e.description}` : String(e)
        }
      }
    }
    await Promise.all(Array.from({ length: workers }, worker))
  }
  await run(performance.now() + WARMUP_MS, false)
  const started = performance.now()
  await run(started + seconds * 1000, true)
  const elapsed = (performance.now() - started) / 1000
  // Let the feed, timers and GC catch up before the next figure.
  await sleep(50)
  return { verifications: count, errors, seconds: Number(elapsed.toFixed(3)), perSecond: count / elapsed, ...(firstError ? { firstError } : {}) }
}

interface ModeResult {
  description: string
  sequential: Rate
  concurrent: Rate
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++
        out[i] = await fn(items[i]!)
      }
    }),
  )
  return out
}

// ── main ─────────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<void> {
  const startedAt = new Date()
  log(`verifier benchmark — ${TASKS} tasks for revocation latency (poll every ~${POLL_MS} ms, bound ${BOUND_MS} ms); throughput ${SECONDS} s per figure, ${DISTINCT} distinct tokens, concurrency ${CONCURRENCY}; node ${process.version}, ${availableParallelism()} cores`)
  const keys = await generateBenchKeys()
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const dataDir = mkdtempSync(join(tmpdir(), 'taskpass-bench-verifier-'))
  process.on('exit', () => rmSync(dataDir, { recursive: true, force: true }))

  const errors: string[] = []
  const onError = (e: Error) => {
    if (errors.length < 20) errors.push(e.message)
  }
  const applied = new Map<string, number>()
  const verifiers: TaskTokenVerifier[] = []
  const makeVerifier = (extra: Partial<TaskTokenVerifierOptions> = {}) => {
    const v = createTaskTokenVerifier({
      issuer,
      resource: RESOURCE,
      requiredScopes: [SCOPE],
      dpop: 'allowed',
      revocation: {
        mode: 'feed',
        feedUrl: `${issuer}/revocations`,
        credentials: { clientId: RESOURCE_CLIENT_ID, clientSecret: RESOURCE_SECRET },
        onEvent: (event) => {
          if (event.task_id && !applied.has(event.task_id)) applied.set(event.task_id, performance.now())
        },
      },
      onError,
      ...extra,
    })
    verifiers.push(v)
    return v
  }
  /** The feed has caught up and its SSE stream is open (so (a) measures the push path). */
  const settled = async (v: TaskTokenVerifier) => {
    await v.ready(10_000)
    const until = performance.now() + 5000
    while (v.revocationStatus().feed?.streaming !== true && performance.now() < until) await sleep(10)
  }

  let server: ServerProcess | undefined
  try {
    const t0 = performance.now()
    const config: TaskpassServerConfig = { port, issuer, database: join(dataDir, 'broker.db'), keys: publicKeys(keys) }
    server = await startServer('verifier broker', 'taskpass', config)
    const b: Broker = { server, issuer, subject: await mintSubjectToken(keys, issuer), actor: await mintActorToken(keys, issuer) }
    const verifier = makeVerifier()
    await settled(verifier)
    log(`broker up on ${issuer} and verifier following its feed (streaming: ${verifier.revocationStatus().feed?.streaming}) in ${Math.round(performance.now() - t0)} ms`)

    // (a)
    log(`\n▶ revocation-to-refusal over ${TASKS} tasks`)
    const t1 = performance.now()
    const revocation = await revocationLatency(b, verifier, applied)
    log(`  done in ${((performance.now() - t1) / 1000).toFixed(1)} s`)

    // (b)
    log(`\n▶ throughput (warm JWKS, deny-set of ${verifier.revocationStatus().feed?.denied.tasks ?? 0} ended tasks)`)
    const taskId = await openTask(b, 'verifier benchmark')
    const tokens = await mapLimit(Array.from({ length: DISTINCT }, (_, i) => i), 8, () => exchange(b, taskId))
    if (new Set(tokens).size !== tokens.length) throw new Error('the broker issued duplicate tokens')
    const same = tokens[0]!
    const jwks = (await expectJson(await fetch(`${issuer}/.well-known/jwks.json`), 200, 'the JWKS')) as { keys: JWK[] }
    const header = decodeProtectedHeader(same)
    const jwk = jwks.keys.find((k) => k.kid === header.kid)
    if (!jwk || typeof header.alg !== 'string') throw new Error(`no key ${header.kid} in the broker's JWKS`)
    if (tokens.some((t) => decodeProtectedHeader(t).kid !== header.kid)) throw new Error('the tokens are signed with several keys')
    const localKey = await importJWK(jwk, header.alg)
    const joseOptions = { issuer, audience: RESOURCE, algorithms: [header.alg], typ: 'at+jwt', requiredClaims: ['exp', 'iat', 'jti', 'sub', 'client_id', 'scope', 'task_id'] }
    const uncached = makeVerifier({ cacheMaxEntries: 1 })
    await settled(uncached)
    // JWKS fetched and the cache filled (every distinct token verified once) before any figure.
    for (const t of tokens) await verifier.verifyAccessToken(t)
    await uncached.verifyAccessToken(same)
    await jwtVerify(same, localKey, joseOptions)

    const modes: Array<[id: string, description: string, fn: (i: number) => Promise<unknown>]> = [
      ['verifier same token', 'createTaskTokenVerifier (feed): one token repeated (verified-token cache hit)', () => verifier.verifyAccessToken(same)],
      ['verifier cycled', `createTaskTokenVerifier (feed): ${DISTINCT} distinct tokens cycled (all in its cache)`, (i) => verifier.verifyAccessToken(tokens[i % DISTINCT]!)],
      ['verifier cycled, no cache', `createTaskTokenVerifier (feed, cacheMaxEntries 1): ${DISTINCT} distinct tokens cycled, signature checked every time`, (i) => uncached.verifyAccessToken(tokens[i % DISTINCT]!)],
      ['jose same token', 'jose jwtVerify, local public key (iss, aud, typ, exp, required claims): one token repeated', () => jwtVerify(same, localKey, joseOptions)],
      ['jose cycled', `jose jwtVerify, local public key: ${DISTINCT} distinct tokens cycled`, (i) => jwtVerify(tokens[i % DISTINCT]!, localKey, joseOptions)],
    ]
    const throughput: Record<string, ModeResult> = {}
    for (const [id, description, fn] of modes) {
      const sequential = await rate(fn, SECONDS, 1)
      const concurrent = await rate(fn, SECONDS, CONCURRENCY)
      throughput[id] = { description, sequential, concurrent }
      const errs = sequential.errors + concurrent.errors
      log(`  ${id.padEnd(26)} ${Math.round(sequential.perSecond).toLocaleString('en-US').padStart(10)}/s sequential, ${Math.round(concurrent.perSecond).toLocaleString('en-US').padStart(10)}/s at ${CONCURRENCY}${errs ? `  — ${errs} ERRORS (${sequential.firstError ?? concurrent.firstError})` : ''}`)
    }
    const ratio = (a: string, b: string, k: 'sequential' | 'concurrent') => Number((throughput[a]![k].perSecond / throughput[b]![k].perSecond).toFixed(3))
    const ratios = {
      'verifier same token / jose same token': { sequential: ratio('verifier same token', 'jose same token', 'sequential'), concurrent: ratio('verifier same token', 'jose same token', 'concurrent') },
      'verifier cycled / jose cycled': { sequential: ratio('verifier cycled', 'jose cycled', 'sequential'), concurrent: ratio('verifier cycled', 'jose cycled', 'concurrent') },
      'verifier cycled, no cache / jose cycled': { sequential: ratio('verifier cycled, no cache', 'jose cycled', 'sequential'), concurrent: ratio('verifier cycled, no cache', 'jose cycled', 'concurrent') },
    }
    const feedAtEnd = verifier.revocationStatus().feed

    // Report.
    log(`\n=== verifier: revocation-to-refusal (${TASKS} tasks; feed ${revocation.streamingAtStart ? 'SSE stream' : 'NOT streaming (polling)'}; verifier polled every ~${POLL_MS} ms) ===`)
    log(`  refused after POST /tasks/{id}/complete was sent:  ${fmtDist(revocation.refusalMs)}`)
    log(`  ${revocation.refused}/${revocation.tasks} refused as revoked, ${revocation.timeouts} still accepted after ${BOUND_MS} ms; ${revocation.refusedBeforeAnswer} refused before the complete request's 200 was read`)
    log(`  context — broker's 200 to the complete request:    ${fmtDist(revocation.completeAnsweredMs)}`)
    log(`  context — feed event applied in the verifier:      ${fmtDist(revocation.eventAppliedMs)}`)

    log(`\n=== verifier: throughput (verifications/s; ${SECONDS} s per figure after ${WARMUP_MS} ms warm-up; warm JWKS; deny-set ${feedAtEnd?.denied.tasks ?? 0} tasks) ===`)
    const rows = Object.entries(throughput).map(([id, m]) => {
      const jose = id.startsWith('verifier same') || id.startsWith('jose same') ? 'jose same token' : 'jose cycled'
      return [
        id,
        Math.round(m.sequential.perSecond).toLocaleString('en-US'),
        `${ratio(id, jose, 'sequential').toFixed(2)}×`,
        Math.round(m.concurrent.perSecond).toLocaleString('en-US'),
        `${ratio(id, jose, 'concurrent').toFixed(2)}×`,
        `${m.sequential.errors + m.concurrent.errors}`,
      ]
    })
    const head = ['mode', 'sequential/s', 'vs jose', `concurrency ${CONCURRENCY}/s`, 'vs jose', 'errors']
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')
    log([line(head), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map(line)].join('\n'))
    log('  (vs jose: against jose jwtVerify on the same token(s) — one token for the "same token" rows, the cycled set otherwise.')
    log(`   Concurrency matters only where a signature is checked — ES256 verification runs on libuv's thread pool, so ${CONCURRENCY} loops`)
    log('   can use both cores; the cached rows never leave the main thread, and their two columns differ by scheduling only.)')
    if (errors.length > 0) log(`  verifier onError reported ${errors.length} problem(s); first: ${errors.slice(0, 3).join(' ⏎ ')}`)

    const file = mergeResults({
      verifier: {
        startedAt: startedAt.toISOString(),
        finishedAt: new Date().toISOString(),
        settings: { tasks: TASKS, pollIntervalMs: POLL_MS, boundMs: BOUND_MS, throughputSeconds: SECONDS, warmupMs: WARMUP_MS, distinctTokens: DISTINCT, concurrency: CONCURRENCY },
        machine: { node: process.version, cores: availableParallelism(), cpu: cpus()[0]?.model },
        revocation,
        throughput,
        ratios,
        feedAtEnd,
        onErrors: errors,
      },
    })
    log(`\nwrote the verifier section of ${file}`)
    if (revocation.timeouts > 0 || Object.values(throughput).some((m) => m.sequential.errors + m.concurrent.errors > 0)) process.exitCode = 1
  } finally {
    for (const v of verifiers) await v.close()
    await server?.stop()
  }
}

try {
  await main()
} catch (e) {
  process.stderr.write(`bench/verifier failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
  process.exitCode = 1
} finally {
  clearTimeout(watchdog)
  killAllServers()
}
