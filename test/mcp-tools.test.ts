/**
 * Tools in the token, end to end with the official MCP SDKs: a task that declared
 * `tools: ["read_note"]` gets a token naming that tool (RFC 9396 `mcp_tools`); an MCP server
 * exposing `read_note` and `write_note` behind the verifier kit's tool step (the samples of
 * docs/mcp-integration.md, run as they are) runs the one, refuses the other before it runs, and
 * lists only the one. A scope-only token sees and calls both. SDK v1 on Express (SSE and JSON
 * answers, stateless and with sessions), SDK v2 web-standard (JSON and SSE), and hono. The broker
 * on a real 127.0.0.1 port; only loopback is used; nothing of ours is mocked.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { getRequestListener } from '@hono/node-server'
import { Client as ClientV2, ProtocolError, StreamableHTTPClientTransport as TransportV2 } from '@modelcontextprotocol/client'
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as TransportV1, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { requireBearerAuth as requireBearerAuthV1 } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { isInitializeRequest, McpError } from '@modelcontextprotocol/sdk/types.js'
import type { TaskTokenVerifier } from '@taskpass/verifier'
import { authorizeToolCalls, toMcpSdkV1Verifier } from '@taskpass/verifier/mcp-sdk-v1'
import { notesHonoApp } from '../docs/examples/mcp-tools-hono.js'
import { notesAppV1, notesServer } from '../docs/examples/mcp-tools-sdk-v1.js'
import { notesHandlerV2 } from '../docs/examples/mcp-tools-sdk-v2.js'
import { pdpVerifier, tokenToolsVerifier } from '../docs/examples/mcp-tools-verifier.js'
import { NOTES_SECRET, openTask, startTestServer, testKeys, type TestBroker } from './harness.js'

/** Which sample serves: SDK v1 answering SSE or JSON, v1 with sessions, SDK v2 (its stateless 2025-era leg answers SSE), hono. */
type Kind = 'v1-sse' | 'v1-json' | 'v1-session' | 'v2' | 'hono'
type Broker = TestBroker & { url: string; stop(): Promise<void> }

const SCOPES = ['notes:read', 'notes:write']
const RESOURCE_CLIENT = { clientId: 'tools-mcp', clientSecret: NOTES_SECRET }

