/**
 * The MCP tools a task token names (RFC 9396 Rich Authorization Requests): the broker puts the
 * task's declared tools in the token as authorization details of the type `mcp_tools`, the
 * resource as `locations` and the exact tool names as `actions` (RFC 9396 §2, §2.2 common
 * fields). A token without such a detail is scope-only: its task declared no tools.
 *
 * Restated here rather than imported from the broker: the kit is standalone.
 */

/** The RFC 9396 `type` of the detail naming MCP tools. */
export const MCP_TOOLS_TYPE = 'mcp_tools'

/** An MCP tool name (MCP spec: 1–128 characters, ASCII letters, digits, `_`, `-`, `.`). */
export const MCP_TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/

/** What a token's `authorization_details` say about this resource's tools. */
export type TokenTools =
  /** `tools`: the tools this token may call here; undefined when the token is scope-only. */
  | { ok: true; tools: string[] | undefined }
  /** A claim the broker never mints: the token is refused (fail closed). */
  | { ok: false; why: string }

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string')
}

/**
 * Reads the `authorization_details` claim (RFC 9396 §9.1: a JSON array of objects, each with a
 * string `type`) for `resource`: the `actions` of every `mcp_tools` detail whose `locations`
 * include `resource` (a detail without `locations` is for the token's audience, RFC 9396 §2.2).
 * Details of other types are left alone (they are another resource server's business).
 *
 * - no claim, or no `mcp_tools` detail → `tools` undefined (scope-only);
 * - `mcp_tools` details, none for this resource → `tools` empty (no tool may be called here);
 * - a malformed claim (not an array, a detail without a string `type`, an `mcp_tools` detail whose
 *   `actions` or `locations` is not an array of strings, an action that is not an MCP tool name)
 *   → not ok.
 */
export function toolsInToken(details: unknown, resource: string): TokenTools {
  if (details === undefined) return { ok: true, tools: undefined }
  if (!Array.isArray(details)) return { ok: false, why: 'authorization_details is not an array' }
  let tools: Set<string> | undefined
  for (const d of details) {
    if (typeof d !== 'object' || d === null || Array.isArray(d)) return { ok: false, why: 'an authorization detail is not an object' }
    const detail = d as Record<string, unknown>
    if (typeof detail.type !== 'string') return { ok: false, why: 'an authorization detail has no string type' }
    if (detail.type !== MCP_TOOLS_TYPE) continue
    if (!isStringArray(detail.actions) || !detail.actions.every((a) => MCP_TOOL_NAME.test(a))) return { ok: false, why: 'mcp_tools actions are not MCP tool names' }
    if (detail.locations !== undefined && !isStringArray(detail.locations)) return { ok: false, why: 'mcp_tools locations are not strings' }
    tools ??= new Set()
    if (detail.locations === undefined || detail.locations.includes(resource)) for (const a of detail.actions) tools.add(a)
  }
  return { ok: true, tools: tools ? [...tools] : undefined }
}
