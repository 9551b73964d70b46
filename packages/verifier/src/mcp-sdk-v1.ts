import { InsufficientScopeError, InvalidRequestError, InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js'
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js'
import { nodeToolCallCheck } from './gates.js'
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
 *
 * The gate checks who may call, not which tools: mount {@link authorizeToolCalls} after it, or
 * the token's tools (`extra.tools`) are not enforced (docs/mcp-integration.md).
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

/**
 * The tool step for an SDK v1 server: Express middleware mounted after the SDK's
 * `requireBearerAuth` (which puts the verified token in `req.auth`), before the MCP handler:
 * `app.all('/mcp', requireBearerAuth({verifier: toMcpSdkV1Verifier(v)}), authorizeToolCalls(v), handler)`.
 * Every `tools/call` is checked before the tool runs — against the token's own tools, then, when
 * the verifier has a PDP configured, through the broker's PDP; a refused one is answered with a
 * JSON-RPC error (`-32001`, its message naming the tool), which the SDK client raises as an
 * `McpError`. The response's answers to `tools/list` are narrowed to the token's tools. (The SDK gate hands a verifier only the token, never the request, so this check
 * cannot live inside {@link toMcpSdkV1Verifier}.)
 */
export function authorizeToolCalls(verifier: TaskTokenVerifier) {
  return nodeToolCallCheck(verifier)
}
