import { OAuthError } from '../errors.js'

/**
 * RFC 9396 Rich Authorization Requests for MCP tools: a task token names the tools it may call as
 * one authorization detail of the type `mcp_tools` — the resource as its `locations`, the tool
 * names as its `actions` (RFC 9396 §2.2 common fields). A token without one is scope-only.
 */
export const MCP_TOOLS_TYPE = 'mcp_tools'

/** An MCP tool name (MCP spec: 1–128 characters, ASCII letters, digits, `_`, `-`, `.`); tasks declare tools by exact name. */
export const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/

export interface McpToolsDetail {
  type: typeof MCP_TOOLS_TYPE
  locations: [string]
  actions: string[]
}

/** The detail a token for `resource` carries for `tools`. */
export function mcpToolsDetail(resource: string, tools: readonly string[]): McpToolsDetail {
  return { type: MCP_TOOLS_TYPE, locations: [resource], actions: [...tools] }
}

/** The tools a token's `authorization_details` claim allows, or undefined when it names none (scope-only). */
export function toolsOf(details: unknown): string[] | undefined {
  if (!Array.isArray(details)) return undefined
  const ours = details.find((d): d is McpToolsDetail => typeof d === 'object' && d !== null && (d as { type?: unknown }).type === MCP_TOOLS_TYPE)
  return ours && Array.isArray(ours.actions) ? ours.actions.filter((a): a is string => typeof a === 'string') : undefined
}

/** RFC 9396 §5: `invalid_authorization_details` (400). */
export const invalidAuthorizationDetails = (description: string, detail?: string) => new OAuthError('invalid_authorization_details', 400, description, detail)

const MAX_PARAMETER = 8192
const MAX_TOOLS = 64

/**
 * The `authorization_details` request parameter of a token exchange (RFC 9396 §2, §7): a JSON
 * array holding exactly one `mcp_tools` detail, whose `locations` (optional) is the requested
 * resource and whose `actions` are MCP tool names. Anything else — another type, another
 * location, an unknown field, a malformed value — is `invalid_authorization_details`: an
 * authorization server must refuse a detail it does not understand (§5).
 */
export function parseAuthorizationDetails(text: string, resource: string): string[] {
  if (text.length > MAX_PARAMETER) throw invalidAuthorizationDetails(`"authorization_details" is longer than ${MAX_PARAMETER} characters`)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw invalidAuthorizationDetails('"authorization_details" is not JSON')
  }
  if (!Array.isArray(value) || value.length !== 1) throw invalidAuthorizationDetails(`"authorization_details" must be an array of one ${MCP_TOOLS_TYPE} detail`)
  const detail = value[0] as Record<string, unknown>
  if (typeof detail !== 'object' || detail === null || Array.isArray(detail)) throw invalidAuthorizationDetails('an authorization detail must be an object')
  if (detail.type !== MCP_TOOLS_TYPE) throw invalidAuthorizationDetails(`authorization detail type ${JSON.stringify(detail.type)?.slice(0, 64)} is not supported (only ${MCP_TOOLS_TYPE})`)
  const unknown = Object.keys(detail).filter((k) => k !== 'type' && k !== 'locations' && k !== 'actions')
  if (unknown.length > 0) throw invalidAuthorizationDetails(`unknown ${MCP_TOOLS_TYPE} field ${unknown[0]!.slice(0, 64)}`)
  if (detail.locations !== undefined && !(Array.isArray(detail.locations) && detail.locations.length === 1 && detail.locations[0] === resource)) {
    throw invalidAuthorizationDetails(`"locations" must be the requested resource ([${JSON.stringify(resource)}])`)
  }
  const actions = detail.actions
  if (!Array.isArray(actions) || actions.length === 0 || actions.length > MAX_TOOLS || !actions.every((a) => typeof a === 'string' && TOOL_NAME.test(a))) {
    throw invalidAuthorizationDetails(`"actions" must be 1–${MAX_TOOLS} MCP tool names`)
  }
  return [...new Set(actions as string[])]
}
