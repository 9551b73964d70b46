/**
 * The SDK v2 sample of docs/mcp-integration.md ("Tools and the verifier kit"): a web-standard MCP
 * server (`@modelcontextprotocol/server`'s `createMcpHandler`) exposing `read_note` and
 * `write_note`, behind the SDK's `requireBearerAuth` and the kit's tool step.
 * test/mcp-tools.test.ts runs it against a real broker.
 */
import { createMcpHandler, McpServer, requireBearerAuth } from '@modelcontextprotocol/server'
import { z } from 'zod'
import type { TaskTokenVerifier } from '@taskpass/verifier'
import { authorizeToolCalls, toMcpSdkV2Verifier } from '@taskpass/verifier/mcp-sdk-v2'

function notesServer(notes: Map<string, string>): McpServer {
  const server = new McpServer({ name: 'notes', version: '2.0.0' })
  server.registerTool('read_note', { inputSchema: z.object({ name: z.string() }) }, async ({ name }) => ({ content: [{ type: 'text' as const, text: notes.get(name) ?? '(empty)' }] }))
  server.registerTool('write_note', { inputSchema: z.object({ name: z.string(), text: z.string() }) }, async ({ name, text }) => {
    notes.set(name, text)
    return { content: [{ type: 'text' as const, text: `saved ${name}` }] }
  })
  return server
}

export function notesHandlerV2(verifier: TaskTokenVerifier, mcpUrl: string, notes: Map<string, string>) {
  const gate = requireBearerAuth({ verifier: toMcpSdkV2Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
  const toolStep = authorizeToolCalls(verifier)
  const handler = createMcpHandler(() => notesServer(notes))
  return async (request: Request): Promise<Response> => {
    const auth = await gate(request)
    if (auth instanceof Response) return auth
    // A tools/call the token does not name is answered here, before the handler runs.
    const refused = await toolStep(request, auth)
    if (refused) return refused
    // tools/list answers (JSON or SSE) list only the token's tools.
    return toolStep.respond(request, await handler.fetch(request, { authInfo: auth }))
  }
}
