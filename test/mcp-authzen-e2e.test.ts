/**
 * End to end, tool calls checked through the broker's AuthZEN PDP (docs/authzen.md): the broker
 * on a real 127.0.0.1 port with a Cedar policy forbidding one tool; an MCP server built with the
 * official SDK (v1 on Express, v2 web-standard, and v1's web-standard transport behind the hono
 * adapter) protected by @taskpass/verifier with tool checks on; official SDK clients calling an
 * allowed tool (it runs) and the forbidden one (it never runs; the client shows an error naming
 * the tool). Only loopback is used; nothing of ours is mocked.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { getRequestListener } from '@hono/node-server'
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from '@modelcontextprotocol/client'
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as TransportV1, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { requireBearerAuth as requireBearerAuthV1 } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { McpServer as McpServerV1 } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js'
import { McpError } from '@modelcontextprotocol/sdk/types.js'
import { createMcpHandler, McpServer as McpServerV2, requireBearerAuth as requireBearerAuthV2 } from '@modelcontextprotocol/server'
import { Hono } from 'hono'
import { z } from 'zod'
import { createTaskTokenVerifier, type TaskAuthInfo, type TaskTokenVerifier } from '@taskpass/verifier'
import { taskTokenAuth, type TaskTokenVariables } from '@taskpass/verifier/hono'
import { authorizeToolCalls as authorizeToolCallsV1, toMcpSdkV1Verifier } from '@taskpass/verifier/mcp-sdk-v1'
import { authorizeToolCalls as authorizeToolCallsV2, toMcpSdkV2Verifier } from '@taskpass/verifier/mcp-sdk-v2'
import { notesApp, notesVerifier } from '../docs/examples/authzen-mcp-server.js'
import { NOTES_SECRET, openTask, startTestServer, testKeys, type TestBroker } from './harness.js'

type Kind = 'v1' | 'v2' | 'hono' | 'docs'
type Broker = TestBroker & { url: string; stop(): Promise<void> }

const SCOPES = ['notes:read', 'notes:write']
const RESOURCE_CLIENT = { clientId: 'authzen-mcp', clientSecret: NOTES_SECRET }
const dir = mkdtempSync(join(tmpdir(), 'taskpass-authzen-e2e-'))

/** How often each tool body actually ran. */
type Runs = Map<string, number>

function text(runs: Runs, name: string, auth: TaskAuthInfo | undefined): { content: { type: 'text'; text: string }[] } {
  runs.set(name, (runs.get(name) ?? 0) + 1)
  return { content: [{ type: 'text', text: `${name} ran for task ${auth?.extra.task_id ?? '?'}` }] }
}

function serverV1(runs: Runs): McpServerV1 {
  const server = new McpServerV1({ name: 'notes', version: '1.0.0' })
  for (const name of ['read_note', 'delete_note']) server.registerTool(name, { inputSchema: { name: z.string() } }, async (_args, extra) => text(runs, name, extra.authInfo as TaskAuthInfo | undefined))
  return server
}

function serverV2(runs: Runs): McpServerV2 {
  const server = new McpServerV2({ name: 'notes', version: '2.0.0' })
  for (const name of ['read_note', 'delete_note']) server.registerTool(name, { inputSchema: z.object({ name: z.string() }) }, async (_args, ctx) => text(runs, name, ctx.http?.authInfo as TaskAuthInfo | undefined))
  return server
}

