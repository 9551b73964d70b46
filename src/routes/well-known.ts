import { Hono } from 'hono'
import type { Deps } from '../broker.js'
import { JWKS_MAX_AGE } from '../keys/keyset.js'
import { MCP_TOOLS_TYPE } from '../tokens/authorization-details.js'
import { ID_JAG_GRANT_PROFILE } from '../exchange/jwt-bearer.js'
import { grantHandlers } from './token.js'
import { authorizationCodeFlowEnabled } from '../authorize/request.js'

/** RFC 8414 authorization server metadata. `issuer` is the configured base URL, byte for byte. */
export function authorizationServerMetadata(deps: Pick<Deps, 'config' | 'keys' | 'idJags' | 'registrations'>) {
  const { issuer, resources } = deps.config
  const scopes = [...new Set(resources.flatMap((r) => r.scopes))]
  const browserFlow = authorizationCodeFlowEnabled(deps.config)
  return {
    issuer,
    // The MCP SDK's metadata schema requires these two. Without an OAuth client workload and a
    // sign-in configured, /authorize only answers `unsupported_response_type` (README, design notes).
    authorization_endpoint: `${issuer}/authorize`,
    response_types_supported: ['code'],
    ...(browserFlow
      ? {
          // OAuth 2.1 §4.1.1 / MCP: PKCE with S256 only; RFC 9207 `iss` on every authorization response;
          // clients are known by their Client ID Metadata Documents (no registration endpoint).
          code_challenge_methods_supported: ['S256'],
          response_modes_supported: ['query'],
          authorization_response_iss_parameter_supported: true,
          client_id_metadata_document_supported: true,
          // RFC 7591, the MCP spec's fallback for clients without a metadata document, when configured.
          ...(deps.registrations.enabled ? { registration_endpoint: `${issuer}/register` } : {}),
        }
      : {}),
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/.well-known/jwks.json`,
    // The grants /token serves: token exchange, and the jwt-bearer grant once an enterprise IdP is configured.
    grant_types_supported: Object.keys(grantHandlers(deps)),
    // ID-JAG draft §7: ID-JAGs are redeemed here (which IdPs are trusted is not said).
    ...(deps.idJags.enabled ? { authorization_grant_profiles_supported: [ID_JAG_GRANT_PROFILE] } : {}),
    // The workload authenticates through its actor_token (the attestation); it may add — or be
    // configured to require — private_key_jwt (RFC 7523, aud = this issuer). Never a shared secret.
    token_endpoint_auth_methods_supported: ['none', 'private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: deps.config.clientAuth.algorithms,
    introspection_endpoint: `${issuer}/introspect`,
    introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    revocation_endpoint: `${issuer}/revoke`,
    // Workloads may also authenticate with their JWT-SVID as a client assertion
    // (urn:ietf:params:oauth:client-assertion-type:jwt-spiffe), a draft with no registered method name yet.
    revocation_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    revocation_endpoint_auth_signing_alg_values_supported: deps.config.clientAuth.algorithms,
    // RFC 9449 §5.1: DPoP proofs are accepted at the token endpoint (and POST /tasks) with these algs.
    dpop_signing_alg_values_supported: deps.config.dpop.algorithms,
    ...(scopes.length ? { scopes_supported: scopes } : {}),
    // RFC 9396 §10: task tokens name their MCP tools as `mcp_tools` authorization details.
    authorization_details_types_supported: [MCP_TOOLS_TYPE],
    protected_resources: resources.map((r) => r.uri),
    service_documentation: 'https://github.com/taskpass/taskpass#readme',
  }
}

/** RFC 9110 §13.1.2: If-None-Match uses the weak comparison, over a list of tags or `*`. */
function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false
  if (header.trim() === '*') return true
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag)
}

export function wellKnownRoutes(deps: Deps) {
  return new Hono()
    .get('/.well-known/oauth-authorization-server', (c) => {
      c.header('Cache-Control', 'public, max-age=300')
      return c.json(authorizationServerMetadata(deps))
    })
    .get('/.well-known/jwks.json', async (c) => {
      const etag = await deps.keys.etag()
      c.header('Cache-Control', `public, max-age=${JWKS_MAX_AGE}, must-revalidate`)
      c.header('ETag', etag)
      if (etagMatches(c.req.header('if-none-match'), etag)) return c.body(null, 304)
      return c.json(await deps.keys.jwks(), 200, { 'Content-Type': 'application/jwk-set+json' })
    })
}
