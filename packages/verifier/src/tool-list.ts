import type { IncomingHttpHeaders, OutgoingHttpHeader, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib'
import type { Transformer } from 'node:stream/web'

/**
 * `tools/list` filtering (docs/mcp-integration.md, "Tools and the verifier kit"): when the token
 * names its tools (RFC 9396 `mcp_tools`), the answer to a `tools/list` request lists only those.
 * It is done at the HTTP level, so it works in front of any MCP server (stateless or with
 * sessions, SDK v1 or v2): the request step notes the JSON-RPC ids of the `tools/list` requests
 * in the body, and the response is rewritten on its way out — an `application/json` body (one
 * response or a batch) whole, a `text/event-stream` body event by event as it streams (only the
 * `data:` of a JSON-RPC response to one of those ids is rewritten; every other byte passes
 * unchanged). A cursor-paginated list is filtered page by page: each page is a `tools/list`
 * response of its own.
 */

type JsonRpcId = string | number

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

const isRequestId = (v: unknown): v is JsonRpcId => typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))

/** The ids of the `tools/list` requests of a JSON-RPC message or batch. */
export function toolListIdsIn(message: unknown): JsonRpcId[] {
  const messages = Array.isArray(message) ? message : [message]
  return messages.filter((m): m is { id: JsonRpcId } => isObject(m) && m.method === 'tools/list' && isRequestId(m.id)).map((m) => m.id)
}

/** What the response step needs: the tools the token names and the ids of the `tools/list` requests. */
export interface ToolListFilter {
  tools: readonly string[]
  /** `any`: a stream that answers no request of its own (a GET: the standalone stream, or a replay by `Last-Event-ID`) — every `tools/list`-shaped answer in it. */
  ids: readonly JsonRpcId[] | 'any'
}

/**
 * The JSON-RPC response (or batch) with the `result.tools` of every response to one of `ids`
 * narrowed to `tools`; `undefined` when nothing in it changes. Other members (`nextCursor`,
 * `_meta`) are kept: a client pages on as before, and each page is filtered in its turn.
 */
export function filterToolListMessage(message: unknown, filter: ToolListFilter): unknown | undefined {
  let changed = false
  const one = (m: unknown): unknown => {
    if (!isObject(m) || !isRequestId(m.id) || (filter.ids !== 'any' && !filter.ids.includes(m.id)) || !isObject(m.result) || !Array.isArray(m.result.tools)) return m
    changed = true
    const tools = m.result.tools.filter((t) => isObject(t) && typeof t.name === 'string' && filter.tools.includes(t.name))
    return { ...m, result: { ...m.result, tools } }
  }
  const out = Array.isArray(message) ? message.map(one) : one(message)
  return changed ? out : undefined
}

/** A whole JSON body, filtered; the same bytes when it is not JSON or nothing in it changes. */
export function filterJsonBody(body: Uint8Array, filter: ToolListFilter): Uint8Array {
  let parsed: unknown
  try {
    parsed = JSON.parse(new TextDecoder().decode(body))
  } catch {
    return body
  }
  const out = filterToolListMessage(parsed, filter)
  return out === undefined ? body : new TextEncoder().encode(JSON.stringify(out))
}

const LF = 0x0a
const CR = 0x0d

/**
 * An incremental `text/event-stream` rewriter (WHATWG HTML §9.2 event stream format): bytes go
 * in as they arrive, come out event by event. Only the current, incomplete event is held back;
 * an event whose data is a JSON-RPC response to one of the `tools/list` ids is re-emitted with
 * its `data:` rewritten (its other fields, `event:`/`id:`/`retry:`/comments, kept in order);
 * every other event passes byte for byte.
 */
export interface SseRewriter {
  /** Feeds a chunk; returns the bytes ready to send (possibly none). */
  push(chunk: Uint8Array): Uint8Array
  /** The end of the stream: whatever is held back (an unterminated last event), unchanged. */
  end(): Uint8Array
}

