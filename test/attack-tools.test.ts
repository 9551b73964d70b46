/**
 * Attack: the verifier kit's tool enforcement (tools/call checks, tools/list filtering). Each test
 * tries to get a tool outside the token run or listed, or to crash or stall the step on odd input
 * or adversarial server output. A finding is a test of the contract that fails on the current
 * code before its fix; attacks that are refused correctly are plain tests.
 * Only loopback is used.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { gunzipSync, gzipSync } from 'node:zlib'
import { describe, it } from 'node:test'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport, type EventStore } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { isInitializeRequest, isJSONRPCRequest, type JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import { z } from 'zod'
import { checkToolCalls, createFetchToolStep, createSseRewriter, fetchToolCallRefusal, filterNodeToolList, filterToolListResponse, nodeToolCallCheck, TOOL_DENIED, toolCallsIn, toolsInToken, type ToolCallAuthorizer } from '@taskpass/verifier'

/** A verifier without a PDP: only the token's own tools decide. */
const LOCAL: ToolCallAuthorizer = { pdpConfigured: false, authorize: async () => ({ allowed: true }) }
/** What a gate verified: a token naming read_note only. */
const AUTH = { token: 't', extra: { tools: ['read_note'] } }
const FILTER = { tools: ['read_note'] as const, ids: [1] }
const LIST = { jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'read_note' }, { name: 'write_note' }] } }

const call = (id: unknown, name: unknown, extra: Record<string, unknown> = {}) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} }, ...extra })

/** The tool names a JSON-RPC text (one message, a batch, or SSE events) lists. */
function listed(text: string): string[] {
  const out: string[] = []
  const visit = (v: unknown) => {
    if (Array.isArray(v)) return v.forEach(visit)
    const tools = (v as { result?: { tools?: { name: string }[] } } | null)?.result?.tools
    if (Array.isArray(tools)) out.push(...tools.map((t) => t.name))
  }
  const data = text.split(/\r\n|\r|\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).filter(Boolean)
  for (const d of data.length > 0 ? data : [text]) {
    try {
      visit(JSON.parse(d))
    } catch {
      // not JSON: nothing listed
    }
  }
  return out
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = createServer(handler)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    close: () => {
      server.closeAllConnections()
      return new Promise<void>((r) => server.close(() => r()))
    },
  }
}

