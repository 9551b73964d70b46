import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { serve } from '@hono/node-server'
import { MAX_LEEWAY_SECONDS } from '@taskpass/verifier'
import type { ConfigInput } from '../src/config.js'
import { createFeedHub } from '../src/revocations/hub.js'
import { revocationPruneHorizon, revocationRetentionSeconds } from '../src/store/retention.js'
import { ADMIN_KEY, CALENDAR as CALENDAR_URI, createTestBroker, NOTES, NOTES_SECRET, T0, USER_ISSUER, type TestBroker } from './harness.js'

const notesAuth = `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}`

async function poll(b: TestBroker, after = '0', auth = notesAuth) {
  return b.app.request(`/revocations?after=${after}`, { headers: { authorization: auth } })
}

/** Reads SSE events from a streaming response until `count` `revocation` events arrived. */
async function readSse(res: Response, count: number): Promise<{ id: string; data: Record<string, unknown> }[]> {
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  const out: { id: string; data: Record<string, unknown> }[] = []
  while (out.length < count) {
    const { value, done } = await reader.read()
    if (done) break
    buffer += decoder.decode(value, { stream: true })
    let i
    while ((i = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, i)
      buffer = buffer.slice(i + 2)
      const fields = Object.fromEntries(block.split('\n').filter((l) => l && !l.startsWith(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]))
      if (fields.event === 'revocation') out.push({ id: fields.id!, data: JSON.parse(fields.data!) as Record<string, unknown> })
    }
  }
  await reader.cancel()
  return out
}

