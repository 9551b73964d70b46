/**
 * Single-use identifiers (`jti`s), each remembered until its token can no longer be accepted.
 * Bounded in size and time: expired entries are swept as new ones arrive; when the cache is full
 * of live entries it refuses new ones ('full') instead of forgetting a live one — evicting a live
 * entry would let its token be replayed. Entries may name a `group` (a DPoP proof key at a
 * resource server, where many clients share one cache): with `maxPerGroup`, one group can fill
 * only its own share, so a client sending proofs as fast as it can never locks the others out.
 */
export type ReplayVerdict = 'fresh' | 'replayed' | 'full'

export interface ReplayCache {
  /**
   * Records `key` until `until` (epoch seconds): `fresh` the first time, `replayed` after, `full`
   * when no room. A cache shared through a database (several broker processes) answers through a
   * promise; this in-memory one answers at once.
   */
  use(key: string, until: number, now: number, group?: string): ReplayVerdict | Promise<ReplayVerdict>
  readonly size: number
}

/** The in-memory {@link ReplayCache}: it answers at once. */
export interface MemoryReplayCache extends ReplayCache {
  use(key: string, until: number, now: number, group?: string): ReplayVerdict
}

export function createReplayCache(maxEntries: number, maxPerGroup = Infinity): MemoryReplayCache {
  // Insertion order ≈ expiry order (every entry lives at most a bounded time), so sweeping from
  // the oldest end finds the expired ones first.
  const seen = new Map<string, { until: number; group: string }>()
  const perGroup = new Map<string, number>()
  let lastFullSweep = -1

  function drop(key: string, group: string): void {
    seen.delete(key)
    const n = (perGroup.get(group) ?? 1) - 1
    if (n > 0) perGroup.set(group, n)
    else perGroup.delete(group)
  }

  function sweep(now: number, all: boolean): void {
    for (const [k, entry] of seen) {
      if (entry.until <= now) drop(k, entry.group)
      else if (!all) return
    }
  }

  return {
    use(key, until, now, group = '') {
      const known = seen.get(key)
      if (known !== undefined && known.until > now) return 'replayed'
      if (known !== undefined) drop(key, known.group)
      sweep(now, false)
      const isFull = () => seen.size >= maxEntries || (perGroup.get(group) ?? 0) >= maxPerGroup
      // A full scan at most once a second: a cache full of live entries must not cost O(n) per request.
      if (isFull() && now !== lastFullSweep) {
        sweep(now, true)
        lastFullSweep = now
      }
      if (isFull()) return 'full'
      seen.set(key, { until, group })
      perGroup.set(group, (perGroup.get(group) ?? 0) + 1)
      return 'fresh'
    },
    get size() {
      return seen.size
    },
  }
}
