import type { ReplayCache } from '@taskpass/verifier/cache'
import type { Stores } from '../store/stores.js'

/**
 * A replay cache shared by every broker process on one database (`replay.shared`, README
 * "Running several processes"): the database's table decides first, in one statement, whether
 * any process used the key before — so a failed write (the database busy) records nothing, and
 * the same proof may be sent again — then the process's own cache records it within its bounds.
 * `scope` keeps the kinds of key (DPoP proofs, client assertions) apart.
 */
export function sharedReplayCache(local: ReplayCache, shared: Stores['replay'], scope: string): ReplayCache {
  return {
    async use(key, until, now, group) {
      if (await shared.use(`${scope}:${key}`, until, now) === 'replayed') return 'replayed'
      return local.use(key, until, now, group)
    },
    get size() {
      return local.size
    },
  }
}
