import type { MiddlewareHandler } from 'hono'
import { protectedResourceMetadataResponse, type ProtectedResourceMetadata } from './metadata.js'
import type { TaskAuthInfo, TaskTokenVerifier } from './verifier.js'

/** The context variable the middleware sets. */
export interface TaskTokenVariables {
  taskAuth: TaskAuthInfo
}

/**
 * Hono middleware: verifies the request's task token (Bearer or DPoP, per the verifier's `dpop`
 * mode), sets `c.get('taskAuth')`, or answers 400/401/403 with the challenge. Hono is only a
 * type here: the verifier core has no hono dependency.
 */
export function taskTokenAuth(verifier: TaskTokenVerifier): MiddlewareHandler<{ Variables: TaskTokenVariables }> {
  return async function taskTokenAuthMiddleware(c, next) {
    let auth: TaskAuthInfo
    try {
      auth = await verifier.verifyRequest({
        method: c.req.method,
        url: c.req.url,
        authorization: c.req.raw.headers.get('authorization'),
        dpop: c.req.raw.headers.get('dpop'),
      })
    } catch (e) {
      return verifier.errorResponse(e)
    }
    c.set('taskAuth', auth)
    await next()
  }
}

/** Hono middleware serving the RFC 9728 document at its well-known path; passes everything else on. */
export function protectedResourceMetadata(doc: ProtectedResourceMetadata): MiddlewareHandler {
  return async function protectedResourceMetadataMiddleware(c, next) {
    const res = protectedResourceMetadataResponse(c.req.raw, doc)
    if (res) return res
    await next()
  }
}