export function createSseRewriter(filter: ToolListFilter): SseRewriter {
  // The bytes held back (the current, incomplete event) in a buffer that grows by doubling: a big
  // event arriving in many chunks is copied O(n) times in all, not once per chunk.
  let store = new Uint8Array(0)
  let held = 0
  // Where scanning resumes in `pending`, and where its current line starts: a big event arriving
  // in many chunks is scanned once, not once per chunk.
  let scanFrom = 0
  let lineStart = 0

  function rewrite(event: Uint8Array): Uint8Array {
    const text = new TextDecoder().decode(event)
    const lines = text.split(/\r\n|\r|\n/)
    const data: string[] = []
    let firstData = -1
    lines.forEach((line, i) => {
      if (line === 'data' || line.startsWith('data:')) {
        if (firstData < 0) firstData = i
        const value = line.slice(5)
        data.push(value.startsWith(' ') ? value.slice(1) : value)
      }
    })
    if (firstData < 0) return event
    let parsed: unknown
    try {
      parsed = JSON.parse(data.join('\n'))
    } catch {
      return event
    }
    const out = filterToolListMessage(parsed, filter)
    if (out === undefined) return event
    // The event's own lines (the trailing empty ones are its terminator), data replaced by one line.
    const kept = lines.slice(0, lines.length - 2).flatMap((line, i) => (i === firstData ? [`data: ${JSON.stringify(out)}`] : line === 'data' || line.startsWith('data:') ? [] : [line]))
    return new TextEncoder().encode(`${kept.join('\n')}\n\n`)
  }

  /** Scans what is held plus `chunk`; `final`: no byte follows (a last CR is a line end, not half a CRLF). */
  function scan(chunk: Uint8Array, final: boolean): Uint8Array {
    if (held + chunk.length > store.length) {
      const grown = new Uint8Array(Math.max(store.length * 2, held + chunk.length, 4096))
      grown.set(store.subarray(0, held))
      store = grown
    }
    store.set(chunk, held)
    held += chunk.length
    const buf = store.subarray(0, held)
    const out: Uint8Array[] = []
    let eventStart = 0
    let i = scanFrom
    while (i < buf.length) {
      const b = buf[i]!
      if (b !== LF && b !== CR) {
        i++
        continue
      }
      // A CR at the end of what we have may be the first half of a CRLF: wait for the next byte.
      if (b === CR && i + 1 === buf.length && !final) break
      const next = b === CR && buf[i + 1] === LF ? i + 2 : i + 1
      if (i === lineStart) {
        // An empty line ends the event.
        // A copy: the buffer is reused for what follows.
        out.push(rewrite(buf.slice(eventStart, next)))
        eventStart = next
      }
      lineStart = next
      i = next
    }
    // What remains after the last complete event came in with this chunk: moving it is bounded by the chunk.
    if (eventStart > 0) store.copyWithin(0, eventStart, held)
    held -= eventStart
    scanFrom = i - eventStart
    lineStart -= eventStart
    return concat(out)
  }

  return {
    push: (chunk) => scan(chunk, false),
    end() {
      const out = scan(new Uint8Array(0), true)
      // An unterminated last event is passed on as it is (a client drops it anyway).
      const rest = store.slice(0, held)
      store = new Uint8Array(0)
      held = 0
      scanFrom = lineStart = 0
      return concat([out, rest])
    },
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

type BodyKind = 'json' | 'sse' | 'other'

function kindOf(contentType: string | null | undefined): BodyKind {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase()
  return type === 'application/json' ? 'json' : type === 'text/event-stream' ? 'sse' : 'other'
}

/**
 * The fetch-side response step: `response` with its `tools/list` answers filtered (see
 * {@link ToolListFilter}). The body is transformed as it streams (SSE) or once complete (JSON);
 * `content-length` is dropped, since the length changes. Any other response is returned as is.
 */
export function filterToolListResponse(response: Response, filter: ToolListFilter | undefined): Response {
  if (!filter || (filter.ids !== 'any' && filter.ids.length === 0) || !response.body) return response
  const kind = kindOf(response.headers.get('content-type'))
  if (kind === 'other') return response
  // A compressed answer cannot be read as it is: decoded (gzip, deflate) or, any other coding, refused.
  const coding = (response.headers.get('content-encoding') ?? 'identity').trim().toLowerCase()
  let body: ReadableStream<Uint8Array> = response.body
  if (coding === 'gzip' || coding === 'x-gzip' || coding === 'deflate') body = body.pipeThrough(new DecompressionStream(coding === 'deflate' ? 'deflate' : 'gzip') as never) as ReadableStream<Uint8Array>
  else if (coding !== 'identity') return Response.json({ jsonrpc: '2.0', id: null, error: { code: -32603, message: `tools/list answer in content-encoding ${coding} cannot be filtered` } }, { status: 502 })
  let transform: Transformer<Uint8Array, Uint8Array>
  if (kind === 'sse') {
    const sse = createSseRewriter(filter)
    transform = {
      transform: (chunk, controller) => {
        const out = sse.push(chunk)
        if (out.length > 0) controller.enqueue(out)
      },
      flush: (controller) => {
        const out = sse.end()
        if (out.length > 0) controller.enqueue(out)
      },
    }
  } else {
    const chunks: Uint8Array[] = []
    transform = {
      transform: (chunk) => void chunks.push(chunk),
      flush: (controller) => controller.enqueue(filterJsonBody(concat(chunks), filter)),
    }
  }
  const headers = new Headers(response.headers)
  headers.delete('content-length')
  headers.delete('content-encoding')
  return new Response(body.pipeThrough(new TransformStream(transform)), { status: response.status, statusText: response.statusText, headers })
}

type Headerish = OutgoingHttpHeaders | OutgoingHttpHeader[] | IncomingHttpHeaders | undefined

/** A header's value from `writeHead`'s headers argument (an object, or a flat/paired raw array). */
function headerIn(headers: Headerish, name: string): string | undefined {
  if (!headers) return undefined
  if (Array.isArray(headers)) {
    const flat = headers.flat() as unknown[]
    for (let i = 0; i + 1 < flat.length; i += 2) if (String(flat[i]).toLowerCase() === name) return String(flat[i + 1])
    return undefined
  }
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name && v !== undefined) return Array.isArray(v) ? v.join(', ') : String(v)
  return undefined
}

/** `headers` without `content-length`, as an object (the response's length changes). */
function withoutLength(headers: Headerish): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  if (!headers) return out
  if (Array.isArray(headers)) {
    const flat = headers.flat() as unknown[]
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const k = String(flat[i])
      if (k.toLowerCase() === 'content-length') continue
      const prev = out[k]
      const v = String(flat[i + 1])
      out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v]
    }
    return out
  }
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== 'content-length' && v !== undefined) out[k] = v as OutgoingHttpHeader
  return out
}

