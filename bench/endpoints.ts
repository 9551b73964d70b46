/**
 * `npm run bench -- --only endpoints` (or `tsx bench/endpoints.ts`): the two endpoints MCP
 * servers lean on besides the exchange, against the real broker (bench/servers/taskpass.ts in a
 * child process on 127.0.0.1).
 *
 * (a) Introspection (RFC 7662) throughput: POST /introspect with the resource's Basic credential,
 *     on one token repeated and on BENCH_ENDPOINTS_TOKENS (1000) distinct tokens of one task
 *     cycled, BENCH_CONNECTIONS (50) connections, in BENCH_ROUNDS rounds (alternating the two) of
 *     BENCH_SECONDS each; reported as the median req/s, p50 and p99 over rounds with min–max.
 *     A revoked token must introspect inactive at once: checked after the runs.
 * (b) Revocation feed fan-out: BENCH_FEED_SUBSCRIBERS (1000) SSE streams on GET /revocations,
 *     then BENCH_FEED_EVENTS (20) tasks completed one after another; for each event, from sending
 *     POST /tasks/{id}/complete to its `task_completed` event arriving at every stream (and at
 *     the median stream), and the broker process's CPU time per event (process.cpuUsage in the
 *     child, over the events). The hub reads each event once for all streams (src/revocations/hub.ts).
 *
 * The load generator, the 1000 streams and the broker share this machine's cores: the figures
 * are an upper bound on what the broker alone costs.
 */
import { request, type IncomingMessage } from 'node:http'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, installWatchdog, killAllServers, startServer, type ServerProcess } from './lib/child.js'
import { generateBenchKeys, mintActorToken, mintSubjectToken, publicKeys, RESOURCE_CLIENT_ID, RESOURCE_SECRET } from './lib/fixtures.js'
import { runLoad, type LoadResult } from './lib/load.js'
import { exchange, expectJson, openTask, type Broker } from './lib/broker-http.js'
import { positiveInt } from './lib/env.js'
import { mergeResults } from './lib/results.js'
import type { TaskpassServerConfig } from './servers/taskpass.js'

const ROUNDS = positiveInt('BENCH_ROUNDS', 3)
const SECONDS = positiveInt('BENCH_SECONDS', 4)
const CONNECTIONS = positiveInt('BENCH_CONNECTIONS', 50)
const DISTINCT = positiveInt('BENCH_ENDPOINTS_TOKENS', 1000)
const SUBSCRIBERS = positiveInt('BENCH_FEED_SUBSCRIBERS', 1000)
const EVENTS = positiveInt('BENCH_FEED_EVENTS', 20)
const EVENT_BOUND_MS = 5000

