/**
 * The admin console over HTTP: sign-in with the admin key (a wrong one is a 401 page and no
 * cookie), CSRF on every action form, the API's roles (an auditor sees the page, not the buttons,
 * and a forged POST is 403, audited, nothing else changed), and an operator's approve, deny and
 * revoke landing as the API's would, audited as `admin:<id>`.
 */
import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import { before, describe, it } from 'node:test'
import { serve } from '@hono/node-server'
import { argon2Hasher } from '../src/broker.js'
import { consoleRoutes } from '../src/routes/console.js'
import { ADMIN_KEY, assertRefusedAndAudited, CALENDAR, counts, NOTES, openTask, startTestServer, testDialect, USER_ISSUER, withBroker, type TestBroker } from './harness.js'

const AUDITOR = 'tpa_console-auditor-0123456789'
const OPERATOR = 'tpa_console-operator-0123456789'
let hashes: { auditor: string; operator: string }

const config = (c: Parameters<Extract<Parameters<typeof withBroker>[0], (c: never) => unknown>>[0]) => ({
  ...c,
  admin: { ...c.admin, keys: [{ name: 'audit-1', role: 'auditor' as const, hash: hashes.auditor }, { name: 'ops-1', role: 'operator' as const, hash: hashes.operator }] },
  resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)),
})

const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

/** Signs in with `key`; the console cookie (`name=value`). */
async function signIn(b: TestBroker, key: string): Promise<string> {
  const res = await b.app.request('/admin/console/login', { method: 'POST', headers: FORM, body: new URLSearchParams({ key }).toString() })
  assert.equal(res.status, 303)
  assert.equal(res.headers.get('location'), '/admin/console?notice=signed-in')
  const set = res.headers.get('set-cookie') ?? ''
  assert.match(set, /^taskpass-console=/)
  assert.match(set, /HttpOnly/)
  assert.match(set, /SameSite=Strict/)
  assert.match(set, /Max-Age=3600/)
  return set.split(';')[0]!
}

/** The console page as `cookie` sees it, and its CSRF token. */
async function consolePage(b: TestBroker, cookie: string, query = ''): Promise<{ html: string; csrf: string }> {
  const res = await b.app.request(`/admin/console${query}`, { headers: { cookie } })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'/)
  const html = await res.text()
  return { html, csrf: /name="csrf" value="([^"]+)"/.exec(html)![1]! }
}

function act(b: TestBroker, cookie: string, id: string, what: string, fields: Record<string, string>) {
  return b.app.request(`/admin/console/tasks/${id}/${what}`, { method: 'POST', headers: { ...FORM, cookie }, body: new URLSearchParams(fields).toString() })
}

async function opened(b: TestBroker, resource: string, scopes: string[], as: { user?: string; agent?: string } = {}): Promise<string> {
  const session = as.user ? await b.session({ sub: as.user }) : undefined
  const svid = as.agent ? await b.svid(as.agent) : undefined
  const res = await openTask(b, { purpose: `console ${resource}`, resources: [{ resource, scopes }] }, { ...(session ? { session } : {}), ...(svid ? { svid } : {}) })
  assert.equal(res.status, 201)
  return ((await res.json()) as { task_id: string }).task_id
}

const status = async (b: TestBroker, id: string) => (await b.deps.stores.tasks.get(id))!.status

/** A refusal as a console error page: this HTTP status and error code (the page says both); its text. */
async function refusedPage(res: Response, httpStatus: number, code: string): Promise<string> {
  assert.equal(res.status, httpStatus)
  assert.match(res.headers.get('content-type') ?? '', /text\/html/)
  const html = await res.text()
  assert.match(html, new RegExp(`<p class="muted" id="error-status">HTTP ${httpStatus} · ${code}</p>`))
  return html
}

/**
 * Every wait on a live stream is bounded by this; no fixed sleep anywhere. On PostgreSQL each event
 * is a read of the task row over a connection (the stream-behind test reads 2000), so it is longer.
 */
const STREAM_WAIT = testDialect === 'postgres' ? 60_000 : 10_000

interface StreamMessage {
  event?: string
  data?: string
  comments: string[]
}

/** Reads a text/event-stream body message by message (HTML Living Standard §9.2.6, the parts the console sends). */
function eventStream(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  async function next(): Promise<StreamMessage | undefined> {
    for (;;) {
      const at = buffer.indexOf('\n\n')
      if (at >= 0) {
        const block = buffer.slice(0, at)
        buffer = buffer.slice(at + 2)
        const message: StreamMessage = { comments: [] }
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) message.comments.push(line.slice(1).trim())
          else if (line.startsWith('event: ')) message.event = line.slice(7)
          else if (line.startsWith('data: ')) message.data = (message.data === undefined ? '' : `${message.data}\n`) + line.slice(6)
        }
        return message
      }
      const { value, done } = await reader.read()
      if (done) return undefined
      buffer += decoder.decode(value, { stream: true })
    }
  }
  return {
    /** The first message `matches`; the stream ending first is a failure. */
    async until(matches: (m: StreamMessage) => boolean, what: string): Promise<StreamMessage> {
      for (;;) {
        const m = await next()
        if (!m) throw new Error(`the stream ended before ${what}`)
        if (matches(m)) return m
      }
    },
    /** Resolves when the server ends the stream. */
    async ended(): Promise<void> {
      while ((await next()) !== undefined);
    },
    cancel: () => reader.cancel().catch(() => {}),
  }
}

