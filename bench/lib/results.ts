/**
 * bench/results/latest.json: one file, several writers. bench/run.ts owns the HTTP scenarios' keys
 * (startedAt, finishedAt, settings, machine, tokenPool, scenarios, authFlood, targets) and the
 * policy part's `policy` section, bench/verifier.ts the `verifier` section, bench/instances.ts the
 * `instances` section; each replaces only its own keys, so `--only http` / `--only policy` /
 * `--only verifier` / `--only instances` keep the other parts' last figures (every part carries
 * its own timestamps).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { REPO_ROOT } from './child.js'

/** BENCH_RESULTS_FILE moves it (a smoke run in the tests keeps the last real figures). */
export const RESULTS_FILE = process.env.BENCH_RESULTS_FILE ? resolve(process.env.BENCH_RESULTS_FILE) : join(REPO_ROOT, 'bench', 'results', 'latest.json')

function readExisting(): Record<string, unknown> {
  if (!existsSync(RESULTS_FILE)) return {}
  try {
    const parsed: unknown = JSON.parse(readFileSync(RESULTS_FILE, 'utf8'))
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {}
  } catch {
    // A torn or hand-edited file: start over rather than fail the run.
    return {}
  }
}

/** Writes `update` over the file's keys, removing `drop`; returns the path. */
export function mergeResults(update: Record<string, unknown>, drop: readonly string[] = []): string {
  const merged = { ...readExisting(), ...update }
  for (const key of drop) delete merged[key]
  mkdirSync(dirname(RESULTS_FILE), { recursive: true })
  writeFileSync(RESULTS_FILE, `${JSON.stringify(merged, null, 2)}\n`)
  return RESULTS_FILE
}
