import type { MiddlewareHandler } from 'hono'
import { bodyLimit as streamingBodyLimit } from 'hono/body-limit'
import { payloadTooLarge } from './form.js'

/**
 * RFC 6749 §5.1: responses carrying tokens or credentials "MUST include" `Cache-Control: no-store`.
 * Set before the handler runs so the response is built with it (setting headers afterwards makes
 * the node adapter rebuild the response); error responses get it from the error handler.
 */
export function noStore(): MiddlewareHandler {
  return async function noStore(c, next) {
    c.header('Cache-Control', 'no-store')
    c.header('Pragma', 'no-cache')
    await next()
  }
}

/**
 * Request body limit. A declared Content-Length is checked from the header alone (Node's HTTP
 * parser guarantees the body matches it), which keeps the hot path from materialising the body
 * stream; chunked bodies are counted as they stream in. Methods without a body are not touched.
 */
export function bodyLimit(defaultSize: number, perPath: Record<string, number> = {}): MiddlewareHandler {
  const streamingOf = (maxSize: number) => streamingBodyLimit({ maxSize, onError: () => { throw payloadTooLarge() } })
  const streamingDefault = streamingOf(defaultSize)
  const streamingPerPath = Object.fromEntries(Object.entries(perPath).map(([path, size]) => [path, streamingOf(size)]))
  return async function bodyLimit(c, next) {
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next()
    // A few admin routes take larger bodies (policy sets); they are admin-authenticated before the body is read.
    const path = c.req.path
    const maxSize = perPath[path] ?? defaultSize
    const streaming = streamingPerPath[path] ?? streamingDefault
    const length = c.req.header('content-length')
    if (length !== undefined && c.req.header('transfer-encoding') === undefined) {
      if (!/^[0-9]+$/.test(length) || Number(length) > maxSize) throw payloadTooLarge()
      return next()
    }
    return streaming(c, next)
  }
}
