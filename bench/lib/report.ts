/**
 * The results table and the DESIGN.md "Performance targets" checks, from one run's figures.
 */
import type { ServerLog } from './child.js'
import type { LoadResult } from './load.js'

export const SCENARIO_IDS = ['floor', 'floor+2verify', 'peer', 'taskpass warm', 'taskpass dpop', 'taskpass cold', 'peer token-exchange'] as const
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

export type Results = Partial<Record<ScenarioId, ScenarioResult>>

function rps(results: Results, id: ScenarioId): number | undefined {
  return results[id]?.result?.rps
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b
}

const fmtRatio = (r: number | undefined) => (r === undefined ? '—' : `${r.toFixed(2)}×`)
const fmtMs = (ms: number | undefined) => (ms === undefined || Number.isNaN(ms) ? '—' : ms.toFixed(2))
const fmtRps = (n: number | undefined) => (n === undefined ? '—' : Math.round(n).toLocaleString('en-US'))

export function formatTable(results: Results): string {
  const header = ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'vs floor', 'vs floor+2v', 'vs warm', 'vs peer', 'vs peer-TE', 'non-2xx/err', 'cpu busy before']
  const rows = SCENARIO_IDS.flatMap((id) => {
    const s = results[id]
    if (!s) return []
    const r = s.result
    if (!r) return [[id, `FAILED: ${s.error ?? 'no result'}`, '', '', '', '', '', '', '', '', '']]
    return [[
      id,
      fmtRps(r.rps),
      fmtMs(r.p50),
      fmtMs(r.p99),
      fmtRatio(ratio(r.rps, rps(results, 'floor'))),
      fmtRatio(ratio(r.rps, rps(results, 'floor+2verify'))),
      fmtRatio(ratio(r.rps, rps(results, 'taskpass warm'))),
      fmtRatio(ratio(r.rps, rps(results, 'peer'))),
      fmtRatio(ratio(r.rps, rps(results, 'peer token-exchange'))),
      `${r.non2xx}/${r.errors}`,
      s.idleCpuBusy === undefined ? '—' : `${s.idleCpuBusy}%`,
    ]]
  })
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i]!.startsWith('FAILED') ? 0 : row[i]!.length))))
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map((row) => (row[1]!.startsWith('FAILED') ? `${row[0]!.padEnd(widths[0]!)} | ${row[1]}` : line(row)))].join('\n')
}

function check(target: string, value: number | undefined, pass: (v: number) => boolean, show: (v: number) => string): TargetCheck {
  if (value === undefined || Number.isNaN(value)) return { target, value: 'missing figures', verdict: 'n/a' }
  return { target, value: show(value), verdict: pass(value) ? 'PASS' : 'FAIL' }
}

/** DESIGN.md "Performance targets", as far as this benchmark measures them. */
export function checkTargets(results: Results, connections: number): TargetCheck[] {
  const warm = rps(results, 'taskpass warm')
  const cold = rps(results, 'taskpass cold')
  const peerTe = rps(results, 'peer token-exchange')
  const coldPeer: ScenarioId = peerTe !== undefined ? 'peer token-exchange' : 'peer'
  const checks: TargetCheck[] = [
    check('warm exchange ≥ 80% of floor', ratio(warm, rps(results, 'floor')), (r) => r >= 0.8, (r) => `${(r * 100).toFixed(1)}% of floor`),
    check('warm exchange > peer (oidc-provider client_credentials)', ratio(warm, rps(results, 'peer')), (r) => r > 1, (r) => `${r.toFixed(2)}× peer`),
    check('cold exchange ≥ 80% of floor+2verify', ratio(cold, rps(results, 'floor+2verify')), (r) => r >= 0.8, (r) => `${(r * 100).toFixed(1)}% of floor+2verify`),
    check(
      `cold exchange ≥ 1.5× ${coldPeer === 'peer' ? 'peer client_credentials (token-exchange peer missing!)' : 'peer token-exchange (oidc-provider custom grant)'}`,
      ratio(cold, rps(results, coldPeer)),
      (r) => r >= 1.5,
      (r) => `${r.toFixed(2)}× ${coldPeer}`,
    ),
  ]
  // Not a DESIGN.md target: what a fresh DPoP proof per request (one more ES256 verify, a JWK
  // thumbprint, a replay-cache entry) costs the warm exchange. Shown only when the scenario ran.
  if (results['taskpass dpop']) {
    const dpop = results['taskpass dpop'].result
    const warmResult = results['taskpass warm']?.result
    const info = check('DPoP exchange vs plain warm (informational)', ratio(dpop?.rps, warm), () => true, (r) => `${(r * 100).toFixed(1)}% of warm req/s; p99 ${fmtMs(dpop?.p99)} vs ${fmtMs(warmResult?.p99)} ms`)
    checks.push({ ...info, verdict: info.verdict === 'n/a' ? 'n/a' : 'info' })
  }
  const allOk = (id: ScenarioId) => {
    const r = results[id]?.result
    return check(`${id}: every response 2xx, no socket errors`, r ? r.non2xx + r.errors : undefined, (n) => n === 0, (n) => (n === 0 ? `${r!.ok} ok` : `${r!.non2xx} non-2xx, ${r!.errors} errors (${JSON.stringify(r!.statusCodes)})`))
  }
  for (const id of ['taskpass warm', 'taskpass cold'] as const) {
    checks.push(check(`${id}: p99 < 20 ms at ${connections} connections`, results[id]?.result?.p99, (ms) => ms < 20, (ms) => `p99 ${ms.toFixed(2)} ms`))
    checks.push(allOk(id))
  }
  // Every proof must have been accepted, or the DPoP figure is not a DPoP exchange's.
  if (results['taskpass dpop']) checks.push(allOk('taskpass dpop'))
  return checks
}

export function formatTargets(checks: TargetCheck[]): string {
  const width = Math.max(...checks.map((c) => c.target.length))
  return checks.map((c) => `  [${c.verdict.padEnd(4)}] ${c.target.padEnd(width)}  ${c.value}`).join('\n')
}
