import type { MiddlewareHandler } from 'hono'
import { routePath } from 'hono/route'
import { Counter, Registry } from 'prom-client'
import { isAbortedRequest } from './aborted.js'

/**
 * The broker's Prometheus metrics (prom-client), one registry per broker so tests never share
 * counters. Route modules and domain code count through the named metrics here.
 */
export interface Metrics {
  readonly registry: Registry
  /**
   * HTTP requests by method, route pattern and status; `status="aborted"` for a request whose
   * client went away before its body was complete (no response was delivered, no error of ours).
   */
  readonly httpRequests: Counter<'method' | 'route' | 'status'>
  /**
   * Requests refused before the caller was authenticated: counted here instead of being stored
   * as audit rows, so an unauthenticated sender cannot grow the database.
   */
  readonly unauthenticatedRefusals: Counter<'endpoint' | 'error'>
  middleware(): MiddlewareHandler
  render(): Promise<string>
}

export function createMetrics(): Metrics {
  const registry = new Registry()
  const httpRequests = new Counter({ name: 'taskpass_http_requests_total', help: 'HTTP requests by route and status.', labelNames: ['method', 'route', 'status'] as const, registers: [registry] })
  const unauthenticatedRefusals = new Counter({
    name: 'taskpass_unauthenticated_refusals_total',
    help: 'Requests refused before the caller was authenticated (not written to the audit log).',
    labelNames: ['endpoint', 'error'] as const,
    registers: [registry],
  })
  return {
    registry,
    httpRequests,
    unauthenticatedRefusals,
    middleware() {
      return async function metrics(c, next) {
        await next()
        httpRequests.inc({ method: c.req.method, route: routePath(c), status: isAbortedRequest(c) ? 'aborted' : String(c.res.status) })
      }
    },
    render: () => registry.metrics(),
  }
}
