/**
 * A stock MCP client against taskpass as its authorization server: the official SDK's
 * `OAuthClientProvider` flow (authorization code + PKCE, a Client ID Metadata Document served by
 * the test over https and fetched by the broker), an SDK MCP server behind `@taskpass/verifier`.
 * The test plays the user: it follows the redirects and submits the sign-in and consent forms over
 * HTTP. Ending the task on the user's page makes the next tool call and the refresh fail.
 */
import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { getRequestListener } from '@hono/node-server'
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js'
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js'
import { createMcpHandler, McpServer, requireBearerAuth } from '@modelcontextprotocol/server'
import { decodeJwt } from 'jose'
import { z } from 'zod'
import { createTaskTokenVerifier, protectedResourceMetadataResponse, type TaskAuthInfo, type TaskTokenVerifier } from '@taskpass/verifier'
import { toMcpSdkV2Verifier } from '@taskpass/verifier/mcp-sdk-v2'
import { NOTES_SECRET, startTestServer, testKeys, type TestBroker } from './harness.js'
import { browserFlowConfig, devSignIn, httpsJsonServer, setField, TestBrowser } from './authorize-fixtures.js'

const SCOPES = ['notes:read', 'notes:write']
const REDIRECT = 'http://127.0.0.1:33419/oauth/callback'

