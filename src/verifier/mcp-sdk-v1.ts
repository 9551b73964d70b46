import { InsufficientScopeError, InvalidRequestError, InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js'
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js'
import { bearerOnlyVerify } from './sdk-adapter.js'
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
  return {
    verifyAccessToken: bearerOnlyVerify<AuthInfo>(verifier, 'MCP SDK v1', 'createNodeMiddleware', {
      invalidToken: (d) => new InvalidTokenError(d),
      insufficientScope: (d) => new InsufficientScopeError(d),
      invalidRequest: (d) => new InvalidRequestError(d),
    }),
  }
}