/** SDK v1 with sessions: one transport per session, kept between requests (the SDK's own pattern). */
function sessionAppV1(verifier: TaskTokenVerifier, mcpUrl: string, notes: Map<string, string>) {
  const app = createMcpExpressApp({ host: '127.0.0.1' })
  const transports = new Map<string, StreamableHTTPServerTransport>()
  const gate = requireBearerAuthV1({ verifier: toMcpSdkV1Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
  app.all('/mcp', gate, authorizeToolCalls(verifier), async (req, res) => {
    const id = req.headers['mcp-session-id']
    let transport = typeof id === 'string' ? transports.get(id) : undefined
    if (!transport && req.method === 'POST' && isInitializeRequest(req.body)) {
      transport = new StreamableHTTPServerTransport({ sessionIdGenerator: randomUUID, onsessioninitialized: (sid) => void transports.set(sid, transport!) })
      await notesServer(notes).connect(transport)
    }
    if (!transport) return void res.status(400).json({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'no session' } })
    await transport.handleRequest(req, res, req.body)
  })
  return { app, close: () => Promise.all([...transports.values()].map((t) => t.close())) }
}

interface Stack {
  kind: Kind
  broker: Broker
  mcpUrl: string
  verifier: TaskTokenVerifier
  notes: Map<string, string>
  stop(): Promise<void>
}

async function startStack(kind: Kind, { pdp = false } = {}): Promise<Stack> {
  let listener: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => { res.writeHead(503).end() }
  const http: HttpServer = createServer((req, res) => listener(req, res))
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()))
  const mcpUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`
  const keys = await testKeys()
  const broker = await startTestServer({
    config: (c) => ({
      ...c,
      resources: [...(c.resources ?? []), { uri: mcpUrl, scopes: SCOPES, credential: { clientId: RESOURCE_CLIENT.clientId, secretHash: keys.hashes.notes } }],
      workloads: (c.workloads ?? []).map((w) => (w.id === 'agent-a' ? { ...w, grants: [...(w.grants ?? []), { resource: mcpUrl, scopes: SCOPES }] } : w)),
    }),
  })
  const verifier = pdp ? pdpVerifier(broker.url, mcpUrl, RESOURCE_CLIENT) : tokenToolsVerifier(broker.url, mcpUrl)
  await verifier.ready()
  const notes = new Map([['todo', 'buy milk']])
  let closeApp = async () => {}
  if (kind === 'v1-sse' || kind === 'v1-json') listener = notesAppV1(verifier, mcpUrl, notes, { json: kind === 'v1-json' })
  else if (kind === 'v1-session') {
    const s = sessionAppV1(verifier, mcpUrl, notes)
    listener = s.app
    closeApp = async () => void (await s.close())
  } else if (kind === 'hono') listener = getRequestListener(notesHonoApp(verifier, notes).fetch)
  else listener = getRequestListener(notesHandlerV2(verifier, mcpUrl, notes))
  return {
    kind,
    broker,
    mcpUrl,
    verifier,
    notes,
    async stop() {
      await closeApp()
      await verifier.close()
      http.closeAllConnections()
      await new Promise<void>((r) => http.close(() => r()))
      await broker.stop()
    },
  }
}

/** A task token; `tools`: what the task declares (none: a scope-only token). */
async function taskToken(s: Stack, tools?: string[]): Promise<string> {
  const opened = await openTask(s.broker, { purpose: 'tidy my notes', resources: [{ resource: s.mcpUrl, scopes: SCOPES, ...(tools ? { tools } : {}) }] })
  assert.equal(opened.status, 201, await opened.clone().text())
  const taskId = ((await opened.json()) as { task_id: string }).task_id
  const res = await s.broker.exchange({ resource: s.mcpUrl, scope: SCOPES.join(' '), task_id: taskId })
  assert.equal(res.status, 200, await res.clone().text())
  return ((await res.json()) as { access_token: string }).access_token
}

interface Session {
  callTool(name: string, args: Record<string, string>): Promise<string>
  listTools(): Promise<string[]>
  /** The content type of every answer to a POST the client sent. */
  contentTypes: string[]
  close(): Promise<void>
}

/** An official SDK client of the stack's version (v2 for the v2 samples, v1 otherwise), connected with a static token. */
async function connect(s: Stack, token: string): Promise<Session> {
  const contentTypes: string[] = []
  const recording = (async (url: string | URL | Request, init?: RequestInit) => {
    const res = await fetch(url, init)
    if (init?.method === 'POST') contentTypes.push(String(res.headers.get('content-type')).split(';')[0]!)
    return res
  }) as typeof fetch
  type ToolResult = { content: { type: string; text: string }[] }
  if (s.kind === 'v2') {
    const client = new ClientV2({ name: 'agent', version: '2.0.0' })
    await client.connect(new TransportV2(new URL(s.mcpUrl), { authProvider: { token: async () => token }, fetch: recording }))
    return {
      callTool: async (name, args) => ((await client.callTool({ name, arguments: args })) as ToolResult).content[0]!.text,
      listTools: async () => (await client.listTools()).tools.map((t) => t.name),
      contentTypes,
      close: () => client.close(),
    }
  }
  const client = new ClientV1({ name: 'agent', version: '1.0.0' })
  await client.connect(new TransportV1(new URL(s.mcpUrl), { requestInit: { headers: { Authorization: `Bearer ${token}` } }, fetch: recording }))
  return {
    callTool: async (name, args) => ((await client.callTool({ name, arguments: args })) as ToolResult).content[0]!.text,
    listTools: async () => (await client.listTools()).tools.map((t) => t.name),
    contentTypes,
    close: () => client.close(),
  }
}

async function withSession<T>(s: Stack, token: string, run: (c: Session) => Promise<T>): Promise<T> {
  const c = await connect(s, token)
  try {
    return await run(c)
  } finally {
    await c.close()
  }
}

/** A raw JSON-RPC POST (stateless servers answer without an initialize first). */
function rawPost(s: Stack, token: string, body: unknown): Promise<Response> {
  return fetch(s.mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  })
}

/** The JSON-RPC messages of a response: a JSON body, or the `data:` of each SSE event. */
async function messagesOf(res: Response): Promise<unknown[]> {
  const text = await res.text()
  if (String(res.headers.get('content-type')).startsWith('text/event-stream')) {
    return text.split(/\n\n/).flatMap((event) => {
      const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim())
      return data.length > 0 && data.join('') !== '' ? [JSON.parse(data.join('\n')) as unknown] : []
    })
  }
  const parsed = JSON.parse(text) as unknown
  return Array.isArray(parsed) ? parsed : [parsed]
}

/** The refusal an SDK client raises for a tool the token does not name: a JSON-RPC -32001 naming the tool. */
function assertToolRefused(s: Stack, tool: string) {
  return (e: unknown) => {
    if (s.kind === 'v2') assert.ok(e instanceof ProtocolError, `a ProtocolError, got ${String(e)}`)
    else assert.ok(e instanceof McpError, `an McpError, got ${String(e)}`)
    assert.equal((e as { code: number }).code, -32001)
    assert.match((e as Error).message, new RegExp(`tool "${tool}" is not permitted for this task \\(tool_not_in_token\\)`))
    return true
  }
}

const toolCall = (id: number, name: string, args: Record<string, string>) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } })

for (const kind of ['v1-sse', 'v1-json', 'v1-session', 'v2'] as const) {
  describe(`tools in the token, ${kind} sample behind the kit's tool step (no PDP configured)`, () => {
    let s: Stack
    before(async () => { s = await startStack(kind) })
    after(() => s.stop())

    it('the token names read_note: it runs; write_note is refused before it runs, the SDK error naming it; tools/list lists read_note only', async () => {
      const token = await taskToken(s, ['read_note'])
      assert.deepEqual((await s.verifier.verifyAccessToken(token)).extra.tools, ['read_note'])
      await withSession(s, token, async (c) => {
        assert.equal(await c.callTool('read_note', { name: 'todo' }), 'buy milk')
        await assert.rejects(c.callTool('write_note', { name: 'todo', text: 'pwned' }), assertToolRefused(s, 'write_note'))
        assert.equal(s.notes.get('todo'), 'buy milk', 'the write_note body never ran')
        const before = c.contentTypes.length
        assert.deepEqual(await c.listTools(), ['read_note'])
        const listedAs = c.contentTypes[before]
        const expected = kind === 'v1-json' ? 'application/json' : 'text/event-stream'
        assert.equal(listedAs, expected, `the tools/list answer was ${expected}`)
      })
    })

    it('a scope-only token (the task declared no tools): both are listed and both run', async () => {
      const token = await taskToken(s)
      assert.equal((await s.verifier.verifyAccessToken(token)).extra.tools, undefined)
      await withSession(s, token, async (c) => {
        assert.deepEqual((await c.listTools()).sort(), ['read_note', 'write_note'])
        assert.equal(await c.callTool('write_note', { name: 'plan', text: 'ship it' }), 'saved plan')
        assert.equal(await c.callTool('read_note', { name: 'plan' }), 'ship it')
      })
    })
  })
}

