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
  return {
    tokens: await stores.tokens.pruneExpired(horizon),
    // A used code is kept until it expires: presented again before then, it revokes its task.
    codes: await stores.authorizationCodes.pruneExpired(horizon),
    refreshTokens: await stores.refreshTokens.pruneExpired(horizon),
    // Kept past `until` for the longest leeway a verifier may use, not only our clock skew.
    revocations: await stores.revocations.pruneBefore(revocationPruneHorizon(now, config.clockSkew)),
    sessions: await stores.sessions.pruneBefore(horizon),
    audit: await stores.audit.pruneBefore(now - config.retention.audit),
    tasks: await stores.tasks.pruneExpiredBefore(now - config.retention.tasks),
    // Bounded per run: a backlog is worked off over several runs, never in one long write.
    replay: await stores.replay.pruneExpired(now, 10_000),
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
