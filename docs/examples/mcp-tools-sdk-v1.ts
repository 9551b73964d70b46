/**
 * The SDK v1 sample of docs/mcp-integration.md ("Tools and the verifier kit"): an MCP server
 * (official SDK v1 on Express) exposing `read_note` and `write_note`, behind the SDK's
 * `requireBearerAuth` and the kit's tool step. test/mcp-tools.test.ts runs it against a real broker.
 */
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { z } from 'zod'
import type { TaskTokenVerifier } from '@taskpass/verifier'
import { authorizeToolCalls, toMcpSdkV1Verifier } from '@taskpass/verifier/mcp-sdk-v1'

export function notesServer(notes: Map<string, string>): McpServer {
  const server = new McpServer({ name: 'notes', version: '1.0.0' })
  server.registerTool('read_note', { inputSchema: { name: z.string() } }, async ({ name }) => ({ content: [{ type: 'text', text: notes.get(name) ?? '(empty)' }] }))
  server.registerTool('write_note', { inputSchema: { name: z.string(), text: z.string() } }, async ({ name, text }) => {
    notes.set(name, text)
    return { content: [{ type: 'text', text: `saved ${name}` }] }
  })
  return server
}

/** `json: true`: answers are JSON bodies (`enableJsonResponse`); otherwise the transport answers with SSE. */
export function notesAppV1(verifier: TaskTokenVerifier, mcpUrl: string, notes: Map<string, string>, { json = false } = {}) {
  const app = createMcpExpressApp({ host: '127.0.0.1' })
  const gate = requireBearerAuth({ verifier: toMcpSdkV1Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
  // The tool step: a tools/call the token does not name never reaches the server; tools/list
  // answers list only the token's tools.
  app.all('/mcp', gate, authorizeToolCalls(verifier), async (req, res) => {
    const server = notesServer(notes)
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: json })
    res.on('close', () => {
      void transport.close()
      void server.close()
    })
    await server.connect(transport)
    await transport.handleRequest(req, res, req.body)
  })
  return app
}
