/**
 * `npm run demo` — the taskpass story end to end, on 127.0.0.1 only, in about a second:
 *
 *   broker      taskpass, in-process, dev-like config with keys generated into a temp directory
 *   MCP server  the official MCP SDK (v1: Express + requireBearerAuth) with two tools, guarded by
 *               @taskpass/verifier (JWKS, exact audience, revocation feed over SSE)
 *   agent       the official MCP SDK client (StreamableHTTPClientTransport) acting for user alice
 *   helper      a second agent (another workload) the first one delegates a narrower sub-task to
 *
 * The agent opens a task for two tools, exchanges its credentials for a task token and calls
 * them; it hands the helper a read-only sub-task for one tool; the helper, with its own
 * attestation, gets its own token, reads, and is refused the tool outside its sub-task; the agent
 * completes the task — and the helper's very next call is refused, with the time the server took
 * to learn of it.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { getRequestListener } from '@hono/node-server'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { McpError } from '@modelcontextprotocol/sdk/types.js'
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { z } from 'zod'
import { createTaskTokenVerifier, hasScopes, protectedResourceMetadataMiddleware, type TaskAuthInfo, type TaskTokenVerifier } from '@taskpass/verifier'
import { authorizeToolCalls, toMcpSdkV1Verifier } from '@taskpass/verifier/mcp-sdk-v1'
import { createApp } from '../src/app.js'
import { argon2Hasher, createBroker } from '../src/broker.js'
import { systemClock } from '../src/clock.js'
import { parseConfig } from '../src/config.js'
import { DEV, devConfig, ensureDevMaterial, mintDevSessionToken, mintDevSvid } from '../src/dev/dev-setup.js'
import { silentLogger } from '../src/logger.js'

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt'
const started = Date.now()

function say(who: 'broker' | 'server' | 'agent' | 'helper' | 'demo', text: string): void {
  process.stdout.write(`${`[${who}]`.padEnd(9)} ${text}\n`)
}

/** Listens on 127.0.0.1:0 first, so the URL is known before the handler is built. */
async function listen(): Promise<{ url: string; setHandler(h: (req: IncomingMessage, res: ServerResponse) => void): void; close(): Promise<void> }> {
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => { res.writeHead(503).end() }
  const server = createServer((req, res) => handler(req, res))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    setHandler: (h) => { handler = h },
    close: () => {
      server.closeAllConnections()
      return new Promise<void>((r) => server.close(() => r()))
    },
  }
}

