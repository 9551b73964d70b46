/**
 * The pages in a real browser (headless Chromium, test/browser.ts): their CSP lets the stylesheet
 * load and raises no violation, the consent form posts what the user left checked, the redirect
 * answering that POST is allowed only to an origin named in `form-action`, and "End task" posts
 * to its task. Screenshots of each page are written to a temp directory (printed) for a look.
 */
import assert from 'node:assert/strict'
import { mkdtemp, stat } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { serve, type ServerType } from '@hono/node-server'
import { Hono } from 'hono'
import type { Page } from 'playwright-core'
import { pageResponse } from '../src/http/pages.js'
import { ConsentPage } from '../src/pages/consent.js'
import { ErrorPage } from '../src/pages/error.js'
import { LoginPage } from '../src/pages/login.js'
import { MyTasksPage } from '../src/pages/my-tasks.js'
import { PendingPage } from '../src/pages/pending.js'
import { pageAssets } from '../src/routes/assets.js'
import { launchBrowser, watchProblems, type LaunchedBrowser } from './browser.js'
import { consentProps, myTasksProps, NOW } from './page-fixtures.js'

interface Posted {
  path: string
  fields: [string, string][]
}

async function listen(app: Hono): Promise<{ server: ServerType; url: string }> {
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 })
  await new Promise<void>((resolve) => server.once('listening', () => resolve()))
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

function close(server: ServerType): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

const field = (posted: Posted, name: string) => posted.fields.filter(([k]) => k === name).map(([, v]) => v)

