import { OAuthError, OAuthErrorCode, type AuthInfo, type OAuthTokenVerifier } from '@modelcontextprotocol/server'
import { bearerOnlyVerify } from './sdk-adapter.js'
import type { TaskTokenVerifier } from './verifier.js'

/**
 * Adapter for `@modelcontextprotocol/server` (v2) `requireBearerAuth({verifier})` — the
 * web-standard gate — and `verifyBearerToken`. Rejections are the SDK's `OAuthError` with
 * `OAuthErrorCode.InvalidToken` (401) or `InsufficientScope` (403), which the gate answers with a
 * `WWW-Authenticate` challenge. The gate is Bearer-only: a DPoP-bound token is refused
 * (RFC 9449 §7.2); for DPoP use `createFetchGate` instead.
 */
export function toMcpSdkV2Verifier(verifier: TaskTokenVerifier): OAuthTokenVerifier {
  return {
    verifyAccessToken: bearerOnlyVerify<AuthInfo>(verifier, 'MCP SDK v2', 'createFetchGate', {
      invalidToken: (d) => new OAuthError(OAuthErrorCode.InvalidToken, d),
      insufficientScope: (d) => new OAuthError(OAuthErrorCode.InsufficientScope, d),
      invalidRequest: (d) => new OAuthError(OAuthErrorCode.InvalidRequest, d),
    }),
  }
}
