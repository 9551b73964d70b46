import type { ReplayCache } from '@taskpass/verifier/cache'
import type { Stores } from '../store/stores.js'

/**
 * A replay cache shared by every broker process on one database (`replay.shared`, README
 * "Running several processes"): the process's own cache answers first — a replay seen here is
 * refused without a query, and its bounds still cap memory — then the database's table decides,
 * in one statement, whether any process used the key before. `scope` keeps the kinds of key
 * (DPoP proofs, client assertions) apart.
 */
export function sharedReplayCache(local: ReplayCache, shared: Stores['replay'], scope: string): ReplayCache {
  return {
    use(key, until, now, group) {
      const seen = local.use(key, until, now, group)
      if (seen !== 'fresh') return seen
      return shared.use(`${scope}:${key}`, until, now)
    },
    get size() {
      return local.size
    },
  }
}
