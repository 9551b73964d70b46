/**
 * The sample of docs/authzen.md: an MCP server (official SDK v1 on Express) that accepts taskpass
 * task tokens and asks the broker's AuthZEN PDP before every tool call. test/mcp-authzen-e2e.test.ts
 * runs it against a real broker.
 */
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { z } from 'zod'
import { createTaskTokenVerifier, protectedResourceMetadataMiddleware, type TaskTokenVerifier } from '@taskpass/verifier'
import { authorizeToolCalls, toMcpSdkV1Verifier } from '@taskpass/verifier/mcp-sdk-v1'

/** The verifier: tokens for `mcpUrl` from `broker`; the one resource credential serves the feed and the PDP. */
export function notesVerifier(broker: string, mcpUrl: string, credentials: { clientId: string; clientSecret: string }): TaskTokenVerifier {
  return createTaskTokenVerifier({
    issuer: broker,
    resource: mcpUrl,
    requiredScopes: ['notes:read'],
    dpop: 'allowed',
    revocation: { mode: 'feed', feedUrl: `${broker}/revocations`, credentials },
    // Optional: decisions are reused for 2 s per (token, tool) by default.
    authorization: { cacheMs: 2000 },
  })
}

/** The MCP server: `read_note` and `delete_note`; the broker decides which one a task may call. */
export function notesApp(verifier: TaskTokenVerifier, mcpUrl: string, notes: Map<string, string>) {
  const app = createMcpExpressApp({ host: '127.0.0.1' })
  app.use(protectedResourceMetadataMiddleware(verifier.metadata({ resourceName: 'Notes' })))
  const gate = requireBearerAuth({ verifier: toMcpSdkV1Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
  // The SDK gate verifies the token; authorizeToolCalls then asks the PDP about every tools/call.
  app.all('/mcp', gate, authorizeToolCalls(verifier), async (req, res) => {
    const server = new McpServer({ name: 'notes', version: '1.0.0' })
    server.registerTool('read_note', { inputSchema: { name: z.string() } }, async ({ name }) => ({ content: [{ type: 'text', text: notes.get(name) ?? '(empty)' }] }))
    server.registerTool('delete_note', { inputSchema: { name: z.string() } }, async ({ name }) => {
      notes.delete(name)
      return { content: [{ type: 'text', text: `deleted ${name}` }] }
    })
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    res.on('close', () => {
      void transport.close()
      void server.close()
    })
    await server.connect(transport)
    // req.body: the body the tool-call check read is the one the transport handles.
    await transport.handleRequest(req, res, req.body)
  })
  return app
}
