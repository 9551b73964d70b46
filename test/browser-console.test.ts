/**
 * The admin console in a real browser (headless Chromium, test/browser.ts), against the broker on
 * a real 127.0.0.1 port: sign in with the admin key, approve a task awaiting approval, revoke
 * another, filter by status and by workload, open a task's page and read its timeline, watch a
 * task opened through the API appear on the live page without a reload, then sign out; the effects
 * are checked in the store and through the admin API. No page raises a console error or a CSP
 * violation (the live page's script and event stream included).
 *
 * Screenshots go to a temp directory (printed) and, when `TASKPASS_SCREENSHOTS` names a
 * directory, there too — how the docs image is made:
 * `TASKPASS_SCREENSHOTS=docs/images node --import tsx --test test/browser-console.test.ts`.
 */
import assert from 'node:assert/strict'
import { copyFile, mkdir, mkdtemp, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { Page } from 'playwright-core'
import { createFixedClock } from '../src/clock.js'
import { launchBrowser, watchProblems, type LaunchedBrowser } from './browser.js'
import { ADMIN_KEY, CALENDAR, NOTES, openTask, startTestServer, T0 } from './harness.js'

/** Every wait for the browser is bounded by this (a navigation, an element). */
const WAIT = 15_000

type Broker = Awaited<ReturnType<typeof startTestServer>>

describe('the admin console in Chromium', () => {
  let chromium: LaunchedBrowser
  let broker: Broker
  let shots: string
  const extra = process.env.TASKPASS_SCREENSHOTS

  before(async () => {
    // A fixed clock: the screenshots show the same times on every run.
    broker = await startTestServer({ clock: createFixedClock(T0), config: (c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }) })
    chromium = await launchBrowser()
    shots = await mkdtemp(join(tmpdir(), 'taskpass-console-'))
    if (extra) await mkdir(extra, { recursive: true })
    console.log(`screenshots in ${shots}${extra ? ` and ${extra}` : ''}`)
  })

  after(async () => {
    await chromium?.close()
    await broker?.stop()
  })

  async function screenshot(page: Page, name: string): Promise<void> {
    const path = join(shots, name)
    await page.screenshot({ path, fullPage: true })
    if (extra) await copyFile(path, join(extra, name))
  }

  async function open(purpose: string, resource: string, scopes: string[], agent = 'a'): Promise<string> {
    const res = await openTask(broker, { purpose, resources: [{ resource, scopes }] }, { svid: await broker.svid(agent) })
    assert.equal(res.status, 201)
    return ((await res.json()) as { task_id: string }).task_id
  }

  async function adminView(id: string): Promise<{ status: string }> {
    const res = await fetch(`${broker.url}/admin/tasks?limit=500`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
    assert.equal(res.status, 200)
    const { tasks } = (await res.json()) as { tasks: { task_id: string; status: string }[] }
    return tasks.find((t) => t.task_id === id)!
  }

  it('sign in with the admin key, approve a pending task, revoke another, filter, read a task\'s timeline, see a task arrive live, sign out', async () => {
    const pending = await open('Read my calendar for the planning meeting', CALENDAR, ['cal:read'])
    const active = await open('Summarise this week’s meeting notes', NOTES, ['notes:read'])
    const context = await chromium.browser.newContext({ viewport: { width: 1200, height: 1000 }, colorScheme: 'light', locale: 'en-US' })
    const page = await context.newPage()
    page.setDefaultTimeout(WAIT)
    page.setDefaultNavigationTimeout(WAIT)
    const problems = watchProblems(page)

    const res = await page.goto(`${broker.url}/admin/console`)
    assert.equal(res?.status(), 200)
    await page.getByRole('heading', { name: 'Admin console' }).waitFor()
    assert.deepEqual(problems, [], 'sign-in page')

    // A wrong key first: the form again, with the error, and no cookie.
    await page.getByLabel('Admin API key').fill('tpa_not-a-key')
    await Promise.all([page.waitForURL((u) => u.pathname === '/admin/console/login', { waitUntil: 'load' }), page.getByRole('button', { name: 'Sign in' }).click()])
    assert.match((await page.getByRole('alert').textContent()) ?? '', /not an admin key/)
    assert.deepEqual(await context.cookies(), [])
    problems.length = 0

    await page.getByLabel('Admin API key').fill(ADMIN_KEY)
    await Promise.all([page.waitForURL((u) => u.pathname === '/admin/console' && u.searchParams.get('notice') === 'signed-in', { waitUntil: 'load' }), page.getByRole('button', { name: 'Sign in' }).click()])
    const [cookie] = await context.cookies()
    assert.equal(cookie?.name, 'taskpass-console')
    assert.equal(cookie?.httpOnly, true)
    assert.equal(cookie?.sameSite, 'Strict')
    await page.getByRole('heading', { name: 'Tasks' }).waitFor()
    assert.match((await page.locator('#audit-status').textContent()) ?? '', /^Intact/)
    assert.match((await page.locator('body').textContent()) ?? '', new RegExp((await broker.deps.keys.current()).kid))
    await screenshot(page, 'console.png')
    assert.deepEqual(problems, [], 'console page')

    const pendingRow = page.locator(`#task-${pending}`)
    await Promise.all([page.waitForURL((u) => u.searchParams.get('notice') === 'approved', { waitUntil: 'load' }), pendingRow.getByRole('button', { name: 'Approve' }).click()])
    assert.equal(await page.getByRole('status').textContent(), 'The task was approved.')
    assert.equal((await broker.deps.stores.tasks.get(pending))!.status, 'active')
    assert.equal((await adminView(pending)).status, 'active')
    assert.equal(await page.locator(`#task-${pending}`).getByRole('button', { name: 'Approve' }).count(), 0)

    await Promise.all([page.waitForURL((u) => u.searchParams.get('notice') === 'revoked', { waitUntil: 'load' }), page.locator(`#task-${active}`).getByRole('button', { name: 'Revoke' }).click()])
    assert.equal(await page.getByRole('status').textContent(), 'The task was revoked: its tokens no longer work.')
    assert.equal((await adminView(active)).status, 'revoked')
    assert.equal(await page.locator(`#task-${active}`).getByRole('button', { name: 'Revoke' }).count(), 0)

    // The audit log names the admin for both.
    const rows = await broker.deps.stores.audit.list({ afterId: 0, limit: 1000 })
    assert.equal(rows.find((r) => r.taskId === pending && r.action === 'task.approve')?.reason, 'approved by admin:key0')
    assert.match(String(rows.find((r) => r.taskId === active && r.action === 'task.revoke')?.reason), /admin:key0/)

    // Filtered by status: only the revoked one.
    await Promise.all([page.waitForURL((u) => u.searchParams.get('status') === 'revoked', { waitUntil: 'load' }), (async () => {
      await page.getByLabel('Status').selectOption('revoked')
      await page.getByRole('button', { name: 'Filter' }).click()
    })()])
    assert.equal(await page.locator('tbody tr').count(), 1)
    assert.equal(await page.locator(`#task-${active}`).count(), 1)

    // Filtered by workload: only agent-b's task (status back to all).
    const other = await open('Tidy the shared notes', NOTES, ['notes:read'], 'b')
    await page.goto(`${broker.url}/admin/console`)
    await Promise.all([page.waitForURL((u) => u.searchParams.get('workload') === 'agent-b', { waitUntil: 'load' }), (async () => {
      await page.getByLabel('Workload').selectOption('agent-b')
      await page.getByRole('button', { name: 'Filter' }).click()
    })()])
    assert.equal(await page.locator('tbody tr').count(), 1)
    assert.equal(await page.locator(`#task-${other}`).count(), 1)
    assert.deepEqual(problems, [], 'console filtered by workload')

    // A task's page: its facts and its timeline, newest last.
    await Promise.all([page.waitForURL((u) => u.pathname === '/admin/console'.concat('/tasks/', pending), { waitUntil: 'load' }), page.goto(`${broker.url}/admin/console`).then(() => page.getByRole('link', { name: pending }).click())])
    await page.getByRole('heading', { name: 'Timeline' }).waitFor()
    const steps = await page.locator('#timeline tbody tr td:nth-child(2)').allTextContents()
    assert.deepEqual(steps, ['task.open', 'task.approve'])
    assert.match((await page.locator('#facts').textContent()) ?? '', /Statusactive/)
    await screenshot(page, 'console-task.png')
    assert.deepEqual(problems, [], 'task page')

    // The catalog's pages, read at request time: a workload switched off through the API shows so at the next load.
    await page.getByRole('link', { name: 'Workloads' }).click()
    await page.locator('#workload-agent-b').waitFor()
    assert.match((await page.locator('#workload-agent-b').textContent()) ?? '', /agent-b\s*yes/)
    assert.equal((await fetch(`${broker.url}/admin/workloads/agent-b/disable`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 200)
    await page.reload({ waitUntil: 'load' })
    assert.match((await page.locator('#workload-agent-b').textContent()) ?? '', /agent-b\s*no/)
    await page.getByRole('link', { name: 'Resources' }).click()
    await page.locator('#resources').waitFor()
    assert.match((await page.locator('#resources').textContent()) ?? '', new RegExp(NOTES.replaceAll('.', '\\.')))
    assert.deepEqual(problems, [], 'workloads and resources pages')

    // The live page: a task opened through the API while it is open shows up without a reload.
    await page.getByRole('link', { name: 'Live' }).click()
    await page.getByRole('heading', { name: 'Live tasks' }).waitFor()
    await page.locator('#live-state', { hasText: 'Live:' }).waitFor()
    await page.evaluate(() => Object.assign(window, { notReloaded: true }))
    const arriving = await open('Draft the weekly summary', NOTES, ['notes:write'])
    await page.locator(`#task-${arriving}`).waitFor()
    assert.equal(await page.locator('#live-tasks tbody tr').first().getAttribute('id'), `task-${arriving}`, 'at the top')
    assert.match((await page.locator(`#task-${arriving}`).textContent()) ?? '', /Draft the weekly summary.*active/)
    assert.equal(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded), true, 'no reload')
    // A change of status arrives too.
    assert.equal((await fetch(`${broker.url}/admin/tasks/${arriving}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 200)
    await page.locator(`#task-${arriving} .status-revoked`).waitFor()
    assert.deepEqual(problems, [], 'live page (its script, its event stream)')
    await page.reload({ waitUntil: 'load' })
    assert.equal(await page.locator(`#task-${arriving} .status-revoked`).count(), 1, 'a reload shows the same')

    await Promise.all([page.waitForURL((u) => u.pathname === '/admin/console' && u.search === '', { waitUntil: 'load' }), page.getByRole('button', { name: 'Sign out' }).click()])
    await page.getByLabel('Admin API key').waitFor()
    assert.deepEqual(await context.cookies(), [])
    assert.deepEqual(problems, [], 'console after the actions')
    await context.close()
  })

  it('the screenshot was written', async () => {
    for (const name of ['console.png', 'console-task.png']) {
      assert.ok((await stat(join(shots, name))).size > 1000)
      if (extra) assert.ok((await stat(join(extra, name))).size > 1000, `${extra}/${name}`)
    }
  })
})
