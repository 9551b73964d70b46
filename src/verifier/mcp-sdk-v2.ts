import { OAuthError, OAuthErrorCode, type AuthInfo, type OAuthTokenVerifier } from '@modelcontextprotocol/server'
import { VerifierError } from './errors.js'
import type { TaskTokenVerifier } from './verifier.js'

/**
 * Adapter for `@modelcontextprotocol/server` (v2) `requireBearerAuth({verifier})` — the
 * web-standard gate — and `verifyBearerToken`. Rejections are the SDK's `OAuthError` with
 * `OAuthErrorCode.InvalidToken` (401) or `InsufficientScope` (403), which the gate answers with a
 * `WWW-Authenticate` challenge. The gate is Bearer-only: a DPoP-bound token is refused
 * (RFC 9449 §7.2); for DPoP use `createFetchGate` instead.
 */
export function toMcpSdkV2Verifier(verifier: TaskTokenVerifier): OAuthTokenVerifier {
  if (verifier.dpop === 'required') {
    throw new TypeError('"dpop" is \'required\' but the MCP SDK v2 requireBearerAuth accepts only Bearer tokens; use createFetchGate(verifier) instead')
  }
  return {
    async verifyAccessToken(token: string): Promise<AuthInfo> {
      try {
        return await verifier.verifyAccessToken(token)
      } catch (e) {
        if (e instanceof VerifierError) {
          switch (e.code) {
            case 'insufficient_scope':
              throw new OAuthError(OAuthErrorCode.InsufficientScope, e.description)
            case 'invalid_request':
              throw new OAuthError(OAuthErrorCode.InvalidRequest, e.description)
            case 'invalid_token':
            case 'invalid_dpop_proof':
              throw new OAuthError(OAuthErrorCode.InvalidToken, e.description)
          }
        }
        throw new OAuthError(OAuthErrorCode.InvalidToken, 'token could not be verified')
      }
    },
  }
}
