import type { MiddlewareHandler } from 'hono'
import { routePath } from 'hono/route'

/** Request counters by route and status, rendered in the Prometheus text format. */
export interface Metrics {
  middleware(): MiddlewareHandler
  render(): string
}

export function createMetrics(): Metrics {
  const counts = new Map<string, number>()
  return {
    middleware() {
      return async function metrics(c, next) {
        await next()
        const key = `method="${c.req.method}",route="${routePath(c)}",status="${c.res.status}"`
        counts.set(key, (counts.get(key) ?? 0) + 1)
      }
    },
    render() {
      const lines = ['# HELP taskpass_http_requests_total HTTP requests by route and status.', '# TYPE taskpass_http_requests_total counter']
      for (const [k, v] of counts) lines.push(`taskpass_http_requests_total{${k}} ${v}`)
      return lines.join('\n') + '\n'
    },
  }
}