describe('revocation feed', () => {
  let b: TestBroker
  beforeEach(async () => { b = await createTestBroker() })
  afterEach(() => b.close())

  it('is readable by registered resources only', async () => {
    assert.equal((await b.app.request('/revocations')).status, 401)
    assert.equal((await poll(b, '0', `Basic ${Buffer.from('notes-mcp:wrong').toString('base64')}`)).status, 401)
    assert.equal((await poll(b, 'abc')).status, 400)
    assert.equal((await poll(b)).status, 200)
  })

  it('polling returns ordered, durable events after a cursor', async () => {
    const t1 = (await (await b.exchange()).json()) as { task_id: string; access_token: string }
    const t2 = (await (await b.exchange()).json()) as { task_id: string; access_token: string }
    await b.post('/revoke', { token: t2.access_token }, { authorization: notesAuth })
    await b.app.request(`/tasks/${t1.task_id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
    const res = await poll(b)
    assert.equal(res.headers.get('cache-control'), 'no-store')
    const body = (await res.json()) as { events: Record<string, unknown>[]; cursor: string }
    const jti2 = JSON.parse(Buffer.from(t2.access_token.split('.')[1]!, 'base64url').toString()).jti as string
    assert.deepEqual(body.events.map((e) => [e.type, e.task_id, e.jti]), [['token_revoked', t2.task_id, jti2], ['task_completed', t1.task_id, undefined]])
    assert.equal(body.cursor, body.events[1]!.id)
    const rest = (await (await poll(b, body.events[0]!.id as string)).json()) as { events: Record<string, unknown>[]; cursor: string }
    assert.deepEqual(rest.events.map((e) => e.type), ['task_completed'])
    const none = (await (await poll(b, body.cursor)).json()) as { events: unknown[]; cursor: string }
    assert.deepEqual(none, { events: [], cursor: body.cursor, epoch: await b.deps.stores.revocations.epoch(), head: body.cursor })
    // Another resource sees nothing of these tasks and tokens.
    const calendar = await poll(b, '0', `Basic ${Buffer.from('calendar-mcp:calendar-secret-0123456789').toString('base64')}`)
    assert.deepEqual(((await calendar.json()) as { events: unknown[] }).events, [])
  })

  it('an admin revokes a session: its subject tokens are refused and its tasks end', async () => {
    const { task_id, access_token } = (await (await b.exchange()).json()) as { task_id: string; access_token: string }
    const res = await b.app.request('/admin/sessions/revoke', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ issuer: USER_ISSUER, sid: 'sess-1' }) })
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), { tasks_revoked: [task_id], tokens_revoked: 1 })
    const again = await b.exchange()
    assert.equal(again.status, 400)
    assert.deepEqual(await again.json(), { error: 'invalid_request', error_description: 'subject_token session has been revoked' })
    const intro = await b.post('/introspect', { token: access_token }, { authorization: notesAuth })
    assert.deepEqual(await intro.json(), { active: false })
    const events = ((await (await poll(b)).json()) as { events: Record<string, unknown>[] }).events
    assert.deepEqual(events.map((e) => [e.type, e.sid]), [['task_revoked', 'sess-1'], ['session_revoked', 'sess-1']])
    // Another session of the same user still works.
    assert.equal((await b.exchange({ subject_token: await b.session({ sid: 'sess-2' }) })).status, 200)
  })
})

describe('revocation feed over SSE', () => {
  it('streams events as they are committed and resumes from Last-Event-ID across a broker restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-feed-'))
    const kek = randomBytes(32).toString('base64url')
    const config = (c: Parameters<NonNullable<Parameters<typeof createTestBroker>[0]>['config'] & object>[0]) => ({ ...c, database: join(dir, 'feed.db'), keys: { kek } })

    let b = await createTestBroker({ config })
    let handler = (r: Request) => b.app.fetch(r)
    const server = serve({ fetch: (r: Request) => handler(r), hostname: '127.0.0.1', port: 0 })
    await new Promise<void>((r) => server.once('listening', () => r()))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/revocations`
    try {
      const stream = await fetch(url, { headers: { authorization: notesAuth, accept: 'text/event-stream' } })
      assert.equal(stream.status, 200)
      assert.match(stream.headers.get('content-type')!, /^text\/event-stream/)
      const reading = readSse(stream, 2)
      const a = (await (await b.exchange()).json()) as { task_id: string }
      const c2 = (await (await b.exchange()).json()) as { task_id: string }
      for (const t of [a, c2]) await b.app.request(`/tasks/${t.task_id}/revoke`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
      const live = await reading
      assert.deepEqual(live.map((e) => e.data.task_id), [a.task_id, c2.task_id])

      // Restart: a new broker process on the same database; a third event happens meanwhile.
      const d = (await (await b.exchange()).json()) as { task_id: string }
      await b.app.request(`/tasks/${d.task_id}/revoke`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
      await b.close()
      b = await createTestBroker({ config })
      handler = (r: Request) => b.app.fetch(r)

      const resumed = await fetch(url, { headers: { authorization: notesAuth, accept: 'text/event-stream', 'last-event-id': live[0]!.id } })
      const after = await readSse(resumed, 2)
      assert.deepEqual(after.map((e) => e.data.task_id), [c2.task_id, d.task_id])
      assert.deepEqual(after.map((e) => e.id), [live[1]!.id, String(Number(live[1]!.id) + 1)])
    } finally {
      server.close()
      await b.close()
    }
  })

  it('an unauthenticated stream request is refused before anything is streamed', async () => {
    const b = await createTestBroker()
    try {
      const res = await b.app.request('/revocations', { headers: { accept: 'text/event-stream' } })
      assert.equal(res.status, 401)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_client')
    } finally {
      await b.close()
    }
  })

  it('disabling a workload in the configuration revokes its open tasks and tokens at the next start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-disable-'))
    const kek = randomBytes(32).toString('base64url')
    const file = { database: join(dir, 'b.db'), keys: { kek } }
    let b = await createTestBroker({ config: (c) => ({ ...c, ...file }) })
    const { access_token, task_id } = (await (await b.exchange()).json()) as { access_token: string; task_id: string }
    const other = (await (await b.exchange({ actor_token: await b.svid('b') })).json()) as { task_id: string }
    await b.close()
    b = await createTestBroker({ config: (c) => ({ ...c, ...file, workloads: c.workloads!.map((w) => (w.id === 'agent-a' ? { ...w, enabled: false } : w)) }) })
    try {
      assert.equal((await b.deps.stores.tasks.get(task_id))?.status, 'revoked')
      assert.equal((await b.deps.stores.tasks.get(other.task_id))?.status, 'active')
      const intro = await b.post('/introspect', { token: access_token }, { authorization: notesAuth })
      assert.deepEqual(await intro.json(), { active: false })
      const events = ((await (await poll(b)).json()) as { events: Record<string, unknown>[] }).events
      assert.deepEqual(events.map((e) => [e.type, e.task_id]), [['task_revoked', task_id]])
    } finally {
      await b.close()
    }
  })
})

