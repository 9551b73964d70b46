/**
 * The real broker, wired as src/main.ts wires it (createBroker + createApp, system clock, real
 * argon2id hasher, a SQLite file), with a configuration built the way test/harness.ts builds
 * one: inline JWKS for the user issuer and the SPIFFE trust domain, one workload, one resource.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { createApp } from '../../src/app.js'
import { createBroker, onServerStart, type Deps } from '../../src/broker.js'
import { refreshCatalog } from '../../src/catalog/catalog.js'
import { systemClock } from '../../src/clock.js'
import { parseConfig } from '../../src/config.js'
import { listen } from '../../src/http/server.js'
import { createPinoLogger } from '../../src/logger.js'
import { isPostgresUrl } from '../../src/store/open.js'
import { pruneStore } from '../../src/store/retention.js'
import { RESOURCE } from '../lib/fixtures.js'
import { announceReady, answerCommands, exitWithParent, HOST, readServerConfig } from '../lib/server-child.js'
import { benchExchangeDecision, brokerConfig, MAIN_PRUNE_INTERVAL_MS, type TaskpassServerConfig } from '../lib/taskpass-config.js'

export type { TaskpassServerConfig } from '../lib/taskpass-config.js'

/** What the periodic prune has done since the last `prune-stats` command (then reset). */
export interface PruneStats {
  runs: number
  /** Token rows deleted. */
  tokens: number
  /** Rows of every kind deleted (tokens, replay entries, …). */
  rows: number
  /**
   * Milliseconds from a prune's start to its end, in total and the longest one: wall time, its
   * batches interleaved with the requests served between them.
   */
  totalMs: number
  maxMs: number
  /**
   * The longest one batch statement took, from its call to its answer: what one batch can hold
   * the event loop at most (an upper bound: it includes waiting for an open write transaction).
   */
  maxBatchMs: number
}

/** What the child tells the parent with its READY line (bench/lib/server-child.ts). */
export interface TaskpassServerInfo {
  /** Milliseconds createBroker took: database, migrations, the policy set (read, validated, prepared), keys. */
  createBrokerMs: number
  /** Policies in force, generated grant permits included. */
  policies: number
  /** Policies Cedar evaluates for the bench resource (its bucket), and for the largest bucket. */
  benchBucket: number
  largestBucket: number
  /** Whether decisions are Cedar's (a policy file) or the native grant evaluator's (none). */
  evaluator: 'cedar' | 'native'
}

/**
 * The decision a warm exchange of the bench asks for ({@link benchExchangeDecision}), `count`
 * times after as many warm-up calls; the median of per-batch means, in microseconds (what one
 * decision costs, without the HTTP load's noise). Throws if the decision is not an allow. The
 * parent asks for it between load runs (`time-decisions <count>` on stdin).
 */
function timeDecisions(deps: Deps, count: number): number {
  const { principal, resource, context } = benchExchangeDecision(deps.config)
  const first = deps.policy.decide(principal, 'token.exchange', resource, context)
  if (!first.allow) throw new Error(`the bench exchange's decision is a deny: ${first.reason}`)
  for (let i = 0; i < count; i++) deps.policy.decide(principal, 'token.exchange', resource, context)
  const batch = Math.max(1, Math.floor(count / 20))
  const means: number[] = []
  for (let done = 0; done < count; done += batch) {
    const t = performance.now()
    for (let i = 0; i < batch; i++) deps.policy.decide(principal, 'token.exchange', resource, context)
    means.push(((performance.now() - t) * 1000) / batch)
  }
  means.sort((a, b) => a - b)
  return Number(means[Math.floor(means.length / 2)]!.toFixed(1))
}

const c = readServerConfig<TaskpassServerConfig>()
if (!isPostgresUrl(c.database)) mkdirSync(dirname(c.database), { recursive: true })
const config = parseConfig(await brokerConfig(c))
// The logger src/main.ts uses: pino to stderr through its asynchronous writer (a request never
// waits on a write), every line a broker in production would write.
const logger = createPinoLogger()
const t0 = performance.now()
const deps = await createBroker({ config, clock: systemClock, logger, kek: Buffer.from(config.keys.kek!, 'base64url') })
const createBrokerMs = Math.round(performance.now() - t0)
const buckets = [...deps.policy.set.byResource.values()].map((b) => b.length)
const info: TaskpassServerInfo = {
  createBrokerMs,
  policies: deps.policy.set.policies.size,
  benchBucket: deps.policy.set.byResource.get(RESOURCE)?.length ?? 0,
  largestBucket: Math.max(0, ...buckets),
  evaluator: deps.policy.set.generatedOnly ? 'native' : 'cedar',
}
await onServerStart(deps)
const app = createApp(deps)

