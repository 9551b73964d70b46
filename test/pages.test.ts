/**
 * The server-rendered pages of the browser flow, served through a tiny hono app with
 * `pageResponse`: their security headers, their forms (CSRF, hidden fields, checkboxes, the
 * decision buttons), escaping of every prop, the stylesheet route, and the CSRF helpers.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { Hono } from 'hono'
import { setCookie } from 'hono/cookie'
import type { JSX } from 'hono/jsx/jsx-runtime'
import { checkCsrf, csrfToken, pageCsp, pageResponse, type PageResponseOptions } from '../src/http/pages.js'
import { pageAssets } from '../src/routes/assets.js'
import { ConsentPage } from '../src/pages/consent.js'
import { ErrorPage } from '../src/pages/error.js'
import { humanDuration, untilText } from '../src/pages/format.js'
import { LoginPage } from '../src/pages/login.js'
import { MyTasksPage } from '../src/pages/my-tasks.js'
import { PendingPage } from '../src/pages/pending.js'
import { PAGES_CSS, PAGES_CSS_PATH } from '../src/pages/styles.js'
import { consentProps, HOSTILE, myTasksProps, NOW } from './page-fixtures.js'

/** Serves one page at GET / and answers the response. */
async function serve(page: () => JSX.Element, options?: PageResponseOptions): Promise<Response> {
  const app = new Hono().get('/', (c) => pageResponse(c, page(), options))
  return app.request('/')
}

async function render(page: () => JSX.Element, options?: PageResponseOptions): Promise<string> {
  const res = await serve(page, options)
  assert.equal(res.status, options?.status ?? 200)
  return res.text()
}

/** The opening tags of `tag` elements, e.g. every `<input …>`. */
function tags(html: string, tag: string): string[] {
  return html.match(new RegExp(`<${tag}\\b[^>]*>`, 'g')) ?? []
}

/** The forms of a page, each with its opening tag and inner HTML. */
function forms(html: string): { open: string; body: string }[] {
  return [...html.matchAll(/(<form\b[^>]*>)([\s\S]*?)<\/form>/g)].map((m) => ({ open: m[1]!, body: m[2]! }))
}

function assertEveryFormHasCsrf(html: string, csrf: string) {
  const all = forms(html)
  assert.ok(all.length > 0, 'the page has a form')
  for (const form of all) {
    assert.match(form.open, /method="post"/, form.open)
    assert.ok(form.body.includes(`<input type="hidden" name="csrf" value="${csrf}"/>`), `csrf in ${form.open}`)
  }
}

