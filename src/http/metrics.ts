import type { Stores } from '../store/stores.js'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

/** Policy evaluators: the native grant evaluator (generated policies only) or Cedar. */
export type Evaluator = 'native' | 'cedar'

/**
 * The broker's Prometheus metrics (prom-client), one registry per broker so tests never share
 * counters. Route modules and domain code count through the named metrics here. Every metric is
 * listed in docs/operations.md "Metrics"; labels take bounded values only (route patterns, status
 * classes, error codes), never ids.
 */
export interface Metrics {
  readonly registry: Registry
  /**
   * HTTP requests by method, route pattern and status; `status="aborted"` for a request whose
   * client went away before its body was complete (no response was delivered, no error of ours).
   */
  readonly httpRequests: Counter<'method' | 'route' | 'status'>
  /** Request duration by method, route pattern and status class (`2xx`…`5xx`, `aborted`). */
  readonly httpDuration: Histogram<'method' | 'route' | 'status_class'>
  /**
   * Requests refused before the caller was authenticated: counted here instead of being stored
   * as audit rows, so an unauthenticated sender cannot grow the database.
   */
  readonly unauthenticatedRefusals: Counter<'endpoint' | 'error'>
  /** Token endpoint decisions: `allow`, `deny` (an authenticated caller, audited) or `unauthenticated`; `error` is the OAuth code. */
  readonly exchangeDecisions: Counter<'outcome' | 'error'>
  /** Access tokens issued at the token endpoint, by token type (`Bearer`, `DPoP`). */
  readonly tokensIssued: Counter<'token_type'>
  /** Responses with status 429, by route pattern (per-IP, per-workload and authentication budgets). */
  readonly rateLimited: Counter<'route'>
  /** Open revocation feed streams (`text/event-stream` subscribers). */
  readonly feedSubscribers: Gauge
  /** Revocation events delivered by the feed, by `mode` (`stream`, `poll`). */
  readonly feedEvents: Counter<'mode'>
  /** Requests answered 503 because another process held the database's write lock too long. */
  readonly databaseBusy: Counter
  /** Policy decision time by evaluator and action. */
  readonly policyEvaluation: Histogram<'evaluator' | 'action'>
  /**
   * Lookups of the broker's caches by `cache` (`actor_tokens`, `subject_tokens`, `client_metadata`,
   * `admin_keys`) and `result` (`hit`, `miss`): the hit ratio is hit / (hit + miss).
   */
  readonly cacheLookups: Counter<'cache' | 'result'>
  /** A callback counting one cache's lookups, for modules that do not know the registry. */
  cacheObserver(cache: string): (hit: boolean) => void
  /** Counts one finished request (the access-log middleware calls it). */
  observeRequest(method: string, route: string, status: number | 'aborted', seconds: number): void
  /** Gauge `taskpass_tasks{status}` reads this database when scraped. */
  watchTasks(stores: Pick<Stores, 'tasks'>): void
  render(): Promise<string>
}

const statusClass = (status: number | 'aborted') => (status === 'aborted' ? 'aborted' : `${Math.floor(status / 100)}xx`)

export function createMetrics(): Metrics {
  const registry = new Registry()
  const registers = [registry]
  // Process and Node metrics (CPU, memory, event loop lag, GC, handles) under the usual names.
  collectDefaultMetrics({ register: registry })
  const httpRequests = new Counter({ name: 'taskpass_http_requests_total', help: 'HTTP requests by route and status.', labelNames: ['method', 'route', 'status'] as const, registers })
  const httpDuration = new Histogram({
    name: 'taskpass_http_request_duration_seconds',
    help: 'HTTP request duration by route pattern and status class.',
    labelNames: ['method', 'route', 'status_class'] as const,
    // The token endpoint answers in milliseconds; argon2 checks and approval waits take longer.
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30],
    registers,
  })
  const unauthenticatedRefusals = new Counter({
    name: 'taskpass_unauthenticated_refusals_total',
    help: 'Requests refused before the caller was authenticated (not written to the audit log).',
    labelNames: ['endpoint', 'error'] as const,
    registers,
  })
  const exchangeDecisions = new Counter({ name: 'taskpass_token_decisions_total', help: 'Token endpoint decisions by outcome and OAuth error code.', labelNames: ['outcome', 'error'] as const, registers })
  const tokensIssued = new Counter({ name: 'taskpass_tokens_issued_total', help: 'Access tokens issued by the token endpoint.', labelNames: ['token_type'] as const, registers })
  const rateLimited = new Counter({ name: 'taskpass_rate_limited_requests_total', help: 'Requests refused with 429 by a rate limit or budget.', labelNames: ['route'] as const, registers })
  const feedSubscribers = new Gauge({ name: 'taskpass_revocation_feed_subscribers', help: 'Open revocation feed event streams.', registers })
  const cacheLookups = new Counter({ name: 'taskpass_cache_lookups_total', help: 'Cache lookups by cache and result (hit or miss).', labelNames: ['cache', 'result'] as const, registers })
  const databaseBusy = new Counter({ name: 'taskpass_database_busy_total', help: 'Requests answered 503: another process held the database write lock too long.', registers })
  const feedEvents = new Counter({ name: 'taskpass_revocation_feed_events_total', help: 'Revocation events delivered by the feed.', labelNames: ['mode'] as const, registers })
  const policyEvaluation = new Histogram({
    name: 'taskpass_policy_evaluation_seconds',
    help: 'Policy decision time by evaluator (native, cedar) and action.',
    labelNames: ['evaluator', 'action'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
    registers,
  })
  let taskCounts: Pick<Stores, 'tasks'> | undefined
  new Gauge({
    name: 'taskpass_tasks',
    help: 'Tasks in the database by status (read when scraped).',
    labelNames: ['status'] as const,
    registers,
    // One grouped count per scrape rather than counters kept in step with every write: the
    // database is the truth (the CLI and other instances change it too), and a scrape every few
    // seconds costs one scan of a table retention keeps bounded.
    async collect() {
      if (taskCounts === undefined) return
      const rows = await taskCounts.tasks.countByStatus()
      this.reset()
      for (const row of rows) this.set({ status: row.status }, row.n)
    },
  })
  return {
    registry,
    httpRequests,
    httpDuration,
    unauthenticatedRefusals,
    exchangeDecisions,
    tokensIssued,
    rateLimited,
    feedSubscribers,
    feedEvents,
    databaseBusy,
    policyEvaluation,
    cacheLookups,
    cacheObserver: (cache) => (hit) => cacheLookups.inc({ cache, result: hit ? 'hit' : 'miss' }),
    observeRequest(method, route, status, seconds) {
      httpRequests.inc({ method, route, status: String(status) })
      httpDuration.observe({ method, route, status_class: statusClass(status) }, seconds)
      if (status === 429) rateLimited.inc({ route })
    },
    watchTasks(stores) {
      taskCounts = stores
    },
    render: () => registry.metrics(),
  }
}
