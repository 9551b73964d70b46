import { Hono, type Handler } from 'hono'
import type { Deps } from '../broker.js'
import { adminAuth, type AdminEnv } from '../http/admin-auth.js'
import type { Metrics } from '../http/metrics.js'
import { noStore } from '../http/middleware.js'

/** GET /metrics: the Prometheus text exposition of the broker's registry. */
export function renderMetrics(metrics: Metrics): Handler {
  return async function renderMetrics(c) {
    return c.text(await metrics.render(), 200, { 'Content-Type': metrics.registry.contentType })
  }
}

/**
 * Liveness, readiness (the database answers) and Prometheus metrics. Metrics on this (the main)
 * listener per `metrics.access`: behind an admin API key by default — they tell who calls what
 * and how often — or open, or not served here (the separate listener, {@link metricsRoutes}).
 */
export function healthRoutes(deps: Deps, metrics: Metrics) {
  const routes = new Hono<AdminEnv>()
    .get('/healthz', (c) => c.json({ status: 'ok' }))
    .get('/readyz', async (c) => {
      try {
        await deps.stores.ping()
        return c.json({ status: 'ready' })
      } catch {
        return c.json({ status: 'unavailable' }, 503)
      }
    })
  const access = deps.config.metrics.access
  if (access === 'admin') routes.get('/metrics', noStore(), adminAuth(deps), renderMetrics(metrics))
  else if (access === 'public') routes.get('/metrics', renderMetrics(metrics))
  return routes
}

/** The separate metrics listener (`metrics.listen`): GET /metrics only, without a credential. */
export function metricsRoutes(metrics: Metrics) {
  return new Hono().get('/metrics', renderMetrics(metrics))
}
