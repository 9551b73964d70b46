import type { IncomingMessage, ServerResponse } from 'node:http'
import { VerifierError } from './errors.js'
import { allowedTools, checkToolCalls, parseJsonOrUndefined, readBounded, type ToolCallAuthorizer, type VerifiedAuth } from './tool-calls.js'
import { filterNodeToolList, filterToolListResponse, toolListIdsIn, type ToolListFilter } from './tool-list.js'
import type { TaskAuthInfo, TaskTokenVerifier } from './verifier.js'

/** Options of the gates. */
export interface GateOptions {
  /**
   * The tool step: check every MCP `tools/call` in the request before the tool runs — against
   * the token's own tools (`auth.extra.tools`), then, when the verifier has a PDP configured,
   * through the broker's PDP (`verifier.authorize`) — and answer a refused call with a JSON-RPC
   * error naming the tool; and narrow the answers to `tools/list` to the token's tools (Node:
   * at once; web: through the gate's `respond`).
   */
  authorizeToolCalls?: boolean
}

/** The `tools/list` filter of a request, for its response step; `undefined` when there is nothing to filter. */
/**
 * The filter of a GET stream's answers (the standalone stream, or a POST's stream replayed by
 * `Last-Event-ID`): every `tools/list` answer on it, whatever its id — the request that asked is
 * not in this HTTP request. `undefined` for a scope-only token.
 */
export function streamToolListFilter(auth: VerifiedAuth | undefined): ToolListFilter | undefined {
  const tools = allowedTools(auth)
  return tools === undefined ? undefined : { tools: tools ?? [], ids: 'any' }
}

export function toolListFilter(auth: VerifiedAuth | undefined, message: unknown): ToolListFilter | undefined {
  const tools = allowedTools(auth)
  // A scope-only token lists everything; a confused `extra.tools` lists nothing (its calls are refused too).
  if (tools === undefined) return undefined
  const ids = toolListIdsIn(message)
  return ids.length > 0 ? { tools: tools ?? [], ids } : undefined
}

/** The `tools/list` filters the web tool steps noted, by request, for their `respond` step. */
const notedFilters = new WeakMap<Request, ToolListFilter>()

/**
 * The response step of a web tool step: `response` (what the MCP handler answered `request`)
 * with its `tools/list` answers narrowed to the token's tools, when the tool step noted any for
 * this request; else `response` itself.
 */
export function respondToolList(request: Request, response: Response): Response {
  return filterToolListResponse(response, notedFilters.get(request))
}

/** A web tool step: the check, and the step that filters the handler's response. */
export interface FetchToolStep {
  /**
   * Resolves to a `Response` answering the request when a call is refused (a JSON-RPC error,
   * HTTP 200) or the body is over the size limit (413); `undefined` to go on to the handler.
   */
  (request: Request, auth: VerifiedAuth): Promise<Response | undefined>
  /** The handler's response with its `tools/list` answers narrowed to the token's tools ({@link respondToolList}). */
  respond(request: Request, response: Response): Response
}

/**
 * The tool step for web-standard servers (SDK v2 `createMcpHandler`, `createFetchGate` users):
 * `const refused = await step(request, auth); if (refused) return refused;
 * return step.respond(request, await handler(request))`.
 */
export function createFetchToolStep(verifier: ToolCallAuthorizer): FetchToolStep {
  return Object.assign((request: Request, auth: VerifiedAuth) => fetchToolCallRefusal(verifier, auth, request), { respond: respondToolList })
}

const JSON_RPC_HEADERS = { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }

/**
 * Framework-neutral gates around {@link TaskTokenVerifier.verifyRequest}. Unlike the MCP SDK's
 * `requireBearerAuth` (Bearer only), these accept the `DPoP` scheme too, so a server that wants
 * sender-constrained tokens uses one of these in its place.
 */

/**
 * Web-standard gate (Workers, Deno, Bun, Hono, `@modelcontextprotocol/server`'s
 * `createMcpHandler`): resolves to the verified auth info, or to the ready-to-return 400/401/403
 * `Response` with its `WWW-Authenticate` challenge — the shape of the SDK v2 gate.
 */
export function createFetchGate(verifier: TaskTokenVerifier, options: GateOptions = {}) {
  return Object.assign(taskTokenGate, { respond: respondToolList })
  async function taskTokenGate(request: Request): Promise<TaskAuthInfo | Response> {
    let auth: TaskAuthInfo
    try {
      auth = await verifier.verifyRequest({
        method: request.method,
        url: request.url,
        authorization: request.headers.get('authorization'),
        dpop: request.headers.get('dpop'),
      })
    } catch (e) {
      return verifier.errorResponse(e)
    }
    if (options.authorizeToolCalls && (request.method === 'POST' || request.method === 'GET')) {
      const refused = await fetchToolCallRefusal(verifier, auth, request)
      if (refused) return refused
    }
    return auth
  }
}

/**
 * The tool-call check on a web `Request` (read from a clone: the original body is left for the
 * MCP handler). A `Response` when a call is refused (a JSON-RPC error, HTTP 200) or the body is
 * over the size limit (413); `undefined` to go on — having noted the request's `tools/list` ids
 * for {@link respondToolList}.
 */