/** One SSE message. */
interface SseMessage {
  event: string
  id: string | undefined
  data: Record<string, unknown>
}

/** Reads an SSE response message by message; `next` waits at most `timeoutMs` (heartbeats skipped). */
function sseMessages(res: Response) {
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | undefined
  return {
    async next(timeoutMs = 2000): Promise<SseMessage> {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const i = buffer.indexOf('\n\n')
        if (i >= 0) {
          const block = buffer.slice(0, i)
          buffer = buffer.slice(i + 2)
          const lines = block.split('\n').filter((l) => l && !l.startsWith(':'))
          if (lines.length === 0) continue
          const fields = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]))
          return { event: fields.event ?? 'message', id: fields.id, data: JSON.parse(fields.data ?? 'null') as Record<string, unknown> }
        }
        pending ??= reader.read()
        let timer: NodeJS.Timeout | undefined
        const timeout = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), Math.max(0, deadline - Date.now())) })
        const got = await Promise.race([pending, timeout]).finally(() => clearTimeout(timer))
        if (got === 'timeout') throw new Error(`no SSE message within ${timeoutMs} ms`)
        pending = undefined
        if (got.done) throw new Error('SSE stream ended')
        buffer += decoder.decode(got.value, { stream: true })
      }
    },
    close: () => reader.cancel().catch(() => {}),
  }
}

const sseHeaders = (extra: Record<string, string> = {}) => ({ authorization: notesAuth, accept: 'text/event-stream', ...extra })

/** A feed event about a token for NOTES, written straight into the store (as any broker path does). */
async function insertTokenEvent(b: TestBroker, jti: string, until = b.clock.now() + 300) {
  await b.deps.stores.revocations.insert({ at: b.clock.now(), kind: 'token_revoked', jti, relevantUntil: until, audiences: [NOTES] })
}

/** Resolves the next time the broker tells its subscribers that events were appended. */
function nextNotification(b: TestBroker): Promise<void> {
  return new Promise((resolve) => {
    const unsubscribe = b.deps.stores.revocations.subscribe(() => {
      unsubscribe()
      resolve()
    })
  })
}