/** No hostile markup survives as markup: no tag from the string, no attribute broken out of. */
function assertEscaped(html: string) {
  assert.ok(!html.includes('<script'), 'no <script> element')
  assert.ok(!html.includes('<img'), 'no <img> element')
  assert.ok(!/"><img/.test(html), 'no attribute broken out of')
  assert.ok(html.includes('&lt;script&gt;') || html.includes('&lt;img'), 'the hostile text is shown, escaped')
}

const ALL_PAGES: [string, () => JSX.Element][] = [
  ['login', () => LoginPage({ action: '/authorize/login', hidden: [], csrf: 'c', dev: { issuerName: 'dev' }, idps: [] })],
  ['consent', () => ConsentPage(consentProps())],
  ['my tasks', () => MyTasksPage(myTasksProps())],
  ['pending', () => PendingPage({ clientName: 'Notes', purpose: 'p', refreshUrl: '/authorize/pending?id=1', expiresAt: NOW + 600, now: NOW })],
  ['error', () => ErrorPage({ status: 400, title: 'Bad request', message: 'The request is invalid.' })],
]

describe('page responses', () => {
  for (const [name, page] of ALL_PAGES) {
    it(`${name}: the security headers, a doctype, the stylesheet and no script`, async () => {
      const res = await serve(page)
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8')
      assert.equal(
        res.headers.get('content-security-policy'),
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
      )
      assert.equal(res.headers.get('x-frame-options'), 'DENY')
      assert.equal(res.headers.get('referrer-policy'), 'no-referrer')
      assert.equal(res.headers.get('cache-control'), 'no-store')
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff')
      const html = await res.text()
      assert.match(html, /^<!DOCTYPE html><html lang="en">/)
      assert.match(html, new RegExp(`<link rel="stylesheet" href="${PAGES_CSS_PATH}\\?v=[A-Za-z0-9_-]+"/>`))
      assert.ok(!/<script|\son[a-z]+=|style=/i.test(html), 'no script, no event handler, no inline style')
    })
  }

  it('cookies the route set are kept; its security headers win over earlier ones', async () => {
    const app = new Hono().get('/', (c) => {
      setCookie(c, 'a', '1')
      setCookie(c, 'b', '2')
      c.header('Cache-Control', 'public, max-age=60')
      c.header('X-Frame-Options', 'SAMEORIGIN')
      return pageResponse(c, ErrorPage({ status: 400, title: 't', message: 'm' }))
    })
    const res = await app.request('/')
    assert.deepEqual(res.headers.getSetCookie(), ['a=1; Path=/', 'b=2; Path=/'])
    assert.equal(res.headers.get('cache-control'), 'no-store')
    assert.equal(res.headers.get('x-frame-options'), 'DENY')
  })

  it('the status is the one asked for', async () => {
    const res = await serve(() => ErrorPage({ status: 404, title: 'Not found', message: 'No such request.' }), { status: 404 })
    assert.equal(res.status, 404)
    assert.match(await res.text(), /HTTP 404/)
  })

  it('form-action lists the redirect origin (Chrome checks the redirect after the POST against it)', async () => {
    const res = await serve(() => ConsentPage(consentProps()), {
      formActions: ['https://assistant.example.com/callback?x=1', 'http://127.0.0.1:53123/cb', 'com.example.app:/oauth', 'https://assistant.example.com/other'],
    })
    assert.match(
      res.headers.get('content-security-policy')!,
      /; form-action 'self' https:\/\/assistant\.example\.com http:\/\/127\.0\.0\.1:53123 com\.example\.app:; frame-ancestors/,
    )
  })

  it('a form action that is not an absolute URL is refused, so nothing can be injected into the policy', () => {
    assert.throws(() => pageCsp(["x; script-src 'unsafe-inline'"]), TypeError)
    assert.throws(() => pageCsp(['/relative']), TypeError)
    // A URL's origin has no space or semicolon, whatever its path holds.
    assert.equal(pageCsp(["https://a.example/;script-src 'unsafe-inline'"]).split(';').length, 6)
  })
})

describe('consent page', () => {
  it('names the client by its hosts, lists scopes and tools checked, a ttl select, purpose and the decisions', async () => {
    const html = await render(() => ConsentPage(consentProps()))
    assertEveryFormHasCsrf(html, 'csrf-consent-token')
    const [form] = forms(html)
    assert.match(form!.open, /action="\/authorize\/consent"/)
    assert.ok(form!.body.includes('<input type="hidden" name="request" value="sealed.request.value"/>'))
    assert.equal((html.match(/<strong class="host">assistant\.example\.com<\/strong>/g) ?? []).length, 2)
    assert.ok(html.includes('https://assistant.example.com/oauth/client.json'))
    assert.ok(html.includes('https://assistant.example.com/callback'))
    assert.ok(html.includes('https://notes.example.com/mcp'))
    assert.ok(!html.includes('class="warning"'), 'no localhost warning for a web client')

    const inputs = tags(html, 'input')
    assert.deepEqual(inputs.filter((t) => t.includes('name="scope"')), [
      '<input type="checkbox" name="scope" value="notes:read" checked=""/>',
      '<input type="checkbox" name="scope" value="notes:write" checked=""/>',
    ])
    assert.deepEqual(inputs.filter((t) => t.includes('name="tool"')), [
      '<input type="checkbox" name="tool" value="search_notes" checked=""/>',
      '<input type="checkbox" name="tool" value="create_note" checked=""/>',
    ])
    assert.ok(!html.includes('any tool the policy allows'))
    assert.deepEqual(tags(html, 'option'), ['<option value="900" selected="">', '<option value="3600">', '<option value="28800">'])
    assert.match(html, /<option value="900" selected="">15 minutes<\/option><option value="3600">1 hour<\/option><option value="28800">8 hours<\/option>/)
    assert.ok(inputs.includes('<input id="purpose" name="purpose" type="text" maxlength="200" value="Summarise this week’s meeting notes" required=""/>'))
    assert.deepEqual(tags(html, 'button'), [
      '<button type="submit" name="decision" value="allow" class="primary">',
      '<button type="submit" name="decision" value="deny" class="secondary" formnovalidate="">',
    ])
  })

  it('no tools asked for: "any tool the policy allows", no tool checkbox', async () => {
    const html = await render(() => ConsentPage(consentProps({ tools: [] })))
    assert.ok(html.includes('<p>any tool the policy allows</p>'))
    assert.ok(!html.includes('name="tool"'))
  })

  it('a client that only returns to localhost gets a warning', async () => {
    const client = { ...consentProps().client, redirectUri: 'http://127.0.0.1:4567/cb', redirectHost: '127.0.0.1:4567', localhostOnly: true }
    const html = await render(() => ConsentPage(consentProps({ client })))
    assert.match(html, /<p class="warning" role="alert">This client only returns to <strong>localhost<\/strong>/)
    assert.ok(html.includes('<strong class="host">127.0.0.1:4567</strong>'))
  })

  it('escapes every prop', async () => {
    const html = await render(() =>
      ConsentPage({
        action: '/authorize/consent',
        hidden: [{ name: HOSTILE, value: HOSTILE }],
        csrf: HOSTILE,
        user: HOSTILE,
        client: { name: HOSTILE, id: HOSTILE, idHost: HOSTILE, redirectUri: HOSTILE, redirectHost: HOSTILE, localhostOnly: true },
        resource: HOSTILE,
        scopes: [HOSTILE],
        tools: [HOSTILE],
        ttls: [900],
        purpose: HOSTILE,
      }),
    )
    assertEscaped(html)
    assert.ok(html.includes('value="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(1)&lt;/script&gt;&#39;"'))
  })
})

describe('my tasks page', () => {
  it('a row per task: who, purpose, access, status, end time, tokens; End task only for the endable one', async () => {
    const html = await render(() => MyTasksPage(myTasksProps({ notice: 'Task ended.' })))
    assertEveryFormHasCsrf(html, 'csrf-tasks-token')
    const rows = html.match(/<tr>[\s\S]*?<\/tr>/g) ?? []
    assert.equal(rows.length, 3, 'a header and two tasks')
    assert.match(rows[1]!, /Notes Assistant[\s\S]*Summarise notes[\s\S]*https:\/\/notes\.example\.com\/mcp[\s\S]*notes:read[\s\S]*search_notes/)
    assert.match(rows[1]!, /active[\s\S]*until 08:12 UTC \(in 12 min\)[\s\S]*3 \/ 10/)
    assert.match(rows[1]!, /<form method="post" action="\/my\/tasks\/task_open1\/end">/)
    assert.match(rows[2]!, /wl_ci-agent[\s\S]*any the policy allows[\s\S]*completed[\s\S]*ended 07:55 UTC \(5 min ago\)[\s\S]*1 \/ no limit/)
    assert.ok(!rows[2]!.includes('<form'), 'a completed task has no End task button')
    assert.equal((html.match(/End task<\/button>/g) ?? []).length, 1)
    assert.match(html, /<form method="post" action="\/my\/sign-out" class="inline">/)
    assert.match(html, /<p class="notice" role="status">Task ended\.<\/p>/)
  })

  it('no tasks: says so, still offers sign-out', async () => {
    const html = await render(() => MyTasksPage(myTasksProps({ tasks: [] })))
    assert.ok(html.includes('You have no tasks.'))
    assertEveryFormHasCsrf(html, 'csrf-tasks-token')
  })

  it('escapes every prop, and a task id cannot leave its path segment', async () => {
    const html = await render(() =>
      MyTasksPage({
        user: HOSTILE,
        csrf: HOSTILE,
        endAction: '/my/tasks',
        signOutAction: '/my/sign-out',
        now: NOW,
        notice: HOSTILE,
        tasks: [
          {
            taskId: `../x?${HOSTILE}`,
            who: HOSTILE,
            purpose: HOSTILE,
            resources: [{ resource: HOSTILE, scopes: [HOSTILE], tools: [HOSTILE] }],
            status: HOSTILE,
            expiresAt: NOW + 60,
            tokensMinted: 0,
            endable: true,
          },
        ],
      }),
    )
    assertEscaped(html)
    const end = forms(html).find((f) => f.body.includes('End task'))!
    assert.match(end.open, /^<form method="post" action="\/my\/tasks\/\.\.%2Fx%3F%22%3E%3Cimg[^"/]*\/end">$/)
  })
})

describe('login page', () => {
  it('dev mode: user and password fields, csrf and hidden fields; one link per IdP; the error', async () => {
    const html = await render(() =>
      LoginPage({
        action: '/authorize/login',
        hidden: [{ name: 'request', value: 'sealed' }],
        csrf: 'csrf-login',
        dev: { issuerName: 'dev-issuer' },
        idps: [
          { name: 'Acme SSO', href: '/authorize/idp?issuer=https%3A%2F%2Fsso.acme.example' },
          { name: 'Other', href: 'https://other.example/start' },
        ],
        error: 'Wrong user or password.',
        clientName: 'Notes Assistant',
      }),
    )
    assertEveryFormHasCsrf(html, 'csrf-login')
    assert.ok(html.includes('<input type="hidden" name="request" value="sealed"/>'))
    assert.ok(tags(html, 'input').some((t) => t.includes('name="username"') && t.includes('type="text"')))
    assert.ok(tags(html, 'input').some((t) => t.includes('name="password"') && t.includes('type="password"')))
    assert.deepEqual(tags(html, 'a'), [
      '<a class="button primary" href="/authorize/idp?issuer=https%3A%2F%2Fsso.acme.example">',
      '<a class="button primary" href="https://other.example/start">',
    ])
    assert.match(html, /<p class="error" role="alert">Wrong user or password\.<\/p>/)
    assert.match(html, /to continue to <strong>Notes Assistant<\/strong>/)
  })

  it('without dev mode: no password field', async () => {
    const html = await render(() => LoginPage({ action: '/a', hidden: [], csrf: 'c', idps: [{ name: 'Acme', href: '/idp' }] }))
    assert.ok(!html.includes('type="password"'))
    assert.ok(!html.includes('<form'))
  })

  it('escapes every prop', async () => {
    const html = await render(() =>
      LoginPage({
        action: '/authorize/login',
        hidden: [{ name: HOSTILE, value: HOSTILE }],
        csrf: HOSTILE,
        dev: { issuerName: HOSTILE },
        idps: [{ name: HOSTILE, href: '/idp' }],
        error: HOSTILE,
        clientName: HOSTILE,
      }),
    )
    assertEscaped(html)
  })

  it('a link or action with a script scheme is refused, not rendered', () => {
    const base = { action: '/a', hidden: [], csrf: 'c', idps: [] }
    for (const href of ['javascript:alert(1)', ' javascript:alert(1)', 'data:text/html,x', '//evil.example/x', '/\\evil.example'])
      assert.throws(() => LoginPage({ ...base, idps: [{ name: 'x', href }] }), TypeError, href)
    assert.throws(() => LoginPage({ ...base, action: 'javascript:alert(1)', dev: { issuerName: 'd' } }), TypeError)
  })
})

describe('pending and error pages', () => {
  it('pending: the approval sentence and a meta refresh every 3 seconds to the refresh URL', async () => {
    const html = await render(() =>
      PendingPage({ clientName: 'Notes', purpose: 'Summarise', refreshUrl: '/authorize/pending?id=abc&x=1', expiresAt: NOW + 600, now: NOW }),
    )
    assert.match(html, /<head><meta charset="utf-8"\/>.*<meta http-equiv="refresh" content="3;url=\/authorize\/pending\?id=abc&amp;x=1"\/>.*<\/head>/)
    assert.ok(html.includes("waiting for an administrator's approval") || html.includes('waiting for an administrator&#39;s approval'))
    assert.match(html, /lapses at 08:10 UTC \(in 10 min\)/)
    assert.match(html, /<a href="\/authorize\/pending\?id=abc&amp;x=1">Check now<\/a>/)
  })

  it('pending: escapes every prop; a refresh URL with another scheme is refused', async () => {
    assertEscaped(await render(() => PendingPage({ clientName: HOSTILE, purpose: HOSTILE, refreshUrl: '/p', expiresAt: NOW, now: NOW })))
    assert.throws(() => PendingPage({ clientName: 'n', purpose: 'p', refreshUrl: 'javascript:alert(1)', expiresAt: NOW, now: NOW }), TypeError)
  })

  it('error: escapes title and message', async () => {
    const html = await render(() => ErrorPage({ status: 400, title: HOSTILE, message: HOSTILE }), { status: 400 })
    assertEscaped(html)
    assert.match(html, /<title>&quot;&gt;&lt;img/)
  })
})

describe('the stylesheet route', () => {
  it('GET /assets/taskpass.css: text/css, cached for long, nosniff; the ETag revalidates', async () => {
    const app = pageAssets()
    const res = await app.request('/assets/taskpass.css?v=anything')
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'text/css; charset=utf-8')
    assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable')
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff')
    assert.equal(await res.text(), PAGES_CSS)
    const etag = res.headers.get('etag')!
    const again = await app.request('/assets/taskpass.css', { headers: { 'If-None-Match': `W/"other", ${etag}` } })
    assert.equal(again.status, 304)
    assert.equal(await again.text(), '')
    assert.equal((await app.request('/assets/other.css')).status, 404)
  })

  it('the stylesheet loads nothing from elsewhere', () => {
    assert.ok(!/@import|url\(|@font-face/i.test(PAGES_CSS))
  })
})

describe('CSRF tokens', () => {
  const key = randomBytes(32)

  it('the token of a binding checks; another binding, another key, missing, tampered or re-spelled does not', () => {
    const token = csrfToken(key, 'session-1|request-a')
    assert.match(token, /^[A-Za-z0-9_-]{43}$/)
    assert.equal(csrfToken(key, 'session-1|request-a'), token, 'deterministic')
    assert.equal(checkCsrf(key, 'session-1|request-a', token), true)
    assert.equal(checkCsrf(key, 'session-2|request-a', token), false, 'binding mismatch')
    assert.equal(checkCsrf(randomBytes(32), 'session-1|request-a', token), false, 'another key')
    assert.equal(checkCsrf(key, 'session-1|request-a', undefined), false, 'missing')
    assert.equal(checkCsrf(key, 'session-1|request-a', ''), false, 'empty')
    const flipped = token.slice(0, 10) + (token[10] === 'A' ? 'B' : 'A') + token.slice(11)
    assert.equal(checkCsrf(key, 'session-1|request-a', flipped), false, 'tampered')
    assert.equal(checkCsrf(key, 'session-1|request-a', token.slice(0, -1)), false, 'truncated')
    assert.equal(checkCsrf(key, 'session-1|request-a', `${token}A`), false, 'extended')
    assert.equal(checkCsrf(key, 'session-1|request-a', `${token}=`), false, 'padded')
    // The last character carries 2 spare bits: another spelling of the same bytes is not the token.
    const last = token.at(-1)!
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const sibling = alphabet[alphabet.indexOf(last) ^ 1]!
    assert.equal(Buffer.from(token.slice(0, -1) + sibling, 'base64url').equals(Buffer.from(token, 'base64url')), true)
    assert.equal(checkCsrf(key, 'session-1|request-a', token.slice(0, -1) + sibling), false, 're-spelled')
  })

  it('a short key is refused', () => {
    assert.throws(() => csrfToken(randomBytes(16), 'b'), /at least 32 bytes/)
    assert.throws(() => checkCsrf(randomBytes(16), 'b', 'x'), /at least 32 bytes/)
  })
})

describe('formatting', () => {
  it('durations and end times', () => {
    assert.equal(humanDuration(900), '15 minutes')
    assert.equal(humanDuration(3600), '1 hour')
    assert.equal(humanDuration(5400), '1 hour 30 minutes')
    assert.equal(humanDuration(86_400), '1 day')
    assert.equal(humanDuration(60), '1 minute')
    assert.equal(humanDuration(45), '45 seconds')
    assert.equal(untilText(NOW + 30, NOW), 'until 08:00 UTC (in 1 min)')
    assert.equal(untilText(NOW + 3 * 3600, NOW), 'until 11:00 UTC (in 3 h)')
    assert.equal(untilText(NOW + 3 * 86_400, NOW), 'until 2027-01-18 08:00 UTC (in 3 days)')
  })
})