describe('attack: the tool step (findings)', () => {
  it('finding 7 (web): on a GET stream every tools/list answer is narrowed, whatever its id; a scope-only token’s is untouched', async () => {
    const step = createFetchToolStep(LOCAL)
    const sse = () => new Response(`event: message\nid: 9\ndata: ${JSON.stringify({ ...LIST, id: 'replayed-7' })}\n\n`, { headers: { 'content-type': 'text/event-stream' } })
    const get = new Request('http://127.0.0.1/mcp', { method: 'GET', headers: { 'last-event-id': '8' } })
    assert.equal(await step(get, AUTH), undefined)
    assert.deepEqual(listed(await step.respond(get, sse()).text()), ['read_note'])
    const scopeOnly = new Request('http://127.0.0.1/mcp', { method: 'GET' })
    assert.equal(await step(scopeOnly, { token: 't', extra: {} }), undefined)
    assert.deepEqual(listed(await step.respond(scopeOnly, sse()).text()), ['read_note', 'write_note'])
  })

  it('finding 6: a compressed (content-encoding: gzip) tools/list answer is not passed on unfiltered — web step', async () => {
    // E.g. hono's compress() mounted after taskTokenAuth, or any handler answering gzip.
    const res = filterToolListResponse(new Response(gzipSync(JSON.stringify(LIST)), { headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } }), FILTER)
    const bytes = Buffer.from(await res.arrayBuffer())
    const text = res.headers.get('content-encoding') === 'gzip' ? gunzipSync(bytes).toString() : bytes.toString()
    assert.deepEqual(listed(text).filter((t) => t !== 'read_note'), [], `the client was shown ${listed(text).join(', ')}`)
  })

  it('finding 6: a compressed tools/list answer is not passed on unfiltered — Node step (compression wrapping res after the tool step)', async () => {
    const s = await listen((req, res) => {
      filterNodeToolList(res, FILTER)
      // What compression() mounted after the tool step does: the bytes reaching the step are gzip.
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' })
      res.end(gzipSync(JSON.stringify(LIST)))
    })
    try {
      // fetch decodes gzip as a client does.
      const text = await (await fetch(`${s.url}/mcp`)).text()
      assert.deepEqual(listed(text).filter((t) => t !== 'read_note'), [], `the client was shown ${listed(text).join(', ')}`)
    } finally {
      await s.close()
    }
  })

  it('finding 7: with resumability (an event store), a GET with Last-Event-ID does not replay an unfiltered tools/list answer', async () => {
    // The SDK's own resumable pattern: sessions and an event store (a minimal in-memory one).
    const events = new Map<string, { stream: string; message: JSONRPCMessage }>()
    const store: EventStore = {
      async storeEvent(stream, message) {
        const id = `${stream}_${events.size.toString().padStart(6, '0')}`
        events.set(id, { stream, message })
        return id
      },
      async replayEventsAfter(last, { send }) {
        const stream = events.get(last)?.stream ?? ''
        for (const [id, e] of [...events].filter(([id, e]) => e.stream === stream && id > last)) await send(id, e.message)
        return stream
      },
    }
    const app = createMcpExpressApp({ host: '127.0.0.1' })
    const transports = new Map<string, StreamableHTTPServerTransport>()
    app.all(
      '/mcp',
      (req: IncomingMessage & { auth?: unknown }, _res: ServerResponse, next: () => void) => {
        req.auth = AUTH
        next()
      },
      nodeToolCallCheck(LOCAL),
      async (req: IncomingMessage & { body?: unknown }, res: ServerResponse) => {
        const id = req.headers['mcp-session-id']
        let transport = typeof id === 'string' ? transports.get(id) : undefined
        if (!transport && isInitializeRequest(req.body)) {
          transport = new StreamableHTTPServerTransport({ sessionIdGenerator: randomUUID, eventStore: store, onsessioninitialized: (sid) => void transports.set(sid, transport!) })
          const server = new McpServer({ name: 'notes', version: '1.0.0' })
          server.registerTool('read_note', { inputSchema: { name: z.string() } }, async () => ({ content: [{ type: 'text', text: 'x' }] }))
          server.registerTool('write_note', { inputSchema: { name: z.string() } }, async () => ({ content: [{ type: 'text', text: 'x' }] }))
          await server.connect(transport)
        }
        if (!transport) return void res.writeHead(400).end()
        await transport.handleRequest(req, res, req.body)
      },
    )
    const s = await listen(app)
    try {
      const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' }
      const init = await fetch(`${s.url}/mcp`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }) })
      const sid = init.headers.get('mcp-session-id')!
      await init.text()
      const h = { ...headers, 'mcp-session-id': sid }
      await (await fetch(`${s.url}/mcp`, { method: 'POST', headers: h, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })).text()
      const listText = await (await fetch(`${s.url}/mcp`, { method: 'POST', headers: h, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) })).text()
      assert.deepEqual(listed(listText), ['read_note'], 'the POST answer is filtered')
      const priming = /^id: ?(.+)$/m.exec(listText)?.[1]?.trim()
      assert.ok(priming, `the stream is resumable: ${listText}`)
      const replay = await fetch(`${s.url}/mcp`, { method: 'GET', headers: { accept: 'text/event-stream', 'mcp-session-id': sid, 'mcp-protocol-version': '2025-11-25', 'last-event-id': priming } })
      const reader = replay.body!.getReader()
      let text = ''
      const deadline = Date.now() + 2000
      while (!/\n\n/.test(text.replace(/^id: [^\n]*\ndata: \n\n/, '')) && Date.now() < deadline) {
        const chunk = await Promise.race([reader.read(), new Promise<{ done: true; value: undefined }>((r) => setTimeout(() => r({ done: true, value: undefined }), deadline - Date.now()))])
        if (chunk.done) break
        text += new TextDecoder().decode(chunk.value)
      }
      await reader.cancel()
      assert.deepEqual(listed(text).filter((t) => t !== 'read_note'), [], `the replay showed ${listed(text).join(', ')}`)
    } finally {
      await Promise.all([...transports.values()].map((t) => t.close()))
      await s.close()
    }
  })

  it('finding 8: a big event arriving in many chunks comes out whole (the rewriter keeps one growing buffer, not a copy per chunk)', () => {
    const rewriter = createSseRewriter(FILTER)
    const payload = new TextEncoder().encode(`data: ${JSON.stringify({ jsonrpc: '2.0', id: 2, result: { content: [{ type: 'text', text: 'x'.repeat(8 << 20) }] } })}\n\n`)
    let out = 0
    for (let i = 0; i < payload.length; i += 16384) out += rewriter.push(payload.subarray(i, i + 16384)).length
    out += rewriter.end().length
    assert.equal(out, payload.length)
  })
  it('finding 9: a body over the limit is answered 413 by the web step (it must not hang on cancelling a cloned body)', async () => {
    const request = new Request('http://127.0.0.1/mcp', { method: 'POST', headers: { 'content-type': 'application/json' }, body: ' '.repeat(4 * 1024 * 1024 + 1) })
    let timer: NodeJS.Timeout | undefined
    const answer = await Promise.race([fetchToolCallRefusal(LOCAL, AUTH, request), new Promise<'hung'>((r) => (timer = setTimeout(() => r('hung'), 2000)))])
    clearTimeout(timer)
    assert.notEqual(answer, 'hung', 'no answer within 2 s: the request hangs, holding its buffered body')
    assert.equal((answer as Response | undefined)?.status, 413)
  })

  it('the Node step answers 413 for a body over the limit (no hang)', async () => {
    const s = await listen((req, res) => nodeToolCallCheck(LOCAL)(Object.assign(req, { auth: AUTH }), res, () => res.writeHead(200).end('ran')))
    try {
      const res = await fetch(`${s.url}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: ' '.repeat(4 * 1024 * 1024 + 1), signal: AbortSignal.timeout(5000) })
      assert.equal(res.status, 413)
    } finally {
      await s.close()
    }
  })
})

describe('attack: the tool step (refused correctly)', () => {
  it('batch tricks: duplicate ids (either order), "1" vs 1, a refused call anywhere in a batch refuses the batch', async () => {
    for (const batch of [
      [call(1, 'read_note'), call(1, 'write_note')],
      [call(1, 'write_note'), call(1, 'read_note')],
      [call('1', 'read_note'), call(1, 'write_note')],
      [call(1, 'read_note'), { jsonrpc: '2.0', method: 'notifications/x' }, call(2, 'write_note')],
      [[call(1, 'write_note')]].flat(),
    ]) {
      const refusal = await checkToolCalls(LOCAL, AUTH, batch)
      assert.ok(refusal, JSON.stringify(batch))
      assert.equal(refusal.tool, 'write_note')
      const body = refusal.body as { id: unknown; error: { code: number } }[]
      assert.ok(Array.isArray(body))
      assert.ok(body.every((r) => r.error.code === TOOL_DENIED))
    }
  })

  it('odd params.name: non-strings refused as invalid params; case, whitespace, look-alikes and NUL refused as not in the token', async () => {
    for (const name of [undefined, null, 1, true, ['read_note'], { toString: 'read_note' }]) {
      const refusal = await checkToolCalls(LOCAL, AUTH, call(7, name))
      assert.ok(refusal, typeof name)
      assert.equal((refusal.body as { error: { code: number } }).error.code, -32602)
    }
    for (const name of ['READ_NOTE', 'read_note ', ' read_note', 'read_nоte', 'read_note\u0000', '\ufeffread_note', 'read_note\u200b']) {
      const refusal = await checkToolCalls(LOCAL, AUTH, call(7, name))
      assert.ok(refusal, JSON.stringify(name))
      assert.equal(refusal.decision.reason, 'tool_not_in_token')
    }
    // params as an array, no params at all: no name, refused.
    assert.ok(await checkToolCalls(LOCAL, AUTH, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: ['write_note'] }))
    assert.ok(await checkToolCalls(LOCAL, AUTH, { jsonrpc: '2.0', id: 1, method: 'tools/call' }))
  })

  it('a tools/call the step does not check (id null, object, boolean, absent, Infinity) is one the SDK does not run as a request', () => {
    for (const id of [null, {}, true, undefined, Number.POSITIVE_INFINITY]) {
      const m = call(id, 'write_note')
      assert.equal(toolCallsIn(m).length, 0)
      assert.equal(isJSONRPCRequest(JSON.parse(JSON.stringify(m))), false, `id ${String(id)}`)
    }
  })

  it('a malformed or confused token tools claim refuses every call', async () => {
    for (const tools of ['read_note', [1], null, {}]) {
      const refusal = await checkToolCalls(LOCAL, { token: 't', extra: { tools } }, call(1, 'read_note'))
      assert.ok(refusal, JSON.stringify(tools))
    }
    assert.equal(toolsInToken([{ type: 'mcp_tools', actions: ['read_note', 'bad name'] }], 'https://r').ok, false)
    assert.deepEqual(toolsInToken([{ type: 'mcp_tools', locations: ['https://other'], actions: ['write_note'] }], 'https://r'), { ok: true, tools: [] })
  })

  it('body games on the web step: BOM, any content type, chunked body, batch — all checked; GET/DELETE carry no call', async () => {
    const refusedFor = async (init: RequestInit) => fetchToolCallRefusal(LOCAL, AUTH, new Request('http://127.0.0.1/mcp', init))
    const body = JSON.stringify(call(1, 'write_note'))
    for (const [what, init] of [
      ['BOM', { method: 'POST', headers: { 'content-type': 'application/json' }, body: `\ufeff${body}` }],
      ['text/plain', { method: 'POST', headers: { 'content-type': 'text/plain' }, body }],
      ['no content type', { method: 'POST', body: new Blob([body]) }],
      ['charset', { method: 'POST', headers: { 'content-type': 'application/json; charset=utf-8' }, body }],
      ['batch', { method: 'POST', headers: { 'content-type': 'application/json' }, body: `[${body}]` }],
      ['streamed', { method: 'POST', headers: { 'content-type': 'application/json' }, body: new ReadableStream({ start: (c) => { for (const ch of body) c.enqueue(new TextEncoder().encode(ch)); c.close() } }), duplex: 'half' } as RequestInit],
    ] as const) {
      const res = await refusedFor(init as RequestInit)
      assert.ok(res, what)
      const answer = (await res.json()) as { error?: { code: number } } | { error: { code: number } }[]
      assert.equal((Array.isArray(answer) ? answer[0]! : answer).error!.code, TOOL_DENIED, what)
    }
    assert.equal(await refusedFor({ method: 'GET' }), undefined)
    assert.equal(await refusedFor({ method: 'DELETE' }), undefined)
  })

  it('tools/list framing: JSON batch, SSE byte by byte, CR-only and CRLF split across chunks, multi-line data, extra fields — all filtered', async () => {
    const sseCases = [
      `event: message\nid: 9\ndata: ${JSON.stringify(LIST)}\n\n`,
      `data: ${JSON.stringify(LIST)}\r\r`,
      `data: ${JSON.stringify(LIST)}\r\n\r\n`,
      `data:${JSON.stringify(LIST)}\n\n`,
      `: comment\ndata: {"jsonrpc":"2.0","id":1,\ndata: "result":{"tools":[{"name":"read_note"},{"name":"write_note"}]}}\n\n`,
      `data: \n\ndata: ${JSON.stringify([LIST, { jsonrpc: '2.0', id: 2, result: {} }])}\n\n`,
    ]
    for (const text of sseCases) {
      for (const size of [1, 2, 7, text.length]) {
        const r = createSseRewriter(FILTER)
        const bytes = new TextEncoder().encode(text)
        const out: Uint8Array[] = []
        for (let i = 0; i < bytes.length; i += size) out.push(r.push(bytes.subarray(i, i + size)))
        out.push(r.end())
        const result = new TextDecoder().decode(Buffer.concat(out))
        assert.deepEqual(listed(result), ['read_note'], `${JSON.stringify(text.slice(0, 40))} in chunks of ${size}`)
      }
    }
    const json = filterToolListResponse(new Response(JSON.stringify([LIST, { jsonrpc: '2.0', id: '1', result: { tools: [{ name: 'write_note' }] } }]), { headers: { 'content-type': 'Application/JSON; charset=utf-8' } }), { tools: ['read_note'], ids: [1, '1'] })
    assert.deepEqual(listed(await json.text()), ['read_note'])
  })

  it('adversarial server output does not crash or hang the response step: not JSON, truncated SSE, huge unterminated event, odd tools entries', async () => {
    const cases: [string, string][] = [
      ['application/json', '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_note"}'],
      ['application/json', '\u0000\u0001'],
      ['application/json', JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [null, 1, { name: 2 }, { name: 'write_note' }, { name: 'read_note' }] } })],
      ['text/event-stream', `data: ${JSON.stringify(LIST)}`],
      ['text/event-stream', '\r'.repeat(100000)],
      ['text/event-stream', `data: ${'x'.repeat(1 << 20)}`],
    ]
    for (const [type, text] of cases) {
      const res = filterToolListResponse(new Response(text, { headers: { 'content-type': type } }), FILTER)
      const out = await res.text()
      // Whatever passes, nothing beyond read_note is listed in a form a client would accept.
      assert.deepEqual(listed(out.replace(/data: [^\n]*$/, '')).filter((t) => t !== 'read_note'), [], `${type}: ${text.slice(0, 40)}`)
    }
  })
})