describe('revocation feed: delivery', () => {
  it('an event committed while earlier ones are still being written to a slow reader is sent at once, not with the heartbeat', async () => {
    const b = await createTestBroker()
    try {
      for (let i = 0; i < 5; i++) await insertTokenEvent(b, `backlog-${i}`)
      // Observe (not alter) the store: resolves once the stream has read the backlog.
      const list = b.deps.stores.revocations.list
      let backlogRead!: () => void
      const read = new Promise<void>((r) => { backlogRead = r })
      b.deps.stores.revocations.list = async (...args) => {
        const rows = await list(...args)
        if (rows.length > 0) backlogRead()
        return rows
      }
      // In-process, nobody reads the body yet: the handler blocks writing the backlog (backpressure).
      const res = await b.app.request('/revocations', { headers: sseHeaders() })
      const sse = sseMessages(res)
      assert.equal((await sse.next()).event, 'ready')
      await read
      const notified = nextNotification(b)
      const { task_id } = (await (await b.exchange()).json()) as { task_id: string }
      assert.equal((await b.app.request(`/tasks/${task_id}/revoke`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })).status, 200)
      // The broker has told its subscribers, while the stream was still blocked in a write.
      await notified
      const seen: unknown[] = []
      for (let i = 0; i < 5; i++) seen.push((await sse.next()).data.jti)
      assert.deepEqual(seen, [0, 1, 2, 3, 4].map((i) => `backlog-${i}`))
      // Well before the 15 s heartbeat.
      const late = await sse.next(1000)
      assert.equal(late.event, 'revocation')
      assert.equal(late.data.task_id, task_id)
      await sse.close()
    } finally {
      await b.close()
    }
  })

  it('an event written by another broker process on the same database reaches this one\'s subscribers within a second', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-two-brokers-'))
    const kek = randomBytes(32).toString('base64url')
    const config = (c: ConfigInput): ConfigInput => ({ ...c, database: join(dir, 'shared.db'), keys: { kek } })
    const first = await createTestBroker({ config })
    const second = await createTestBroker({ config })
    try {
      const sse = sseMessages(await first.app.request('/revocations', { headers: sseHeaders() }))
      assert.equal((await sse.next()).event, 'ready')
      // The second instance opens a task, issues a token and ends the task: nothing in the first process knows.
      const { task_id } = (await (await second.exchange()).json()) as { task_id: string }
      const startedAt = Date.now()
      const ended = await second.app.request(`/tasks/${task_id}/complete`, { method: 'POST', headers: { 'actor-token': await second.svid('a') } })
      assert.equal(ended.status, 200)
      const event = await sse.next(1000)
      assert.equal(event.event, 'revocation')
      assert.deepEqual([event.data.type, event.data.task_id], ['task_completed', task_id])
      assert.ok(Date.now() - startedAt < 1000, `arrived after ${Date.now() - startedAt} ms`)
      await sse.close()
    } finally {
      await first.close()
      await second.close()
    }
  })
})

describe('revocation feed: epoch and head', () => {
  it('every poll page and the stream\'s ready event carry the epoch and the head', async () => {
    const b = await createTestBroker()
    try {
      await insertTokenEvent(b, 'j1')
      await insertTokenEvent(b, 'j2')
      const epoch = await b.deps.stores.revocations.epoch()
      assert.match(epoch, /^[A-Za-z0-9_-]{16,}$/)
      const page = (await (await poll(b, '0')).json()) as Record<string, unknown>
      assert.deepEqual({ cursor: page.cursor, epoch: page.epoch, head: page.head }, { cursor: '2', epoch, head: '2' })
      // The head counts every event, also those another resource sees: it is where the sequence stands.
      const calendar = (await (await poll(b, '0', `Basic ${Buffer.from('calendar-mcp:calendar-secret-0123456789').toString('base64')}`)).json()) as Record<string, unknown>
      assert.deepEqual(calendar, { events: [], cursor: '0', epoch, head: '2' })
      const sse = sseMessages(await b.app.request('/revocations', { headers: sseHeaders({ 'last-event-id': '1' }) }))
      assert.deepEqual(await sse.next(), { event: 'ready', id: undefined, data: { cursor: '1', epoch, head: '2' } })
      assert.equal((await sse.next()).id, '2')
      await sse.close()
    } finally {
      await b.close()
    }
  })

  it('the epoch lives with the database: the same after a restart, new with a new database', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-epoch-'))
    const kek = randomBytes(32).toString('base64url')
    const config = (c: ConfigInput): ConfigInput => ({ ...c, database: join(dir, 'e.db'), keys: { kek } })
    let b = await createTestBroker({ config })
    const epoch = ((await (await poll(b)).json()) as { epoch: string }).epoch
    await b.close()
    b = await createTestBroker({ config })
    try {
      assert.equal(((await (await poll(b)).json()) as { epoch: string }).epoch, epoch)
      assert.equal((await b.rawQuery<{ n: number }>('select count(*) as n from broker_meta'))[0]!.n, 1)
    } finally {
      await b.close()
    }
    const fresh = await createTestBroker()
    try {
      assert.notEqual(((await (await poll(fresh)).json()) as { epoch: string }).epoch, epoch)
    } finally {
      await fresh.close()
    }
  })

  it('pruning never lowers the head', async () => {
    const b = await createTestBroker()
    try {
      await insertTokenEvent(b, 'j1', T0 + 10)
      await insertTokenEvent(b, 'j2', T0 + 10)
      assert.equal(await b.deps.stores.revocations.pruneBefore(T0 + 1000, 1000), 2)
      const page = (await (await poll(b, '2')).json()) as Record<string, unknown>
      assert.deepEqual(page, { events: [], cursor: '2', epoch: await b.deps.stores.revocations.epoch(), head: '2' })
    } finally {
      await b.close()
    }
  })
})

