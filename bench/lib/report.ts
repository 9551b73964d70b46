/**
 * The results tables and the DESIGN.md "Performance targets" checks, from the interleaved rounds
 * of one run: each scenario's median req/s and latency over rounds with their min–max, and each
 * ratio as the median of its per-round values (bench/lib/rounds.ts).
 */
import type { ServerLog } from './child.js'
import type { LoadResult } from './load.js'
import { ratioSpread, scenarioStats, type RatioSpec, type RoundLoads, type ScenarioStats, type Spread } from './rounds.js'

/** Every throughput scenario, in the order of the table and of round 1 (later rounds rotate it). */
export const SCENARIO_IDS = ['floor', 'floor+2verify', 'peer', 'peer token-exchange', 'taskpass warm', 'taskpass pruning', 'taskpass dpop', 'taskpass dpop shared', 'taskpass cold'] as const
export type ScenarioId = (typeof SCENARIO_IDS)[number]

export interface ScenarioResult<Id extends string = ScenarioId> {
  id: Id
  description: string
  result?: LoadResult
  /** Why the scenario has no figures (the server failed to start, the smoke request failed, …). */
  error?: string
  notes: string[]
  /** What the server process logged, if anything (errors under load show up here). */
  serverLog?: ServerLog
  /** % of all CPUs busy with other work just before the scenario started (the machine is shared). */
  idleCpuBusy?: number
  /** Milliseconds from spawning the server to its READY line. */
  startupMs?: number
  /** What the server reported about itself when ready (bench/servers/taskpass.ts `TaskpassServerInfo`). */
  serverInfo?: Record<string, unknown>
}

export interface TargetCheck {
  target: string
  value: string
  /** `info`: a figure reported next to the targets, with no threshold. */
  verdict: 'PASS' | 'FAIL' | 'n/a' | 'info'
}

/** The ratios reported, each taken within a round and then summarized over rounds. */
export const RATIOS = [
  { id: 'warm / floor', numerator: 'taskpass warm', denominator: 'floor', metric: 'rps' },
  { id: 'warm / oidc client_credentials', numerator: 'taskpass warm', denominator: 'peer', metric: 'rps' },
  { id: 'cold / (floor + 2 verifies)', numerator: 'taskpass cold', denominator: 'floor+2verify', metric: 'rps' },
  { id: 'cold / oidc token exchange', numerator: 'taskpass cold', denominator: 'peer token-exchange', metric: 'rps' },
  { id: 'DPoP / floor', numerator: 'taskpass dpop', denominator: 'floor', metric: 'rps' },
  { id: 'DPoP / warm', numerator: 'taskpass dpop', denominator: 'taskpass warm', metric: 'rps' },
  { id: 'DPoP shared replay / DPoP', numerator: 'taskpass dpop shared', denominator: 'taskpass dpop', metric: 'rps' },
  { id: '(floor + 2 verifies) / floor', numerator: 'floor+2verify', denominator: 'floor', metric: 'rps' },
  { id: 'pruning / warm, req/s', numerator: 'taskpass pruning', denominator: 'taskpass warm', metric: 'rps' },
  { id: 'pruning / warm, p99', numerator: 'taskpass pruning', denominator: 'taskpass warm', metric: 'p99' },
] as const satisfies ReadonlyArray<RatioSpec<ScenarioId>>
export type RatioId = (typeof RATIOS)[number]['id']

/** Everything the tables and verdicts are computed from. */
export interface RoundsSummary {
  rounds: number
  scenarios: Partial<Record<ScenarioId, ScenarioStats>>
  ratios: Partial<Record<RatioId, Spread>>
}

export function summarizeRounds(rounds: ReadonlyArray<RoundLoads<ScenarioId>>): RoundsSummary {
  const scenarios: RoundsSummary['scenarios'] = {}
  for (const id of SCENARIO_IDS) {
    const stats = scenarioStats(rounds, id)
    if (stats) scenarios[id] = stats
  }
  const ratios: RoundsSummary['ratios'] = {}
  for (const spec of RATIOS) {
    const s = ratioSpread(rounds, spec)
    if (s) ratios[spec.id] = s
  }
  return { rounds: rounds.length, scenarios, ratios }
}

const fmtRatio = (r: number) => `${r.toFixed(2)}×`
const fmtMs = (ms: number) => ms.toFixed(2)
const fmtUs = (us: number) => Math.round(us).toLocaleString('en-US')
const fmtRps = (n: number) => Math.round(n).toLocaleString('en-US')
const fmtRange = (s: Spread | undefined, fmt: (v: number) => string) => (s === undefined ? '—' : `${fmt(s.min)}–${fmt(s.max)}`)

/** `0.74× (0.61–0.83×, 5 rounds)`: a median with its range. */
export function formatSpread(s: Spread | undefined, fmt: (v: number) => string = fmtRatio): string {
  if (s === undefined) return 'missing figures'
  return `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)}, ${s.n} round${s.n === 1 ? '' : 's'})`
}

/** A text table: the first column left-aligned, the others right-aligned; a `failed` row shows its first two cells only. */
export function table(header: string[], rows: string[][], failed: (row: string[]) => boolean = () => false): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (failed(row) ? 0 : row[i]!.length))))
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map((row) => (failed(row) ? `${row[0]!.padEnd(widths[0]!)} | ${row[1]}` : line(row)))].join('\n')
}