const watchdog = installWatchdog('bench/endpoints', 120 + ROUNDS * 2 * (SECONDS + 2) + EVENTS * 6 + SUBSCRIBERS / 50)
const log = (msg: string) => process.stdout.write(`${msg}\n`)
const basic = `Basic ${Buffer.from(`${RESOURCE_CLIENT_ID}:${RESOURCE_SECRET}`).toString('base64')}`

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? Number.NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const range = (xs: number[], digits = 0) => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`

async function introspect(b: Broker, token: string): Promise<boolean> {
  const res = await fetch(`${b.issuer}/introspect`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic }, body: `token=${token}` })
  return (await expectJson(res, 200, 'introspection')).active === true
}

// ── (a) introspection ────────────────────────────────────────────────────────────────────────

interface IntrospectionFigures {
  rps: { median: number; min: number; max: number }
  p50: { median: number; min: number; max: number }
  p99: { median: number; min: number; max: number }
  non2xx: number
  errors: number
}

const summarize = (runs: LoadResult[]): IntrospectionFigures => {
  const of = (f: (r: LoadResult) => number) => {
    const xs = runs.map(f)
    return { median: Number(median(xs).toFixed(2)), min: Number(Math.min(...xs).toFixed(2)), max: Number(Math.max(...xs).toFixed(2)) }
  }
  return { rps: of((r) => r.rps), p50: of((r) => r.p50), p99: of((r) => r.p99), non2xx: runs.reduce((n, r) => n + r.non2xx, 0), errors: runs.reduce((n, r) => n + r.errors, 0) }
}

async function introspection(b: Broker): Promise<{ repeated: IntrospectionFigures; rotating: IntrospectionFigures; revokedInactive: boolean }> {
  const taskId = await openTask(b, 'endpoints benchmark')
  const tokens: string[] = []
  for (let i = 0; i < DISTINCT; i++) tokens.push(await exchange(b, taskId))
  for (const t of tokens) if (!(await introspect(b, t))) throw new Error('a fresh token introspected inactive')
  let next = 0
  const bodies = { repeated: () => `token=${tokens[0]}`, rotating: () => `token=${tokens[next++ % tokens.length]}` }
  const runs: Record<keyof typeof bodies, LoadResult[]> = { repeated: [], rotating: [] }
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 ? (['rotating', 'repeated'] as const) : (['repeated', 'rotating'] as const)
    for (const mode of order) {
      const r = await runLoad({ url: b.issuer, path: '/introspect', connections: CONNECTIONS, warmup: 1, duration: SECONDS, headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic }, nextBody: bodies[mode] })
      runs[mode].push(r)
      log(`  round ${round + 1} ${mode.padEnd(8)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  non-2xx ${r.non2xx}`)
    }
  }
  // Same guarantee under load: revoked means inactive at once.
  const victim = tokens[1]!
  const revoked = await fetch(`${b.issuer}/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic }, body: `token=${victim}` })
  if (revoked.status !== 200) throw new Error(`revocation got HTTP ${revoked.status}`)
  return { repeated: summarize(runs.repeated), rotating: summarize(runs.rotating), revokedInactive: !(await introspect(b, victim)) }
}

// ── (b) feed fan-out ────────────────────────────────────────────────────────────────────────

interface Stream {
  res: IncomingMessage
  seen: Map<string, number>
  buffer: string
}

function openStream(b: Broker, expecting: Set<string>): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const req = request(`${b.issuer}/revocations`, { headers: { authorization: basic, accept: 'text/event-stream' }, agent: false })
    req.on('error', reject)
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`a feed stream got HTTP ${res.statusCode}`))
        res.resume()
        return
      }
      const stream: Stream = { res, seen: new Map(), buffer: '' }
      res.setEncoding('utf8')
      let ready = false
      res.on('data', (chunk: string) => {
        const at = performance.now()
        stream.buffer += chunk
        if (!ready && stream.buffer.includes('event: ready')) {
          ready = true
          resolve(stream)
        }
        // Only the task ids of this run's events are looked for: no JSON parse per chunk.
        for (const id of expecting) if (!stream.seen.has(id) && stream.buffer.includes(id)) stream.seen.set(id, at)
        if (stream.buffer.length > 4096) stream.buffer = stream.buffer.slice(-1024)
      })
    })
    req.end()
  })
}

async function fanOut(b: Broker): Promise<{ subscribers: number; events: number; allMs: number[]; medianMs: number[]; cpuMsPerEvent: number; missed: number }> {
  const tasks: string[] = []
  for (let i = 0; i < EVENTS; i++) tasks.push(await openTask(b, 'endpoints benchmark'))
  for (const t of tasks) await exchange(b, t) // each task has a token, so its end is a feed event for the resource
  const expecting = new Set<string>()
  const streams: Stream[] = []
  for (let i = 0; i < SUBSCRIBERS; i += 50) streams.push(...(await Promise.all(Array.from({ length: Math.min(50, SUBSCRIBERS - i) }, () => openStream(b, expecting)))))
  log(`  ${streams.length} streams open`)
  const allMs: number[] = []
  const medianMs: number[] = []
  let missed = 0
  const cpuBefore = (await b.server.ask('cpu')) as { user: number; system: number }
  for (const taskId of tasks) {
    expecting.add(taskId)
    const sent = performance.now()
    const res = await fetch(`${b.issuer}/tasks/${encodeURIComponent(taskId)}/complete`, { method: 'POST', headers: { 'actor-token': b.actor } })
    await expectJson(res, 200, 'completing a task')
    const until = performance.now() + EVENT_BOUND_MS
    while (streams.some((s) => !s.seen.has(taskId)) && performance.now() < until) await new Promise((r) => setTimeout(r, 1))
    const arrivals = streams.map((s) => s.seen.get(taskId)).filter((t): t is number => t !== undefined)
    missed += streams.length - arrivals.length
    allMs.push(Math.max(...arrivals) - sent)
    medianMs.push(median(arrivals) - sent)
  }
  const cpuAfter = (await b.server.ask('cpu')) as { user: number; system: number }
  for (const s of streams) s.res.destroy()
  const cpuMsPerEvent = (cpuAfter.user + cpuAfter.system - cpuBefore.user - cpuBefore.system) / 1000 / EVENTS
  return { subscribers: streams.length, events: EVENTS, allMs, medianMs, cpuMsPerEvent, missed }
}