describe('revocation feed: retention', () => {
  it('an event is kept past its until for the longest leeway a verifier may use, and at least the clock skew', async () => {
    assert.equal(MAX_LEEWAY_SECONDS, 60)
    assert.equal(revocationRetentionSeconds(5), MAX_LEEWAY_SECONDS)
    assert.equal(revocationRetentionSeconds(120), 120)
    // With a small clock skew, a verifier at the maximum leeway still learns of the revocation.
    const b = await createTestBroker({ config: (c) => ({ ...c, clockSkew: 5 }) })
    try {
      const until = T0 + 300
      await insertTokenEvent(b, 'jti-late', until)
      assert.equal(await b.deps.stores.revocations.pruneBefore(revocationPruneHorizon(until + MAX_LEEWAY_SECONDS, b.deps.config.clockSkew), 1000), 0)
      assert.equal(((await (await poll(b)).json()) as { events: unknown[] }).events.length, 1)
      assert.equal(await b.deps.stores.revocations.pruneBefore(revocationPruneHorizon(until + MAX_LEEWAY_SECONDS + 1, b.deps.config.clockSkew), 1000), 1)
      assert.equal(((await (await poll(b)).json()) as { events: unknown[] }).events.length, 0)
    } finally {
      await b.close()
    }
  })
})

