import { Hono } from 'hono'
import type { Deps } from '../broker.js'
import type { Metrics } from '../http/metrics.js'

/** Liveness, readiness (the database answers) and Prometheus metrics. */
export function healthRoutes(deps: Deps, metrics: Metrics) {
  return new Hono()
    .get('/healthz', (c) => c.json({ status: 'ok' }))
    .get('/readyz', (c) => {
      try {
        deps.database.sqlite.prepare('select 1').get()
        return c.json({ status: 'ready' })
      } catch {
        return c.json({ status: 'unavailable' }, 503)
      }
    })
    .get('/metrics', async (c) => c.text(await metrics.render(), 200, { 'Content-Type': metrics.registry.contentType }))
}
