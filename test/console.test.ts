/**
 * The admin console over HTTP: sign-in with the admin key (a wrong one is a 401 page and no
 * cookie), CSRF on every action form, the API's roles (an auditor sees the page, not the buttons,
 * and a forged POST is 403, audited, nothing else changed), and an operator's approve, deny and
 * revoke landing as the API's would, audited as `admin:<id>`.
 */
import assert from 'node:assert/strict'
import { before, describe, it } from 'node:test'
import { argon2Hasher } from '../src/broker.js'
import { ADMIN_KEY, CALENDAR, counts, NOTES, openTask, withBroker, type TestBroker } from './harness.js'

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

const status = (b: TestBroker, id: string) => b.deps.stores.tasks.get(id)!.status

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
      const before = counts(b)
      const res = await b.app.request('/admin/console/login', { method: 'POST', headers: FORM, body: 'key=tpa_wrong-key' })
      assert.equal(res.status, 401)
      assert.equal(res.headers.get('set-cookie'), null)
      assert.match(await res.text(), /not an admin key/)
      assert.deepEqual(counts(b), before)
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
      const before = counts(b)
      for (const fields of [{}, { csrf: 'x'.repeat(43) }, { csrf: other.csrf }] as Record<string, string>[]) {
        const res = await act(b, cookie, id, 'approve', fields)
        assert.equal(res.status, 403)
        assert.match(await res.text(), /did not come from this console/)
      }
      assert.deepEqual(counts(b), before)
      assert.equal(status(b, id), 'pending_approval')
      // Signed out (no cookie): the sign-in page, 401, nothing changed.
      const anon = await b.app.request(`/admin/console/tasks/${id}/approve`, { method: 'POST', headers: FORM, body: `csrf=${other.csrf}` })
      assert.equal(anon.status, 401)
      assert.deepEqual(counts(b), before)
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
      assert.match(html, new RegExp(b.deps.keys.current().kid))
      assert.match(html, /Intact: \d+ rows verified/)
      for (const [id, what] of [[pending, 'approve'], [pending, 'deny'], [active, 'revoke']] as const) {
        const before = counts(b)
        const res = await act(b, cookie, id, what, { csrf, reason: 'no' })
        assert.equal(res.status, 403)
        assert.match(await res.text(), /needs operator/)
        const after = counts(b)
        assert.deepEqual({ ...after, audit_events: before.audit_events }, before)
        assert.equal(after.audit_events, before.audit_events + 1)
        const row = b.lastAudit()!
        assert.equal(row.action, 'admin.refuse')
        assert.match(String(row.reason), new RegExp(`^admin:audit-1 \\(auditor\\) may not POST /admin/tasks/:id/${what} \\(console\\): it needs operator$`))
      }
      assert.equal(status(b, pending), 'pending_approval')
      assert.equal(status(b, active), 'active')
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
      assert.equal(status(b, toApprove), 'active')
      assert.equal(b.lastAudit()!.action, 'task.approve')
      assert.equal(b.lastAudit()!.reason, 'approved by admin:ops-1')

      // Deny without a reason: 400, audited as a refused decision, the task still pending.
      const noReason = await act(b, cookie, toDeny, 'deny', { csrf, reason: '' })
      assert.equal(noReason.status, 400)
      assert.match(await noReason.text(), /&quot;reason&quot; is required/)
      assert.equal(status(b, toDeny), 'pending_approval')
      const denied = await act(b, cookie, toDeny, 'deny', { csrf, reason: 'not this week' })
      assert.equal(denied.status, 303)
      assert.equal(status(b, toDeny), 'denied')
      assert.equal(b.lastAudit()!.reason, 'denied by admin:ops-1: not this week')

      const revoked = await act(b, cookie, toRevoke, 'revoke', { csrf })
      assert.equal(revoked.status, 303)
      assert.equal(revoked.headers.get('location'), '/admin/console?notice=revoked')
      assert.equal(status(b, toRevoke), 'revoked')
      const rows = b.deps.stores.audit.list({ afterId: 0, limit: 1000 }).filter((r) => r.taskId === toRevoke && r.action === 'task.revoke')
      assert.equal(rows.length, 1)
      assert.match(String(rows[0]!.reason), /admin:ops-1/)

      // Again: the task is no longer open — 409, nothing changed.
      const before = counts(b)
      const again = await act(b, cookie, toRevoke, 'revoke', { csrf })
      assert.equal(again.status, 409)
      assert.deepEqual({ ...counts(b), audit_events: before.audit_events }, before)
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
      const before = counts(b)
      for (const query of [`?workload=${'w'.repeat(2049)}`, `?user=${'u'.repeat(1025)}`, `?resource=${'r'.repeat(2049)}`, '?status=nope', '?status=active%00']) {
        const res = await b.app.request(`/admin/console${query}`, { headers: { cookie } })
        assert.equal(res.status, 400, query.slice(0, 20))
        assert.match(res.headers.get('content-type') ?? '', /text\/html/)
        assert.match(await res.text(), /&quot;workload&quot; and &quot;resource&quot; 1 to 2048 characters/)
      }
      const api = await b.app.request(`/admin/tasks?resource=${'r'.repeat(2049)}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(api.status, 400)
      assert.equal(((await api.json()) as { error: string }).error, 'invalid_request')
      assert.deepEqual(counts(b), before)
    })
  })
})
