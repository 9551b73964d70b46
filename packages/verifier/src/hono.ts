import type { MiddlewareHandler } from 'hono'
import { VerifierError } from './errors.js'
import { protectedResourceMetadataResponse, type ProtectedResourceMetadata } from './metadata.js'
import { streamToolListFilter, toolListFilter } from './gates.js'
import { checkToolCalls, parseJsonOrUndefined, readBounded, refusalMessage } from './tool-calls.js'
import { filterToolListResponse, type ToolListFilter } from './tool-list.js'
import type { TaskAuthInfo, TaskTokenVerifier } from './verifier.js'

/** The context variable the middleware sets. */
export interface TaskTokenVariables {
  taskAuth: TaskAuthInfo
}

export interface TaskTokenAuthOptions {
  /**
   * The tool step: check every MCP `tools/call` in the request body before the handler runs —
   * against the token's own tools, then, when the verifier has a PDP configured, through the
   * broker's PDP. A refused call is answered at the HTTP level: 403 `insufficient_scope` with a
   * challenge whose description names the tool (what a per-tool scope step-up looks like to an
   * MCP client); the handler never runs. The handler's answers to `tools/list` are narrowed to
   * the token's tools.
   */
  authorizeToolCalls?: boolean
}

/**
 * Hono middleware: verifies the request's task token (Bearer or DPoP, per the verifier's `dpop`
 * mode), sets `c.get('taskAuth')`, or answers 400/401/403 with the challenge. Hono is only a
 * type here: the verifier core has no hono dependency.
 */
export function taskTokenAuth(verifier: TaskTokenVerifier, options: TaskTokenAuthOptions = {}): MiddlewareHandler<{ Variables: TaskTokenVariables }> {
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
    let filter: ToolListFilter | undefined = options.authorizeToolCalls && c.req.method === 'GET' ? streamToolListFilter(auth) : undefined
    if (options.authorizeToolCalls && c.req.method === 'POST') {
      // Read from a clone: the handler reads the body again.
      const text = await readBounded(c.req.raw.clone().body as AsyncIterable<Uint8Array> | null)
      if (text === undefined) return Response.json({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'request body too large' } }, { status: 413 })
      const parsed = parseJsonOrUndefined(text)
      const refusal = parsed ? await checkToolCalls(verifier, auth, parsed.value) : undefined
      if (refusal) return verifier.errorResponse(new VerifierError('insufficient_scope', refusalMessage(refusal.tool, refusal.decision), { scheme: auth.extra.cnf ? 'DPoP' : 'Bearer', requiredScopes: [] }))
      if (parsed) filter = toolListFilter(auth, parsed.value)
    }
    c.set('taskAuth', auth)
    await next()
    if (filter) {
      const filtered = filterToolListResponse(c.res, filter)
      // Assigning over a response copies its headers onto the new one, `content-length` included:
      // clear it first, so the filtered body is not sent with the unfiltered length.
      c.res = undefined
      c.res = filtered
    }
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
