/**
 * The authorization-code flow in a real browser (headless Chromium, test/browser.ts), against the
 * broker on a real 127.0.0.1 port: /authorize, the dev sign-in, the consent page (a scope
 * unchecked, a purpose typed), the redirect to the client's callback with `code`, `state` and
 * `iss`, the code redeemed at /token, then the user's own page ending the task. No page raises a
 * console error or a CSP violation.
 *
 * Screenshots of the sign-in, consent and "my tasks" pages go to a temp directory (printed) and,
 * when `TASKPASS_SCREENSHOTS` names a directory, there too — how the docs images are made:
 * `TASKPASS_SCREENSHOTS=docs/images node --import tsx --test test/browser-flow.test.ts`.
 */
import assert from 'node:assert/strict'
import { copyFile, mkdir, mkdtemp, stat } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { decodeJwt } from 'jose'
import type { Page } from 'playwright-core'
import type { ClientMetadata } from '../src/clients/metadata-document.js'
import { createFixedClock } from '../src/clock.js'
import { launchBrowser, watchProblems, type LaunchedBrowser } from './browser.js'
import { authorizeQuery, browserFlowConfig, CLIENT_ID, DEV_PASSWORD, fixedClients, pkce } from './authorize-fixtures.js'
import { NOTES, startTestServer, T0 } from './harness.js'

/** Every wait for the browser is bounded by this (a navigation, an element). */
const WAIT = 15_000

type Broker = Awaited<ReturnType<typeof startTestServer>>