/** The SDK's provider interface, kept in memory as a desktop client would keep it on disk. */
class MemoryProvider implements OAuthClientProvider {
  authorizationUrl: URL | undefined
  #tokens: OAuthTokens | undefined
  #verifier = ''
  #info: OAuthClientInformationMixed | undefined
  readonly clientMetadataUrl: string | undefined
  constructor(clientMetadataUrl: string | undefined) {
    this.clientMetadataUrl = clientMetadataUrl
  }
  get redirectUrl() { return REDIRECT }
  get clientMetadata(): OAuthClientMetadata { return { client_name: 'SDK test client', redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' } }
  clientInformation() { return this.#info }
  saveClientInformation(info: OAuthClientInformationMixed) { this.#info = info }
  tokens() { return this.#tokens }
  saveTokens(tokens: OAuthTokens) { this.#tokens = tokens }
  redirectToAuthorization(url: URL) { this.authorizationUrl = url }
  saveCodeVerifier(v: string) { this.#verifier = v }
  codeVerifier() { return this.#verifier }
  /** The SDK drops what the server refused (`invalid_grant` → tokens) and starts over. */
  invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery') {
    if (scope === 'tokens' || scope === 'all') this.#tokens = undefined
  }
}

interface Stack {
  broker: TestBroker & { url: string; stop(): Promise<void> }
  mcpUrl: string
  clientId: string
  documentRequests: string[]
  stop(): Promise<void>
}

async function startStack(): Promise<Stack> {
  let listener: (req: IncomingMessage, res: ServerResponse) => void = (_q, res) => void res.writeHead(503).end()
  const http: HttpServer = createServer((req, res) => listener(req, res))
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()))
  const mcpUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`
  // The client's metadata document, on https as the MCP spec requires (a test CA the broker trusts).
  const docs = await httpsJsonServer({ '/oauth/client.json': (origin) => ({ client_id: `${origin}/oauth/client.json`, client_name: 'SDK test client', redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' }) })
  const clientId = `${docs.origin}/oauth/client.json`
  const keys = await testKeys()
  const broker = await startTestServer({
    config: (c) => {
      const x = browserFlowConfig(c)
      return {
        ...x,
        resources: [...x.resources!, { uri: mcpUrl, scopes: SCOPES, credential: { clientId: 'oauth-e2e-mcp', secretHash: keys.hashes.notes } }],
        workloads: x.workloads!.map((w) => (w.id === 'mcp-clients' ? { ...w, oauthClient: { clientId: { glob: 'https://127.0.0.1:*/oauth/**' } }, grants: [{ resource: mcpUrl, scopes: SCOPES }] } : w)),
        authorization: { clientMetadata: { allowLoopback: true, caFile: docs.caFile }, dynamicRegistration: { workload: 'mcp-clients' } },
      }
    },
  })
  const verifier: TaskTokenVerifier = createTaskTokenVerifier({
    issuer: broker.url,
    resource: mcpUrl,
    requiredScopes: ['notes:read'],
    dpop: 'allowed',
    revocation: { mode: 'introspection', introspectionUrl: `${broker.url}/introspect`, credentials: { clientId: 'oauth-e2e-mcp', clientSecret: NOTES_SECRET } },
  })
  await verifier.ready()
  const gate = requireBearerAuth({ verifier: toMcpSdkV2Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
  const handler = createMcpHandler(() => {
    const server = new McpServer({ name: 'notes', version: '2.0.0' })
    server.registerTool('read_note', { inputSchema: z.object({ name: z.string() }) }, async ({ name }, ctx) => {
      const auth = ctx.http?.authInfo as TaskAuthInfo | undefined
      return { content: [{ type: 'text' as const, text: `note ${name} for ${auth?.extra.sub} via ${auth?.clientId} (task ${auth?.extra.task_id})` }] }
    })
    return server
  })
  const metadata = verifier.metadata({ resourceName: 'Notes' })
  listener = getRequestListener(async (request: Request) => {
    const doc = protectedResourceMetadataResponse(request, metadata)
    if (doc) return doc
    const auth = await gate(request)
    if (auth instanceof Response) return auth
    return handler.fetch(request, { authInfo: auth })
  })
  return {
    broker,
    mcpUrl,
    clientId,
    documentRequests: docs.requests,
    async stop() {
      await verifier.close()
      http.closeAllConnections()
      await new Promise<void>((r) => http.close(() => r()))
      await docs.close()
      await broker.stop()
    },
  }
}

async function readNote(s: Stack, provider: MemoryProvider): Promise<string> {
  const client = new Client({ name: 'stock-client', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(s.mcpUrl), { authProvider: provider }))
  try {
    const result = (await client.callTool({ name: 'read_note', arguments: { name: 'todo' } })) as { content: { text: string }[] }
    return result.content[0]!.text
  } finally {
    await client.close()
  }
}

describe('a stock MCP client (SDK OAuthClientProvider) gets a task token through the browser flow', () => {
  let s: Stack
  before(async () => {
    s = await startStack()
  })
  after(() => s.stop())

  it('authorizes with a metadata-document client id, calls the tool, and is refused once the user ends the task', async () => {
    const provider = new MemoryProvider(s.clientId)
    const transport = new StreamableHTTPClientTransport(new URL(s.mcpUrl), { authProvider: provider })
    const client = new Client({ name: 'stock-client', version: '1.0.0' })
    // 401 → PRM → our metadata → CIMD client id → the SDK sends the user to /authorize.
    await assert.rejects(client.connect(transport), UnauthorizedError)
    const url = provider.authorizationUrl!
    assert.equal(url.origin, s.broker.url)
    assert.equal(url.searchParams.get('client_id'), s.clientId)
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256')
    assert.equal(url.searchParams.get('resource'), s.mcpUrl)

    // The user: sign in, narrow the scope to notes:read, allow.
    const browser = new TestBrowser((p, init) => fetch(new URL(p, s.broker.url), init))
    const login = await browser.get(url.pathname + url.search)
    assert.equal(login.status, 200)
    const signedIn = await browser.submit(await login.text(), '/authorize/login', devSignIn())
    assert.equal(signedIn.status, 303)
    const consent = await browser.get(signedIn.headers.get('location')!)
    const page = await consent.text()
    assert.match(page, /SDK test client/)
    const answered = await browser.submit(page, '/authorize/consent', (f) => [...setField('scope', 'notes:read')(f), ['decision', 'allow']])
    assert.equal(answered.status, 303)
    const back = new URL(answered.headers.get('location')!)
    assert.equal(back.origin + back.pathname, REDIRECT)
    assert.equal(back.searchParams.get('iss'), s.broker.url)
    assert.ok(s.documentRequests.includes('/oauth/client.json'), 'the broker fetched the metadata document')

    await transport.finishAuth(back.searchParams.get('code')!)
    const tokens = provider.tokens()!
    assert.ok(tokens.refresh_token, 'a task-bound refresh token')
    const claims = decodeJwt(tokens.access_token)
    assert.equal(claims.aud, s.mcpUrl)
    assert.equal(claims.client_id, s.clientId)
    assert.equal(claims.scope, 'notes:read')

    const text = await readNote(s, provider)
    assert.match(text, new RegExp(`note todo for alice via ${s.clientId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(task ${String(claims.task_id)}\\)`))

    // The user ends the task on their page.
    const account = await browser.get('/account')
    const ended = await browser.submit(await account.text(), `/account/tasks/${String(claims.task_id)}/end`)
    assert.equal(ended.status, 303)

    // The next call is refused (the SDK then tries its refresh token, which died with the task, and asks for a new authorization).
    provider.authorizationUrl = undefined
    await assert.rejects(readNote(s, provider), UnauthorizedError)
    assert.ok(provider.authorizationUrl, 'the refresh token died with the task: the SDK asks the user again')
    const refresh = await fetch(`${s.broker.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, client_id: s.clientId }) })
    assert.equal(refresh.status, 400)
    assert.equal(((await refresh.json()) as { error: string }).error, 'invalid_grant')
  })

  it('a client without a metadata document registers (RFC 7591) and goes through the same flow', async () => {
    const provider = new MemoryProvider(undefined)
    const transport = new StreamableHTTPClientTransport(new URL(s.mcpUrl), { authProvider: provider })
    await assert.rejects(new Client({ name: 'stock-client', version: '1.0.0' }).connect(transport), UnauthorizedError)
    const url = provider.authorizationUrl!
    const clientId = url.searchParams.get('client_id')!
    assert.match(clientId, /^tpdc_/, 'the SDK registered dynamically')
    const browser = new TestBrowser((p, init) => fetch(new URL(p, s.broker.url), init))
    const signedIn = await browser.submit(await (await browser.get(url.pathname + url.search)).text(), '/authorize/login', devSignIn('bob'))
    const page = await (await browser.get(signedIn.headers.get('location')!)).text()
    assert.match(page, /name not verified/)
    const back = new URL((await browser.submit(page, '/authorize/consent', (f) => [...f, ['decision', 'allow']])).headers.get('location')!)
    await transport.finishAuth(back.searchParams.get('code')!)
    assert.match(await readNote(s, provider), /note todo for bob via tpdc_/)
  })
})
