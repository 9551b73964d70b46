import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import type { Context, MiddlewareHandler } from 'hono'
import { routePath } from 'hono/route'
import type { AccessLine, Logger } from '../logger.js'
import { isAbortedRequest } from './aborted.js'
import type { Metrics } from './metrics.js'

declare module 'hono' {
  interface ContextVariableMap {
    /** This request's id: the caller's `X-Request-Id` when well-formed, else a fresh UUID. */
    requestId: string
    /** Who called, once authenticated: `workload:<id>`, `resource:<client id>`, `admin:<key id>`. */
    callerId: string
  }
}

export const REQUEST_ID_HEADER = 'X-Request-Id'

// A caller's id is echoed into our logs and headers: printable, bounded, no separators to forge lines.
const REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/

/** Records who the authenticated caller is, for the access log (an id, never a credential). */
export function identify(c: Context, callerId: string): void {
  c.set('callerId', callerId)
}

/** A resource's caller id in the access log: its client id (the URI when it has no credential). */
export function resourceCallerId(resource: { uri: string; credential?: { clientId: string } | undefined }): string {
  return `resource:${resource.credential?.clientId ?? resource.uri}`
}

/** This request's id, for log lines written while handling it. */
export function requestIdOf(c: Context): string | undefined {
  return c.get('requestId')
}

/**
 * Request id, access log and request metrics, in front of everything else. One `request` line
 * per request at `info`: method, route pattern, status, duration (ms), request id and the caller
 * id once known. The route pattern (`/tasks/:id`), not the path: ids in paths would make the
 * log a per-task trail that the audit log already is, and the metric labels unbounded. No
 * header, query or body is ever read into the line, so no credential can reach it.
 */
export function accessLog(deps: { logger: Logger; metrics: Pick<Metrics, 'observeRequest'> }): MiddlewareHandler {
  return async function accessLog(c, next) {
    const start = performance.now()
    const given = c.req.header(REQUEST_ID_HEADER)
    const requestId = given !== undefined && REQUEST_ID.test(given) ? given : randomUUID()
    c.set('requestId', requestId)
    // Set before the handler so every response carries it, error responses included.
    c.header(REQUEST_ID_HEADER, requestId)
    try {
      await next()
    } finally {
      const seconds = (performance.now() - start) / 1000
      const status = isAbortedRequest(c) ? 'aborted' : c.res.status
      const route = routePath(c)
      deps.metrics.observeRequest(c.req.method, route, status, seconds)
      const adminId = (c as Context<{ Variables: { adminId?: string } }>).get('adminId')
      const callerId = c.get('callerId') ?? (adminId !== undefined ? `admin:${adminId}` : undefined)
      const line: AccessLine = { requestId, method: c.req.method, route, status, durationMs: Math.round(seconds * 100_000) / 100, ...(callerId !== undefined ? { callerId } : {}) }
      if (deps.logger.access) deps.logger.access(line)
      else deps.logger.info('request', { ...line })
    }
  }
}
