import type { ToolDecision } from './authorization.js'
import type { TaskAuthInfo, TaskTokenVerifier } from './verifier.js'

/**
 * Checking every MCP `tools/call` before the tool runs (docs/mcp-integration.md, "Tools and the
 * verifier kit"): first against the tools the token names (its RFC 9396 `mcp_tools`
 * authorization details, `auth.extra.tools`), then — when the verifier has a PDP credential —
 * through the broker's AuthZEN PDP (docs/authzen.md). The check reads the JSON-RPC message(s) of
 * the HTTP request — the same parsed body the MCP transport is then given — so it works in front
 * of any MCP server, stateless or with sessions, without reaching into the SDK's request dispatch.
 *
 * A refused call never reaches the server: the request is answered with a JSON-RPC error for it
 * (the COAZ-MCP binding's codes: `-32001` for a deny, `-32603` when the PDP could not be asked,
 * `-32602` for a `tools/call` without a tool name), which the official SDK clients raise as an
 * `McpError` whose message names the tool.
 */

/** JSON-RPC error codes of the COAZ-MCP binding (its error mapping). */
export const TOOL_DENIED = -32001
export const TOOL_AUTHORIZATION_FAILED = -32603
export const INVALID_PARAMS = -32602

/** The longest request body read to find the tool calls (the SDK transports' own limit). */
export const MAX_MCP_BODY_BYTES = 4 * 1024 * 1024

type JsonRpcId = string | number

export interface ToolCallRequest {
  id: JsonRpcId
  /** Undefined when `params.name` is not a string (refused: the SDK would refuse it too). */
  tool: string | undefined
  arguments: Record<string, unknown> | undefined
}

export interface JsonRpcError {
  jsonrpc: '2.0'
  id: JsonRpcId | null
  error: { code: number; message: string; data?: Record<string, unknown> }
}

/** A refusal: the tool that was refused, why, and the JSON-RPC body that answers the HTTP request. */
export interface ToolCallRefusal {
  tool: string | undefined
  decision: ToolDecision
  /** One error object, or an array of them for a JSON-RPC batch (one per request in it). */
  body: JsonRpcError | JsonRpcError[]
}

/**
 * The identity a gate verified, as any gate hands it on (`req.auth` of the MCP SDK v1 gate is the
 * SDK's `AuthInfo`, which is what this kit's verifier returned).
 */
export interface VerifiedAuth {
  token: string
  extra?: Record<string, unknown> | undefined
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

const isRequestId = (v: unknown): v is JsonRpcId => typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))

/** The `tools/call` requests of a JSON-RPC message or batch (notifications have no id and run nothing). */
export function toolCallsIn(message: unknown): ToolCallRequest[] {
  const messages = Array.isArray(message) ? message : [message]
  const calls: ToolCallRequest[] = []
  for (const m of messages) {
    if (!isObject(m) || m.method !== 'tools/call' || !isRequestId(m.id)) continue
    const params = isObject(m.params) ? m.params : {}
    calls.push({ id: m.id, tool: typeof params.name === 'string' ? params.name : undefined, arguments: isObject(params.arguments) ? params.arguments : undefined })
  }
  return calls
}

/** The message of the error the SDK client shows: it names the tool and says it did not run. */
export function refusalMessage(tool: string | undefined, decision: ToolDecision): string {
  if (tool === undefined) return 'tools/call without a tool name'
  if (decision.reason === 'pdp_unavailable') return `tool "${tool}" was not run: its authorization could not be checked`
  return `tool "${tool}" is not permitted for this task${decision.reason ? ` (${decision.reason})` : ''}`
}

function rpcError(id: JsonRpcId | null, tool: string | undefined, decision: ToolDecision): JsonRpcError {
  const code = tool === undefined ? INVALID_PARAMS : decision.reason === 'pdp_unavailable' ? TOOL_AUTHORIZATION_FAILED : TOOL_DENIED
  return { jsonrpc: '2.0', id, error: { code, message: refusalMessage(tool, decision), data: { ...(tool !== undefined ? { tool } : {}), ...(decision.reason ? { reason: decision.reason } : {}) } } }
}

/**
 * What the tool step needs of a verifier: `authorize` (the PDP) and whether a PDP is configured.
 * An object without `pdpConfigured` is taken to have one: its `authorize` is always asked.
 */
export type ToolCallAuthorizer = Pick<TaskTokenVerifier, 'authorize'> & { readonly pdpConfigured?: boolean }

/**
 * The tools a verified identity may call, from `auth.extra.tools` (set by this kit's verifier from
 * the token's `mcp_tools` authorization details): `undefined` for a scope-only token, `null` when
 * the field is there but is not a list of names (refuse every call: it did not come from this kit).
 */