/** SDK v1 on Express: the SDK's requireBearerAuth, then the kit's tool-call check, then the transport. */
function listenerV1(verifier: TaskTokenVerifier, mcpUrl: string, runs: Runs) {
  const app = createMcpExpressApp({ host: '127.0.0.1' })
  const gate = requireBearerAuthV1({ verifier: toMcpSdkV1Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
  app.all('/mcp', gate, authorizeToolCallsV1(verifier), async (req, res) => {
    const server = serverV1(runs)
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    res.on('close', () => {
      void transport.close()
      void server.close()
    })
    await server.connect(transport)
    await transport.handleRequest(req, res, req.body)
  })
  return app
}

/** SDK v2 web-standard: requireBearerAuth, the kit's tool-call check, createMcpHandler. */
function listenerV2(verifier: TaskTokenVerifier, mcpUrl: string, runs: Runs) {
  const gate = requireBearerAuthV2({ verifier: toMcpSdkV2Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
  const check = authorizeToolCallsV2(verifier)
  const handler = createMcpHandler(() => serverV2(runs))
  return getRequestListener(async (request: Request) => {
    const auth = await gate(request)
    if (auth instanceof Response) return auth
    return (await check(request, auth)) ?? handler.fetch(request, { authInfo: auth })
  })
}

/** hono: the kit's taskTokenAuth with tool checks, in front of SDK v1's web-standard transport. */
function listenerHono(verifier: TaskTokenVerifier, runs: Runs) {
  const app = new Hono<{ Variables: TaskTokenVariables }>()
  app.all('/mcp', taskTokenAuth(verifier, { authorizeToolCalls: true }), async (c) => {
    const server = serverV1(runs)
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    await server.connect(transport)
    return transport.handleRequest(c.req.raw, { authInfo: c.get('taskAuth') })
  })
  return getRequestListener(app.fetch)
}

interface Stack {
  kind: Kind
  broker: Broker
  mcpUrl: string
  runs: Runs
  notes: Map<string, string>
  stop(): Promise<void>
}

async function startStack(kind: Kind): Promise<Stack> {
  let listener: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => { res.writeHead(503).end() }
  const http: HttpServer = createServer((req, res) => listener(req, res))
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()))
  const mcpUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`
  const policyFile = join(dir, `${kind}.cedar`)
  writeFileSync(policyFile, `@id("no-delete-note")\nforbid (principal, action == Taskpass::Action::"call_tool", resource == Taskpass::Tool::"${mcpUrl}#delete_note");\n`)

  const keys = await testKeys()
  const broker = await startTestServer({
    config: (c) => ({
      ...c,
      resources: [...(c.resources ?? []), { uri: mcpUrl, scopes: SCOPES, credential: { clientId: RESOURCE_CLIENT.clientId, secretHash: keys.hashes.notes } }],
      workloads: (c.workloads ?? []).map((w) => (w.id === 'agent-a' ? { ...w, grants: [...(w.grants ?? []), { resource: mcpUrl, scopes: SCOPES }] } : w)),
      policies: { file: policyFile },
    }),
  })
  // The PDP is asked with the credential the verifier already has for the feed.
  const verifier =
    kind === 'docs'
      ? notesVerifier(broker.url, mcpUrl, RESOURCE_CLIENT)
      : createTaskTokenVerifier({
          issuer: broker.url,
          resource: mcpUrl,
          requiredScopes: ['notes:read'],
          dpop: 'allowed',
          revocation: { mode: 'feed', feedUrl: `${broker.url}/revocations`, credentials: RESOURCE_CLIENT, pollIntervalMs: 250 },
        })
  await verifier.ready()
  const runs: Runs = new Map()
  const notes = new Map([['todo', 'buy milk']])
  listener =
    kind === 'v1' ? listenerV1(verifier, mcpUrl, runs)
    : kind === 'v2' ? listenerV2(verifier, mcpUrl, runs)
    : kind === 'hono' ? listenerHono(verifier, runs)
    : notesApp(verifier, mcpUrl, notes)
  return {
    kind,
    broker,
    mcpUrl,
    runs,
    notes,
    async stop() {
      await verifier.close()
      http.closeAllConnections()
      await new Promise<void>((r) => http.close(() => r()))
      await broker.stop()
    },
  }
}

async function taskToken(s: Stack, tools?: string[]): Promise<string> {
  const opened = await openTask(s.broker, { purpose: 'e2e: tidy my notes', resources: [{ resource: s.mcpUrl, scopes: SCOPES, ...(tools ? { tools } : {}) }] })
  assert.equal(opened.status, 201, await opened.clone().text())
  const taskId = ((await opened.json()) as { task_id: string }).task_id
  const res = await s.broker.exchange({ resource: s.mcpUrl, scope: SCOPES.join(' '), task_id: taskId })
  assert.equal(res.status, 200, await res.clone().text())
  return ((await res.json()) as { access_token: string }).access_token
}

/** Connects an official SDK client with a static task token and calls one tool. */
async function callTool(s: Stack, token: string, name: string): Promise<string> {
  if (s.kind === 'v2') {
    const client = new ClientV2({ name: 'e2e-agent', version: '2.0.0' })
    await client.connect(new TransportV2(new URL(s.mcpUrl), { authProvider: { token: async () => token } }))
    try {
      const result = (await client.callTool({ name, arguments: { name: 'todo' } })) as { content: { text: string }[] }
      return result.content[0]!.text
    } finally {
      await client.close()
    }
  }
  const client = new ClientV1({ name: 'e2e-agent', version: '1.0.0' })
  await client.connect(new TransportV1(new URL(s.mcpUrl), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }))
  try {
    const result = (await client.callTool({ name, arguments: { name: 'todo' } })) as { content: { text: string }[] }
    return result.content[0]!.text
  } finally {
    await client.close()
  }
}

async function lastToolAudit(s: Stack): Promise<Record<string, unknown>> {
  return (await s.broker.rawQuery("select * from audit_events where action = 'tool.call' order by id desc limit 1"))[0] as Record<string, unknown>
}

for (const kind of ['v1', 'v2'] as const) {
  describe(`MCP SDK ${kind} server with tool checks on`, () => {
    let s: Stack
    before(async () => { s = await startStack(kind) })
    after(() => s.stop())

    it('runs an allowed tool; the PDP decision is audited as an allow', async () => {
      assert.match(await callTool(s, await taskToken(s), 'read_note'), /^read_note ran for task /)
      assert.equal(s.runs.get('read_note'), 1)
      const row = await lastToolAudit(s)
      assert.equal(row.decision, 'allow')
      assert.equal(row.resource, s.mcpUrl)
    })

    it('refuses the forbidden tool before it runs: the SDK client raises a JSON-RPC error naming the tool', async () => {
      const token = await taskToken(s)
      await assert.rejects(callTool(s, token, 'delete_note'), (e: unknown) => {
        const err = e as { code?: unknown; message?: unknown }
        if (kind === 'v1') assert.ok(e instanceof McpError, `an McpError, got ${String(e)}`)
        assert.equal(err.code, -32001)
        assert.match(String(err.message), /tool "delete_note" is not permitted for this task \(policy_denied\)/)
        return true
      })
      assert.equal(s.runs.get('delete_note'), undefined, 'the tool body never ran')
      const row = await lastToolAudit(s)
      assert.equal(row.decision, 'deny')
      assert.equal(row.policies, 'no-delete-note')
      // The same token still runs what it may.
      assert.match(await callTool(s, token, 'read_note'), /^read_note ran/)
    })

    it("a tool outside the task's declared tools is refused the same way, by the kit from the token, without asking the PDP", async () => {
      const token = await taskToken(s, ['delete_note'])
      const decided = await s.broker.count('audit_events')
      const ran = s.runs.get('read_note')
      await assert.rejects(callTool(s, token, 'read_note'), /tool "read_note" is not permitted for this task \(tool_not_in_token\)/)
      assert.equal(s.runs.get('read_note'), ran, 'the tool body never ran')
      assert.equal(await s.broker.count('audit_events'), decided, 'the PDP was not asked (no tool.call decision audited)')
    })
  })
}

describe('hono adapter with tool checks on (SDK v1 web-standard transport behind it)', () => {
  let s: Stack
  before(async () => { s = await startStack('hono') })
  after(() => s.stop())

  it('runs an allowed tool; refuses the forbidden one at the HTTP level: 403 insufficient_scope naming the tool', async () => {
    const token = await taskToken(s)
    assert.match(await callTool(s, token, 'read_note'), /^read_note ran/)
    await assert.rejects(callTool(s, token, 'delete_note'), (e: unknown) => {
      assert.ok(e instanceof StreamableHTTPError, String(e))
      assert.equal(e.code, 403)
      assert.match(e.message, /insufficient_scope/)
      assert.match(e.message, /tool 'delete_note' is not permitted for this task \(policy_denied\)/)
      return true
    })
    assert.equal(s.runs.get('delete_note'), undefined)
    const raw = await fetch(s.mcpUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'delete_note', arguments: { name: 'todo' } } }),
    })
    assert.equal(raw.status, 403)
    assert.match(String(raw.headers.get('www-authenticate')), /^Bearer error="insufficient_scope", error_description="tool 'delete_note' is not permitted for this task \(policy_denied\)"/)
  })
})

describe('the docs/authzen.md sample server', () => {
  let s: Stack
  before(async () => { s = await startStack('docs') })
  after(() => s.stop())

  it('reads a note; the forbidden delete_note is refused with an error naming the tool, and the note survives', async () => {
    const token = await taskToken(s)
    assert.equal(await callTool(s, token, 'read_note'), 'buy milk')
    await assert.rejects(callTool(s, token, 'delete_note'), /MCP error -32001: tool "delete_note" is not permitted for this task \(policy_denied\)/)
    assert.equal(s.notes.get('todo'), 'buy milk')
  })
})
