import type { IncomingMessage, ServerResponse } from 'node:http'
import { VerifierError } from './errors.js'
import type { TaskAuthInfo, TaskTokenVerifier } from './verifier.js'

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
export function createFetchGate(verifier: TaskTokenVerifier) {
  return async function taskTokenGate(request: Request): Promise<TaskAuthInfo | Response> {
    try {
      return await verifier.verifyRequest({
        method: request.method,
        url: request.url,
        authorization: request.headers.get('authorization'),
        dpop: request.headers.get('dpop'),
      })
    } catch (e) {
      return verifier.errorResponse(e)
    }
  }
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
export function createNodeMiddleware(verifier: TaskTokenVerifier) {
  return function requireTaskToken(req: IncomingMessage & { auth?: TaskAuthInfo; originalUrl?: string }, res: ServerResponse, next: (error?: unknown) => void): void {
    verifier
      .verifyRequest({ method: req.method ?? 'GET', url: requestUrl(req), authorization: rawValues(req, 'authorization'), dpop: rawValues(req, 'dpop') })
      .then(
        (auth) => {
          req.auth = auth
          next()
        },
        (e: unknown) => {
          const err = e instanceof VerifierError ? e : new VerifierError('invalid_token', 'token could not be verified')
          res.writeHead(err.status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'WWW-Authenticate': verifier.challenge(err) })
          res.end(JSON.stringify(err.toJSON()))
        },
      )
  }
}
