import { randomUUID } from 'node:crypto'
import type { TaskTokenVerifierOptions } from './options.js'
import { basicCredentials, type FeedEvent } from './revocation-feed.js'
import { MCP_TOOL_NAME } from './token-tools.js'

/**
 * The verifier kit's client of the broker's AuthZEN PDP (docs/authzen.md): before a tool runs,
 * `verifier.authorize(authInfo, {tool, arguments})` asks `POST /access/v1/evaluation` whether this
 * task token may call this tool now, authenticated with the resource's credential. Answers are
 * kept in a short, bounded decision cache keyed by (token `jti`, tool); a revocation event for
 * the token, its task or its session drops its entries at once. Anything but a well-formed
 * answer from the PDP is a deny (fail closed), never cached.
 *
 * Imports nothing of the broker (the kit is its own package): the wire shapes are restated here.
 */

type Clock = NonNullable<TaskTokenVerifierOptions['clock']>

/** What `authorize` answers. `reason` is the PDP's `context.reason`, or the kit's own when it could not ask. */
export interface ToolDecision {
  allowed: boolean
  reason?: string
}

/** The facts of a verified token the cache needs (a subset of `TaskAuthInfo`). */
export interface AuthorizedToken {
  token: string
  extra: { jti: string; task_id: string; sid?: string; sub_id: { format: 'iss_sub'; iss: string; sub: string } }
}

export interface ToolCall {
  /** The MCP tool name (`params.name` of `tools/call`). */
  tool: string
  /** The call's arguments: sent as `context.arguments` (the PDP bounds them and does not evaluate them). */
  arguments?: Record<string, unknown> | undefined
}

export interface DecisionCacheOptions {
  /** How long an answer is reused, ms (0: never). */
  ttlMs: number
  maxEntries: number
  clock: Clock
}

interface Entry {
  decision: ToolDecision
  expiresAtMs: number
  taskId: string
  session: string | undefined
}

/** A session as the feed names it: (subject issuer, sid); two issuers' sids never collide. */
const sessionKey = (iss: string, sid: string) => `${iss}\0${sid}`

/**
 * Decisions by (jti, tool), least recently used first out, each until `ttlMs` after it was
 * fetched (the injected clock). {@link DecisionCache.forget} drops the entries a revocation event
 * concerns.
 */
export interface DecisionCache {
  get(jti: string, tool: string): ToolDecision | undefined
  /**
   * Keeps an answer. `since`: the {@link generation} when the question was asked — an answer asked
   * before a revocation event arrived is not kept (it may predate the revocation).
   */
  set(token: AuthorizedToken, tool: string, decision: ToolDecision, since?: number): void
  /** Counts the revocation events seen ({@link forget}). */
  readonly generation: number
  /** Drops every entry the event ends: its token, its task, its session; a key revocation drops all. */
  forget(event: Pick<FeedEvent, 'type' | 'jti' | 'task_id' | 'sid' | 'sub_id'>): void
  readonly size: number
}

export function createDecisionCache(opts: DecisionCacheOptions): DecisionCache {
  const entries = new Map<string, Entry>()
  let generation = 0
  const key = (jti: string, tool: string) => `${jti}\0${tool}`
  const dropWhere = (test: (k: string, e: Entry) => boolean) => {
    for (const [k, e] of entries) if (test(k, e)) entries.delete(k)
  }
  return {
    get(jti, tool) {
      const k = key(jti, tool)
      const e = entries.get(k)
      if (!e) return undefined
      if (opts.clock.nowMs() >= e.expiresAtMs) {
        entries.delete(k)
        return undefined
      }
      // Map order is the recency order: a hit moves to the back.
      entries.delete(k)
      entries.set(k, e)
      return e.decision
    },
    set(token, tool, decision, since) {
      if (opts.ttlMs <= 0 || (since !== undefined && since !== generation)) return
      const k = key(token.extra.jti, tool)
      entries.delete(k)
      const { sid, sub_id: subId } = token.extra
      entries.set(k, { decision, expiresAtMs: opts.clock.nowMs() + opts.ttlMs, taskId: token.extra.task_id, session: sid !== undefined && subId !== undefined ? sessionKey(subId.iss, sid) : undefined })
      while (entries.size > opts.maxEntries) entries.delete(entries.keys().next().value!)
    },
    forget(event) {
      generation++
      switch (event.type) {
        case 'token_revoked':
          if (event.jti !== undefined) dropWhere((k) => k.startsWith(`${event.jti}\0`))
          break
        case 'task_completed':
        case 'task_revoked':
          if (event.task_id !== undefined) dropWhere((_, e) => e.taskId === event.task_id)
          break
        case 'session_revoked':
          if (event.sid !== undefined && event.sub_id !== undefined) {
            const s = sessionKey(event.sub_id.iss, event.sid)
            dropWhere((_, e) => e.session === s)
          }
          break
        case 'key_revoked':
          entries.clear()
          break
      }
    },
    get size() {
      return entries.size
    },
    get generation() {
      return generation
    },
  }
}

