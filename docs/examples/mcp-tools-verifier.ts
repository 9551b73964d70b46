/**
 * The verifiers of docs/mcp-integration.md ("Tools and the verifier kit"). test/mcp-tools.test.ts
 * runs the sample servers with each against a real broker.
 */
import { createTaskTokenVerifier, type TaskTokenVerifier } from '@taskpass/verifier'

/**
 * Tools checked from the token alone: no PDP credential is configured (revocation `none` here,
 * so there is no credential to reuse), so the tool step asks no one — a tool the token does not
 * name is refused locally.
 */
export function tokenToolsVerifier(broker: string, mcpUrl: string): TaskTokenVerifier {
  return createTaskTokenVerifier({ issuer: broker, resource: mcpUrl, requiredScopes: ['notes:read'], dpop: 'allowed', revocation: { mode: 'none' } })
}

/**
 * Tools checked from the token, then through the broker's PDP: the feed's credential is reused
 * for the PDP, so the tool step asks it about every call the token's tools allow.
 */
export function pdpVerifier(broker: string, mcpUrl: string, credentials: { clientId: string; clientSecret: string }): TaskTokenVerifier {
  return createTaskTokenVerifier({ issuer: broker, resource: mcpUrl, requiredScopes: ['notes:read'], dpop: 'allowed', revocation: { mode: 'feed', feedUrl: `${broker}/revocations`, credentials } })
}
