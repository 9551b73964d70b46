/**
 * RFC 9728 OAuth 2.0 Protected Resource Metadata for an MCP server that accepts taskpass tokens.
 * The document tells a client which authorization server issues tokens for this resource
 * (`authorization_servers: [issuer]`), which scopes exist, and whether DPoP is required.
 */
export interface ProtectedResourceMetadata {
  resource: string
  authorization_servers: string[]
  scopes_supported?: string[]
  bearer_methods_supported: string[]
  resource_name?: string
  resource_documentation?: string
  dpop_signing_alg_values_supported?: string[]
  dpop_bound_access_tokens_required?: boolean
}

export interface ProtectedResourceMetadataOptions {
  issuer: string
  resource: string
  scopesSupported?: readonly string[]
  dpop: 'required' | 'allowed' | 'off'
  dpopAlgorithms?: readonly string[]
  resourceName?: string
  resourceDocumentation?: string
}

/** RFC 9728 §2 document. Empty arrays are omitted (RFC 8414 §3.2 style). */
export function buildProtectedResourceMetadata(opts: ProtectedResourceMetadataOptions): ProtectedResourceMetadata {
  return {
    resource: opts.resource,
    authorization_servers: [opts.issuer],
    ...(opts.scopesSupported && opts.scopesSupported.length > 0 ? { scopes_supported: [...opts.scopesSupported] } : {}),
    // §2: the token is accepted in the Authorization header only (RFC 6750 §2.1), never body or query.
    bearer_methods_supported: ['header'],
    ...(opts.resourceName ? { resource_name: opts.resourceName } : {}),
    ...(opts.resourceDocumentation ? { resource_documentation: opts.resourceDocumentation } : {}),
    ...(opts.dpop !== 'off' && opts.dpopAlgorithms && opts.dpopAlgorithms.length > 0 ? { dpop_signing_alg_values_supported: [...opts.dpopAlgorithms] } : {}),
    ...(opts.dpop === 'required' ? { dpop_bound_access_tokens_required: true } : {}),
  }
}

/**
 * RFC 9728 §3.1: the well-known path is inserted between the host and the resource's path, so
 * `https://h/mcp` → `/.well-known/oauth-protected-resource/mcp` (the MCP SDK derives the same).
 */
export function protectedResourceMetadataPath(resource: string | URL): string {
  const { pathname } = new URL(resource)
  return `/.well-known/oauth-protected-resource${pathname === '/' ? '' : pathname}`
}

/** The absolute metadata URL for the `resource_metadata` challenge attribute (RFC 9728 §5.1). */
export function protectedResourceMetadataUrl(resource: string | URL): string {
  return new URL(protectedResourceMetadataPath(resource), resource).href
}

const HEADERS = {
  'Content-Type': 'application/json',
  'Cache-Control': 'public, max-age=300',
  // Browser-based MCP clients fetch this document cross-origin; it holds nothing secret.
  'Access-Control-Allow-Origin': '*',
}

/**
 * Web-standard handler: answers `GET`/`HEAD`/`OPTIONS` at the document's well-known path and
 * returns `undefined` for every other request, so it composes in front of any fetch handler.
 */
export function protectedResourceMetadataResponse(request: Request, doc: ProtectedResourceMetadata): Response | undefined {
  const { pathname } = new URL(request.url)
  if (pathname !== protectedResourceMetadataPath(doc.resource)) return undefined
  if (request.method === 'OPTIONS') {
    return new Response(null, { status: 204, headers: { 'Access-Control-Allow-Origin': '*', 'Access-Control-Allow-Methods': 'GET, OPTIONS', 'Access-Control-Allow-Headers': '*' } })
  }
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    return Response.json({ error: 'invalid_request', error_description: 'method not allowed' }, { status: 405, headers: { Allow: 'GET, HEAD, OPTIONS' } })
  }
  return new Response(request.method === 'HEAD' ? null : JSON.stringify(doc), { status: 200, headers: HEADERS })
}

/** The same for Node's `http` and Express: `(req, res, next)`; calls `next()` when the path is another. */
export function protectedResourceMetadataMiddleware(doc: ProtectedResourceMetadata) {
  const path = protectedResourceMetadataPath(doc.resource)
  const body = JSON.stringify(doc)
  return function protectedResourceMetadata(
    req: { method?: string | undefined; url?: string | undefined },
    res: { writeHead(status: number, headers: Record<string, string>): unknown; end(body?: string): unknown },
    next: () => void,
  ): void {
    const pathname = new URL(req.url ?? '/', 'http://x').pathname
    if (pathname !== path || (req.method !== 'GET' && req.method !== 'HEAD')) return next()
    res.writeHead(200, HEADERS)
    res.end(req.method === 'HEAD' ? undefined : body)
  }
}