/** The MCP server: SDK v1 on Express, the SDK's own bearer gate fed by @taskpass/verifier. */
function notesApp(verifier: TaskTokenVerifier, mcpUrl: string) {
  const notes = new Map<string, string>()
  const caller = (auth: TaskAuthInfo | undefined) => (auth ? `user=${auth.extra.sub} agent=${auth.extra.act.sub} task=${auth.extra.task_id.slice(0, 13)}…` : 'anonymous')
  const build = () => {
    const server = new McpServer({ name: 'notes', version: '1.0.0' })
    server.registerTool('read_note', { description: 'Read a note', inputSchema: { name: z.string() } }, async ({ name }, extra) => ({
      content: [{ type: 'text', text: `${notes.get(name) ?? '(no such note)'}  [${caller(extra.authInfo as TaskAuthInfo | undefined)}]` }],
    }))
    server.registerTool('write_note', { description: 'Write a note', inputSchema: { name: z.string(), text: z.string() } }, async ({ name, text }, extra) => {
      const auth = extra.authInfo as TaskAuthInfo | undefined
      if (!hasScopes(auth, ['notes:write'])) return { content: [{ type: 'text', text: 'notes:write scope required' }], isError: true }
      notes.set(name, text)
      return { content: [{ type: 'text', text: `saved "${name}"  [${caller(auth)}]` }] }
    })
    return server
  }
  const app = createMcpExpressApp({ host: '127.0.0.1' })
  app.use(protectedResourceMetadataMiddleware(verifier.metadata({ resourceName: 'Notes (demo)' })))
  app.all(
    '/mcp',
    requireBearerAuth({ verifier: toMcpSdkV1Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) }),
    // A tools/call for a tool the token does not carry is refused before it runs; tools/list is filtered.
    authorizeToolCalls(verifier),
    async (req, res) => {
      const server = build()
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
      res.on('close', () => {
        void transport.close()
        void server.close()
      })
      await server.connect(transport)
      await transport.handleRequest(req, res, req.body)
    },
  )
  return app
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'taskpass-demo-'))
  say('demo', `everything runs on 127.0.0.1; keys and database live in ${dir} (removed at the end)`)

  // --- the broker ------------------------------------------------------------------------------
  const broker = await listen()
  const issuer = broker.url
  const mcp = await listen()
  const mcpUrl = `${mcp.url}/mcp`

  const material = await ensureDevMaterial(dir)
  const base = await devConfig(material, argon2Hasher)
  const config = parseConfig({
    ...base,
    issuer,
    database: join(dir, 'taskpass.db'),
    keys: { kek: randomBytes(32).toString('base64url') },
    resources: (base.resources ?? []).map((r) => ({ ...r, uri: mcpUrl })),
    workloads: (base.workloads ?? []).map((w) => ({ ...w, grants: (w.grants ?? []).map((g) => ({ ...g, resource: mcpUrl })) })),
  })
  const deps = await createBroker({ config, clock: systemClock, logger: silentLogger, kek: Buffer.from(config.keys.kek!, 'base64url') })
  const app = createApp(deps)
  broker.setHandler(getRequestListener((r) => app.fetch(r)))
  const signing = await deps.keys.current()
  say('broker', `taskpass listening at ${issuer} (issuer); signs ${signing.alg} with kid ${signing.kid.slice(0, 12)}…`)
  say('broker', `registered: workload "${DEV.workloadId}" (${DEV.spiffeId}) which may delegate to "${DEV.helperWorkloadId}" (${DEV.helperSpiffeId}, read-only), resource ${mcpUrl}`)

  // --- the MCP server --------------------------------------------------------------------------
  let learnedAt: number | undefined
  const verifier = createTaskTokenVerifier({
    issuer,
    resource: mcpUrl,
    requiredScopes: ['notes:read'],
    dpop: 'allowed',
    revocation: {
      mode: 'feed',
      feedUrl: `${issuer}/revocations`,
      credentials: { clientId: DEV.resourceClientId, clientSecret: material.resourceSecret },
      onEvent: (event, at) => {
        learnedAt ??= at
        say('server', `revocation feed: event #${event.id} ${event.type} for task ${event.task_id?.slice(0, 13)}… (pushed over SSE)`)
      },
    },
  })
  await verifier.ready()
  mcp.setHandler(notesApp(verifier, mcpUrl))
  say('server', `MCP server (official SDK v1: Express + requireBearerAuth + @taskpass/verifier) at ${mcpUrl}`)
  say('server', `tools read_note, write_note; requires notes:read; subscribed to ${issuer}/revocations`)

  // --- the agent -------------------------------------------------------------------------------
  const session = await mintDevSessionToken(material, systemClock, { audience: issuer })
  const svid = await mintDevSvid(material, systemClock, { audience: issuer })
  say('agent', `acting for user alice (session token from the dev IdP) as ${DEV.spiffeId} (JWT-SVID)`)

  const opened = await fetch(`${issuer}/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${session}`, 'actor-token': svid },
    body: JSON.stringify({ purpose: 'tidy up my notes', resources: [{ resource: mcpUrl, scopes: ['notes:read', 'notes:write'], tools: ['read_note', 'write_note'] }], ttl: 600 }),
  })
  const task = (await opened.json()) as { task_id: string; status: string; expires_at: number }
  if (opened.status !== 201) throw new Error(`POST /tasks answered ${opened.status}: ${JSON.stringify(task)}`)
  say('agent', `POST /tasks → ${opened.status}: task ${task.task_id} is ${task.status}, notes:read notes:write, tools read_note write_note, for 600 s`)

  const exchangeBody = new URLSearchParams({
    grant_type: TOKEN_EXCHANGE,
    subject_token: session,
    subject_token_type: JWT_TYPE,
    actor_token: svid,
    actor_token_type: JWT_TYPE,
    resource: mcpUrl,
    scope: 'notes:read notes:write',
    task_id: task.task_id,
  })
  const exchanged = await fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: exchangeBody })
  const tokenResponse = (await exchanged.json()) as { access_token: string; token_type: string; expires_in: number; scope: string }
  if (exchanged.status !== 200) throw new Error(`POST /token answered ${exchanged.status}: ${JSON.stringify(tokenResponse)}`)
  const claims = JSON.parse(Buffer.from(tokenResponse.access_token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>
  say('agent', `POST /token (RFC 8693 exchange) → ${exchanged.status}: ${tokenResponse.token_type} token, ${tokenResponse.expires_in} s, scope "${tokenResponse.scope}"`)
  say('agent', `  token claims: sub=${claims.sub} act.sub=${(claims.act as { sub: string }).sub} aud=${claims.aud} task_id=${String(claims.task_id).slice(0, 13)}…`)

  const client = new Client({ name: 'demo-agent', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { requestInit: { headers: { Authorization: `Bearer ${tokenResponse.access_token}` } } }))
  const tools = await client.listTools()
  say('agent', `tools/list → ${tools.tools.map((t) => t.name).join(', ')}`)
  const text = (r: unknown) => ((r as { content: { text: string }[] }).content[0]?.text ?? '')
  say('agent', `tools/call write_note {name: "groceries", text: "milk, eggs"} → ${text(await client.callTool({ name: 'write_note', arguments: { name: 'groceries', text: 'milk, eggs' } }))}`)
  say('agent', `tools/call read_note {name: "groceries"} → ${text(await client.callTool({ name: 'read_note', arguments: { name: 'groceries' } }))}`)

  // --- the agent delegates a narrower sub-task to the helper -----------------------------------
  const delegated = await fetch(`${issuer}/tasks/${task.task_id}/subtasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'actor-token': svid },
    body: JSON.stringify({ workload: DEV.helperWorkloadId, purpose: 'summarise the groceries note', resources: [{ resource: mcpUrl, scopes: ['notes:read'], tools: ['read_note'] }], ttl: 300 }),
  })
  const sub = (await delegated.json()) as { task_id: string; status: string; depth: number }
  if (delegated.status !== 201) throw new Error(`POST /tasks/{id}/subtasks answered ${delegated.status}: ${JSON.stringify(sub)}`)
  say('agent', `POST /tasks/${task.task_id.slice(0, 13)}…/subtasks → ${delegated.status}: sub-task ${sub.task_id} for "${DEV.helperWorkloadId}" is ${sub.status} (depth ${sub.depth}): notes:read, tool read_note only; no credential handed over`)

  // The helper proves itself with its own attestation and names the sub-task as its subject.
  const helperSvid = await mintDevSvid(material, systemClock, { audience: issuer, spiffeId: DEV.helperSpiffeId })
  const helperExchange = new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: sub.task_id, subject_token_type: 'urn:taskpass:params:oauth:token-type:task', actor_token: helperSvid, actor_token_type: JWT_TYPE, resource: mcpUrl })
  const helperRes = await fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: helperExchange })
  const helperToken = (await helperRes.json()) as { access_token: string; scope: string }
  if (helperRes.status !== 200) throw new Error(`the helper's POST /token answered ${helperRes.status}: ${JSON.stringify(helperToken)}`)
  const helperClaims = JSON.parse(Buffer.from(helperToken.access_token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>
  say('helper', `POST /token (its own JWT-SVID, subject = the sub-task) → ${helperRes.status}: scope "${helperToken.scope}"`)
  say('helper', `  token claims: act=${JSON.stringify(helperClaims.act)} parent_task_id=${String(helperClaims.parent_task_id).slice(0, 13)}… authorization_details=${JSON.stringify(helperClaims.authorization_details)}`)
  const helper = new Client({ name: 'demo-helper', version: '1.0.0' })
  await helper.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { requestInit: { headers: { Authorization: `Bearer ${helperToken.access_token}` } } }))
  say('helper', `tools/list → ${(await helper.listTools()).tools.map((t) => t.name).join(', ')} (filtered to the token's tools)`)
  say('helper', `tools/call read_note {name: "groceries"} → ${text(await helper.callTool({ name: 'read_note', arguments: { name: 'groceries' } }))}`)
  try {
    await helper.callTool({ name: 'write_note', arguments: { name: 'groceries', text: 'nothing' } })
    throw new Error('write_note was not refused')
  } catch (e) {
    if (!(e instanceof McpError)) throw e
    say('helper', `tools/call write_note → refused before it ran: McpError ${e.code}: ${e.message}`)
  }

  // --- the task ends ---------------------------------------------------------------------------
  const t0 = Date.now()
  const completed = await fetch(`${issuer}/tasks/${task.task_id}/complete`, { method: 'POST', headers: { 'actor-token': svid } })
  const ended = (await completed.json()) as { task: { status: string }; tokens_revoked: number; subtasks_revoked?: string[] }
  say('agent', `POST /tasks/${task.task_id.slice(0, 13)}…/complete → ${completed.status}: task ${ended.task.status}, ${ended.tokens_revoked} token(s) revoked, sub-task(s) ended with it: ${ended.subtasks_revoked?.length ?? 0} (${Date.now() - t0} ms, durable before the answer)`)

  // The helper's next call, as soon as it makes it.
  let refusedAfter: number | undefined
  let refusal = ''
  for (let attempt = 0; attempt < 200 && refusedAfter === undefined; attempt++) {
    try {
      await helper.callTool({ name: 'read_note', arguments: { name: 'groceries' } })
      await new Promise((r) => setTimeout(r, 5))
    } catch (e) {
      refusedAfter = Date.now() - t0
      refusal = e instanceof StreamableHTTPError ? `HTTP ${e.code}: ${e.message.replace(/^.*?(\{.*\}).*$/s, '$1')}` : String(e)
    }
  }
  if (refusedAfter === undefined || learnedAt === undefined) throw new Error('the call was not refused within a second')
  say('server', `learned of the completion ${learnedAt - t0} ms after the agent asked for it`)
  say('helper', `tools/call read_note → refused, ${refusedAfter} ms after the parent task's completion: ${refusal}`)
  const challenge = await fetch(mcpUrl, { method: 'POST', headers: { authorization: `Bearer ${helperToken.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' })
  say('server', `  WWW-Authenticate: ${challenge.headers.get('www-authenticate')}`)
  await challenge.body?.cancel()

  const again = await fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: exchangeBody })
  say('agent', `POST /token again for the same task → ${again.status}: ${JSON.stringify(await again.json())} — no new token for an ended task`)
  const helperAgain = await fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: helperExchange })
  say('helper', `POST /token again for the sub-task → ${helperAgain.status}: ${JSON.stringify(await helperAgain.json())}`)

  await helper.close()
  await client.close()
  await verifier.close()
  await mcp.close()
  await broker.close()
  await deps.database.close()
  rmSync(dir, { recursive: true, force: true })
  say('demo', `revocation-to-refusal: ${refusedAfter} ms (server learned in ${learnedAt - t0} ms); whole run ${((Date.now() - started) / 1000).toFixed(1)} s`)
}

const deadline = setTimeout(() => {
  process.stderr.write('demo: did not finish within 25 s\n')
  process.exit(1)
}, 25_000)
deadline.unref()

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`demo failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    process.exit(1)
  },
)
