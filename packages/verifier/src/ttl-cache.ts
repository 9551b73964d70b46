/**
 * A bounded map whose entries expire at a given epoch second. Used so that each distinct
 * token is verified once (asymmetric verify, argon2) and then served from memory until its
 * `exp`. Oldest insertions are evicted first when full.
 */
export class TtlCache<V> {
  readonly #max: number
  readonly #map = new Map<string, { value: V; until: number }>()

  constructor(max: number) {
    this.#max = max
  }

  get(key: string, now: number): V | undefined {
    const hit = this.#map.get(key)
    if (!hit) return undefined
    if (hit.until <= now) {
      this.#map.delete(key)
      return undefined
    }
    return hit.value
  }

  set(key: string, value: V, until: number): void {
    if (this.#map.size >= this.#max) {
      const oldest = this.#map.keys().next()
      if (!oldest.done) this.#map.delete(oldest.value)
    }
    this.#map.set(key, { value, until })
  }

  get size(): number {
    return this.#map.size
  }
}