export interface PdpClientOptions {
  evaluationUrl: string
  credentials: { clientId: string; clientSecret: string }
  timeoutMs: number
  cache: DecisionCache
  fetch: typeof fetch
  /** Whether the feed already knows the token, its task or its session as revoked. */
  isRevoked?: ((token: AuthorizedToken) => boolean) | undefined
  onError?: ((error: Error) => void) | undefined
}

export interface PdpClient {
  authorize(token: AuthorizedToken, call: ToolCall): Promise<ToolDecision>
}

/**
 * Arguments are sent only within the PDP's bounds (8192 characters, 32 levels; the kit keeps a
 * margin): the PDP never evaluates them, so a large call is asked about without them rather than
 * refused for its size.
 */
const MAX_SENT_ARGUMENTS = 4096
const MAX_SENT_DEPTH = 16

function sendable(args: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (args === undefined || typeof args !== 'object' || args === null || Array.isArray(args)) return undefined
  let text: string
  try {
    text = JSON.stringify(args)
  } catch {
    return undefined
  }
  if (text.length > MAX_SENT_ARGUMENTS) return undefined
  // Depth without recursion.
  const stack: [unknown, number][] = [[args, 1]]
  while (stack.length > 0) {
    const [v, d] = stack.pop()!
    if (typeof v !== 'object' || v === null) continue
    if (d > MAX_SENT_DEPTH) return undefined
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, d + 1])
  }
  return args
}

/** The COAZ-MCP binding's action name for `tools/call`. */
const TOOL_CALL_ACTION = 'tools/call'

/**
 * Asks the PDP (AuthZEN 1.0 Access Evaluation API) with the subject `{type: "task_token", id: <token>}`, the action
 * `tools/call` and the resource `{type: "tool", id: <tool>}`. Concurrent questions about the same
 * (jti, tool) share one request.
 */
export function createPdpClient(opts: PdpClientOptions): PdpClient {
  const authorization = basicCredentials(opts.credentials.clientId, opts.credentials.clientSecret)
  const inflight = new Map<string, Promise<ToolDecision>>()
  const fail = (e: unknown): ToolDecision => {
    opts.onError?.(e instanceof Error ? e : new Error(String(e)))
    return { allowed: false, reason: 'pdp_unavailable' }
  }

  async function ask(token: AuthorizedToken, call: ToolCall): Promise<ToolDecision> {
    const args = sendable(call.arguments)
    const since = opts.cache.generation
    let body: unknown
    try {
      const res = await opts.fetch(opts.evaluationUrl, {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/json', accept: 'application/json', 'x-request-id': randomUUID() },
        body: JSON.stringify({
          subject: { type: 'task_token', id: token.token },
          action: { name: TOOL_CALL_ACTION },
          resource: { type: 'tool', id: call.tool },
          context: args !== undefined ? { arguments: args } : {},
        }),
        redirect: 'manual',
        signal: AbortSignal.timeout(opts.timeoutMs),
      })
      if (res.status !== 200) {
        await res.body?.cancel()
        return fail(new Error(`the PDP answered HTTP ${res.status}`))
      }
      body = await res.json()
    } catch (e) {
      return fail(e)
    }
    // The response's `decision` is a required boolean; anything else is not an answer.
    const answer = body as { decision?: unknown; context?: { reason?: unknown } } | null
    if (typeof answer !== 'object' || answer === null || typeof answer.decision !== 'boolean') return fail(new Error('the PDP answer has no boolean "decision"'))
    const reason = typeof answer.context?.reason === 'string' ? answer.context.reason : undefined
    const decision: ToolDecision = { allowed: answer.decision, ...(reason !== undefined ? { reason } : {}) }
    opts.cache.set(token, call.tool, decision, since)
    return decision
  }

  return {
    async authorize(token, call) {
      if (typeof call?.tool !== 'string' || !MCP_TOOL_NAME.test(call.tool)) return { allowed: false, reason: 'invalid_tool_name' }
      // The feed may already know better than any cached answer.
      if (opts.isRevoked?.(token)) return { allowed: false, reason: 'token_revoked' }
      const cached = opts.cache.get(token.extra.jti, call.tool)
      if (cached) return cached
      const k = `${token.extra.jti}\0${call.tool}`
      let pending = inflight.get(k)
      if (!pending) {
        pending = ask(token, call).finally(() => inflight.delete(k))
        inflight.set(k, pending)
      }
      return pending
    },
  }
}
