import type { IncomingMessage, ServerResponse } from 'node:http'
import { VerifierError } from './errors.js'
import { checkToolCalls, parseJsonOrUndefined, readBounded, type VerifiedAuth } from './tool-calls.js'
import type { TaskAuthInfo, TaskTokenVerifier } from './verifier.js'

/** Options of the gates. */
export interface GateOptions {
  /**
   * Check every MCP `tools/call` in the request through the broker's PDP before the tool runs
   * (`verifier.authorize`); a refused call is answered with a JSON-RPC error naming the tool.
   */
  authorizeToolCalls?: boolean
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
  return async function taskTokenGate(request: Request): Promise<TaskAuthInfo | Response> {
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
    if (options.authorizeToolCalls && request.method === 'POST') {
      const refused = await fetchToolCallRefusal(verifier, auth, request)
      if (refused) return refused
    }
    return auth
  }
}

/**
 * The tool-call check on a web `Request` (read from a clone: the original body is left for the
 * MCP handler). A `Response` when a call is refused (a JSON-RPC error, HTTP 200) or the body is
 * over the size limit (413); `undefined` to go on.
 */
export async function fetchToolCallRefusal(verifier: Pick<TaskTokenVerifier, 'authorize'>, auth: VerifiedAuth, request: Request): Promise<Response | undefined> {
  const text = await readBounded(request.clone().body as AsyncIterable<Uint8Array> | null)
  if (text === undefined) return Response.json({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'request body too large' } }, { status: 413, headers: JSON_RPC_HEADERS })
  const parsed = parseJsonOrUndefined(text)
  // Not JSON: no tool can run from it; the transport answers its own parse error.
  if (!parsed) return undefined
  const refusal = await checkToolCalls(verifier, auth, parsed.value)
  return refusal ? Response.json(refusal.body, { status: 200, headers: JSON_RPC_HEADERS }) : undefined
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
 * Node `http` / Express middleware checking every `tools/call` of the request through the PDP,
 * for the identity a preceding gate put in `req.auth` (this kit's, or the MCP SDK v1
 * `requireBearerAuth`). It reads `req.body` when a body parser ran (`createMcpExpressApp` has
 * one); otherwise it reads the body itself and leaves it parsed in `req.body`, which the handler
 * must then pass on (`transport.handleRequest(req, res, req.body)`). A refused call is answered
 * with a JSON-RPC error naming the tool; nothing reaches the server.
 */
export function nodeToolCallCheck(verifier: Pick<TaskTokenVerifier, 'authorize'>) {
  return function authorizeToolCalls(req: IncomingMessage & { auth?: VerifiedAuth; body?: unknown }, res: ServerResponse, next: (error?: unknown) => void): void {
    if (req.method !== 'POST') return next()
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
      if (!refusal) return next()
      res.writeHead(200, JSON_RPC_HEADERS)
      res.end(JSON.stringify(refusal.body))
    })().catch((e: unknown) => next(e))
  }
}