for (const kind of ['v1-sse', 'v1-json'] as const) {
  describe(`raw JSON-RPC to the ${kind} sample: batches and the bytes of the answer`, () => {
    let s: Stack
    before(async () => { s = await startStack(kind) })
    after(() => s.stop())

    it('a batch with one refused call is refused whole: every request is answered with an error, none runs', async () => {
      const token = await taskToken(s, ['read_note'])
      const res = await rawPost(s, token, [toolCall(1, 'read_note', { name: 'todo' }), toolCall(2, 'write_note', { name: 'todo', text: 'pwned' })])
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('content-type'), 'application/json')
      const body = (await res.json()) as { id: number; error: { code: number; message: string; data?: unknown } }[]
      assert.deepEqual(body.map((m) => [m.id, m.error.code]), [[1, -32001], [2, -32001]])
      assert.equal(body[0]!.error.message, 'not run: tool "write_note" is not permitted for this task (tool_not_in_token) in the same batch')
      assert.deepEqual(body[1]!.error, { code: -32001, message: 'tool "write_note" is not permitted for this task (tool_not_in_token)', data: { tool: 'write_note', reason: 'tool_not_in_token' } })
      assert.equal(s.notes.get('todo'), 'buy milk')
    })

    it('tools/list is filtered in the answer whatever its framing; an answer to another request is passed unchanged', async () => {
      const token = await taskToken(s, ['read_note'])
      const res = await rawPost(s, token, { jsonrpc: '2.0', id: 'list-1', method: 'tools/list', params: {} })
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('content-type'), kind === 'v1-json' ? 'application/json' : 'text/event-stream')
      const length = res.headers.get('content-length')
      const [answer] = (await messagesOf(res.clone())) as { id: string; result: { tools: { name: string }[] } }[]
      assert.equal(answer!.id, 'list-1')
      assert.deepEqual(answer!.result.tools.map((t) => t.name), ['read_note'])
      if (length !== null) assert.equal(Number(length), Buffer.byteLength(await res.text()), 'content-length is the filtered length')
      // A tools/call answer whose id is not a tools/list id is left alone (its text names both tools).
      const other = await rawPost(s, token, toolCall(9, 'read_note', { name: 'todo' }))
      assert.deepEqual(((await messagesOf(other)) as { result: unknown }[])[0]!.result, { content: [{ type: 'text', text: 'buy milk' }] })
      // A scope-only token's list is untouched.
      const all = await rawPost(s, await taskToken(s), { jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} })
      const [full] = (await messagesOf(all)) as { result: { tools: { name: string }[] } }[]
      assert.deepEqual(full!.result.tools.map((t) => t.name).sort(), ['read_note', 'write_note'])
    })
  })
}

