/**
 * `npm run bench` arguments and settings: which part runs, how many interleaved rounds, how many
 * seconds each scenario is measured per round. Flags win over the environment, the environment
 * over the defaults; anything else is refused before the run starts.
 */

export const PARTS = ['http', 'verifier', 'flood', 'policy', 'endpoints', 'instances'] as const
export type BenchPart = (typeof PARTS)[number]

/** Rounds over every throughput scenario, unless told otherwise. */
export const DEFAULT_ROUNDS = 5
/** Seconds each throughput scenario is measured per round, unless told otherwise. */
export const DEFAULT_SECONDS = 5

export interface BenchOptions {
  /** One part alone (`--only`); every part when absent. */
  only: BenchPart | undefined
  /** `--rounds N`, else BENCH_ROUNDS, else {@link DEFAULT_ROUNDS}. */
  rounds: number
  /** `--seconds S`, else BENCH_SECONDS (or its older name BENCH_DURATION), else {@link DEFAULT_SECONDS}. */
  seconds: number
  /** Whether the seconds were given (the policy part keeps its own default otherwise). */
  secondsGiven: boolean
}

const USAGE = `usage: npm run bench [-- --only ${PARTS.join('|')}] [--rounds N] [--seconds S]`

function positiveInt(name: string, text: string): number {
  const n = Number(text)
  if (text.trim() === '' || !Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${text}"`)
  return n
}

/** Parses the command line (`--flag value` or `--flag=value`) and the environment; throws with a one-line reason. */
export function parseBenchOptions(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = {}): BenchOptions {
  const flags = new Map<string, string>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const m = /^--(only|rounds|seconds)(?:=(.*))?$/.exec(arg)
    if (!m) throw new Error(`unknown argument "${arg}" (${USAGE})`)
    const name = m[1]!
    if (flags.has(name)) throw new Error(`--${name} given twice`)
    flags.set(name, m[2] ?? argv[++i] ?? '')
  }

  let only: BenchPart | undefined
  const onlyText = flags.get('only')
  if (onlyText !== undefined) {
    only = PARTS.find((p) => p === onlyText)
    if (only === undefined) throw new Error(`--only takes ${PARTS.map((p) => `"${p}"`).join(', ')}, got "${onlyText}"`)
  }

  const setting = (flag: string, envNames: readonly string[], fallback: number): { value: number; given: boolean } => {
    const fromFlag = flags.get(flag)
    if (fromFlag !== undefined) return { value: positiveInt(`--${flag}`, fromFlag), given: true }
    for (const name of envNames) {
      const text = env[name]
      if (text !== undefined && text !== '') return { value: positiveInt(name, text), given: true }
    }
    return { value: fallback, given: false }
  }
  const rounds = setting('rounds', ['BENCH_ROUNDS'], DEFAULT_ROUNDS)
  const seconds = setting('seconds', ['BENCH_SECONDS', 'BENCH_DURATION'], DEFAULT_SECONDS)
  return { only, rounds: rounds.value, seconds: seconds.value, secondsGiven: seconds.given }
}
