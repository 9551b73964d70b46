import type { Clock } from './clock.js'
import type { RevocationEvent, SubjectId } from './feed-events.js'

/**
 * The verifier side of the broker's revocation feed (`GET /revocations`): a deny-set of revoked
 * token ids, task ids, sessions and signing keys, kept current by the Server-Sent Events stream,
 * with polling as the fallback whenever the stream is down, and resumption from the last cursor
 * seen (`Last-Event-ID`) after any disconnect or broker restart. Freshness is tracked with the
 * injected clock, so a verifier can fail closed when it has not heard from the broker for
 * longer than it tolerates.
 *
 * Every poll page and the stream's `ready` event carry the feed's `epoch` and `head`. A new
 * epoch (a new database) or a head below the cursor (an older copy restored) means the event ids
 * started again: the cursor goes back to 0 and the feed is read again from the start, keeping
 * the deny-set (a revocation stays true), and the verifier reports itself not fresh — refusing
 * every token — until it has caught up.
 */

/**
 * One event as the broker sends it: the broker's own wire type, with `type` left open so a
 * verifier tolerates (and ignores) event types a newer broker may add.
 */
export type FeedEvent = Omit<RevocationEvent, 'type'> & { type: RevocationEvent['type'] | (string & {}) }

export interface FeedClientOptions {
  feedUrl: string
  credentials: { clientId: string; clientSecret: string }
  /** Fail closed when the feed has not been heard from for this long. */
  staleAfterSeconds: number
  /** Poll period while the stream is down; also the watchdog tick. */
  pollIntervalMs: number
  /** Tolerance added to an entry's `until` before it is dropped from the deny-set. */
  leewaySeconds: number
  clock: Clock
  fetch: typeof fetch
  /** Called once per applied event (for logs, metrics, or the demo's latency figure). */
  onEvent?: ((event: FeedEvent, receivedAtMs: number) => void) | undefined
  /** Called on transport problems (reporting only: the feed keeps retrying). */
  onError?: ((error: Error) => void) | undefined
  /** Called when a `key_revoked` event names a signing key to distrust until `until` (epoch seconds). */
  onKeyRevoked?: ((kid: string, until: number) => void) | undefined
}

export interface FeedStatus {
  /** The id of the last event applied (`0` before the first). */
  cursor: string
  /** The feed epoch the cursor belongs to (undefined before the first answer). */
  epoch: string | undefined
  /** Whether the feed is being read again from the start after a reset (not fresh meanwhile). */
  resyncing: boolean
  /** Whether the SSE stream is currently open. */
  streaming: boolean
  /** Clock time (ms) the feed was last heard from, if ever. */
  lastSyncAtMs: number | undefined
  fresh: boolean
  denied: { tokens: number; tasks: number; sessions: number; keys: number }
}

export interface RevocationFeedClient {
  /** Resolves once the deny-set has caught up with the feed for the first time. */
  ready(timeoutMs?: number): Promise<void>
  isFresh(): boolean
  /** Whether the token's jti, task or session (subject issuer, sid) was revoked. */
  isRevoked(claims: { jti: string; task_id: string; sub_id: SubjectId; sid?: string | undefined }): boolean
  status(): FeedStatus
  close(): Promise<void>
}

const PAGE = 1000
const REQUEST_TIMEOUT_MS = 5000
const MAX_BACKOFF_MS = 5000

/** RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding. */
export function basicCredentials(clientId: string, clientSecret: string): string {
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+')
  return `Basic ${Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64')}`
}

function isFeedEvent(value: unknown): value is FeedEvent {
  if (typeof value !== 'object' || value === null) return false
  const e = value as Record<string, unknown>
  return typeof e.id === 'string' && /^[0-9]{1,15}$/.test(e.id) && typeof e.type === 'string' && typeof e.until === 'number'
}

/** The feed's epoch and head, as every poll page and the stream's `ready` event carry them. */
interface FeedPosition {
  epoch: string
  head: number
}

function feedPosition(value: unknown): FeedPosition | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const { epoch, head } = value as Record<string, unknown>
  if (typeof epoch !== 'string' || epoch === '' || typeof head !== 'string' || !/^[0-9]{1,15}$/.test(head)) return undefined
  return { epoch, head: Number(head) }
}

function isSubjectId(value: unknown): value is SubjectId {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  return v.format === 'iss_sub' && typeof v.iss === 'string' && v.iss !== '' && typeof v.sub === 'string' && v.sub !== ''
}

/** Thrown inside a read to abandon what it was reading: the feed was reset meanwhile. */
class FeedReset extends Error {}

