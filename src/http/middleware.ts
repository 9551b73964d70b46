import type { MiddlewareHandler } from 'hono'

/** RFC 6749 §5.1: responses carrying tokens or credentials "MUST include" `Cache-Control: no-store`. */
export function noStore(): MiddlewareHandler {
  return async function noStore(c, next) {
    await next()
    c.header('Cache-Control', 'no-store')
    c.header('Pragma', 'no-cache')
  }
}