const taskEvent = (id: string, state: string) => (m: StreamMessage) => m.event === 'task' && m.data !== undefined && (JSON.parse(m.data) as { task_id: string; status: string }).task_id === id && (JSON.parse(m.data) as { status: string }).status === state

describe('admin console', () => {
  before(async () => {
    hashes = { auditor: await argon2Hasher.hash(AUDITOR), operator: await argon2Hasher.hash(OPERATOR) }
  })

  it('GET /admin/console without a sign-in: the sign-in form, no Bearer key asked', async () => {
    await withBroker(config, async (b) => {
      const res = await b.app.request('/admin/console')
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('cache-control'), 'no-store')
      const html = await res.text()
      assert.match(html, /<input id="key" name="key" type="password"/)
      assert.doesNotMatch(html, /Tasks/)
      // The rest of /admin still needs the key.
      assert.equal((await b.app.request('/admin/tasks')).status, 401)
    })
  })

  it('a wrong key: 401 page, no cookie; a sealed cookie of another purpose or a forged one signs nobody in', async () => {
    await withBroker(config, async (b) => {
      const before = await counts(b)
      const res = await b.app.request('/admin/console/login', { method: 'POST', headers: FORM, body: 'key=tpa_wrong-key' })
      assert.equal(res.status, 401)
      assert.equal(res.headers.get('set-cookie'), null)
      assert.match(await res.text(), /not an admin key/)
      assert.deepEqual(await counts(b), before)
      const other = await b.deps.sealer.seal('login', { admin: 'key0', role: 'admin', sid: 'x' }, 3600)
      for (const cookie of [`taskpass-console=${other}`, 'taskpass-console=forged']) {
        const page = await (await b.app.request('/admin/console', { headers: { cookie } })).text()
        assert.match(page, /name="key"/)
      }
      // Not a form: 400, no cookie.
      const json = await b.app.request('/admin/console/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: ADMIN_KEY }) })
      assert.equal(json.status, 400)
      assert.equal(json.headers.get('set-cookie'), null)
    })
  })

  it('the sign-in lasts an hour', async () => {
    await withBroker(config, async (b) => {
      const cookie = await signIn(b, ADMIN_KEY)
      b.clock.advance(3601)
      assert.match(await (await b.app.request('/admin/console', { headers: { cookie } })).text(), /name="key"/)
    })
  })

  it('an action without the CSRF token, or with another sign-in\'s: 403, nothing changed', async () => {
    await withBroker(config, async (b) => {
      const id = await opened(b, CALENDAR, ['cal:read'])
      const cookie = await signIn(b, OPERATOR)
      const other = await consolePage(b, await signIn(b, OPERATOR))
      const before = await counts(b)
      for (const fields of [{}, { csrf: 'x'.repeat(43) }, { csrf: other.csrf }] as Record<string, string>[]) {
        const res = await act(b, cookie, id, 'approve', fields)
        assert.equal(res.status, 403)
        assert.match(await res.text(), /did not come from this console/)
      }
      assert.deepEqual(await counts(b), before)
      assert.equal(await status(b, id), 'pending_approval')
      // Signed out (no cookie): the sign-in page, 401, nothing changed.
      const anon = await b.app.request(`/admin/console/tasks/${id}/approve`, { method: 'POST', headers: FORM, body: `csrf=${other.csrf}` })
      assert.equal(anon.status, 401)
      assert.deepEqual(await counts(b), before)
    })
  })

  it('an auditor sees tasks, keys and the audit chain but no buttons; a forged POST is 403, audited, nothing else changed', async () => {
    await withBroker(config, async (b) => {
      const pending = await opened(b, CALENDAR, ['cal:read'])
      const active = await opened(b, NOTES, ['notes:read'])
      const cookie = await signIn(b, AUDITOR)
      const { html, csrf } = await consolePage(b, cookie)
      assert.match(html, new RegExp(pending))
      assert.match(html, new RegExp(active))
      assert.match(html, /admin:audit-1/)
      assert.doesNotMatch(html, /\/approve"|\/deny"|\/revoke"/)
      assert.match(html, new RegExp((await b.deps.keys.current()).kid))
      assert.match(html, /Intact: \d+ rows verified/)
      for (const [id, what] of [[pending, 'approve'], [pending, 'deny'], [active, 'revoke']] as const) {
        const before = await counts(b)
        const res = await act(b, cookie, id, what, { csrf, reason: 'no' })
        assert.equal(res.status, 403)
        assert.match(await res.text(), /needs operator/)
        const after = await counts(b)
        assert.deepEqual({ ...after, audit_events: before.audit_events }, before)
        assert.equal(after.audit_events, before.audit_events + 1)
        const row = (await b.lastAudit())!
        assert.equal(row.action, 'admin.refuse')
        assert.match(String(row.reason), new RegExp(`^admin:audit-1 \\(auditor\\) may not POST /admin/tasks/:id/${what} \\(console\\): it needs operator$`))
      }
      assert.equal(await status(b, pending), 'pending_approval')
      assert.equal(await status(b, active), 'active')
    })
  })

  it('an operator approves a pending task, denies one (a reason needed), revokes another: audited as admin:ops-1', async () => {
    await withBroker(config, async (b) => {
      const toApprove = await opened(b, CALENDAR, ['cal:read'])
      const toDeny = await opened(b, CALENDAR, ['cal:read'])
      const toRevoke = await opened(b, NOTES, ['notes:read'])
      const cookie = await signIn(b, OPERATOR)
      const { html, csrf } = await consolePage(b, cookie, '?status=pending_approval')
      assert.match(html, new RegExp(`/admin/console/tasks/${toApprove}/approve`))
      assert.doesNotMatch(html, new RegExp(toRevoke), 'filtered by status')

      const approved = await act(b, cookie, toApprove, 'approve', { csrf })
      assert.equal(approved.status, 303)
      assert.equal(approved.headers.get('location'), '/admin/console?notice=approved')
      assert.equal(await status(b, toApprove), 'active')
      assert.equal((await b.lastAudit())!.action, 'task.approve')
      assert.equal((await b.lastAudit())!.reason, 'approved by admin:ops-1')

      // Deny without a reason: 400, audited as a refused decision, the task still pending.
      const noReason = await act(b, cookie, toDeny, 'deny', { csrf, reason: '' })
      assert.equal(noReason.status, 400)
      assert.match(await noReason.text(), /&quot;reason&quot; is required/)
      assert.equal(await status(b, toDeny), 'pending_approval')
      const denied = await act(b, cookie, toDeny, 'deny', { csrf, reason: 'not this week' })
      assert.equal(denied.status, 303)
      assert.equal(await status(b, toDeny), 'denied')
      assert.equal((await b.lastAudit())!.reason, 'denied by admin:ops-1: not this week')

      const revoked = await act(b, cookie, toRevoke, 'revoke', { csrf })
      assert.equal(revoked.status, 303)
      assert.equal(revoked.headers.get('location'), '/admin/console?notice=revoked')
      assert.equal(await status(b, toRevoke), 'revoked')
      const rows = (await b.deps.stores.audit.list({ afterId: 0, limit: 1000 })).filter((r) => r.taskId === toRevoke && r.action === 'task.revoke')
      assert.equal(rows.length, 1)
      assert.match(String(rows[0]!.reason), /admin:ops-1/)

      // Again: the task is no longer open — 409, nothing changed.
      const before = await counts(b)
      const again = await act(b, cookie, toRevoke, 'revoke', { csrf })
      assert.equal(again.status, 409)
      assert.deepEqual({ ...await counts(b), audit_events: before.audit_events }, before)
      const page = await consolePage(b, cookie, '?notice=revoked')
      assert.match(page.html, /The task was revoked/)
    })
  })

  it('the Bearer check skips only the console: an unknown console path is 404, the admin API still 401', async () => {
    await withBroker(config, async (b) => {
      const res = await b.app.request('/admin/console/nope')
      assert.equal(res.status, 404)
      assert.equal(((await res.json()) as { error: string }).error, 'not_found')
      const api = await b.app.request('/admin/consoles')
      assert.equal(api.status, 401)
      assert.equal(((await api.json()) as { error: string }).error, 'invalid_token')
    })
  })

  it('a sign-in whose key is no longer configured, or has another role now, counts no more', async () => {
    await withBroker(config, async (b) => {
      for (const payload of [{ admin: 'gone-1', role: 'admin', sid: 's1' }, { admin: 'audit-1', role: 'operator', sid: 's2' }]) {
        const sealed = await b.deps.sealer.seal('console', payload, 3600)
        const html = await (await b.app.request('/admin/console', { headers: { cookie: `taskpass-console=${sealed}` } })).text()
        assert.match(html, /name="key"/)
        assert.doesNotMatch(html, /Signed in as/)
      }
    })
  })

  it('over https the cookie is __Host-taskpass-console, Secure', async () => {
    await withBroker({ issuer: 'https://broker.test.example', config }, async (b) => {
      const res = await b.app.request('https://broker.test.example/admin/console/login', { method: 'POST', headers: FORM, body: new URLSearchParams({ key: ADMIN_KEY }).toString() })
      assert.equal(res.status, 303)
      const set = res.headers.get('set-cookie') ?? ''
      assert.match(set, /^__Host-taskpass-console=[^;]+; Max-Age=3600; Path=\/; HttpOnly; Secure; SameSite=Strict$/)
    })
  })

  it('a bad status filter: 400 page', async () => {
    await withBroker(config, async (b) => {
      const cookie = await signIn(b, ADMIN_KEY)
      const res = await b.app.request('/admin/console?status=nope', { headers: { cookie } })
      assert.equal(res.status, 400)
      assert.match(res.headers.get('content-type') ?? '', /text\/html/)
    })
  })

  it('sign-out clears the cookie (CSRF required)', async () => {
    await withBroker(config, async (b) => {
      const cookie = await signIn(b, ADMIN_KEY)
      const { csrf } = await consolePage(b, cookie)
      assert.equal((await b.app.request('/admin/console/logout', { method: 'POST', headers: { ...FORM, cookie }, body: '' })).status, 403)
      const res = await b.app.request('/admin/console/logout', { method: 'POST', headers: { ...FORM, cookie }, body: `csrf=${csrf}` })
      assert.equal(res.status, 303)
      assert.match(res.headers.get('set-cookie') ?? '', /^taskpass-console=;.*Max-Age=0/)
    })
  })

  it('filters tasks by user, workload and resource (as GET /admin/tasks, which takes `resource` too)', async () => {
    await withBroker(config, async (b) => {
      const aliceNotes = await opened(b, NOTES, ['notes:read'])
      const bobNotes = await opened(b, NOTES, ['notes:read'], { user: 'bob' })
      const bNotes = await opened(b, NOTES, ['notes:read'], { agent: 'b' })
      const aliceCalendar = await opened(b, CALENDAR, ['cal:read'])
      const all = [aliceNotes, bobNotes, bNotes, aliceCalendar]
      const cookie = await signIn(b, AUDITOR)
      const shown = async (query: string) => {
        const { html } = await consolePage(b, cookie, query)
        return all.filter((id) => html.includes(`id="task-${id}"`))
      }
      const listed = async (query: string) => {
        const res = await b.app.request(`/admin/tasks${query}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
        assert.equal(res.status, 200)
        const ids = ((await res.json()) as { tasks: { task_id: string }[] }).tasks.map((t) => t.task_id)
        return all.filter((id) => ids.includes(id))
      }
      const cases: [string, string[]][] = [
        ['', all],
        ['?status=&user=&workload=&resource=', all],
        ['?user=bob', [bobNotes]],
        ['?workload=agent-b', [bNotes]],
        [`?resource=${encodeURIComponent(CALENDAR)}`, [aliceCalendar]],
        [`?resource=${encodeURIComponent(NOTES)}&workload=agent-a&user=alice`, [aliceNotes]],
        [`?resource=${encodeURIComponent(NOTES)}&status=pending_approval`, []],
        [`?status=pending_approval&resource=${encodeURIComponent(CALENDAR)}`, [aliceCalendar]],
        // Compared as a whole value, never as a pattern.
        ['?resource=%25', []],
        [`?resource=${encodeURIComponent(NOTES.slice(0, -1))}`, []],
        ['?workload=agent-%25', []],
        ['?user=nobody-here', []],
      ]
      for (const [query, expected] of cases) {
        assert.deepEqual(await shown(query), expected, `console ${query}`)
        // The API refuses an empty value (the console's form sends them).
        if (!/=(&|$)/.test(query)) assert.deepEqual(await listed(query), expected, `api ${query}`)
      }
      // The page keeps the filter in its form.
      const { html } = await consolePage(b, cookie, '?workload=agent-b&user=bob')
      assert.match(html, /<option value="agent-b" selected="">agent-b<\/option>/)
      assert.match(html, /<input id="user" name="user" type="text" maxlength="1024" value="bob"/)
    })
  })

  it('a bad filter value is a 400 page (never a 500), nothing written', async () => {
    await withBroker(config, async (b) => {
      const cookie = await signIn(b, ADMIN_KEY)
      const before = await counts(b)
      for (const query of [`?workload=${'w'.repeat(2049)}`, `?user=${'u'.repeat(1025)}`, `?resource=${'r'.repeat(2049)}`, '?status=nope', '?status=active%00']) {
        const res = await b.app.request(`/admin/console${query}`, { headers: { cookie } })
        assert.match(await refusedPage(res, 400, 'invalid_request'), /&quot;workload&quot; and &quot;resource&quot; 1 to 2048 characters/, query.slice(0, 20))
      }
      const api = await b.app.request(`/admin/tasks?resource=${'r'.repeat(2049)}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(api.status, 400)
      assert.equal(((await api.json()) as { error: string }).error, 'invalid_request')
      assert.deepEqual(await counts(b), before)
    })
  })

  it('a task\'s page: its facts and its timeline from its evidence, newest last; the buttons its role allows; unknown: 404', async () => {
    await withBroker(config, async (b) => {
      const id = await opened(b, CALENDAR, ['cal:read'])
      const operator = await signIn(b, OPERATOR)
      const page = async (cookie: string, query = '') => {
        const res = await b.app.request(`/admin/console/tasks/${id}${query}`, { headers: { cookie } })
        assert.equal(res.status, 200)
        assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'/)
        assert.doesNotMatch(res.headers.get('content-security-policy') ?? '', /script-src/)
        return res.text()
      }
      /** The timeline's rows as `what outcome`, in page order. */
      const timeline = (html: string) => [...html.slice(html.indexOf('id="timeline"')).matchAll(/<tr><td class="nowrap">[^<]*<\/td><td class="nowrap">([^<]*)<\/td><td>([^<]*)<\/td>/g)].map((m) => `${m[1]} ${m[2]}`.trim())
      let html = await page(operator)
      assert.match(html, /<dt>Status<\/dt><dd>pending_approval<\/dd>/)
      assert.match(html, /<dt>User<\/dt><dd>alice \(at https:\/\/idp.test.example\)<\/dd>/)
      assert.match(html, /<dt>Workload<\/dt><dd>agent-a<\/dd>/)
      assert.match(html, /<dt>Session<\/dt><dd>sess-1<\/dd>/)
      assert.deepEqual(timeline(html), ['task.open allow'])
      const csrf = /name="csrf" value="([^"]+)"/.exec(html)![1]!
      assert.match(html, new RegExp(`action="/admin/console/tasks/${id}/approve"`))

      // Approved from its page: back to its page.
      const approved = await act(b, operator, id, 'approve', { csrf, from: 'task' })
      assert.equal(approved.status, 303)
      assert.equal(approved.headers.get('location'), `/admin/console/tasks/${id}?notice=approved`)
      // A token, then a refused exchange (a scope the task did not declare), then the revocation.
      b.clock.advance(10)
      assert.equal((await b.exchange({ task_id: id, resource: CALENDAR, scope: 'cal:read' })).status, 200)
      b.clock.advance(10)
      assert.equal((await b.exchange({ task_id: id, resource: NOTES, scope: 'notes:read' })).status, 400)
      b.clock.advance(10)
      assert.equal((await act(b, operator, id, 'revoke', { csrf, from: 'task' })).headers.get('location'), `/admin/console/tasks/${id}?notice=revoked`)
      html = await page(operator, '?notice=revoked')
      assert.match(html, /The task was revoked/)
      assert.match(html, /<dt>Status<\/dt><dd>revoked<\/dd>/)
      assert.match(html, /<dt>Tokens minted<\/dt><dd>1<\/dd>/)
      assert.deepEqual(timeline(html), ['task.open allow', 'task.approve allow', 'token.exchange allow', 'token minted', 'token.exchange deny', 'task.revoke allow', 'feed: task_revoked'])
      assert.match(html, /approved by admin:ops-1/)
      assert.doesNotMatch(html, /\/approve"|\/revoke"/, 'nothing left to do on an ended task')

      // An auditor sees the story, no buttons.
      const auditor = await page(await signIn(b, AUDITOR))
      assert.equal(timeline(auditor).length, 7)
      assert.doesNotMatch(auditor, /method="post" action="\/admin\/console\/(tasks|sessions)/)

      // Unknown: a 404 page, nothing written.
      const before = await counts(b)
      for (const unknown of ['01900000-0000-7000-8000-000000000000', 'x'.repeat(300), 'nope%20nope']) {
        const res = await b.app.request(`/admin/console/tasks/${unknown}`, { headers: { cookie: operator } })
        assert.match(await refusedPage(res, 404, 'not_found'), /task not found/)
      }
      assert.deepEqual(await counts(b), before)
      // Nobody signed in: the sign-in form, not the task.
      const anon = await (await b.app.request(`/admin/console/tasks/${id}`)).text()
      assert.match(anon, /name="key"/)
      assert.doesNotMatch(anon, new RegExp(id))
    })
  })

  it('revoke a session from a task\'s page (operator): its open tasks end, audited as admin:<key>; refusals change nothing', async () => {
    await withBroker(config, async (b) => {
      const first = await opened(b, NOTES, ['notes:read'])
      const second = await opened(b, CALENDAR, ['cal:read'])
      const other = await openTask(b, { purpose: 'other session', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session: await b.session({ sid: 'sess-2' }) })
      const otherId = ((await other.json()) as { task_id: string }).task_id
      const revoke = (cookie: string, fields: Record<string, string>) => b.app.request('/admin/console/sessions/revoke', { method: 'POST', headers: { ...FORM, cookie }, body: new URLSearchParams(fields).toString() })
      const session = { issuer: USER_ISSUER, sid: 'sess-1' }

      const auditor = await signIn(b, AUDITOR)
      let before = await counts(b)
      const refused = await revoke(auditor, { csrf: (await consolePage(b, auditor)).csrf, ...session })
      assert.match(await refusedPage(refused, 403, 'insufficient_scope'), /needs operator/)
      const row = await assertRefusedAndAudited(b, before, { action: 'admin.refuse', error: 'insufficient_scope', reason: /^admin:audit-1 \(auditor\) may not POST \/admin\/sessions\/revoke \(console\): it needs operator$/ })
      assert.equal(row.decision, 'deny')
      assert.equal(await b.deps.stores.sessions.isRevoked(USER_ISSUER, 'sess-1'), false)

      const operator = await signIn(b, OPERATOR)
      const { csrf } = await consolePage(b, operator)
      before = await counts(b)
      for (const [fields, status] of [[{ ...session }, 403], [{ csrf: 'forged', ...session }, 403], [{ csrf, issuer: USER_ISSUER }, 400], [{ csrf, issuer: '', sid: 'sess-1' }, 400], [{ csrf, issuer: USER_ISSUER, sid: 's'.repeat(1025) }, 400]] as const) {
        const res = await revoke(operator, fields)
        assert.match(await refusedPage(res, status, 'invalid_request'), status === 400 ? /&quot;issuer&quot; \(1 to 2048 characters\) and &quot;sid&quot; \(1 to 1024\) are required/ : /did not come from this console/)
      }
      assert.deepEqual(await counts(b), before)
      assert.equal(await b.deps.stores.sessions.isRevoked(USER_ISSUER, 'sess-1'), false)

      // The task page offers it; posted, back to the task.
      const html = await (await b.app.request(`/admin/console/tasks/${first}`, { headers: { cookie: operator } })).text()
      assert.match(html, /action="\/admin\/console\/sessions\/revoke"/)
      const done = await revoke(operator, { csrf, ...session, task: first })
      assert.equal(done.status, 303)
      assert.equal(done.headers.get('location'), `/admin/console/tasks/${first}?notice=session-revoked`)
      assert.equal(await b.deps.stores.sessions.isRevoked(USER_ISSUER, 'sess-1'), true)
      assert.equal(await status(b, first), 'revoked')
      assert.equal(await status(b, second), 'revoked')
      assert.equal(await status(b, otherId), 'active', 'another session of the same user is not touched')
      const audit = (await b.deps.stores.audit.list({ afterId: 0, limit: 1000 })).filter((r) => r.action === 'session.revoke')
      assert.equal(audit.length, 1)
      assert.match(audit[0]!.reason, /^session sess-1 of https:\/\/idp.test.example revoked by admin:ops-1; 2 task\(s\), 0 token\(s\)$/)
      // No task named (or an unknown one): back to the list.
      assert.equal((await revoke(operator, { csrf, issuer: USER_ISSUER, sid: 'sess-9', task: 'nope' })).headers.get('location'), '/admin/console?notice=session-revoked')
    })
  })

  it('revoke every open task of a workload (operator), audited as admin:<key>; an auditor is refused, audited; nothing else changed', async () => {
    await withBroker(config, async (b) => {
      const a1 = await opened(b, NOTES, ['notes:read'])
      const a2 = await opened(b, CALENDAR, ['cal:read'])
      const other = await opened(b, NOTES, ['notes:read'], { agent: 'b' })
      const revoke = (cookie: string, fields: Record<string, string>) => b.app.request('/admin/console/workloads/revoke', { method: 'POST', headers: { ...FORM, cookie }, body: new URLSearchParams(fields).toString() })

      const auditor = await signIn(b, AUDITOR)
      const auditorPage = await (await b.app.request('/admin/console/workloads', { headers: { cookie: auditor } })).text()
      assert.doesNotMatch(auditorPage, /workloads\/revoke/, 'an auditor gets no button')
      let before = await counts(b)
      const refused = await revoke(auditor, { csrf: (await consolePage(b, auditor)).csrf, workload: 'agent-a' })
      assert.match(await refusedPage(refused, 403, 'insufficient_scope'), /needs operator/)
      await assertRefusedAndAudited(b, before, { action: 'admin.refuse', error: 'insufficient_scope', reason: /^admin:audit-1 \(auditor\) may not revoke the open tasks of a workload \(console\): it needs operator$/ })
      assert.equal(await status(b, a1), 'active')

      const operator = await signIn(b, OPERATOR)
      const { csrf } = await consolePage(b, operator)
      before = await counts(b)
      for (const [fields, code] of [[{ workload: 'agent-a' }, 403], [{ csrf }, 400], [{ csrf, workload: 'w'.repeat(2049) }, 400]] as const) {
        await refusedPage(await revoke(operator, fields), code, 'invalid_request')
      }
      const bad = await b.app.request('/admin/console/workloads/revoke', { method: 'POST', headers: { 'content-type': 'application/json', cookie: operator }, body: '{}' })
      assert.match(await refusedPage(bad, 400, 'invalid_request'), /unexpected form encoding/)
      assert.deepEqual(await counts(b), before)

      const done = await revoke(operator, { csrf, workload: 'agent-a' })
      assert.equal(done.status, 303)
      assert.equal(done.headers.get('location'), '/admin/console/workloads?notice=workload-revoked')
      assert.equal(await status(b, a1), 'revoked')
      assert.equal(await status(b, a2), 'revoked')
      assert.equal(await status(b, other), 'active')
      const rows = (await b.deps.stores.audit.list({ afterId: 0, limit: 1000 })).filter((r) => r.action === 'task.revoke')
      assert.deepEqual(rows.map((r) => [r.taskId, r.reason]).sort(), [[a1, 'revoked by admin:ops-1; 0 token(s) revoked'], [a2, 'revoked by admin:ops-1; 0 token(s) revoked']].sort())
      assert.equal(await b.count('revocation_events'), before.revocation_events + 2)
      // Nothing left open: again is a no-op.
      before = await counts(b)
      assert.equal((await revoke(operator, { csrf, workload: 'agent-a' })).status, 303)
      assert.deepEqual(await counts(b), before)
    })
  })

  it('key rotation from the key panel (admin only): too early shows its message (409), force rotates, audited as admin:<key>', async () => {
    await withBroker(config, async (b) => {
      const rotate = (cookie: string, fields: Record<string, string>) => b.app.request('/admin/console/keys/rotate', { method: 'POST', headers: { ...FORM, cookie }, body: new URLSearchParams(fields).toString() })
      const keyRows = () => b.rawQuery('select kid, state from signing_keys order by kid')
      const kid = (await b.deps.keys.current()).kid
      const rowsBefore = await keyRows()

      const operator = await signIn(b, OPERATOR)
      const opPage = await consolePage(b, operator)
      assert.doesNotMatch(opPage.html, /keys\/rotate/, 'no rotate form below the admin role')
      let before = await counts(b)
      const refused = await rotate(operator, { csrf: opPage.csrf })
      assert.match(await refusedPage(refused, 403, 'insufficient_scope'), /needs admin/)
      await assertRefusedAndAudited(b, before, { action: 'admin.refuse', error: 'insufficient_scope', reason: /^admin:ops-1 \(operator\) may not POST \/admin\/keys\/rotate \(console\): it needs admin$/ })
      assert.deepEqual(await keyRows(), rowsBefore)

      const admin = await signIn(b, ADMIN_KEY)
      const { html, csrf } = await consolePage(b, admin)
      assert.match(html, /action="\/admin\/console\/keys\/rotate"/)
      assert.match(html, /<input id="force" name="force" type="checkbox" value="true"\/>/)
      before = await counts(b)
      const early = await rotate(admin, { csrf })
      assert.equal(early.headers.get('retry-after'), '300')
      assert.match(await refusedPage(early, 409, 'rotation_too_early'), /the next key has been published for less than 300 s; retry in 300 s or force it/)
      for (const fields of [{ csrf, force: 'yes' }, { csrf, force: '' }]) assert.match(await refusedPage(await rotate(admin, fields), 400, 'invalid_request'), /&quot;force&quot; must be true or absent/)
      assert.match(await refusedPage(await rotate(admin, { force: 'true' }), 403, 'invalid_request'), /did not come from this console/)
      assert.deepEqual(await counts(b), before)
      assert.deepEqual(await keyRows(), rowsBefore)

      const forced = await rotate(admin, { csrf, force: 'true' })
      assert.equal(forced.status, 303)
      assert.equal(forced.headers.get('location'), '/admin/console?notice=keys-rotated')
      assert.notEqual((await b.deps.keys.current()).kid, kid, 'the key set was reloaded: the next key signs')
      assert.equal((await b.lastAudit())!.action, 'keys.rotate')
      assert.match(String((await b.lastAudit())!.reason), new RegExp(`^rotated by admin:key0 \\(forced\\): ${kid} → ${(await b.deps.keys.current()).kid}; `))
      const after = await consolePage(b, admin, '?notice=keys-rotated')
      assert.match(after.html, /The signing keys were rotated/)
      assert.match(after.html, new RegExp(`${kid}</span> <span class="muted">retired \\(still published\\)`))
      // Once the next key has been published for the JWKS max-age, no force is needed.
      b.clock.advance(300)
      assert.equal((await rotate(admin, { csrf })).status, 303)
      assert.match(String((await b.lastAudit())!.reason), /^rotated by admin:key0: /)
    })
  })

  it('the workloads and resources pages show the configuration as it is at the request', async () => {
    await withBroker(config, async (b) => {
      const cookie = await signIn(b, AUDITOR)
      const get = async (path: string) => {
        const res = await b.app.request(path, { headers: { cookie } })
        assert.equal(res.status, 200)
        return res.text()
      }
      let html = await get('/admin/console/workloads')
      assert.match(html, /<tr id="workload-agent-a"><td class="url">agent-a<\/td><td>yes<\/td><td class="url">attestation by spiffe:\/\/test.example<\/td>/)
      assert.match(html, /<tr id="workload-agent-off"><td class="url">agent-off<\/td><td>no<\/td>/)
      assert.match(html, /notes:read notes:write/)
      html = await get('/admin/console/resources')
      assert.match(html, new RegExp(`<td class="url">${CALENDAR}</td><td>cal:read</td><td>yes</td><td>no</td>`))
      assert.match(html, new RegExp(`<td class="url">${NOTES}</td><td>notes:read notes:write notes:delete</td><td>no</td><td>no</td>`))

      // The configuration changes while the broker runs (a new configuration object): the next request shows it.
      const workload = { id: 'mcp-clients', enabled: true, oauthClient: { clientId: { glob: 'https://*.example/**' }, refreshTokens: true }, grants: [], requireDpop: true, delegateTo: [], tokenEndpointAuth: 'none' as const, maxTtl: undefined }
      const resource = { uri: 'https://new.test.example/mcp', scopes: ['new:read'], requireApproval: false, requireDpop: true, maxTokensPerTask: 5 }
      b.deps.config = { ...b.deps.config, workloads: [...b.deps.config.workloads, workload], resources: [...b.deps.config.resources, resource] }
      assert.match(await get('/admin/console/workloads'), /<td class="url">mcp-clients<\/td><td>yes<\/td><td class="url">OAuth client glob https:\/\/\*.example\/\*\*<\/td><td><ul class="access"><\/ul><\/td><td>yes<\/td>/)
      assert.match(await get('/admin/console/resources'), /<td class="url">https:\/\/new.test.example\/mcp<\/td><td>new:read<\/td><td>no<\/td><td>yes<\/td><td>5<\/td>/)
      assert.match(await get('/admin/console'), /<option value="https:\/\/new.test.example\/mcp">/, 'the filter offers it too')
      // Not signed in: the sign-in form.
      assert.match(await (await b.app.request('/admin/console/resources')).text(), /name="key"/)
    })
  })

  it('live tasks over Server-Sent Events, read by a real HTTP client: a task opened, approved and revoked arrives as it happens', async () => {
    const server = await startTestServer({ config })
    try {
      const anon = await fetch(`${server.url}/admin/console/events`, { signal: AbortSignal.timeout(STREAM_WAIT) })
      assert.equal(anon.status, 401)
      assert.match(anon.headers.get('content-type') ?? '', /text\/html/)
      assert.match(await anon.text(), /Your sign-in has expired/)

      const cookie = await signIn(server, AUDITOR)
      const res = await fetch(`${server.url}/admin/console/events`, { headers: { cookie, accept: 'text/event-stream' }, signal: AbortSignal.timeout(STREAM_WAIT) })
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8')
      assert.equal(res.headers.get('cache-control'), 'no-store')
      const stream = eventStream(res.body!)
      await stream.until((m) => m.comments.includes('connected'), 'the opening comment')

      const id = await opened(server, CALENDAR, ['cal:read'])
      const first = await stream.until(taskEvent(id, 'pending_approval'), 'the opened task')
      const view = JSON.parse(first.data!) as Record<string, string>
      assert.deepEqual({ ...view, ends: undefined }, { task_id: id, href: `/admin/console/tasks/${id}`, user: 'alice', workload: 'agent-a', purpose: `console ${CALENDAR}`, status: 'pending_approval', ends: undefined })
      // Real time: near midnight UTC the hour ahead is on the next day, and the date is shown then.
      assert.match(view.ends!, /^until (\d{4}-\d\d-\d\d )?\d\d:\d\d UTC \(in 60 min\)$/)

      const admin = { authorization: `Bearer ${ADMIN_KEY}` }
      assert.equal((await fetch(`${server.url}/admin/tasks/${id}/approve`, { method: 'POST', headers: admin })).status, 200)
      await stream.until(taskEvent(id, 'active'), 'the approval')
      assert.equal((await fetch(`${server.url}/admin/tasks/${id}/revoke`, { method: 'POST', headers: admin })).status, 200)
      await stream.until(taskEvent(id, 'revoked'), 'the revocation')
      await stream.cancel()
    } finally {
      await server.stop()
    }
  })

  it('live streams are bounded (then 503), send heartbeats, end with their sign-in and when the database closes', async () => {
    await withBroker(config, async (b) => {
      // The console's routes alone, with one stream at most and a fast heartbeat.
      const server = serve({ fetch: consoleRoutes(b.deps, { liveStreams: 1, heartbeatMs: 20 }).fetch, hostname: '127.0.0.1', port: 0 })
      await new Promise<void>((resolve) => server.once('listening', () => resolve()))
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/admin/console/events`
      const follow = async (cookie: string) => {
        const res = await fetch(url, { headers: { cookie }, signal: AbortSignal.timeout(STREAM_WAIT) })
        return { res, stream: res.status === 200 ? eventStream(res.body!) : undefined }
      }
      try {
        const cookie = await signIn(b, OPERATOR)
        const one = await follow(cookie)
        assert.equal(one.res.status, 200)
        await one.stream!.until((m) => m.comments.includes('heartbeat'), 'a heartbeat')

        const before = await counts(b)
        const full = await follow(cookie)
        assert.equal(full.res.headers.get('retry-after'), '5')
        assert.match(await refusedPage(full.res, 503, 'temporarily_unavailable'), /the server is busy; retry later/)
        assert.deepEqual(await counts(b), before)

        // The sign-in lapses: the next heartbeat ends the stream, and its place is free again.
        b.clock.advance(3601)
        await one.stream!.ended()
        assert.equal((await follow(cookie)).res.status, 401)
        const cookie2 = await signIn(b, OPERATOR)
        const two = await follow(cookie2)
        assert.equal(two.res.status, 200)
        await two.stream!.until((m) => m.comments.includes('connected'), 'the opening comment')

        // The client goes away: its place is free again (polled until the server has noticed, bounded).
        await two.stream!.cancel()
        let three = await follow(cookie2)
        for (const deadline = Date.now() + STREAM_WAIT; three.res.status === 503 && Date.now() < deadline; three = await follow(cookie2)) await new Promise((resolve) => setTimeout(resolve, 10))
        assert.equal(three.res.status, 200)
        await three.stream!.until((m) => m.comments.includes('connected'), 'the opening comment')

        // The database closes (the broker stops): the stream ends.
        await b.close()
        await three.stream!.ended()
      } finally {
        await new Promise<void>((resolve) => server.close(() => resolve()))
      }
    })
  })

  it('the live page: the newest tasks without script; its one script, same-origin, allowed by its CSP alone', async () => {
    await withBroker(config, async (b) => {
      const id = await opened(b, NOTES, ['notes:read'])
      const cookie = await signIn(b, AUDITOR)
      const res = await b.app.request('/admin/console/live', { headers: { cookie } })
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('content-security-policy'), "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
      const html = await res.text()
      const src = /<script src="(\/assets\/console-live\.js\?v=[A-Za-z0-9_-]+)" defer=""><\/script>/.exec(html)?.[1]
      assert.ok(src, 'the page loads its script')
      assert.match(html, new RegExp(`<tr id="task-${id}"><td class="url"><a href="/admin/console/tasks/${id}">`))
      assert.match(html, /data-events="\/admin\/console\/events"/)
      const js = await b.app.request(src)
      assert.equal(js.status, 200)
      assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8')
      assert.equal(js.headers.get('cache-control'), 'public, max-age=31536000, immutable')
      assert.equal((await b.app.request(src, { headers: { 'if-none-match': js.headers.get('etag')! } })).status, 304)
      const script = await js.text()
      assert.match(script, /new EventSource\(/)
      // What it receives becomes text, never markup.
      assert.doesNotMatch(script, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/)
      // Every other console page still runs no script.
      for (const path of ['/admin/console', `/admin/console/tasks/${id}`, '/admin/console/workloads']) {
        const csp = (await b.app.request(path, { headers: { cookie } })).headers.get('content-security-policy') ?? ''
        assert.doesNotMatch(csp, /script-src|connect-src/, path)
      }
    })
  })

  it('a live stream whose reader stops reading is closed once it falls behind: it costs the broker a bounded buffer', async () => {
    await withBroker(config, async (b) => {
      const id = await opened(b, NOTES, ['notes:read'])
      const cookie = await signIn(b, AUDITOR)
      // app.request hands back the stream itself: nothing reads it while the events pile up.
      const res = await b.app.request('/admin/console/events', { headers: { cookie } })
      assert.equal(res.status, 200)
      // Each event is a read of the task: all of them answered before anything reads the stream
      // (at once on SQLite; over a connection on PostgreSQL, where a reader started now would keep up).
      const tasks = b.deps.stores.tasks
      const get = tasks.get.bind(tasks)
      let reads = 0
      tasks.get = async (...args: Parameters<typeof get>) => {
        try {
          return await get(...args)
        } finally {
          reads++
        }
      }
      for (let i = 0; i < 2000; i++) b.deps.approvals.notify(id)
      const readBy = Date.now() + STREAM_WAIT
      while (reads < 2000) {
        assert.ok(Date.now() < readBy, `${reads} of 2000 task reads answered`)
        await new Promise((r) => setImmediate(r))
      }
      let timer: NodeJS.Timeout | undefined
      const text = await Promise.race([res.text(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('the stream was never closed')), STREAM_WAIT)))]).finally(() => clearTimeout(timer))
      const events = text.split('\n\n').filter((m) => m.startsWith('event: task')).length
      assert.ok(events > 100 && events < 2000, `${events} events buffered before the stream closed`)
      assert.ok(text.length < 400 * 1024, `${text.length} bytes`)
    })
  })
})
