/** A source of time. The only place that reads the wall clock is {@link systemClock}; tests inject {@link createFixedClock}. */
export interface Clock {
  /** Current time in epoch seconds (integer). */
  now(): number
  /** Current time in epoch milliseconds. */
  nowMs(): number
}

export const systemClock: Clock = {
  now: () => Math.floor(Date.now() / 1000),
  nowMs: () => Date.now(),
}

/** A clock that only moves when told to; tests use it instead of sleeping. */
export interface FixedClock extends Clock {
  set(epochSeconds: number): void
  advance(seconds: number): void
}

export function createFixedClock(start: number): FixedClock {
  let t = start
  return {
    now: () => Math.floor(t),
    nowMs: () => Math.floor(t * 1000),
    set: (s) => { t = s },
    advance: (s) => { t += s },
  }
}