export function allowedTools(auth: VerifiedAuth | undefined): readonly string[] | undefined | null {
  const tools = auth?.extra?.tools
  if (tools === undefined) return undefined
  return Array.isArray(tools) && tools.every((t) => typeof t === 'string') ? (tools as string[]) : null
}

/**
 * Authorizes every `tools/call` in `message` for `auth`, in this order: a tool name at all; a
 * verified identity; the tool among the token's own tools (when it names any: RFC 9396
 * `mcp_tools`, reason `tool_not_in_token`); then, when the verifier has a PDP configured, the
 * broker's PDP (`verifier.authorize`). Resolves to `undefined` when all are permitted (or there
 * are none), else to the first refusal and the body answering the request. Fails closed: a
 * configured PDP that cannot be asked refuses the call (`pdp_unavailable`).
 */
export async function checkToolCalls(verifier: ToolCallAuthorizer, auth: VerifiedAuth | undefined, message: unknown): Promise<ToolCallRefusal | undefined> {
  const calls = toolCallsIn(message)
  if (calls.length === 0) return undefined
  const tools = allowedTools(auth)
  const askPdp = verifier.pdpConfigured !== false
  const refusals = new Map<JsonRpcId, { tool: string | undefined; decision: ToolDecision }>()
  for (const call of calls) {
    let decision: ToolDecision
    if (call.tool === undefined) decision = { allowed: false, reason: 'invalid_params' }
    else if (!auth) decision = { allowed: false, reason: 'no_token' }
    // Local and free: a tool the token does not name is refused without asking anyone.
    else if (tools !== undefined && (tools === null || !tools.includes(call.tool))) decision = { allowed: false, reason: 'tool_not_in_token' }
    else if (!askPdp) decision = { allowed: true }
    else {
      try {
        // The identity a gate verified; `authorize` checks its shape again and denies a stranger one.
        decision = await verifier.authorize(auth as Pick<TaskAuthInfo, 'token' | 'extra'>, { tool: call.tool, arguments: call.arguments })
      } catch {
        decision = { allowed: false, reason: 'pdp_unavailable' }
      }
    }
    if (!decision.allowed) refusals.set(call.id, { tool: call.tool, decision })
  }
  const first = refusals.values().next().value
  if (!first) return undefined
  if (!Array.isArray(message)) return { ...first, body: rpcError(calls[0]!.id, first.tool, first.decision) }
  // A batch runs whole or not at all: every request in it is answered, none runs.
  const body = message.filter((m) => isObject(m) && isRequestId(m.id) && typeof m.method === 'string').map((m) => {
    const id = (m as { id: JsonRpcId }).id
    const own = refusals.get(id)
    return own ? rpcError(id, own.tool, own.decision) : { jsonrpc: '2.0' as const, id, error: { code: TOOL_DENIED, message: `not run: ${refusalMessage(first.tool, first.decision)} in the same batch` } }
  })
  return { ...first, body }
}

/**
 * Reads a request body stream, at most {@link MAX_MCP_BODY_BYTES}; `undefined` when it is longer.
 * Decoded as the MCP transports decode it (`new TextDecoder()`, which drops a leading byte order
 * mark): text the check cannot parse must be text the transport cannot parse either, or a
 * tool call would slip past as "not JSON".
 */
export async function readBounded(stream: AsyncIterable<Uint8Array> | null | undefined): Promise<string | undefined> {
  if (!stream) return ''
  const chunks: Uint8Array[] = []
  let size = 0
  if ('getReader' in stream && typeof stream.getReader === 'function') {
    // A web stream, often one branch of a cloned body: cancelling a tee branch settles only once
    // the other is cancelled too, so the cancel is never awaited (awaiting it hangs the request).
    const reader = (stream as unknown as ReadableStream<Uint8Array>).getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      size += value.byteLength
      if (size > MAX_MCP_BODY_BYTES) {
        void reader.cancel().catch(() => {})
        return undefined
      }
      chunks.push(value)
    }
    return new TextDecoder().decode(Buffer.concat(chunks))
  }
  for await (const chunk of stream) {
    size += chunk.byteLength
    if (size > MAX_MCP_BODY_BYTES) return undefined
    chunks.push(chunk)
  }
  return new TextDecoder().decode(Buffer.concat(chunks))
}

/** JSON.parse that answers `undefined` for text that is not JSON (the transport then answers its own parse error). */
export function parseJsonOrUndefined(text: string): { value: unknown } | undefined {
  try {
    return { value: JSON.parse(text) }
  } catch {
    return undefined
  }
}
