/**
 * End to end with the official MCP SDK: the broker on a real 127.0.0.1 port, an MCP server built
 * with SDK v1 (`requireBearerAuth` on Express) or v2 (the web-standard `requireBearerAuth` gate in
 * front of `createMcpHandler`) behind `@taskpass/verifier`, and SDK clients calling its tools with
 * task tokens. Nothing of ours is mocked; only loopback is used.
 */
import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it, type TestContext } from 'node:test'
import { getRequestListener } from '@hono/node-server'
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2, discoverAuthorizationServerMetadata as discoverV2 } from '@modelcontextprotocol/client'
import { discoverAuthorizationServerMetadata as discoverV1, discoverOAuthProtectedResourceMetadata, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js'
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as TransportV1, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { InvalidGrantError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import { requireBearerAuth as requireBearerAuthV1 } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { McpServer as McpServerV1 } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { OAuthMetadataSchema, type OAuthClientInformationMixed, type OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js'
import { createMcpHandler, McpServer as McpServerV2, requireBearerAuth as requireBearerAuthV2 } from '@modelcontextprotocol/server'
import { z } from 'zod'
import { createTaskTokenVerifier, hasScopes, protectedResourceMetadataMiddleware, protectedResourceMetadataResponse, type TaskAuthInfo, type TaskTokenVerifier } from '@taskpass/verifier'
import { toMcpSdkV1Verifier } from '@taskpass/verifier/mcp-sdk-v1'
import { toMcpSdkV2Verifier } from '@taskpass/verifier/mcp-sdk-v2'
import { CALENDAR, JWT_TYPE, NOTES_SECRET, openTask, startTestServer, testKeys, TOKEN_EXCHANGE, type TestBroker } from './harness.js'

type Sdk = 'v1' | 'v2'
type Broker = TestBroker & { url: string; stop(): Promise<void> }

const SCOPES = ['notes:read', 'notes:write']
const RESOURCE_CLIENT = { clientId: 'e2e-mcp', clientSecret: NOTES_SECRET }

// ---------------------------------------------------------------------------------------------
// The MCP server: two tools, `read_note` and `write_note`, that say whose task they ran for.

function describeCaller(auth: TaskAuthInfo | undefined): string {
  return auth ? `user=${auth.extra.sub} agent=${auth.extra.act.sub} task=${auth.extra.task_id}` : 'anonymous'
}

function registerNoteTools(notes: Map<string, string>, register: (name: string, schema: Record<string, z.ZodString>, run: (args: Record<string, string>, auth: TaskAuthInfo | undefined) => string) => void) {
  register('read_note', { name: z.string() }, ({ name }, auth) => `${notes.get(name!) ?? '(empty)'} [${describeCaller(auth)}]`)
  register('write_note', { name: z.string(), text: z.string() }, ({ name, text }, auth) => {
    // Per-tool scope: the gate requires notes:read; writing also needs notes:write.
    if (!hasScopes(auth, ['notes:write'])) throw new Error('notes:write scope required')
    notes.set(name!, text!)
    return `saved ${name} [${describeCaller(auth)}]`
  })
}

function mcpServerV1(notes: Map<string, string>): McpServerV1 {
  const server = new McpServerV1({ name: 'notes', version: '1.0.0' })
  registerNoteTools(notes, (name, schema, run) =>
    server.registerTool(name, { inputSchema: schema }, async (args, extra) => {
      try {
        return { content: [{ type: 'text', text: run(args as Record<string, string>, extra.authInfo as TaskAuthInfo | undefined) }] }
      } catch (e) {
        return { content: [{ type: 'text', text: (e as Error).message }], isError: true }
      }
    }),
  )
  return server
}

function mcpServerV2(notes: Map<string, string>): McpServerV2 {
  const server = new McpServerV2({ name: 'notes', version: '2.0.0' })
  registerNoteTools(notes, (name, schema, run) =>
    server.registerTool(name, { inputSchema: z.object(schema) }, async (args, ctx) => {
      try {
        return { content: [{ type: 'text' as const, text: run(args as Record<string, string>, ctx.http?.authInfo as TaskAuthInfo | undefined) }] }
      } catch (e) {
        return { content: [{ type: 'text' as const, text: (e as Error).message }], isError: true }
      }
    }),
  )
  return server
}

/** SDK v1 on Express: the SDK's own `requireBearerAuth` with our verifier, a stateless transport per request. */
function expressAppV1(verifier: TaskTokenVerifier, mcpUrl: string, notes: Map<string, string>) {
  const app = createMcpExpressApp({ host: '127.0.0.1' })
  app.use(protectedResourceMetadataMiddleware(verifier.metadata({ resourceName: 'Notes (SDK v1)' })))
  const gate = requireBearerAuthV1({ verifier: toMcpSdkV1Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
  app.all('/mcp', gate, async (req, res) => {
    const server = mcpServerV1(notes)
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

/** SDK v2, web-standard: `requireBearerAuth` from @modelcontextprotocol/server, then `createMcpHandler`. */
function fetchHandlerV2(verifier: TaskTokenVerifier, mcpUrl: string, notes: Map<string, string>) {
  const gate = requireBearerAuthV2({ verifier: toMcpSdkV2Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
  const handler = createMcpHandler(() => mcpServerV2(notes))
  const metadata = verifier.metadata({ resourceName: 'Notes (SDK v2)' })
  return async (request: Request): Promise<Response> => {
    const doc = protectedResourceMetadataResponse(request, metadata)
    if (doc) return doc
    if (new URL(request.url).pathname !== '/mcp') return new Response(null, { status: 404 })
    const auth = await gate(request)
    if (auth instanceof Response) return auth
    return handler.fetch(request, { authInfo: auth })
  }
}

interface Stack {
  sdk: Sdk
  broker: Broker
  mcpUrl: string
  verifier: TaskTokenVerifier
  /** Clock time (ms) of each revocation event the MCP server's verifier applied. */
  heard: number[]
  stop(): Promise<void>
}

/** Broker + MCP server. The MCP port is bound first: its URL is the resource the broker registers. */
async function startStack(sdk: Sdk, revocation: 'feed' | 'introspection'): Promise<Stack> {
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
  const heard: number[] = []
  const verifier = createTaskTokenVerifier({
    issuer: broker.url,
    resource: mcpUrl,
    requiredScopes: ['notes:read'],
    dpop: 'allowed',
    revocation:
      revocation === 'feed'
        ? { mode: 'feed', feedUrl: `${broker.url}/revocations`, credentials: RESOURCE_CLIENT, staleAfterSeconds: 30, pollIntervalMs: 250, onEvent: (_e, at) => heard.push(at) }
        : { mode: 'introspection', introspectionUrl: `${broker.url}/introspect`, credentials: RESOURCE_CLIENT },
  })
  await verifier.ready()
  const notes = new Map([['todo', 'buy milk']])
  listener = sdk === 'v1' ? expressAppV1(verifier, mcpUrl, notes) : getRequestListener(fetchHandlerV2(verifier, mcpUrl, notes))
  return {
    sdk,
    broker,
    mcpUrl,
    verifier,
    heard,
    async stop() {
      await verifier.close()
      http.closeAllConnections()
      await new Promise<void>((r) => http.close(() => r()))
      await broker.stop()
    },
  }
}

// ---------------------------------------------------------------------------------------------
// The agent side.

async function openNotesTask(s: Stack, scopes = SCOPES): Promise<string> {
  const res = await openTask(s.broker, { purpose: 'e2e: tidy my notes', resources: [{ resource: s.mcpUrl, scopes }] })
  assert.equal(res.status, 201, await res.clone().text())
  return ((await res.json()) as { task_id: string }).task_id
}

async function exchange(s: Stack, params: Record<string, string>): Promise<string> {
  const res = await s.broker.exchange({ resource: s.mcpUrl, scope: SCOPES.join(' '), ...params })
  assert.equal(res.status, 200, await res.clone().text())
  return ((await res.json()) as { access_token: string }).access_token
}

async function completeTask(s: Stack, taskId: string): Promise<void> {
  const res = await s.broker.app.request(`/tasks/${taskId}/complete`, { method: 'POST', headers: { 'actor-token': await s.broker.svid('a') } })
  assert.equal(res.status, 200)
}

/** Connects an SDK client of the stack's version with a static task token and calls one tool. */
async function callTool(s: Stack, token: string, name: string, args: Record<string, string>): Promise<{ text: string; isError: boolean }> {
  if (s.sdk === 'v1') {
    const client = new ClientV1({ name: 'e2e-agent', version: '1.0.0' })
    await client.connect(new TransportV1(new URL(s.mcpUrl), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }))
    try {
      const result = (await client.callTool({ name, arguments: args })) as { content: { type: string; text: string }[]; isError?: boolean }
      return { text: result.content[0]!.text, isError: result.isError === true }
    } finally {
      await client.close()
    }
  }
  const client = new ClientV2({ name: 'e2e-agent', version: '2.0.0' })
  await client.connect(new TransportV2(new URL(s.mcpUrl), { authProvider: { token: async () => token } }))
  try {
    const result = (await client.callTool({ name, arguments: args })) as { content: { type: string; text: string }[]; isError?: boolean }
    return { text: result.content[0]!.text, isError: result.isError === true }
  } finally {
    await client.close()
  }
}

/** The HTTP status an SDK client's refusal carries (v1: StreamableHTTPError.code; v2: UnauthorizedError 401, InsufficientScopeError 403). */
async function refusalStatus(p: Promise<unknown>): Promise<number> {
  try {
    await p
  } catch (e) {
    if (e instanceof StreamableHTTPError) return e.code ?? -1
    const err = e as { name?: string; status?: number; code?: unknown; data?: { status?: number } }
    if (err.name === 'UnauthorizedError') return 401
    if (err.name === 'InsufficientScopeError') return 403
    if (typeof err.data?.status === 'number') return err.data.status
    if (typeof err.status === 'number') return err.status
    throw e
  }
  assert.fail('expected the call to be refused')
}

/** A raw MCP `initialize` POST, to look at the gate's exact answer. */
async function rawInitialize(s: Stack, authorization?: string): Promise<Response> {
  return fetch(s.mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(authorization ? { authorization } : {}) },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } } }),
  })
}

/** Calls until refused; returns how long after `since` the first refusal came. */
async function msUntilRefused(s: Stack, token: string, since: number, limitMs = 2000): Promise<number> {
  for (;;) {
    const res = await rawInitialize(s, `Bearer ${token}`)
    await res.body?.cancel()
    if (res.status === 401) return Date.now() - since
    assert.equal(res.status, 200)
    if (Date.now() - since > limitMs) assert.fail(`still accepted ${limitMs} ms after completion`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

// ---------------------------------------------------------------------------------------------

describe('the broker\'s RFC 8414 metadata and the MCP SDK clients', () => {
  let s: Stack
  before(async () => { s = await startStack('v1', 'feed') })
  after(() => s.stop())

  it('is accepted by the SDK v1 and v2 discovery (schema, issuer echo) and advertises the exchange', async () => {
    const found = await discoverV1(s.broker.url)
    assert.ok(found)
    const v1 = OAuthMetadataSchema.parse(found)
    assert.equal(v1.issuer, s.broker.url)
    assert.equal(v1.token_endpoint, `${s.broker.url}/token`)
    assert.deepEqual(v1.response_types_supported, ['code'])
    assert.ok(v1.grant_types_supported?.includes(TOKEN_EXCHANGE))
    assert.equal(v1.introspection_endpoint, `${s.broker.url}/introspect`)
    assert.equal(v1.revocation_endpoint, `${s.broker.url}/revoke`)
    const v2 = await discoverV2(s.broker.url)
    assert.equal(v2?.issuer, s.broker.url)
    assert.equal(v2?.authorization_endpoint, `${s.broker.url}/authorize`)
  })

  it('the MCP server\'s RFC 9728 document points at the broker (SDK v1 PRM discovery)', async () => {
    const prm = await discoverOAuthProtectedResourceMetadata(s.mcpUrl)
    assert.equal(prm.resource, s.mcpUrl)
    assert.deepEqual(prm.authorization_servers, [s.broker.url])
    assert.deepEqual(prm.bearer_methods_supported, ['header'])
    assert.deepEqual(prm.scopes_supported, ['notes:read'])
  })
})

for (const sdk of ['v1', 'v2'] as const) {
  describe(`MCP SDK ${sdk} server behind @taskpass/verifier`, () => {
    let s: Stack
    before(async () => { s = await startStack(sdk, 'feed') })
    after(() => s.stop())

    it('a tool call succeeds with a task token; the handler sees who, for which task', async () => {
      const taskId = await openNotesTask(s)
      const token = await exchange(s, { task_id: taskId })
      const wrote = await callTool(s, token, 'write_note', { name: 'plan', text: 'ship it' })
      assert.deepEqual(wrote, { text: `saved plan [user=alice agent=agent-a task=${taskId}]`, isError: false })
      const read = await callTool(s, token, 'read_note', { name: 'plan' })
      assert.equal(read.text, `ship it [user=alice agent=agent-a task=${taskId}]`)
    })

    it('no token → 401 whose challenge points at the resource metadata', async () => {
      const res = await rawInitialize(s)
      assert.equal(res.status, 401)
      const challenge = res.headers.get('www-authenticate')!
      assert.match(challenge, /^Bearer /)
      assert.ok(challenge.includes(`resource_metadata="${s.verifier.resourceMetadataUrl}"`))
    })

    it('a token for another resource → 401 invalid_token', async () => {
      const other = await exchange(s, { resource: CALENDAR, scope: 'cal:read' })
      const res = await rawInitialize(s, `Bearer ${other}`)
      assert.equal(res.status, 401)
      assert.deepEqual(await res.json(), { error: 'invalid_token', error_description: 'token audience is not this resource' })
      assert.equal(await refusalStatus(callTool(s, other, 'read_note', { name: 'todo' })), 401)
    })

    it('a missing scope → 403 insufficient_scope naming the scope', async () => {
      const taskId = await openNotesTask(s)
      const writeOnly = await exchange(s, { task_id: taskId, scope: 'notes:write' })
      const res = await rawInitialize(s, `Bearer ${writeOnly}`)
      assert.equal(res.status, 403)
      assert.equal(((await res.json()) as { error: string }).error, 'insufficient_scope')
      const challenge = res.headers.get('www-authenticate')!
      assert.match(challenge, /error="insufficient_scope"/)
      assert.match(challenge, /scope="notes:read"/)
      assert.equal(await refusalStatus(callTool(s, writeOnly, 'read_note', { name: 'todo' })), 403)
      // A read-only token passes the gate but the write tool refuses it.
      const readOnly = await exchange(s, { task_id: taskId, scope: 'notes:read' })
      assert.deepEqual(await callTool(s, readOnly, 'write_note', { name: 'x', text: 'y' }), { text: 'notes:write scope required', isError: true })
    })

    it('after task completion the next call is refused within 1 s, through the feed', async (t: TestContext) => {
      const taskId = await openNotesTask(s)
      const token = await exchange(s, { task_id: taskId })
      assert.equal((await callTool(s, token, 'read_note', { name: 'todo' })).isError, false)
      const heardBefore = s.heard.length
      const t0 = Date.now()
      await completeTask(s, taskId)
      const ms = await msUntilRefused(s, token, t0)
      const learnedMs = (s.heard[heardBefore] ?? NaN) - t0
      t.diagnostic(`SDK ${sdk}: refused ${ms} ms after the completion request (the verifier heard the event after ${learnedMs} ms)`)
      assert.ok(ms < 1000, `refused after ${ms} ms`)
      const res = await rawInitialize(s, `Bearer ${token}`)
      assert.deepEqual(await res.json(), { error: 'invalid_token', error_description: 'token has been revoked' })
      assert.equal(await refusalStatus(callTool(s, token, 'read_note', { name: 'todo' })), 401)
    })
  })

  describe(`MCP SDK ${sdk} server, introspection mode`, () => {
    let s: Stack
    before(async () => { s = await startStack(sdk, 'introspection') })
    after(() => s.stop())

    it('after task completion the very next call is refused', async () => {
      const taskId = await openNotesTask(s)
      const token = await exchange(s, { task_id: taskId })
      assert.equal((await callTool(s, token, 'read_note', { name: 'todo' })).isError, false)
      await completeTask(s, taskId)
      const res = await rawInitialize(s, `Bearer ${token}`)
      assert.equal(res.status, 401)
      assert.deepEqual(await res.json(), { error: 'invalid_token', error_description: 'token is not active' })
      assert.equal(await refusalStatus(callTool(s, token, 'read_note', { name: 'todo' })), 401)
    })
  })
}

/**
 * mcp-integration.md §2.3: the SDK runs our RFC 8693 exchange itself. On the first 401 it reads
 * the challenge's resource_metadata, discovers the broker, and posts the exchange (adding
 * `resource`); after the task ends the re-exchange gets `invalid_grant` and the client stops.
 */
class TaskExchangeProvider implements OAuthClientProvider {
  exchanges = 0
  #tokens: OAuthTokens | undefined
  readonly #broker: Broker
  readonly #taskId: string
  constructor(broker: Broker, taskId: string) {
    this.#broker = broker
    this.#taskId = taskId
  }
  get redirectUrl(): undefined { return undefined }
  get clientMetadata() { return { redirect_uris: [], client_name: 'agent-a', grant_types: [TOKEN_EXCHANGE], token_endpoint_auth_method: 'none', scope: SCOPES.join(' ') } }
  clientInformation(): OAuthClientInformationMixed { return { client_id: 'agent-a' } }
  tokens() { return this.#tokens }
  saveTokens(tokens: OAuthTokens) { this.#tokens = tokens }
  redirectToAuthorization(): never { throw new Error('taskpass has no browser flow') }
  saveCodeVerifier() {}
  codeVerifier(): never { throw new Error('taskpass has no authorization code flow') }
  invalidateCredentials(scope: string) { if (scope === 'tokens' || scope === 'all') this.#tokens = undefined }
  async prepareTokenRequest(scope?: string) {
    this.exchanges++
    return new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: await this.#broker.session(),
      subject_token_type: JWT_TYPE,
      actor_token: await this.#broker.svid('a'),
      actor_token_type: JWT_TYPE,
      task_id: this.#taskId,
      scope: scope ?? SCOPES.join(' '),
    })
  }
}

describe('an SDK client whose OAuthClientProvider performs the exchange', () => {
  let s: Stack
  before(async () => { s = await startStack('v1', 'feed') })
  after(() => s.stop())

  it('gets its token through discovery + exchange, and stops with invalid_grant after completion instead of re-minting', async () => {
    const taskId = await openNotesTask(s)
    const provider = new TaskExchangeProvider(s.broker, taskId)
    const client = new ClientV1({ name: 'self-exchanging-agent', version: '1.0.0' })
    await client.connect(new TransportV1(new URL(s.mcpUrl), { authProvider: provider }))
    try {
      const result = (await client.callTool({ name: 'read_note', arguments: { name: 'todo' } })) as { content: { text: string }[] }
      assert.equal(result.content[0]!.text, `buy milk [user=alice agent=agent-a task=${taskId}]`)
      assert.equal(provider.exchanges, 1)
      const token = provider.tokens()!.access_token
      const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { aud: string; task_id: string }
      assert.equal(claims.aud, s.mcpUrl, 'the SDK sent resource=<PRM resource>')
      assert.equal(claims.task_id, taskId)

      await completeTask(s, taskId)
      await msUntilRefused(s, token, Date.now())
      const minted = await s.broker.count('tokens')
      await assert.rejects(client.callTool({ name: 'read_note', arguments: { name: 'todo' } }), (e: unknown) => e instanceof InvalidGrantError)
      assert.equal(await s.broker.count('tokens'), minted, 'no token was minted after completion')
      assert.ok(provider.exchanges >= 2)
      assert.equal(provider.tokens(), undefined)
    } finally {
      await client.close()
    }
  })
})
