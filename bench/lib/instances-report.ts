/**
 * The instances part's figures (bench/instances.ts): the warm exchange on one and two broker
 * processes, on SQLite and on PostgreSQL, measured in interleaved rounds like the HTTP part; each
 * scenario's medians over rounds, each ratio the median of its per-round values, and what every
 * response that was not a 2xx was: a 503 with Retry-After (a database wait past its bound, the
 * documented answer) is counted apart; anything else — above all a 500 — fails the scenario.
 */
import { ratioSpread, scenarioStats, type RatioSpec, type RoundLoads, type ScenarioStats, type Spread } from './rounds.js'
import { formatSpread, table, type TargetCheck } from './report.js'

/** In the order of the table and of round 1 (later rounds rotate it). */
export const INSTANCE_SCENARIO_IDS = ['sqlite-1', 'sqlite-1proc', 'sqlite-2proc', 'pg-1', 'pg-1-proxy', 'pg-2'] as const
export type InstanceScenarioId = (typeof INSTANCE_SCENARIO_IDS)[number]
/** The scenarios that need PostgreSQL. */
export const PG_SCENARIO_IDS: readonly InstanceScenarioId[] = ['pg-1', 'pg-1-proxy', 'pg-2']

export const INSTANCE_RATIOS = [
  { id: 'sqlite-2proc / sqlite-1proc', numerator: 'sqlite-2proc', denominator: 'sqlite-1proc', metric: 'rps' },
  { id: 'pg-1 / sqlite-1 (warm)', numerator: 'pg-1', denominator: 'sqlite-1', metric: 'rps' },
  { id: 'pg-2 / pg-1-proxy', numerator: 'pg-2', denominator: 'pg-1-proxy', metric: 'rps' },
  { id: 'proxy: sqlite-1proc / sqlite-1', numerator: 'sqlite-1proc', denominator: 'sqlite-1', metric: 'rps' },
  { id: 'proxy: pg-1-proxy / pg-1', numerator: 'pg-1-proxy', denominator: 'pg-1', metric: 'rps' },
] as const satisfies ReadonlyArray<RatioSpec<InstanceScenarioId>>
export type InstanceRatioId = (typeof INSTANCE_RATIOS)[number]['id']

/** Every response of a scenario's runs (warm-up included) that was not a 2xx, by kind. */
export interface Refusals {
  /** 503 with a Retry-After header: the database busy past its bound, answered as documented. */
  retryAfter503: number
  /** Any other 5xx: 500s, and 503s without Retry-After. Each one is a failure. */
  serverErrors: number
  /** 1xx, 3xx, 4xx. Each one is a failure (the warm exchange is always granted). */
  other: number
  /** Status code → count, over every non-2xx. */
  statusCodes: Record<string, number>
}

export const noRefusals = (): Refusals => ({ retryAfter503: 0, serverErrors: 0, other: 0, statusCodes: {} })

/** Counts one response into `into` (a 2xx counts nothing). */
export function countResponse(into: Refusals, status: number, headers: Readonly<Record<string, unknown>>): void {
  if (status >= 200 && status < 300) return
  into.statusCodes[status] = (into.statusCodes[status] ?? 0) + 1
  const retryAfter = Object.keys(headers).some((name) => name.toLowerCase() === 'retry-after')
  if (status === 503 && retryAfter) into.retryAfter503++
  else if (status >= 500) into.serverErrors++
  else into.other++
}

export interface InstancesSummary {
  rounds: number
  scenarios: Partial<Record<InstanceScenarioId, ScenarioStats>>
  ratios: Partial<Record<InstanceRatioId, Spread>>
}

export function summarizeInstances(rounds: ReadonlyArray<RoundLoads<InstanceScenarioId>>): InstancesSummary {
  const scenarios: InstancesSummary['scenarios'] = {}
  for (const id of INSTANCE_SCENARIO_IDS) {
    const stats = scenarioStats(rounds, id)
    if (stats) scenarios[id] = stats
  }
  const ratios: InstancesSummary['ratios'] = {}
  for (const spec of INSTANCE_RATIOS) {
    const s = ratioSpread(rounds, spec)
    if (s) ratios[spec.id] = s
  }
  return { rounds: rounds.length, scenarios, ratios }
}

