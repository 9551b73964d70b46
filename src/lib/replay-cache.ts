/**
 * Single-use identifiers (`jti`s), each remembered until its token can no longer be accepted.
 * Bounded in size and time: expired entries are swept as new ones arrive; when the cache is full
 * of live entries it refuses new ones ('full') instead of forgetting a live one — evicting a live
 * entry would let its token be replayed.
 */
export interface ReplayCache {
  /** Records `key` until `until` (epoch seconds): `fresh` the first time, `replayed` after, `full` when no room. */
  use(key: string, until: number, now: number): 'fresh' | 'replayed' | 'full'
  readonly size: number
}

export function createReplayCache(maxEntries: number): ReplayCache {
  // Insertion order ≈ expiry order (every entry lives at most a bounded time), so sweeping from
  // the oldest end finds the expired ones first.
  const seen = new Map<string, number>()
  let lastFullSweep = -1

  function sweep(now: number, all: boolean): void {
    for (const [k, until] of seen) {
      if (until <= now) seen.delete(k)
      else if (!all) return
    }
  }

  return {
    use(key, until, now) {
      const known = seen.get(key)
      if (known !== undefined && known > now) return 'replayed'
      if (known !== undefined) seen.delete(key)
      sweep(now, false)
      // A full scan at most once a second: a cache full of live entries must not cost O(n) per request.
      if (seen.size >= maxEntries && now !== lastFullSweep) {
        sweep(now, true)
        lastFullSweep = now
      }
      if (seen.size >= maxEntries) return 'full'
      seen.set(key, until)
      return 'fresh'
    },
    get size() {
      return seen.size
    },
  }
}
