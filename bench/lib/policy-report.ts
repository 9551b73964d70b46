/**
 * The `--only policy` part's table and verdicts: the warm exchange against the number of Cedar
 * policies in force, each size measured on its own broker process in the same run.
 */
import type { ScenarioResult, TargetCheck } from './report.js'

/** Policy file sizes measured, smallest first (the first is what the others are compared with). */
export const POLICY_SIZES = [1, 100, 10_000] as const

/** DESIGN.md: a decision's cost follows its resource's policies, not the set's size. */
export const POLICY_TARGET_RATIO = 0.8

/** `no policy file` (the native grant evaluator), or `<n> policies`. */
export type PolicyScenarioId = string

export function policyScenarioId(size: number | undefined): PolicyScenarioId {
  if (size === undefined) return 'no policy file'
  return `${size.toLocaleString('en-US')} ${size === 1 ? 'policy' : 'policies'}`
}

export interface PolicyRun extends ScenarioResult<PolicyScenarioId> {
  /** Policies in the file; undefined: no file. */
  size: number | undefined
  /** Each round's load run, and one decision timed inside the broker right after it. */
  rounds: Array<{ rps: number; p50: number; p99: number; ok: number; non2xx: number; decisionMicros: number; cpuBusyBefore: number }>
  /** The median over rounds of one decision's microseconds. */
  decisionMicros?: number
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)
const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || Number.isNaN(a) || Number.isNaN(b) || b === 0 ? undefined : a / b)
const fmtRatio = (r: number | undefined) => (r === undefined ? '—' : `${r.toFixed(2)}×`)
const fmtMs = (ms: number | undefined) => (ms === undefined || Number.isNaN(ms) ? '—' : ms.toFixed(2))
const fmtInt = (n: number | undefined) => (n === undefined ? '—' : Math.round(n).toLocaleString('en-US'))

/** The run every size is compared with: the smallest file. */
function baseline(runs: readonly PolicyRun[]): PolicyRun | undefined {
  return runs.find((r) => r.size === POLICY_SIZES[0])
}

export function formatPolicyTable(runs: readonly PolicyRun[]): string {
  const base = baseline(runs)?.result
  const native = runs.find((r) => r.size === undefined)?.result
  const header = ['run', 'evaluator', 'policies in force', 'bench bucket', 'largest bucket', 'start-up ms', 'createBroker ms', 'decide µs', 'req/s', 'p50 ms', 'p99 ms', `vs ${policyScenarioId(POLICY_SIZES[0])}`, 'vs no file', 'non-2xx/err']
  const rows = runs.map((run) => {
    const r = run.result
    const info = run.serverInfo ?? {}
    if (!r) return [run.id, `FAILED: ${run.error ?? 'no result'}`]
    return [
      run.id,
      typeof info.evaluator === 'string' ? info.evaluator : '—',
      fmtInt(num(info.policies)),
      fmtInt(num(info.benchBucket)),
      fmtInt(num(info.largestBucket)),
      fmtInt(run.startupMs),
      fmtInt(num(info.createBrokerMs)),
      run.decisionMicros?.toFixed(1) ?? '—',
      fmtInt(r.rps),
      fmtMs(r.p50),
      fmtMs(r.p99),
      fmtRatio(ratio(r.rps, base?.rps)),
      fmtRatio(ratio(r.rps, native?.rps)),
      `${r.non2xx}/${r.errors}`,
    ]
  })
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row.length === 2 ? 0 : row[i]!.length))))
  const line = (cells: string[]) => (cells.length === 2 ? `${cells[0]!.padEnd(widths[0]!)} | ${cells[1]}` : cells.map((c, i) => (i <= 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | '))
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map(line)].join('\n')
}

/**
 * Verdicts: each larger file's warm exchange within {@link POLICY_TARGET_RATIO} of the smallest
 * file's req/s, every response 2xx; the Cedar-vs-native figure is informational.
 */
export function policyTargets(runs: readonly PolicyRun[]): TargetCheck[] {
  const base = baseline(runs)
  const checks: TargetCheck[] = []
  for (const run of runs) {
    if (run.size === undefined || run === base) continue
    const target = `${run.id}: warm exchange ≥ ${POLICY_TARGET_RATIO}× the req/s of ${base?.id ?? policyScenarioId(POLICY_SIZES[0])}`
    const r = ratio(run.result?.rps, base?.result?.rps)
    if (r === undefined) {
      checks.push({ target, value: 'missing figures', verdict: 'n/a' })
      continue
    }
    const value = `${r.toFixed(2)}× req/s; p50 ${fmtRatio(ratio(run.result!.p50, base!.result!.p50))}, p99 ${fmtRatio(ratio(run.result!.p99, base!.result!.p99))} of ${base!.id}'s`
    checks.push({ target, value, verdict: r >= POLICY_TARGET_RATIO ? 'PASS' : 'FAIL' })
  }
  const micros = (run: PolicyRun | undefined) => run?.decisionMicros
  for (const run of runs) {
    if (run.size === undefined || run === base) continue
    const r = ratio(micros(run), micros(base))
    checks.push({ target: `${run.id}: one decision in process vs ${base?.id ?? policyScenarioId(POLICY_SIZES[0])} (informational)`, value: r === undefined ? 'missing figures' : `${r.toFixed(2)}× the time (${micros(run)} vs ${micros(base)} µs)`, verdict: r === undefined ? 'n/a' : 'info' })
  }
  const native = runs.find((r) => r.size === undefined)
  if (native && base) {
    const r = ratio(base.result?.rps, native.result?.rps)
    checks.push({ target: `${base.id} (Cedar) vs no policy file (native grant evaluator) (informational)`, value: r === undefined ? 'missing figures' : `${r.toFixed(2)}× req/s; one decision ${micros(base)} vs ${micros(native)} µs`, verdict: r === undefined ? 'n/a' : 'info' })
  }
  for (const run of runs) {
    const r = run.result
    checks.push(
      r
        ? { target: `${run.id}: every response 2xx, no socket errors`, value: r.non2xx + r.errors === 0 ? `${r.ok} ok` : `${r.non2xx} non-2xx, ${r.errors} errors (${JSON.stringify(r.statusCodes)})`, verdict: r.non2xx + r.errors === 0 ? 'PASS' : 'FAIL' }
        : { target: `${run.id}: every response 2xx, no socket errors`, value: 'missing figures', verdict: 'n/a' },
    )
  }
  return checks
}
