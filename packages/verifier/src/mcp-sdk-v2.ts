import { OAuthError, OAuthErrorCode, type AuthInfo, type OAuthTokenVerifier } from '@modelcontextprotocol/server'
import { createFetchToolStep, type FetchToolStep } from './gates.js'
import { bearerOnlyVerify } from './sdk-adapter.js'
import type { TaskTokenVerifier } from './verifier.js'

/**
 * Adapter for `@modelcontextprotocol/server` (v2) `requireBearerAuth({verifier})` — the
 * web-standard gate — and `verifyBearerToken`. Rejections are the SDK's `OAuthError` with
 * `OAuthErrorCode.InvalidToken` (401) or `InsufficientScope` (403), which the gate answers with a
 * `WWW-Authenticate` challenge. The gate is Bearer-only: a DPoP-bound token is refused
 * (RFC 9449 §7.2); for DPoP use `createFetchGate` instead.
 *
 * The gate checks who may call, not which tools: put {@link authorizeToolCalls} after it, or the
 * token's tools (`extra.tools`) are not enforced (docs/mcp-integration.md).
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

/**
 * The tool step for an SDK v2 server, between the web-standard `requireBearerAuth` gate and the
 * MCP handler:
 * `const refused = await step(request, auth); if (refused) return refused;
 * return step.respond(request, await handler.fetch(request, {authInfo: auth}))`.
 * Every `tools/call` is checked before the tool runs — against the token's own tools, then, when
 * the verifier has a PDP configured, through the broker's PDP; a refused one is answered with a
 * JSON-RPC error (`-32001`, its message naming the tool), which the SDK client raises as a
 * protocol error. `respond` narrows the handler's answers to `tools/list` to the token's tools
 * (JSON or SSE). (The SDK gate hands a verifier only the token, never the request, so this step
 * cannot live inside {@link toMcpSdkV2Verifier}.)
 */
export function authorizeToolCalls(verifier: TaskTokenVerifier): FetchToolStep {
  return createFetchToolStep(verifier)
}