const fmtRps = (n: number) => Math.round(n).toLocaleString('en-US')
const fmtMs = (ms: number) => ms.toFixed(2)
const fmtRange = (s: Spread | undefined, fmt: (v: number) => string) => (s === undefined ? '—' : `${fmt(s.min)}–${fmt(s.max)}`)

/** Median req/s, p50 and p99 with their ranges; the failures and the 503s with Retry-After over every run. */
export function formatInstancesTable(
  summary: InstancesSummary,
  refusals: Partial<Record<InstanceScenarioId, Refusals>>,
  errors: Partial<Record<InstanceScenarioId, string>> = {},
): string {
  const header = ['scenario', 'req/s', 'req/s range', 'p50 ms', 'p99 ms', 'p99 range', 'rounds', 'non-2xx', '503+Retry-After', 'socket errors']
  const rows = INSTANCE_SCENARIO_IDS.flatMap((id) => {
    const s = summary.scenarios[id]
    if (!s) return errors[id] ? [[id, `FAILED: ${errors[id]}`]] : []
    const r = refusals[id] ?? noRefusals()
    return [[id, fmtRps(s.rps.median), fmtRange(s.rps, fmtRps), s.p50 ? fmtMs(s.p50.median) : '—', s.p99 ? fmtMs(s.p99.median) : '—', fmtRange(s.p99, fmtMs), `${s.rounds}/${summary.rounds}`, String(r.serverErrors + r.other), String(r.retryAfter503), String(s.errors)]]
  })
  return table(header, rows, (row) => row.length === 2)
}

export function formatInstanceRatios(summary: InstancesSummary): string {
  const rows = INSTANCE_RATIOS.flatMap((spec) => {
    const s = summary.ratios[spec.id]
    return s ? [[spec.id, `${s.median.toFixed(2)}×`, `${s.min.toFixed(2)}×–${s.max.toFixed(2)}×`, String(s.n)]] : []
  })
  return rows.length === 0 ? '  (no ratio: a side of each is missing)' : table(['ratio (per round)', 'median', 'min–max', 'rounds'], rows)
}

/**
 * Per scenario that ran: every response a 2xx or a 503 with Retry-After, no socket error (FAIL
 * otherwise); the 503s with Retry-After and the ratios as information. No throughput threshold:
 * on a machine whose cores the load generator and the proxy share, the ratios place the broker,
 * they do not pass or fail it.
 */
export function instancesTargets(summary: InstancesSummary, refusals: Partial<Record<InstanceScenarioId, Refusals>>): TargetCheck[] {
  const checks: TargetCheck[] = []
  for (const id of INSTANCE_SCENARIO_IDS) {
    const s = summary.scenarios[id]
    if (!s) continue
    const r = refusals[id] ?? noRefusals()
    const failures = r.serverErrors + r.other
    const ok = failures === 0 && s.errors === 0
    checks.push({
      target: `${id}: no 500, every response 2xx or 503 with Retry-After, no socket errors`,
      value: ok
        ? `${s.ok.toLocaleString('en-US')} ok over ${s.rounds} round${s.rounds === 1 ? '' : 's'}, ${r.retryAfter503} × 503 with Retry-After`
        : `${failures} failed response(s) ${JSON.stringify(r.statusCodes)}, ${s.errors} socket errors`,
      verdict: ok ? 'PASS' : 'FAIL',
    })
  }
  for (const spec of INSTANCE_RATIOS) {
    const s = summary.ratios[spec.id]
    if (s) checks.push({ target: `${spec.id} (informational)`, value: `median ${formatSpread(s)}`, verdict: 'info' })
  }
  return checks
}
