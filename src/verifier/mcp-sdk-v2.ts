import { OAuthError, OAuthErrorCode, type AuthInfo, type OAuthTokenVerifier } from '@modelcontextprotocol/server'
import { fetchToolCallRefusal } from './gates.js'
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

/**
 * The tool-call check for an SDK v2 server, between the web-standard `requireBearerAuth` gate and
 * the MCP handler: `const refused = await check(request, auth); if (refused) return refused;
 * return handler.fetch(request, {authInfo: auth})`. Every `tools/call` is asked of the broker's
 * PDP before the tool runs; a refused one is answered with a JSON-RPC error (`-32001`, its
 * message naming the tool), which the SDK client raises as a protocol error. (The SDK gate hands
 * a verifier only the token, never the request, so this check cannot live inside
 * {@link toMcpSdkV2Verifier}.)
 */
export function authorizeToolCalls(verifier: TaskTokenVerifier) {
  return function checkToolCalls(request: Request, authInfo: AuthInfo): Promise<Response | undefined> {
    return fetchToolCallRefusal(verifier, authInfo, request)
  }
}