/** Each scenario's median req/s, p50 and p99 over rounds, with their ranges; `errors` names the scenarios that never ran. */
export function formatScenarioTable(summary: RoundsSummary, errors: Partial<Record<ScenarioId, string>> = {}): string {
  const header = ['scenario', 'req/s', 'req/s range', 'p50 ms', 'p50 range', 'p99 ms', 'p99 range', 'loop µs', 'cpu µs', 'rounds', 'non-2xx/err']
  const rows = SCENARIO_IDS.flatMap((id) => {
    const s = summary.scenarios[id]
    if (!s) return errors[id] ? [[id, `FAILED: ${errors[id]}`]] : []
    return [[
      id,
      fmtRps(s.rps.median),
      fmtRange(s.rps, fmtRps),
      s.p50 ? fmtMs(s.p50.median) : '—',
      fmtRange(s.p50, fmtMs),
      s.p99 ? fmtMs(s.p99.median) : '—',
      fmtRange(s.p99, fmtMs),
      s.cpuMain ? fmtUs(s.cpuMain.median) : '—',
      s.cpuTotal ? fmtUs(s.cpuTotal.median) : '—',
      `${s.rounds}/${summary.rounds}`,
      `${s.non2xx}/${s.errors}`,
    ]]
  })
  return table(header, rows, (row) => row.length === 2)
}

/** Each ratio's median over rounds of its per-round value, and its min–max. */
export function formatRatioTable(summary: RoundsSummary): string {
  const header = ['ratio (per round)', 'median', 'min–max', 'rounds']
  const rows = RATIOS.map((spec) => {
    const s = summary.ratios[spec.id]
    return [spec.id, s ? fmtRatio(s.median) : '—', fmtRange(s, fmtRatio), s ? String(s.n) : '0']
  })
  return table(header, rows)
}

function check(target: string, value: Spread | undefined, pass: (median: number) => boolean, fmt: (v: number) => string = fmtRatio): TargetCheck {
  if (value === undefined) return { target, value: 'missing figures', verdict: 'n/a' }
  return { target, value: `median ${formatSpread(value, fmt)}`, verdict: pass(value.median) ? 'PASS' : 'FAIL' }
}

/** DESIGN.md warm exchange: ≥ 90 % of the floor's req/s. */
export const WARM_VS_FLOOR = 0.9
/** DESIGN.md cold exchange: ≥ 90 % of floor + 2 verifies, and ≥ 1.5× oidc-provider's token exchange. */
export const COLD_VS_FLOOR_2V = 0.9
export const COLD_VS_PEER_TE = 1.5
/** DESIGN.md: p99 < 20 ms at 50 connections. */
export const P99_MS = 20

/** DESIGN.md "Performance targets", as far as these scenarios measure them: every verdict on the medians over rounds. */
export function checkTargets(summary: RoundsSummary, connections: number): TargetCheck[] {
  const r = summary.ratios
  const checks: TargetCheck[] = [
    check(`warm exchange ≥ ${WARM_VS_FLOOR}× floor`, r['warm / floor'], (m) => m >= WARM_VS_FLOOR),
    check('warm exchange > oidc-provider client_credentials', r['warm / oidc client_credentials'], (m) => m > 1),
    check(`cold exchange ≥ ${COLD_VS_FLOOR_2V}× floor + 2 verifies`, r['cold / (floor + 2 verifies)'], (m) => m >= COLD_VS_FLOOR_2V),
    check(`cold exchange ≥ ${COLD_VS_PEER_TE}× oidc-provider token exchange`, r['cold / oidc token exchange'], (m) => m >= COLD_VS_PEER_TE),
  ]
  for (const id of ['taskpass warm', 'taskpass cold', 'taskpass pruning'] as const) {
    checks.push(check(`${id}: p99 < ${P99_MS} ms at ${connections} connections`, summary.scenarios[id]?.p99, (ms) => ms < P99_MS, (ms) => `${fmtMs(ms)} ms`))
  }
  // Not DESIGN.md targets: what a fresh DPoP proof per request costs, what recording its jti in the
  // database costs (replay.shared), and what pruning costs the tail.
  for (const id of ['DPoP / warm', 'DPoP shared replay / DPoP', 'pruning / warm, p99'] as const) {
    const c = check(`${id} (informational)`, r[id], () => true)
    checks.push({ ...c, verdict: c.verdict === 'n/a' ? 'n/a' : 'info' })
  }
  // Every proof and every never-seen pair must have been accepted, or the figure is not the scenario's.
  for (const id of ['taskpass warm', 'taskpass pruning', 'taskpass dpop', 'taskpass dpop shared', 'taskpass cold'] as const) {
    const s = summary.scenarios[id]
    checks.push(
      s === undefined
        ? { target: `${id}: every response 2xx, no socket errors`, value: 'missing figures', verdict: 'n/a' }
        : {
            target: `${id}: every response 2xx, no socket errors`,
            value: s.non2xx + s.errors === 0 ? `${s.ok.toLocaleString('en-US')} ok over ${s.rounds} rounds` : `${s.non2xx} non-2xx, ${s.errors} errors (${JSON.stringify(s.statusCodes)})`,
            verdict: s.non2xx + s.errors === 0 ? 'PASS' : 'FAIL',
          },
    )
  }
  return checks
}

export function formatTargets(checks: TargetCheck[]): string {
  const width = Math.max(...checks.map((c) => c.target.length))
  return checks.map((c) => `  [${c.verdict.padEnd(4)}] ${c.target.padEnd(width)}  ${c.value}`).join('\n')
}