// As src/main.ts: pick up key rotations and prune what retention allows (pruneStore, at one
// process at a time on a shared database), every 10 s unless the run asks for another interval;
// each prune is timed, it runs on the event loop.
let prunes: PruneStats = { runs: 0, tokens: 0, rows: 0, totalMs: 0, maxMs: 0, maxBatchMs: 0 }
// Every batch statement pruneStore runs, timed.
const timed = <A extends unknown[]>(fn: (...args: A) => Promise<number>) => async (...args: A): Promise<number> => {
  const t = performance.now()
  try {
    return await fn(...args)
  } finally {
    prunes.maxBatchMs = Math.max(prunes.maxBatchMs, performance.now() - t)
  }
}
const s = deps.stores
s.tokens.pruneExpired = timed(s.tokens.pruneExpired)
s.authorizationCodes.pruneExpired = timed(s.authorizationCodes.pruneExpired)
s.refreshTokens.pruneExpired = timed(s.refreshTokens.pruneExpired)
s.revocations.pruneBefore = timed(s.revocations.pruneBefore)
s.sessions.pruneBefore = timed(s.sessions.pruneBefore)
s.audit.pruneBefore = timed(s.audit.pruneBefore)
s.tasks.pruneExpiredBefore = timed(s.tasks.pruneExpiredBefore)
s.replay.pruneExpired = timed(s.replay.pruneExpired)
const timer = setInterval(async () => {
  deps.keys.reload().catch((e: unknown) => logger.error('key reload failed', { error: String(e) }))
  const t = performance.now()
  let deleted: Awaited<ReturnType<typeof pruneStore>> | undefined
  try {
    deleted = await deps.stores.alone('prune', () => pruneStore(deps.stores, config, systemClock.now()))
  } catch (e) {
    logger.error('pruning failed', { error: String(e) })
    return
  }
  if (deleted === undefined) return // another process on the database is pruning
  const ms = performance.now() - t
  prunes = { ...prunes, runs: prunes.runs + 1, tokens: prunes.tokens + deleted.tokens, rows: prunes.rows + Object.values(deleted).reduce((a, b) => a + b, 0), totalMs: prunes.totalMs + ms, maxMs: Math.max(prunes.maxMs, ms) }
}, c.pruneIntervalMs ?? MAIN_PRUNE_INTERVAL_MS)
timer.unref()
// As src/main.ts: a catalog change made by another process is taken up within a second.
const catalogTimer = setInterval(async () => {
  try {
    await refreshCatalog(deps)
  } catch (e) {
    logger.error('catalog refresh failed', { error: String(e) })
  }
}, 1000)
catalogTimer.unref()

// The listener src/main.ts uses (src/http/server.ts).
const server = await listen(app, { host: HOST, port: c.port })
exitWithParent(() => {
  void server.close()
  void deps.database.close()
  logger.flush()
})
answerCommands((command) => {
  if (command === 'prune-stats') {
    const out = { ...prunes, totalMs: Number(prunes.totalMs.toFixed(1)), maxMs: Number(prunes.maxMs.toFixed(1)), maxBatchMs: Number(prunes.maxBatchMs.toFixed(1)) }
    prunes = { runs: 0, tokens: 0, rows: 0, totalMs: 0, maxMs: 0, maxBatchMs: 0 }
    return out
  }
  // This process's CPU time so far, microseconds (user, system): the parent takes differences.
  if (command === 'cpu') return process.cpuUsage()
  const m = /^time-decisions ([1-9][0-9]{0,6})$/.exec(command)
  if (!m) throw new Error(`unknown command "${command}" (expected: time-decisions <count>, prune-stats, cpu)`)
  return timeDecisions(deps, Number(m[1]))
})
announceReady(server.address.port, info)