// ── main ─────────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'taskpass-bench-endpoints-'))
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const keys = await generateBenchKeys()
  let server: ServerProcess | undefined
  try {
    const config: TaskpassServerConfig = { port, issuer, database: join(dataDir, 'broker.db'), keys: publicKeys(keys) }
    server = await startServer('endpoints broker', 'taskpass', config)
    const b: Broker = { server, issuer, subject: await mintSubjectToken(keys, issuer), actor: await mintActorToken(keys, issuer) }
    log(`\n=== introspection: ${CONNECTIONS} connections, ${ROUNDS} rounds × ${SECONDS} s per mode (${cpus().length} cores shared with the load generator) ===`)
    const intro = await introspection(b)
    for (const [mode, f] of Object.entries({ repeated: intro.repeated, rotating: intro.rotating })) {
      log(`  ${mode.padEnd(8)} median ${f.rps.median.toFixed(0)} req/s (${f.rps.min.toFixed(0)}–${f.rps.max.toFixed(0)}), p50 ${f.p50.median} ms, p99 ${f.p99.median} ms (${f.p99.min}–${f.p99.max}), non-2xx ${f.non2xx}, errors ${f.errors}`)
    }
    log(`  [${intro.repeated.rps.median >= 10_000 && intro.rotating.rps.median >= 10_000 ? 'PASS' : 'FAIL'}] introspection ≥ 10,000 req/s (repeated and rotating medians)`)
    log(`  [${intro.revokedInactive ? 'PASS' : 'FAIL'}] a token revoked after the runs introspects inactive at once`)

    log(`\n=== revocation feed fan-out: ${SUBSCRIBERS} SSE streams, ${EVENTS} events ===`)
    const feed = await fanOut(b)
    log(`  to every stream: median ${median(feed.allMs).toFixed(1)} ms (${range(feed.allMs, 1)} ms over ${feed.events} events); to the median stream: ${median(feed.medianMs).toFixed(1)} ms`)
    log(`  broker CPU per event: ${feed.cpuMsPerEvent.toFixed(2)} ms (user + system, the completion request included); streams that missed an event within ${EVENT_BOUND_MS} ms: ${feed.missed}`)
    log(`  [${median(feed.allMs) < 50 && feed.missed === 0 ? 'PASS' : 'FAIL'}] ${SUBSCRIBERS} subscribers reached in < 50 ms (median over events)`)
    mergeResults({ endpoints: {
      machine: { cores: cpus().length, model: cpus()[0]?.model },
      settings: { rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, distinctTokens: DISTINCT, subscribers: SUBSCRIBERS, events: EVENTS },
      introspection: intro,
      feed: { ...feed, allMsMedian: median(feed.allMs), medianStreamMsMedian: median(feed.medianMs) },
    } })
  } finally {
    await server?.stop()
    rmSync(dataDir, { recursive: true, force: true })
    clearTimeout(watchdog)
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench/endpoints failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    killAllServers()
    process.exit(1)
  },
)