function toBytes(chunk: unknown, encoding: unknown): Uint8Array {
  if (typeof chunk === 'string') return Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
  if (chunk instanceof Uint8Array) return chunk
  return new Uint8Array(0)
}

type Callback = (error?: Error | null) => void

/**
 * The Node-side response step: wraps `res.writeHead`/`write`/`end` so that the `tools/list`
 * answers of this response are filtered (see {@link ToolListFilter}), whatever writes it (the
 * SDK v1 transport, `@hono/node-server`, plain `http`). An SSE body is rewritten event by event
 * as it is written, headers sent at once without `content-length`; a JSON body is held until
 * `end()` and sent with its new `content-length`. Any other response passes unchanged.
 */
export function filterNodeToolList(res: ServerResponse, filter: ToolListFilter): void {
  if (filter.ids !== 'any' && filter.ids.length === 0) return
  const writeHead = res.writeHead.bind(res) as (status: number, ...rest: unknown[]) => ServerResponse
  const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse
  const flushHeaders = res.flushHeaders.bind(res)
  let kind: BodyKind | undefined
  let sse: SseRewriter | undefined
  let held: { status: number; message: string | undefined; headers: OutgoingHttpHeaders } | undefined
  // A compressed body (e.g. compression() wrapping res after this step) is held whole, decoded, filtered and sent identity-coded.
  let coding: string | undefined
  let sseHeld = false
  const chunks: Uint8Array[] = []

  function decide(status: number, rest: unknown[]): void {
    const message = typeof rest[0] === 'string' ? rest[0] : undefined
    const headers = (typeof rest[0] === 'string' ? rest[1] : rest[0]) as Headerish
    const contentType = headerIn(headers, 'content-type') ?? (res.getHeader('content-type') as string | undefined)
    kind = status === 200 ? kindOf(contentType) : 'other'
    if (kind === 'other') {
      writeHead(status, ...rest)
      return
    }
    // The length changes: drop it (removing it also voids a length @hono/node-server set without a header).
    res.removeHeader('content-length')
    const encoded = (headerIn(headers, 'content-encoding') ?? String(res.getHeader('content-encoding') ?? 'identity')).trim().toLowerCase()
    if (encoded !== 'identity') {
      coding = encoded
      sseHeld = kind === 'sse'
      kind = 'json'
      res.removeHeader('content-encoding')
      const h = withoutLength(headers)
      for (const k of Object.keys(h)) if (k.toLowerCase() === 'content-encoding') delete h[k]
      held = { status, message, headers: h }
    } else if (kind === 'json') held = { status, message, headers: withoutLength(headers) }
    else {
      sse = createSseRewriter(filter)
      if (message !== undefined) writeHead(status, message, withoutLength(headers))
      else writeHead(status, withoutLength(headers))
    }
  }

  res.writeHead = function filteredWriteHead(status: number, ...rest: unknown[]) {
    if (kind === undefined) decide(status, rest)
    else if (kind === 'other') writeHead(status, ...rest)
    return res
  } as ServerResponse['writeHead']

  // A JSON body's headers wait for its new length.
  res.flushHeaders = function filteredFlushHeaders() {
    if (kind === undefined) res.writeHead(res.statusCode)
    if (kind !== 'json') flushHeaders()
  }

  res.write = function filteredWrite(chunk: unknown, encoding?: unknown, cb?: unknown) {
    const callback = (typeof encoding === 'function' ? encoding : cb) as Callback | undefined
    if (kind === undefined) res.writeHead(res.statusCode)
    if (kind === 'other') return write(chunk, encoding, cb)
    const bytes = toBytes(chunk, encoding)
    if (kind === 'json') {
      chunks.push(Buffer.from(bytes))
      if (callback) process.nextTick(callback)
      return true
    }
    const out = sse!.push(bytes)
    if (out.length > 0) return write(out, callback)
    if (callback) process.nextTick(callback)
    return true
  } as ServerResponse['write']

  res.end = function filteredEnd(chunk?: unknown, encoding?: unknown, cb?: unknown) {
    const callback = (typeof chunk === 'function' ? chunk : typeof encoding === 'function' ? encoding : cb) as Callback | undefined
    const last = typeof chunk === 'function' ? new Uint8Array(0) : toBytes(chunk, encoding)
    if (kind === undefined) res.writeHead(res.statusCode)
    if (kind === 'other') return end(chunk, encoding, cb)
    if (kind === 'json') {
      chunks.push(Buffer.from(last))
      let raw = concat(chunks)
      let h = held!
      if (coding !== undefined) {
        const decode = coding === 'gzip' || coding === 'x-gzip' ? gunzipSync : coding === 'deflate' ? inflateSync : coding === 'br' ? brotliDecompressSync : undefined
        try {
          if (!decode) throw new Error(coding)
          raw = decode(raw)
        } catch {
          // Fail closed: an answer that cannot be read is not passed on.
          raw = new TextEncoder().encode(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32603, message: 'the tools/list answer could not be filtered' } }))
          h = { status: 502, message: undefined, headers: { 'content-type': 'application/json' } }
        }
      }
      const sse = sseHeld && h.status === 200 ? createSseRewriter(filter) : undefined
      const body = sse ? concat([sse.push(raw), sse.end()]) : filterJsonBody(raw, filter)
      const headers = { ...h.headers, 'content-length': body.length }
      if (h.message !== undefined) writeHead(h.status, h.message, headers)
      else writeHead(h.status, headers)
      return end(body, callback)
    }
    const out = concat([sse!.push(last), sse!.end()])
    return end(out, callback)
  } as ServerResponse['end']
}
