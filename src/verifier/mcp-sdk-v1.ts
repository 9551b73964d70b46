import { InsufficientScopeError, InvalidRequestError, InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js'
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js'
import { VerifierError } from './errors.js'
import type { TaskTokenVerifier } from './verifier.js'

/**
 * Adapter for `@modelcontextprotocol/sdk` (v1) `requireBearerAuth({verifier})` on Express.
 *
 * The SDK gate turns only its own error classes into 401/403 challenges: anything else becomes a
 * 500 with no challenge. So every rejection is rethrown as the SDK's `InvalidTokenError`
 * (`insufficient_scope` as `InsufficientScopeError`, a malformed request as
 * `InvalidRequestError`), never as a plain `Error`. The SDK gate is Bearer-only: a DPoP-bound
 * token is refused (RFC 9449 §7.2); for DPoP use `createNodeMiddleware` instead.
 */
export function toMcpSdkV1Verifier(verifier: TaskTokenVerifier): OAuthTokenVerifier {
  if (verifier.dpop === 'required') {
    throw new TypeError('"dpop" is \'required\' but the MCP SDK v1 requireBearerAuth accepts only Bearer tokens; use createNodeMiddleware(verifier) instead')
  }
  return {
    async verifyAccessToken(token: string): Promise<AuthInfo> {
      try {
        return await verifier.verifyAccessToken(token)
      } catch (e) {
        if (e instanceof VerifierError) {
          switch (e.code) {
            case 'insufficient_scope':
              throw new InsufficientScopeError(e.description)
            case 'invalid_request':
              throw new InvalidRequestError(e.description)
            case 'invalid_token':
            case 'invalid_dpop_proof':
              throw new InvalidTokenError(e.description)
          }
        }
        throw new InvalidTokenError('token could not be verified')
      }
    },
  }
}