export function createRevocationFeedClient(opts: FeedClientOptions): RevocationFeedClient {
  const authorization = basicCredentials(opts.credentials.clientId, opts.credentials.clientSecret)
  const { clock } = opts
  const tokens = new Map<string, number>()
  const tasks = new Map<string, number>()
  const sessions = new Map<string, number>()
  const keys = new Map<string, number>()

  let cursor = 0
  let epoch: string | undefined
  let resyncing = false
  // Bumped at every reset: a poll answer or a stream opened before it is about the old sequence.
  let resets = 0
  let lastSyncAtMs: number | undefined
  let stream: 'idle' | 'connecting' | 'open' = 'idle'
  let streamAbort: AbortController | undefined
  let reconnectTimer: NodeJS.Timeout | undefined
  let backoffMs = 250
  let polling: Promise<void> | undefined
  let closed = false
  let markReady: () => void = () => {}
  const readyPromise = new Promise<void>((resolve) => { markReady = resolve })

  // A session is (subject issuer, sid): two issuers' session ids never collide.
  const sessionKey = (subjectIssuer: string, sid: string) => `${subjectIssuer}\0${sid}`

  function heard(atMs: number): void {
    lastSyncAtMs = lastSyncAtMs === undefined ? atMs : Math.max(lastSyncAtMs, atMs)
    markReady()
  }

  function prune(): void {
    const horizon = clock.now() - opts.leewaySeconds
    for (const set of [tokens, tasks, sessions, keys]) {
      for (const [k, until] of set) if (until < horizon) set.delete(k)
    }
  }

  /** Applies an event once: both the stream and the poller deliver in order from their start, so anything at or below the cursor was seen. */
  function apply(event: FeedEvent): void {
    const id = Number(event.id)
    if (id <= cursor) return
    cursor = id
    const until = event.until
    switch (event.type) {
      case 'token_revoked':
        if (event.jti) tokens.set(event.jti, until)
        break
      case 'task_completed':
      case 'task_revoked':
        if (event.task_id) tasks.set(event.task_id, until)
        break
      case 'session_revoked':
        // Tasks bound to the session get their own task_revoked events; this also covers
        // tokens of the session whose task events were pruned or are still to come.
        if (event.sid && isSubjectId(event.sub_id)) sessions.set(sessionKey(event.sub_id.iss, event.sid), until)
        break
      case 'key_revoked':
        if (typeof event.kid === 'string' && event.kid !== '') {
          keys.set(event.kid, Math.max(until, keys.get(event.kid) ?? until))
          try {
            opts.onKeyRevoked?.(event.kid, until)
          } catch (e) {
            report(e)
          }
        }
        break
      default:
        // An event type this verifier does not know: the cursor moves on, nothing is denied.
        break
    }
    try {
      opts.onEvent?.(event, clock.nowMs())
    } catch (e) {
      // A throwing hook must not stall the feed.
      report(e)
    }
  }

  function report(e: unknown): void {
    if (!closed) opts.onError?.(e instanceof Error ? e : new Error(String(e)))
  }

  /**
   * Compares where the broker's feed stands with the cursor: a new epoch, or a head below the
   * cursor, means the ids started again. Then the cursor goes back to 0 and the verifier is not
   * fresh until a poll has read everything again; the deny-set is kept. Returns whether it reset.
   */
  function observe(position: FeedPosition): boolean {
    if (epoch === undefined) epoch = position.epoch
    if (position.epoch === epoch && cursor <= position.head) return false
    report(new Error(`revocation feed was reset (epoch ${position.epoch === epoch ? 'unchanged' : 'changed'}, head ${position.head}, cursor ${cursor}): reading it again from the start`))
    epoch = position.epoch
    cursor = 0
    resyncing = true
    resets++
    return true
  }

  /** GET /revocations?after=<cursor> until the feed is drained. */
  async function pollOnce(): Promise<void> {
    for (let resetsSeen = 0; ; ) {
      const startedAtMs = clock.nowMs()
      const generation = resets
      const url = new URL(opts.feedUrl)
      url.searchParams.set('after', String(cursor))
      url.searchParams.set('limit', String(PAGE))
      const res = await opts.fetch(url, { headers: { authorization, accept: 'application/json' }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
      if (!res.ok) {
        await res.body?.cancel()
        throw new Error(`revocation feed poll answered HTTP ${res.status}`)
      }
      const body = (await res.json()) as { events?: unknown }
      const position = feedPosition(body)
      if (!Array.isArray(body.events) || !body.events.every(isFeedEvent) || !position) throw new Error('revocation feed poll returned a malformed body')
      // A reset seen meanwhile (by the stream) or in this answer: the page is about the old sequence.
      if (generation !== resets || observe(position)) {
        // A feed that keeps resetting cannot be caught up with: stay not fresh and retry on the next tick.
        if (++resetsSeen > 3) throw new Error('revocation feed keeps resetting')
        continue
      }
      for (const e of body.events) apply(e)
      if (body.events.length < PAGE) {
        // Drained: after a reset, this is the moment the deny-set has caught up again.
        resyncing = false
        // What the broker answered reflects its state when the request was made.
        heard(startedAtMs)
        return
      }
      heard(startedAtMs)
    }
  }

  function poll(): Promise<void> {
    polling ??= pollOnce()
      .catch(report)
      .finally(() => { polling = undefined })
    return polling
  }

  function scheduleReconnect(): void {
    if (closed || reconnectTimer || stream !== 'idle') return
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined
      openStream()
    }, backoffMs)
    reconnectTimer.unref()
    backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS)
  }

  /** The SSE stream, resumed from the cursor; any data (event or heartbeat comment) counts as being heard from. */
  function openStream(): void {
    if (closed || stream !== 'idle') return
    stream = 'connecting'
    const abort = new AbortController()
    streamAbort = abort
    let timedOut = false
    const connectTimer = setTimeout(() => { timedOut = true; abort.abort() }, REQUEST_TIMEOUT_MS)
    void (async () => {
      try {
        const res = await opts.fetch(opts.feedUrl, {
          headers: { authorization, accept: 'text/event-stream', 'last-event-id': String(cursor) },
          signal: abort.signal,
        })
        clearTimeout(connectTimer)
        if (!res.ok || !(res.headers.get('content-type') ?? '').startsWith('text/event-stream') || !res.body) {
          await res.body?.cancel()
          throw new Error(`revocation feed stream answered HTTP ${res.status}`)
        }
        stream = 'open'
        backoffMs = 250
        await readStream(res.body, resets)
        if (!closed) report(new Error('revocation feed stream ended'))
      } catch (e) {
        // A reset ends the stream on purpose (leaving the loop cancelled the body); anything else is reported.
        if (!(e instanceof FeedReset) && (!abort.signal.aborted || timedOut)) report(timedOut ? new Error('revocation feed stream did not answer in time') : e)
      } finally {
        clearTimeout(connectTimer)
        stream = 'idle'
        if (streamAbort === abort) streamAbort = undefined
        // Catch up by polling at once, then try the stream again.
        if (!closed) {
          void poll()
          scheduleReconnect()
        }
      }
    })()
  }

  /** Reads SSE messages; `generation` is the reset count when the stream was opened. */
  async function readStream(body: ReadableStream<Uint8Array>, generation: number): Promise<void> {
    const decoder = new TextDecoder()
    let buffer = ''
    let event = ''
    let data: string[] = []
    for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true })
      let nl: number
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl)
        buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1))
        if (line === '') {
          // Dispatch (WHATWG HTML §9.2.6).
          if (event === 'ready' || (event === 'revocation' && data.length > 0)) {
            const parsed: unknown = JSON.parse(data.join('\n'))
            // Opened before a reset: it streams the old sequence from the old cursor.
            if (generation !== resets) throw new FeedReset()
            if (event === 'ready') {
              const position = feedPosition(parsed)
              if (!position) throw new Error('revocation feed stream sent a malformed ready event')
              // Reset: read everything again by polling (which clears `resyncing`), then stream anew.
              if (observe(position)) throw new FeedReset()
            } else {
              if (!isFeedEvent(parsed)) throw new Error('revocation feed stream sent a malformed event')
              apply(parsed)
            }
          }
          event = ''
          data = []
          heard(clock.nowMs())
          continue
        }
        if (line.startsWith(':')) {
          heard(clock.nowMs())
          continue
        }
        const colon = line.indexOf(':')
        const field = colon < 0 ? line : line.slice(0, colon)
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
        if (field === 'event') event = value
        else if (field === 'data') data.push(value)
      }
    }
  }

  // Watchdog: poll while the stream is down or the feed is being read again after a reset, and
  // when the stream has been quiet for half the staleness bound (a silent half-open connection
  // must not keep the verifier "fresh").
  const watchdog = setInterval(() => {
    prune()
    const quietMs = lastSyncAtMs === undefined ? Infinity : clock.nowMs() - lastSyncAtMs
    // After a reset only a drained poll proves the deny-set caught up, however lively the stream.
    if (stream !== 'open' || resyncing || quietMs > (opts.staleAfterSeconds * 1000) / 2) void poll()
    if (stream === 'idle') scheduleReconnect()
  }, opts.pollIntervalMs)
  watchdog.unref()

  // Start: catch up by polling, then stream from the cursor reached.
  void poll().then(() => { if (lastSyncAtMs !== undefined) openStream() })

  function isFresh(): boolean {
    return !resyncing && lastSyncAtMs !== undefined && clock.nowMs() - lastSyncAtMs <= opts.staleAfterSeconds * 1000
  }

  return {
    ready(timeoutMs = 10_000) {
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`revocation feed not reachable within ${timeoutMs} ms`)), timeoutMs)
        timer.unref()
      })
      return Promise.race([readyPromise, timeout]).finally(() => clearTimeout(timer))
    },
    isFresh,
    isRevoked({ jti, task_id, sub_id, sid }) {
      return tokens.has(jti) || tasks.has(task_id) || (sid !== undefined && sessions.has(sessionKey(sub_id.iss, sid)))
    },
    status() {
      return {
        cursor: String(cursor),
        epoch,
        resyncing,
        streaming: stream === 'open',
        lastSyncAtMs,
        fresh: isFresh(),
        denied: { tokens: tokens.size, tasks: tasks.size, sessions: sessions.size, keys: keys.size },
      }
    },
    async close() {
      closed = true
      clearInterval(watchdog)
      if (reconnectTimer) clearTimeout(reconnectTimer)
      streamAbort?.abort()
      await polling
    },
  }
}