describe('revocation feed: fan-out', () => {
  it('each new event is read from the store once for every stream, not once per stream, and reaches all of them', async () => {
    const b = await createTestBroker()
    const streams: ReturnType<typeof sseMessages>[] = []
    try {
      for (let i = 0; i < 20; i++) {
        const sse = sseMessages(await b.app.request('/revocations', { headers: sseHeaders() }))
        assert.equal((await sse.next()).event, 'ready')
        streams.push(sse)
      }
      // Every stream has caught up (its own read from its cursor): count the reads from now on.
      await new Promise((r) => setImmediate(r))
      const calls = { perStream: 0, shared: 0 }
      const { list, listAll } = b.deps.stores.revocations
      b.deps.stores.revocations.list = (...args) => (calls.perStream++, list(...args))
      b.deps.stores.revocations.listAll = (...args) => (calls.shared++, listAll(...args))
      for (let i = 0; i < 3; i++) await insertTokenEvent(b, `fan-${i}`)
      for (const sse of streams) {
        const got = [await sse.next(), await sse.next(), await sse.next()]
        assert.deepEqual(got.map((m) => m.data.jti), ['fan-0', 'fan-1', 'fan-2'])
      }
      assert.equal(calls.perStream, 0, 'no stream reads the store for itself once live')
      assert.ok(calls.shared >= 1 && calls.shared <= 3, `the hub read ${calls.shared} time(s) for 3 events and 20 streams`)
    } finally {
      for (const s of streams) await s.close()
      await b.close()
    }
  })

  it('an event committed between a stream joining the hub and its catch-up read arrives exactly once', async () => {
    const b = await createTestBroker()
    try {
      // The catch-up read: an event is committed just before it runs (after the stream joined the hub).
      const list = b.deps.stores.revocations.list
      b.deps.stores.revocations.list = async (...args) => {
        b.deps.stores.revocations.list = list
        await insertTokenEvent(b, 'between')
        return list(...args)
      }
      const sse = sseMessages(await b.app.request('/revocations', { headers: sseHeaders() }))
      assert.equal((await sse.next()).event, 'ready')
      assert.equal((await sse.next()).data.jti, 'between')
      // The hub queued it too; the stream drops it by id, so the next message is the next event.
      await new Promise((r) => setImmediate(r))
      await insertTokenEvent(b, 'after')
      assert.equal((await sse.next()).data.jti, 'after')
      await sse.close()
    } finally {
      await b.close()
    }
  })

  it('a stream too far behind is told overflow and ends; reconnecting from its cursor it gets everything it missed', async () => {
    const b = await createTestBroker()
    b.deps.feedHub = createFeedHub(b.deps.stores, { page: 500, maxQueued: 5 })
    try {
      const slow = sseMessages(await b.app.request('/revocations', { headers: sseHeaders() }))
      assert.equal((await slow.next()).event, 'ready')
      await new Promise((r) => setImmediate(r))
      // Six events at once (one commit, so no dialect's subscriber reads between them): more than a stream may have queued.
      await b.deps.stores.transaction(async (tx) => {
        for (let i = 0; i < 6; i++) await tx.revocations.insert({ at: b.clock.now(), kind: 'token_revoked', jti: `burst-${i}`, relevantUntil: b.clock.now() + 300, audiences: [NOTES] })
      })
      const told = await slow.next()
      assert.equal(told.event, 'overflow')
      assert.equal(told.data.cursor, '0')
      await assert.rejects(slow.next(), /SSE stream ended/)
      const again = sseMessages(await b.app.request('/revocations', { headers: sseHeaders({ 'last-event-id': String(told.data.cursor) }) }))
      assert.equal((await again.next()).event, 'ready')
      const caught: unknown[] = []
      for (let i = 0; i < 6; i++) caught.push((await again.next()).data.jti)
      assert.deepEqual(caught, ['burst-0', 'burst-1', 'burst-2', 'burst-3', 'burst-4', 'burst-5'])
      await again.close()
    } finally {
      await b.close()
    }
  })

  it('the hub: a subscriber that does not keep up overflows alone; one that does gets every event, each read once', async () => {
    const rows: { id: number; audiences: string }[] = []
    let reads = 0
    let notify: (() => void) | undefined
    const fake = {
      revocations: {
        head: async () => rows.length,
        listAll: async (after: number, limit: number) => (reads++, rows.filter((r) => r.id > after).slice(0, limit).map((r) => ({ ...r, at: 1, kind: 'token_revoked', taskId: null, jti: `j${r.id}`, sid: null, sub: null, subjectIssuer: null, kid: null, relevantUntil: 9 }))),
        subscribe: (l: () => void) => ((notify = l), () => (notify = undefined)),
      },
    } as unknown as Parameters<typeof createFeedHub>[0]
    const hub = createFeedHub(fake, { page: 500, maxQueued: 3 })
    const fast = hub.subscribe(NOTES)
    const slow = hub.subscribe(NOTES)
    const other = hub.subscribe(CALENDAR_URI)
    const got: number[] = []
    for (let id = 1; id <= 6; id++) {
      rows.push({ id, audiences: NOTES })
      notify!()
      assert.equal(await fast.next(1000), 'events')
      got.push(...fast.take().map((e) => e.id))
    }
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6])
    assert.equal(reads, 6, 'one read per commit, whatever the number of subscribers')
    assert.equal(await slow.next(1000), 'overflow')
    assert.deepEqual(slow.take(), [])
    assert.equal(await other.next(5), 'timeout', 'another audience hears nothing')
    hub.close()
    assert.equal(await fast.next(1000), 'closed')
    assert.equal(notify, undefined, 'no subscribers: the hub stops listening')
  })

})
