import { createServer } from 'node:http'
import { getRequestListener } from '@hono/node-server'
import { createMcpHandler, McpServer, requireBearerAuth } from '@modelcontextprotocol/server'
import { z } from 'zod'
import { createTaskTokenVerifier, protectedResourceMetadataResponse, type TaskAuthInfo } from '@taskpass/verifier'
import { authorizeToolCalls, toMcpSdkV2Verifier } from '@taskpass/verifier/mcp-sdk-v2'

const issuer = process.env.TASKPASS_ISSUER ?? 'https://taskpass.example.com'
const verifier = createTaskTokenVerifier({
  issuer,
  resource: process.env.NOTES_MCP_URL ?? 'https://notes.example.com/mcp', // exactly as registered at the broker
  requiredScopes: ['notes:read'],
  dpop: 'allowed',
  revocation: { mode: 'feed', feedUrl: `${issuer}/revocations`, credentials: { clientId: 'notes-mcp', clientSecret: process.env.NOTES_MCP_SECRET! } },
})
await verifier.ready()
const gate = requireBearerAuth({
  verifier: toMcpSdkV2Verifier(verifier), // throws OAuthError(InvalidToken | InsufficientScope)
  requiredScopes: ['notes:read'],
  resourceMetadataUrl: verifier.resourceMetadataUrl,
  expectedResource: new URL(verifier.resource),
})
const toolStep = authorizeToolCalls(verifier)
const mcp = createMcpHandler(() => {
  const server = new McpServer({ name: 'notes', version: '2.0.0' })
  server.registerTool('read_note', { inputSchema: z.object({ name: z.string() }) }, async ({ name }, ctx) => ({
    content: [{ type: 'text', text: `note ${name} for ${(ctx.http?.authInfo as TaskAuthInfo | undefined)?.extra.sub_id.sub}` }],
  }))
  return server
})
const metadata = verifier.metadata()

export async function fetch(request: Request): Promise<Response> {
  const doc = protectedResourceMetadataResponse(request, metadata)
  if (doc) return doc
  const auth = await gate(request)
  if (auth instanceof Response) return auth // 401/403 with WWW-Authenticate
  const refused = await toolStep(request, auth) // a tool the token does not name: answered here
  if (refused) return refused
  return toolStep.respond(request, await mcp.fetch(request, { authInfo: auth })) // tools/list narrowed
}

// On Node (Workers, Deno and Bun take `fetch` as it is):
const port = Number(new URL(verifier.resource).port || 8788)
createServer(getRequestListener(fetch)).listen(port, '127.0.0.1', () => console.log(`notes MCP server (SDK v2) at ${verifier.resource}`))
