import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { z } from 'zod'
import { createTaskTokenVerifier, protectedResourceMetadataMiddleware, type TaskAuthInfo } from '@taskpass/verifier'
import { authorizeToolCalls, toMcpSdkV1Verifier } from '@taskpass/verifier/mcp-sdk-v1'

const issuer = process.env.TASKPASS_ISSUER ?? 'https://taskpass.example.com'
const resource = process.env.NOTES_MCP_URL ?? 'https://notes.example.com/mcp' // exactly as registered at the broker
const verifier = createTaskTokenVerifier({
  issuer,
  resource,
  requiredScopes: ['notes:read'],
  dpop: 'allowed',
  revocation: {
    mode: 'feed',
    feedUrl: `${issuer}/revocations`,
    credentials: { clientId: process.env.NOTES_MCP_CLIENT_ID ?? 'notes-mcp', clientSecret: process.env.NOTES_MCP_SECRET! },
  },
})
await verifier.ready()

const app = createMcpExpressApp({ host: '127.0.0.1' })
app.use(protectedResourceMetadataMiddleware(verifier.metadata())) // /.well-known/oauth-protected-resource/mcp
app.all(
  '/mcp',
  requireBearerAuth({
    verifier: toMcpSdkV1Verifier(verifier), // throws the SDK's InvalidTokenError, never a plain Error
    requiredScopes: ['notes:read'],
    resourceMetadataUrl: verifier.resourceMetadataUrl,
    expectedResource: new URL(resource),
  }),
  authorizeToolCalls(verifier), // a tool the token does not name is refused before it runs; tools/list narrowed
  async (req, res) => {
    const server = new McpServer({ name: 'notes', version: '1.0.0' })
    server.registerTool('read_note', { inputSchema: { name: z.string() } }, async ({ name }, extra) => {
      const { sub_id, task_id } = (extra.authInfo as TaskAuthInfo).extra
      return { content: [{ type: 'text', text: `note ${name} for ${sub_id.sub} at ${sub_id.iss} (task ${task_id})` }] }
    })
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    res.on('close', () => {
      void transport.close()
      void server.close()
    })
    await server.connect(transport)
    await transport.handleRequest(req, res, req.body)
  },
)
app.listen(Number(new URL(resource).port || 8788), '127.0.0.1', () => console.log(`notes MCP server (SDK v1) at ${resource}`))
