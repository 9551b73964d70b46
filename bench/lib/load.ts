/**
 * One autocannon run against a loopback server: `warmup` seconds, then `duration` seconds
 * measured, on the same connections (so connection set-up and JIT warm-up stay out of the
 * figures). Every request's body comes from `nextBody` (autocannon's `setupRequest`, called once
 * per request), so scenarios can rotate through pre-minted tokens (and `nextHeaders` through
 * pre-minted DPoP proofs); all scenarios go through the
 * same path so the client's own cost is the same everywhere.
 * Latency percentiles are computed here from autocannon's per-response timings (sub-millisecond;
 * its own histogram keeps whole milliseconds), over the successful responses of the measured part.
 */
import autocannon from 'autocannon'
import type { CpuPerResponse } from './cpu.js'

export interface LoadOptions {
  url: string
  path: string
  /** POST unless told (a GET sends no body). */
  method?: 'GET' | 'POST' | undefined
  connections: number
  /** Seconds of load before the measurement starts. */
  warmup: number
  /** Seconds measured. */
  duration: number
  headers: Record<string, string>
  nextBody: () => string
  /** Headers that change per request (a fresh DPoP proof), on top of `headers`. */
  nextHeaders?: (() => Record<string, string>) | undefined
  /**
   * Requests per second over all connections (open-loop pacing), to measure latency at a set
   * load rather than throughput; unpaced (as fast as the server answers) when absent.
   */
  overallRate?: number | undefined
  /** Keep every measured latency (`LoadResult.latencies`), so runs can be combined ({@link combineLoads}). */
  keepLatencies?: boolean | undefined
  /** Called with every response's status and headers (names as sent), warm-up included. */
  onResponse?: ((status: number, headers: Readonly<Record<string, string | string[] | undefined>>) => void) | undefined
}

interface Counts {
  responses: number
  ok: number
  statusCodes: Record<string, number>
}

export interface LoadResult extends Counts {
  non2xx: number
  /** Socket errors and timeouts during the whole run, as autocannon counts them. */
  errors: number
  timeouts: number
  seconds: number
  /** Successful responses per second. */
  rps: number
  p50: number
  p99: number
  max: number
  warmup: Counts
  /**
   * The server's CPU per response over the whole run, warm-up included (bench/lib/cpu.ts): set by
   * the caller, which knows the server's process; absent where /proc is not.
   */
  cpu?: CpuPerResponse | undefined
  /** The measured successful responses' latencies, ms (with `keepLatencies` only). */
  latencies?: Float64Array
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]!
}

const emptyCounts = (): Counts => ({ responses: 0, ok: 0, statusCodes: {} })

export function runLoad(opts: LoadOptions): Promise<LoadResult> {
  let latencies = new Float64Array(1 << 16)
  const warm = emptyCounts()
  const measured = emptyCounts()
  const started = performance.now()
  let measuring = false
  let measureFrom = 0

  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: opts.url,
        connections: opts.connections,
        duration: opts.warmup + opts.duration,
        ...(opts.overallRate !== undefined ? { overallRate: opts.overallRate } : {}),
        requests: [
          {
            method: opts.method ?? 'POST',
            path: opts.path,
            headers: opts.headers,
            setupRequest:
              opts.method === 'GET'
                ? (req) => req
                : (req) => (opts.nextHeaders ? { ...req, headers: { ...req.headers, ...opts.nextHeaders() }, body: opts.nextBody() } : { ...req, body: opts.nextBody() }),
            ...(opts.onResponse ? { onResponse: (status: number, _body: string, _context: object, headers: Record<string, string | string[] | undefined> | undefined) => opts.onResponse!(status, headers ?? {}) } : {}),
          },
        ],
      },
      (err: unknown, result: autocannon.Result) => {
        if (err) {
          reject(err instanceof Error ? err : new Error(String(err)))
          return
        }
        const seconds = measuring ? (performance.now() - measureFrom) / 1000 : 0
        const sorted = latencies.subarray(0, measured.ok).sort()
        resolve({
          ...measured,
          non2xx: measured.responses - measured.ok,
          errors: result.errors,
          timeouts: result.timeouts,
          seconds: Number(seconds.toFixed(2)),
          rps: seconds > 0 ? measured.ok / seconds : 0,
          p50: percentile(sorted, 50),
          p99: percentile(sorted, 99),
          max: percentile(sorted, 100),
          warmup: warm,
          ...(opts.keepLatencies ? { latencies: sorted } : {}),
        })
      },
    )
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (!measuring) {
        if (performance.now() - started >= opts.warmup * 1000) {
          measuring = true
          measureFrom = performance.now()
        }
      }
      const counts = measuring ? measured : warm
      counts.responses++
      counts.statusCodes[statusCode] = (counts.statusCodes[statusCode] ?? 0) + 1
      if (statusCode < 200 || statusCode >= 300) return
      counts.ok++
      if (!measuring) return
      if (measured.ok > latencies.length) {
        const grown = new Float64Array(latencies.length * 2)
        grown.set(latencies)
        latencies = grown
      }
      latencies[measured.ok - 1] = responseTime
    })
  })
}

/**
 * Several runs against the same server as one: counts and seconds summed, req/s over the total,
 * percentiles over every run's latencies (each run needs `keepLatencies`). The result keeps no
 * latencies.
 */
export function combineLoads(runs: readonly LoadResult[]): LoadResult {
  if (runs.length === 0) throw new Error('combineLoads needs at least one run')
  const total = runs.reduce((n, r) => n + (r.latencies?.length ?? Number.NaN), 0)
  if (Number.isNaN(total)) throw new Error('combineLoads needs runs made with keepLatencies')
  const all = new Float64Array(total)
  let at = 0
  for (const r of runs) {
    all.set(r.latencies!, at)
    at += r.latencies!.length
  }
  all.sort()
  const sum = (pick: (r: LoadResult) => number) => runs.reduce((n, r) => n + pick(r), 0)
  const mergeCodes = (codes: Array<Record<string, number>>) => {
    const out: Record<string, number> = {}
    for (const c of codes) for (const [k, v] of Object.entries(c)) out[k] = (out[k] ?? 0) + v
    return out
  }
  const seconds = sum((r) => r.seconds)
  const ok = sum((r) => r.ok)
  return {
    responses: sum((r) => r.responses),
    ok,
    statusCodes: mergeCodes(runs.map((r) => r.statusCodes)),
    non2xx: sum((r) => r.non2xx),
    errors: sum((r) => r.errors),
    timeouts: sum((r) => r.timeouts),
    seconds: Number(seconds.toFixed(2)),
    rps: seconds > 0 ? ok / seconds : 0,
    p50: percentile(all, 50),
    p99: percentile(all, 99),
    max: percentile(all, 100),
    warmup: { responses: sum((r) => r.warmup.responses), ok: sum((r) => r.warmup.ok), statusCodes: mergeCodes(runs.map((r) => r.warmup.statusCodes)) },
  }
}
