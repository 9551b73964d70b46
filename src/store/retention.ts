import { MAX_LEEWAY_SECONDS } from '@taskpass/verifier'
import type { Config } from '../config.js'
import type { Stores } from './stores.js'

/**
 * What the broker forgets, and when (README "Retention"): expired token rows, authorization codes and refresh tokens and feed events once
 * no verifier can still accept what they are about, revoked sessions once their subject tokens
 * have expired, and the evidence — audit rows and tasks — only after its configured retention.
 * Nothing younger than its retention is ever deleted.
 */
export async function pruneStore(stores: Stores, config: Pick<Config, 'clockSkew' | 'retention'>, now: number): Promise<{ tokens: number; codes: number; refreshTokens: number; revocations: number; sessions: number; audit: number; tasks: number; replay: number }> {
  const horizon = now - config.clockSkew
  const inBatches = (prune: (limit: number) => Promise<number>) => batchAfterBatch(stores, prune)
  return {
    tokens: await inBatches((limit) => stores.tokens.pruneExpired(horizon, limit)),
    // A used code is kept until it expires: presented again before then, it revokes its task.
    codes: await inBatches((limit) => stores.authorizationCodes.pruneExpired(horizon, limit)),
    refreshTokens: await inBatches((limit) => stores.refreshTokens.pruneExpired(horizon, limit)),
    // Kept past `until` for the longest leeway a verifier may use, not only our clock skew.
    revocations: await inBatches((limit) => stores.revocations.pruneBefore(revocationPruneHorizon(now, config.clockSkew), limit)),
    sessions: await inBatches((limit) => stores.sessions.pruneBefore(horizon, limit)),
    audit: await inBatches((limit) => stores.audit.pruneBefore(now - config.retention.audit, limit)),
    tasks: await inBatches((limit) => stores.tasks.pruneExpiredBefore(now - config.retention.tasks, limit)),
    replay: await inBatches((limit) => stores.replay.pruneExpired(now, limit)),
  }
}

/**
 * Rows one prune statement deletes at most: a few milliseconds of the event loop (SQLite runs
 * statements on the main thread) and of the write lock, so requests interleave with a backlog's
 * pruning instead of waiting behind one long delete.
 */
export const PRUNE_BATCH = 1000

/**
 * Runs `prune` batch after batch until one deletes fewer than a batch, yielding to the event loop
 * between them. After each full batch the write-ahead log is checkpointed: a backlog's deletes
 * would otherwise fill it, and every few MiB one batch (or a request's commit) ran SQLite's
 * automatic checkpoint inside it, 6–12 ms where a batch takes about one.
 */
async function batchAfterBatch(stores: Pick<Stores, 'checkpoint'>, prune: (limit: number) => Promise<number>): Promise<number> {
  let total = 0
  for (;;) {
    const n = await prune(PRUNE_BATCH)
    total += n
    if (n < PRUNE_BATCH) return total
    await stores.checkpoint()
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
}

/**
 * How long an event is kept past its `until`: verifiers accept a token up to their leeway after
 * its `exp` (the verifier kit allows at most {@link MAX_LEEWAY_SECONDS}), so an event must outlive
 * `until` by at least that much, and by the broker's own clock skew.
 */
export function revocationRetentionSeconds(clockSkew: number): number {
  return Math.max(clockSkew, MAX_LEEWAY_SECONDS)
}

/** Events whose `until` is before this (epoch seconds) may be pruned at time `now`. */
export function revocationPruneHorizon(now: number, clockSkew: number): number {
  return now - revocationRetentionSeconds(clockSkew)
}
