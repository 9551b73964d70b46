/**
 * Interleaved rounds: every throughput scenario runs once per round, the order rotating from round
 * to round, and the figures reported are medians over rounds with their min–max. A ratio between
 * two scenarios is taken within each round (both measured minutes apart at most, under the same
 * drift of a shared machine), then its median over rounds: the machine's drift falls on both sides
 * of each per-round ratio instead of on one scenario of a single sequential pass.
 */
import type { LoadResult } from './load.js'

/** The median of a set of figures and its range, over `n` rounds. */
export interface Spread {
  median: number
  min: number
  max: number
  n: number
}

/** The middle value (the mean of the two middle ones for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** Median and min–max of the finite values (NaN, a missing percentile, is left out); undefined when none. */
export function spread(values: readonly number[]): Spread | undefined {
  const finite = values.filter((v) => Number.isFinite(v))
  if (finite.length === 0) return undefined
  return { median: median(finite), min: Math.min(...finite), max: Math.max(...finite), n: finite.length }
}

/** Round `round` (0-based) runs the items starting at `round mod k`, wrapping around: each item leads once every k rounds. */
export function rotation<T>(items: readonly T[], round: number): T[] {
  const k = items.length
  if (k === 0) return []
  const start = ((round % k) + k) % k
  return items.map((_, i) => items[(start + i) % k]!)
}

/** One round's load result per scenario (a scenario that failed or did not run that round is absent). */
export type RoundLoads<Id extends string> = Partial<Record<Id, LoadResult>>

/** One scenario over every round it ran in: medians and ranges, and the counts summed. */
export interface ScenarioStats {
  rounds: number
  rps: Spread
  /** Undefined when no round had a successful response. */
  p50: Spread | undefined
  p99: Spread | undefined
  /** The server's CPU per response, µs: its event loop's and all its threads' (undefined without /proc). */
  cpuMain: Spread | undefined
  cpuTotal: Spread | undefined
  responses: number
  ok: number
  non2xx: number
  errors: number
  timeouts: number
  statusCodes: Record<string, number>
}

export function scenarioStats<Id extends string>(rounds: ReadonlyArray<RoundLoads<Id>>, id: Id): ScenarioStats | undefined {
  const loads = rounds.flatMap((r) => (r[id] ? [r[id]] : []))
  if (loads.length === 0) return undefined
  const sum = (pick: (l: LoadResult) => number) => loads.reduce((n, l) => n + pick(l), 0)
  const statusCodes: Record<string, number> = {}
  for (const l of loads) for (const [code, n] of Object.entries(l.statusCodes)) statusCodes[code] = (statusCodes[code] ?? 0) + n
  return {
    rounds: loads.length,
    rps: spread(loads.map((l) => l.rps))!,
    p50: spread(loads.map((l) => l.p50)),
    p99: spread(loads.map((l) => l.p99)),
    cpuMain: spread(loads.flatMap((l) => (l.cpu ? [l.cpu.mainUs] : []))),
    cpuTotal: spread(loads.flatMap((l) => (l.cpu ? [l.cpu.totalUs] : []))),
    responses: sum((l) => l.responses),
    ok: sum((l) => l.ok),
    non2xx: sum((l) => l.non2xx),
    errors: sum((l) => l.errors),
    timeouts: sum((l) => l.timeouts),
    statusCodes,
  }
}

/** A ratio between two scenarios' figures, taken per round. */
export interface RatioSpec<Id extends string> {
  id: string
  numerator: Id
  denominator: Id
  metric: 'rps' | 'p50' | 'p99'
}

/** The per-round ratios (rounds where both scenarios have a finite figure and the denominator is not 0). */
export function perRoundRatios<Id extends string>(rounds: ReadonlyArray<RoundLoads<Id>>, spec: RatioSpec<Id>): number[] {
  return rounds.flatMap((r) => {
    const a = r[spec.numerator]?.[spec.metric]
    const b = r[spec.denominator]?.[spec.metric]
    return a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? [] : [a / b]
  })
}

/** The median over rounds of the per-round ratio, and its min–max. */
export function ratioSpread<Id extends string>(rounds: ReadonlyArray<RoundLoads<Id>>, spec: RatioSpec<Id>): Spread | undefined {
  return spread(perRoundRatios(rounds, spec))
}