describe('pages in Chromium', () => {
  let chromium: LaunchedBrowser
  let broker: { server: ServerType; url: string }
  /** Another origin (same host, another port), standing in for the client's redirect URI. */
  let client: { server: ServerType; url: string }
  let shots: string
  const posted: Posted[] = []
  const arrivals: string[] = []

  before(async () => {
    shots = await mkdtemp(join(tmpdir(), 'taskpass-pages-'))
    client = await listen(new Hono().get('/callback', (c) => {
      arrivals.push(c.req.url)
      return c.text('back at the client')
    }))
    const record = async (c: { req: { path: string; text(): Promise<string> } }) => {
      const entry = { path: c.req.path, fields: [...new URLSearchParams(await c.req.text())] }
      posted.push(entry)
      return entry
    }
    const app = new Hono()
      .route('/', pageAssets())
      // The consent page, its form-action naming the client's redirect origin only when asked to.
      .get('/consent', (c) =>
        pageResponse(c, ConsentPage(consentProps({ action: '/consent' })), {
          formActions: c.req.query('allow_redirect') === '1' ? [`${client.url}/callback`] : [],
        }),
      )
      .post('/consent', async (c) => {
        await record(c)
        return c.text('recorded')
      })
      // As the authorization endpoint answers a decision: 303 to the client's redirect URI.
      .post('/consent-redirect', async (c) => {
        await record(c)
        return c.redirect(`${client.url}/callback?code=abc`, 303)
      })
      .get('/consent-redirect', (c) =>
        pageResponse(c, ConsentPage(consentProps({ action: '/consent-redirect' })), {
          formActions: c.req.query('allow_redirect') === '1' ? [`${client.url}/callback`] : [],
        }),
      )
      .get('/consent-localhost', (c) => {
        const props = consentProps({ tools: [] })
        const redirectUri = 'http://127.0.0.1:43210/callback'
        return pageResponse(c, ConsentPage({ ...props, client: { ...props.client, redirectUri, redirectHost: '127.0.0.1:43210', localhostOnly: true } }))
      })
      .get('/login', (c) =>
        pageResponse(
          c,
          LoginPage({
            action: '/login',
            hidden: [{ name: 'request', value: 'sealed' }],
            csrf: 'csrf-login',
            dev: { issuerName: 'taskpass dev' },
            idps: [{ name: 'Acme SSO', href: '/login/idp?issuer=acme' }],
            error: 'Wrong user or password.',
            clientName: 'Notes Assistant',
          }),
          { status: 401 },
        ),
      )
      .post('/login', async (c) => {
        await record(c)
        return c.text('signed in')
      })
      .get('/pending', (c) =>
        pageResponse(c, PendingPage({ clientName: 'Notes Assistant', purpose: 'Export the calendar', refreshUrl: '/pending/next', expiresAt: NOW + 600, now: NOW })),
      )
      .get('/pending/next', (c) => c.text('decided'))
      .get('/error', (c) => pageResponse(c, ErrorPage({ status: 400, title: 'Invalid request', message: 'The redirect URI is not registered for this client.' }), { status: 400 }))
      .get('/my/tasks', (c) => pageResponse(c, MyTasksPage(myTasksProps({ notice: 'Task ended.' }))))
      .post('/my/tasks/:id/end', async (c) => {
        await record(c)
        return c.text('ended')
      })
    broker = await listen(app)
    chromium = await launchBrowser()
    console.log(`# screenshots in ${shots}`)
  })

  after(async () => {
    await chromium?.close()
    if (broker) await close(broker.server)
    if (client) await close(client.server)
  })

  async function open(path: string, status = 200): Promise<{ page: Page; problems: string[] }> {
    const context = await chromium.browser.newContext({ viewport: { width: 1000, height: 900 } })
    const page = await context.newPage()
    const problems = watchProblems(page)
    const res = await page.goto(`${broker.url}${path}`)
    assert.equal(res?.status(), status)
    // The stylesheet applied: CSP's style-src 'self' let it load (the card is centered and bounded).
    assert.equal(await page.locator('main.card').evaluate((el) => getComputedStyle(el).borderRadius), '12px')
    return { page, problems }
  }

  it('consent: no CSP violation; an unchecked scope is not posted, the rest is', async () => {
    posted.length = 0
    const { page, problems } = await open('/consent')
    await page.screenshot({ path: join(shots, 'consent.png'), fullPage: true })
    assert.equal(await page.locator('input[name=scope]:checked').count(), 2)
    await page.locator('input[name=scope][value="notes:write"]').uncheck()
    await Promise.all([page.waitForURL(`${broker.url}/consent`, { waitUntil: 'load' }), page.getByRole('button', { name: 'Allow' }).click()])
    assert.equal(await page.textContent('body'), 'recorded')
    assert.deepEqual(problems, [])
    assert.equal(posted.length, 1)
    const form = posted[0]!
    assert.deepEqual(field(form, 'csrf'), ['csrf-consent-token'])
    assert.deepEqual(field(form, 'request'), ['sealed.request.value'])
    assert.deepEqual(field(form, 'scope'), ['notes:read'])
    assert.deepEqual(field(form, 'tool'), ['search_notes', 'create_note'])
    assert.deepEqual(field(form, 'ttl'), ['900'])
    assert.deepEqual(field(form, 'purpose'), ['Summarise this week’s meeting notes'])
    assert.deepEqual(field(form, 'decision'), ['allow'])
    await page.context().close()
  })

  it('consent: Deny posts even with the purpose cleared', async () => {
    posted.length = 0
    const { page, problems } = await open('/consent')
    await page.locator('#purpose').fill('')
    await Promise.all([page.waitForURL(`${broker.url}/consent`, { waitUntil: 'load' }), page.getByRole('button', { name: 'Deny' }).click()])
    assert.deepEqual(problems, [])
    assert.deepEqual(field(posted[0]!, 'decision'), ['deny'])
    assert.deepEqual(field(posted[0]!, 'csrf'), ['csrf-consent-token'])
    await page.context().close()
  })

  it('consent: the 303 to the client after the POST goes through when form-action names its origin', async () => {
    arrivals.length = 0
    const { page, problems } = await open('/consent-redirect?allow_redirect=1')
    await Promise.all([page.waitForURL(`${client.url}/callback?code=abc`), page.getByRole('button', { name: 'Allow' }).click()])
    assert.deepEqual(arrivals, [`${client.url}/callback?code=abc`])
    assert.deepEqual(problems, [])
    await page.context().close()
  })

  it('consent: without the redirect origin in form-action, Chrome blocks that redirect (why the route passes it)', async () => {
    arrivals.length = 0
    posted.length = 0
    const { page, problems } = await open('/consent-redirect')
    const violation = page.waitForEvent('console', { predicate: (m) => m.type() === 'error' && /form-action/.test(m.text()), timeout: 10_000 })
    await page.getByRole('button', { name: 'Allow' }).click()
    await violation
    assert.equal(posted.length, 1, 'the form itself posted to self')
    assert.deepEqual(arrivals, [], 'the client was never reached')
    assert.ok(problems.some((p) => p.includes('form-action')), problems.join('\n'))
    await page.context().close()
  })

  it('my tasks: no CSP violation; End task posts csrf to its task', async () => {
    posted.length = 0
    const { page, problems } = await open('/my/tasks')
    await page.screenshot({ path: join(shots, 'my-tasks.png'), fullPage: true })
    assert.equal(await page.getByRole('button', { name: 'End task' }).count(), 1)
    await Promise.all([page.waitForURL(`${broker.url}/my/tasks/task_open1/end`, { waitUntil: 'load' }), page.getByRole('button', { name: 'End task' }).click()])
    assert.deepEqual(problems, [])
    assert.deepEqual(posted, [{ path: '/my/tasks/task_open1/end', fields: [['csrf', 'csrf-tasks-token']] }])
    await page.context().close()
  })

  it('login: no CSP violation; the dev form posts user, password, csrf and the hidden fields', async () => {
    posted.length = 0
    const { page, problems } = await open('/login', 401)
    await page.screenshot({ path: join(shots, 'login.png'), fullPage: true })
    await page.getByLabel('User').fill('alice')
    await page.getByLabel('Password').fill('correct horse')
    await Promise.all([page.waitForURL(`${broker.url}/login`, { waitUntil: 'load' }), page.getByRole('button', { name: 'Sign in', exact: true }).click()])
    assert.deepEqual(problems, [])
    assert.deepEqual(posted, [{ path: '/login', fields: [['csrf', 'csrf-login'], ['request', 'sealed'], ['username', 'alice'], ['password', 'correct horse']] }])
    await page.context().close()
  })

  it('consent for a localhost client: the warning, "any tool the policy allows", no CSP violation', async () => {
    const { page, problems } = await open('/consent-localhost')
    await page.screenshot({ path: join(shots, 'consent-localhost.png'), fullPage: true })
    assert.match((await page.getByRole('alert').textContent()) ?? '', /only returns to localhost/)
    assert.equal(await page.locator('input[name=tool]').count(), 0)
    assert.ok(await page.getByText('any tool the policy allows').isVisible())
    assert.deepEqual(problems, [])
    await page.context().close()
  })

  it('pending: the meta refresh goes to the refresh URL by itself, CSP notwithstanding', async () => {
    const { page, problems } = await open('/pending')
    await page.screenshot({ path: join(shots, 'pending.png'), fullPage: true })
    // The page says 3 s; a bounded wait for the navigation, not a sleep.
    await page.waitForURL(`${broker.url}/pending/next`, { timeout: 10_000 })
    assert.equal(await page.textContent('body'), 'decided')
    assert.deepEqual(problems, [])
    await page.context().close()
  })

  it('error: no CSP violation', async () => {
    const { page, problems } = await open('/error', 400)
    await page.screenshot({ path: join(shots, 'error.png'), fullPage: true })
    assert.equal(await page.locator('h1').textContent(), 'Invalid request')
    assert.deepEqual(problems, [])
    await page.context().close()
  })

  it('the screenshots were written', async () => {
    for (const name of ['consent.png', 'consent-localhost.png', 'my-tasks.png', 'login.png', 'pending.png', 'error.png']) assert.ok((await stat(join(shots, name))).size > 1000, name)
  })
})