describe('hono sample (taskTokenAuth with the tool step, SDK v1 web-standard transport)', () => {
  let s: Stack
  before(async () => { s = await startStack('hono') })
  after(() => s.stop())

  it('runs read_note, lists read_note only; write_note → 403 insufficient_scope naming the tool, before it runs', async () => {
    const token = await taskToken(s, ['read_note'])
    await withSession(s, token, async (c) => {
      assert.equal(await c.callTool('read_note', { name: 'todo' }), 'buy milk')
      assert.deepEqual(await c.listTools(), ['read_note'])
      await assert.rejects(c.callTool('write_note', { name: 'todo', text: 'pwned' }), (e: unknown) => {
        assert.ok(e instanceof StreamableHTTPError, String(e))
        assert.equal(e.code, 403)
        assert.match(e.message, /tool 'write_note' is not permitted for this task \(tool_not_in_token\)/)
        return true
      })
    })
    const raw = await rawPost(s, token, toolCall(7, 'write_note', { name: 'todo', text: 'pwned' }))
    assert.equal(raw.status, 403)
    assert.deepEqual(await raw.json(), { error: 'insufficient_scope', error_description: "tool 'write_note' is not permitted for this task (tool_not_in_token)" })
    assert.match(String(raw.headers.get('www-authenticate')), /^Bearer error="insufficient_scope", error_description="tool 'write_note' is not permitted for this task \(tool_not_in_token\)"/)
    assert.equal(s.notes.get('todo'), 'buy milk', 'the write_note body never ran')
  })
})

describe('with a PDP configured: the token is checked first, then the PDP', () => {
  let s: Stack
  before(async () => { s = await startStack('v1-sse', { pdp: true }) })
  after(() => s.stop())

  const toolDecisions = async () => ((await s.broker.rawQuery("select count(*) as n from audit_events where action = 'tool.call'"))[0] as { n: number }).n

  it('a tool the token names is asked of the PDP (an audited decision); one it does not name is refused without asking', async () => {
    const token = await taskToken(s, ['read_note'])
    await withSession(s, token, async (c) => {
      const before = await toolDecisions()
      assert.equal(await c.callTool('read_note', { name: 'todo' }), 'buy milk')
      assert.equal(await toolDecisions(), before + 1, 'the PDP decided read_note')
      await assert.rejects(c.callTool('write_note', { name: 'todo', text: 'pwned' }), assertToolRefused(s, 'write_note'))
      assert.equal(await toolDecisions(), before + 1, 'the PDP was not asked about write_note')
      assert.deepEqual(await c.listTools(), ['read_note'])
    })
  })
})

describe('docs/mcp-integration.md: its samples', () => {
  const page = readFileSync(new URL('../docs/mcp-integration.md', import.meta.url), 'utf8')
  const blocks = [...page.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!)

  it('the claim shown is what the broker mints for a task that declared read_note (its resource in the example’s place)', async () => {
    const s = await startStack('v1-sse')
    try {
      const token = await taskToken(s, ['read_note'])
      const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>
      const [shown] = [...page.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]!.replaceAll('https://notes.example.com/mcp', s.mcpUrl)) as Record<string, unknown>)
      assert.deepEqual(shown, { authorization_details: claims.authorization_details })
    } finally {
      await s.stop()
    }
  })

  it('has samples, and every one is a file under docs/examples that this test runs, shown as it is', () => {
    assert.ok(blocks.length >= 4)
    const files = ['mcp-tools-verifier.ts', 'mcp-tools-sdk-v1.ts', 'mcp-tools-sdk-v2.ts', 'mcp-tools-hono.ts'].map((f) => readFileSync(new URL(`../docs/examples/${f}`, import.meta.url), 'utf8'))
    for (const block of blocks) assert.ok(files.some((f) => f.includes(block)), `the sample is in a docs/examples file verbatim:\n${block.slice(0, 200)}`)
  })
})