/** The client's redirect URI: records each query it receives and answers "signed in". */
async function callbackServer(): Promise<{ server: Server; url: string; received: URLSearchParams[] }> {
  const received: URLSearchParams[] = []
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    if (url.pathname !== '/callback') return void res.writeHead(404).end()
    received.push(url.searchParams)
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('signed in')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/callback`, received }
}

describe('the authorization-code flow in Chromium', () => {
  let chromium: LaunchedBrowser
  let broker: Broker
  let client: Awaited<ReturnType<typeof callbackServer>>
  let shots: string
  const extra = process.env.TASKPASS_SCREENSHOTS

  before(async () => {
    client = await callbackServer()
    const doc: ClientMetadata = { clientId: CLIENT_ID, clientName: 'Notes Assistant', redirectUris: [client.url], grantTypes: ['authorization_code', 'refresh_token'] }
    // A fixed clock: nothing here outlives it, and the screenshots show the same times on every run.
    broker = await startTestServer({ clock: createFixedClock(T0), config: browserFlowConfig, clientMetadata: fixedClients([doc]) })
    chromium = await launchBrowser()
    shots = await mkdtemp(join(tmpdir(), 'taskpass-flow-'))
    if (extra) await mkdir(extra, { recursive: true })
    console.log(`screenshots in ${shots}${extra ? ` and ${extra}` : ''}`)
  })

  after(async () => {
    await chromium?.close()
    await broker?.stop()
    if (client) {
      client.server.closeAllConnections()
      await new Promise<void>((resolve) => client.server.close(() => resolve()))
    }
  })

  async function screenshot(page: Page, name: string): Promise<void> {
    const path = join(shots, name)
    await page.screenshot({ path, fullPage: true })
    if (extra) await copyFile(path, join(extra, name))
  }

  it('sign in, consent to less than asked, back at the client; the code buys a notes:read token; the user ends the task', async () => {
    const context = await chromium.browser.newContext({ viewport: { width: 900, height: 1000 }, colorScheme: 'light', locale: 'en-US' })
    const page = await context.newPage()
    page.setDefaultTimeout(WAIT)
    page.setDefaultNavigationTimeout(WAIT)
    const problems = watchProblems(page)
    const { verifier, challenge } = pkce()

    // /authorize: not signed in, so the sign-in page.
    const res = await page.goto(`${broker.url}/authorize?${authorizeQuery(challenge, { redirect_uri: client.url, state: 'st-browser', resource: NOTES, scope: 'notes:read notes:write' })}`)
    assert.equal(res?.status(), 200)
    await page.getByRole('heading', { name: 'Sign in' }).waitFor()
    assert.match((await page.locator('.lead').textContent()) ?? '', /Notes Assistant/)
    await screenshot(page, 'sign-in.png')
    assert.deepEqual(problems, [], 'sign-in page')

    await page.getByLabel('User').fill('alice')
    await page.getByLabel('Password').fill(DEV_PASSWORD)
    await Promise.all([page.waitForURL((u) => u.pathname === '/authorize/consent', { waitUntil: 'load' }), page.getByRole('button', { name: 'Sign in', exact: true }).click()])

    // The consent page names the client, where its document lives and where the browser goes back to.
    await page.getByRole('heading', { name: /Open a task for/ }).waitFor()
    assert.equal(await page.locator('h1 .client-name').textContent(), 'Notes Assistant')
    const hosts = page.locator('dl.hosts strong.host')
    assert.deepEqual(await hosts.allTextContents(), ['client.test.example', new URL(client.url).host])
    assert.equal(await page.locator('input[name=scope]:checked').count(), 2)
    await page.locator('input[name=scope][value="notes:write"]').uncheck()
    await page.locator('#purpose').fill('Summarise this week’s meeting notes')
    await screenshot(page, 'consent.png')
    assert.deepEqual(problems, [], 'consent page')

    await Promise.all([page.waitForURL((u) => `${u.origin}${u.pathname}` === client.url, { waitUntil: 'load' }), page.getByRole('button', { name: 'Allow' }).click()])
    assert.equal(await page.textContent('body'), 'signed in')
    assert.equal(client.received.length, 1)
    const back = client.received[0]!
    assert.deepEqual([...back.keys()].sort(), ['code', 'iss', 'state'])
    assert.equal(back.get('state'), 'st-browser')
    assert.equal(back.get('iss'), broker.url)
    const code = back.get('code')!
    assert.match(code, /^tpc_/)

    // The client redeems the code with its verifier: the token carries only what the user left checked.
    const token = await fetch(`${broker.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, code_verifier: verifier, client_id: CLIENT_ID, redirect_uri: client.url, resource: NOTES }),
    })
    assert.equal(token.status, 200)
    const body = (await token.json()) as { access_token: string; scope: string; task_id: string }
    assert.equal(body.scope, 'notes:read')
    const claims = decodeJwt(body.access_token)
    assert.equal(claims.scope, 'notes:read')
    assert.equal(claims.aud, NOTES)
    assert.equal(claims.sub, 'alice')
    const taskId = body.task_id
    assert.equal(claims.task_id, taskId)
    const task = (await broker.deps.stores.tasks.get(taskId))!
    assert.equal(task.status, 'active')
    assert.equal(task.purpose, 'Summarise this week’s meeting notes')

    // The user's own page, in the same browser (the sign-in cookie): the task is listed and ends.
    problems.length = 0
    assert.equal((await page.goto(`${broker.url}/account`))?.status(), 200)
    await page.getByRole('heading', { name: 'My tasks' }).waitFor()
    const row = page.locator('tbody tr', { hasText: 'Summarise this week’s meeting notes' })
    assert.equal(await row.count(), 1)
    assert.equal(await row.locator('td').first().textContent(), 'client.test.example')
    assert.match((await row.textContent()) ?? '', /notes:read/)
    assert.doesNotMatch((await row.textContent()) ?? '', /notes:write/)
    // At this width the task table fits its card: nothing scrolls sideways, End task shows whole.
    const fit = await page.locator('div.table').evaluate((el) => ({ scroll: el.scrollWidth, client: el.clientWidth }))
    assert.ok(fit.scroll <= fit.client, `the task table overflows its card: ${fit.scroll}px in ${fit.client}px`)
    const card = (await page.locator('main.card').boundingBox())!
    const end = (await row.getByRole('button', { name: 'End task' }).boundingBox())!
    assert.ok(end.x + end.width <= card.x + card.width, 'End task lies inside the card')
    await screenshot(page, 'my-tasks.png')
    assert.deepEqual(problems, [], 'my tasks page')

    await Promise.all([page.waitForURL((u) => u.pathname === '/account' && u.searchParams.get('ended') === '1', { waitUntil: 'load' }), row.getByRole('button', { name: 'End task' }).click()])
    assert.equal(await page.getByRole('status').textContent(), 'The task has ended: its tokens no longer work.')
    assert.equal((await broker.deps.stores.tasks.get(taskId))!.status, 'revoked')
    assert.equal(await page.locator('tbody tr', { hasText: 'Summarise this week’s meeting notes' }).getByRole('button', { name: 'End task' }).count(), 0)
    assert.deepEqual(problems, [], 'my tasks page after ending')
    await context.close()
  })

  it('the screenshots were written', async () => {
    for (const name of ['sign-in.png', 'consent.png', 'my-tasks.png']) {
      assert.ok((await stat(join(shots, name))).size > 1000, name)
      if (extra) assert.ok((await stat(join(extra, name))).size > 1000, `${extra}/${name}`)
    }
  })
})
