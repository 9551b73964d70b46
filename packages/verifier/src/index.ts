/**
 * @taskpass/verifier — what an MCP server imports to accept taskpass task tokens: RFC 9068 JWT
 * verification against the broker's JWKS, exact audience, DPoP (RFC 9449) and revocation through
 * the broker's feed or introspection, in the order of standards.md Appendix C. The core depends
 * on jose only; the SDK and hono adapters live in their own entry points:
 * `@taskpass/verifier/mcp-sdk-v1`, `@taskpass/verifier/mcp-sdk-v2`, `@taskpass/verifier/hono`.
 * The protocol pieces the broker shares with it have their own small entry points:
 * `@taskpass/verifier/dpop` (RFC 9449 proof verification), `@taskpass/verifier/cache` (TTL and
 * replay caches), `@taskpass/verifier/clock` (the injected clock).
 */
export { createTaskTokenVerifier, hasScopes, type TaskAuthInfo, type TaskTokenRequest, type TaskTokenVerifier, type RevocationStatus } from './verifier.js'
export { MAX_LEEWAY_SECONDS, type TaskTokenVerifierOptions, type RevocationOptions, type ToolAuthorizationOptions } from './options.js'
export { createDecisionCache, type DecisionCache, type ToolCall, type ToolDecision } from './authorization.js'
export { VerifierError, buildWwwAuthenticate, type VerifierErrorCode, type AuthScheme, type ChallengeOptions } from './errors.js'
export {
  buildProtectedResourceMetadata,
  protectedResourceMetadataMiddleware,
  protectedResourceMetadataPath,
  protectedResourceMetadataResponse,
  protectedResourceMetadataUrl,
  type ProtectedResourceMetadata,
  type ProtectedResourceMetadataOptions,
} from './metadata.js'
export { createFetchGate, createFetchToolStep, createNodeMiddleware, fetchToolCallRefusal, nodeToolCallCheck, respondToolList, toolListFilter, type FetchToolStep, type GateOptions } from './gates.js'
export { allowedTools, checkToolCalls, toolCallsIn, TOOL_DENIED, TOOL_AUTHORIZATION_FAILED, type ToolCallAuthorizer, type ToolCallRefusal } from './tool-calls.js'
export { createSseRewriter, filterJsonBody, filterNodeToolList, filterToolListMessage, filterToolListResponse, toolListIdsIn, type SseRewriter, type ToolListFilter } from './tool-list.js'
export { MCP_TOOL_NAME, MCP_TOOLS_TYPE, toolsInToken, type TokenTools } from './token-tools.js'
export type { FeedEvent, FeedStatus } from './revocation-feed.js'
export type { FeedPosition, RevocationEvent, RevocationEventType, SubjectId } from './feed-events.js'
export { createFixedClock, systemClock, type Clock, type FixedClock } from './clock.js'