export async function fetchToolCallRefusal(verifier: ToolCallAuthorizer, auth: VerifiedAuth, request: Request): Promise<Response | undefined> {
  if (request.method === 'GET') {
    const stream = streamToolListFilter(auth)
    if (stream) notedFilters.set(request, stream)
    return undefined
  }
  if (request.method !== 'POST') return undefined
  const text = await readBounded(request.clone().body as AsyncIterable<Uint8Array> | null)
  if (text === undefined) return Response.json({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'request body too large' } }, { status: 413, headers: JSON_RPC_HEADERS })
  const parsed = parseJsonOrUndefined(text)
  // Not JSON: no tool can run from it; the transport answers its own parse error.
  if (!parsed) return undefined
  const refusal = await checkToolCalls(verifier, auth, parsed.value)
  if (refusal) return Response.json(refusal.body, { status: 200, headers: JSON_RPC_HEADERS })
  const filter = toolListFilter(auth, parsed.value)
  if (filter) notedFilters.set(request, filter)
  return undefined
}

/** Every value of a header, duplicates included (Node keeps only the first `Authorization` in `req.headers`). */
function rawValues(req: IncomingMessage, name: string): string[] {
  const out: string[] = []
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() === name) out.push(req.rawHeaders[i + 1]!)
  }
  return out
}

/** The request URL as the client addressed it (for the DPoP `htu`). */
function requestUrl(req: IncomingMessage & { originalUrl?: string }): string {
  const encrypted = 'encrypted' in req.socket && (req.socket as { encrypted?: boolean }).encrypted === true
  return `${encrypted ? 'https' : 'http'}://${req.headers.host ?? 'localhost'}${req.originalUrl ?? req.url ?? '/'}`
}

/**
 * Node `http` / Express middleware: on success sets `req.auth` (which the MCP SDK v1
 * `StreamableHTTPServerTransport` hands to tool handlers as `extra.authInfo`, and
 * `@modelcontextprotocol/node`'s `toNodeHandler` reads too) and calls `next()`; otherwise answers.
 */
export function createNodeMiddleware(verifier: TaskTokenVerifier, options: GateOptions = {}) {
  const checkTools = options.authorizeToolCalls ? nodeToolCallCheck(verifier) : undefined
  return function requireTaskToken(req: IncomingMessage & { auth?: TaskAuthInfo; originalUrl?: string; body?: unknown }, res: ServerResponse, next: (error?: unknown) => void): void {
    verifier
      .verifyRequest({ method: req.method ?? 'GET', url: requestUrl(req), authorization: rawValues(req, 'authorization'), dpop: rawValues(req, 'dpop') })
      .then(
        (auth) => {
          req.auth = auth
          if (checkTools) checkTools(req, res, next)
          else next()
        },
        (e: unknown) => {
          const err = e instanceof VerifierError ? e : new VerifierError('invalid_token', 'token could not be verified')
          res.writeHead(err.status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'WWW-Authenticate': verifier.challenge(err) })
          res.end(JSON.stringify(err.toJSON()))
        },
      )
  }
}

/**
 * Node `http` / Express middleware, the tool step for the identity a preceding gate put in
 * `req.auth` (this kit's, or the MCP SDK v1 `requireBearerAuth`): every `tools/call` of the
 * request is checked against the token's tools, then (PDP configured) the PDP; the response's
 * answers to `tools/list` are narrowed to the token's tools (`res` is wrapped). It reads
 * `req.body` when a body parser ran (`createMcpExpressApp` has one); otherwise it reads the body
 * itself and leaves it parsed in `req.body`, which the handler must then pass on
 * (`transport.handleRequest(req, res, req.body)`). A refused call is answered with a JSON-RPC
 * error naming the tool; nothing reaches the server.
 */
export function nodeToolCallCheck(verifier: ToolCallAuthorizer) {
  return function authorizeToolCalls(req: IncomingMessage & { auth?: VerifiedAuth; body?: unknown }, res: ServerResponse, next: (error?: unknown) => void): void {
    if (req.method !== 'POST') {
      // A GET stream (standalone, or a replay of a POST's stream by Last-Event-ID) may carry tools/list answers too.
      const filter = req.method === 'GET' ? streamToolListFilter(req.auth) : undefined
      if (filter) filterNodeToolList(res, filter)
      return next()
    }
    void (async () => {
      if (req.body === undefined) {
        const text = await readBounded(req)
        if (text === undefined) {
          res.writeHead(413, JSON_RPC_HEADERS)
          res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'request body too large' } }))
          return
        }
        const parsed = parseJsonOrUndefined(text)
        // Not JSON: nothing can run from it; the transport answers its own parse error.
        if (!parsed) return next()
        req.body = parsed.value
      }
      const refusal = await checkToolCalls(verifier, req.auth, req.body)
      if (!refusal) {
        const filter = toolListFilter(req.auth, req.body)
        if (filter) filterNodeToolList(res, filter)
        return next()
      }
      res.writeHead(200, JSON_RPC_HEADERS)
      res.end(JSON.stringify(refusal.body))
    })().catch((e: unknown) => next(e))
  }
}
