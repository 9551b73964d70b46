/**
 * The hono sample of docs/mcp-integration.md ("Tools and the verifier kit"): the kit's
 * `taskTokenAuth` with the tool step, in front of SDK v1's web-standard transport.
 * test/mcp-tools.test.ts runs it against a real broker.
 */
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js'
import { Hono } from 'hono'
import type { TaskTokenVerifier } from '@taskpass/verifier'
import { taskTokenAuth, type TaskTokenVariables } from '@taskpass/verifier/hono'
import { notesServer } from './mcp-tools-sdk-v1.js'

export function notesHonoApp(verifier: TaskTokenVerifier, notes: Map<string, string>) {
  const app = new Hono<{ Variables: TaskTokenVariables }>()
  // A refused tools/call is a 403 insufficient_scope naming the tool; tools/list answers are narrowed.
  app.all('/mcp', taskTokenAuth(verifier, { authorizeToolCalls: true }), async (c) => {
    const server = notesServer(notes)
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    await server.connect(transport)
    return transport.handleRequest(c.req.raw, { authInfo: c.get('taskAuth') })
  })
  return app
}
