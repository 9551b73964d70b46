/**
 * A hostile review of the authorization-code flow (docs/any-mcp-client.md): each test is an attack
 * that must fail, or a promise of the doc that must hold, with the rows a refusal must not write.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pruneStore } from '../src/store/retention.js'
import { revokeSession } from '../src/tasks/sessions.js'
import type { ConfigInput } from '../src/config.js'
import { invalidRequest } from '../src/errors.js'
import type { OidcLogin } from '../src/login/oidc.js'
import { counts, NOTES, recordingLogger, USER_ISSUER, withBroker, type LogEntry, type TestBroker } from './harness.js'
import { authorizeQuery, browserFlowConfig, CLIENT_ID, devSignIn, fixedClients, formsOf, pkce, REDIRECT_URI, setField, TestBrowser } from './authorize-fixtures.js'

const opts = () => ({ config: browserFlowConfig, clientMetadata: fixedClients() })
const withApproval = () => ({ config: (c: ConfigInput) => ({ ...browserFlowConfig(c), resources: c.resources!.map((r) => (r.uri === NOTES ? { ...r, requireApproval: true } : r)) }), clientMetadata: fixedClients() })
const withRegistration = { config: (c: ConfigInput): ConfigInput => ({ ...browserFlowConfig(c), authorization: { dynamicRegistration: { workload: 'mcp-clients' } } }), clientMetadata: fixedClients() }
const ADMIN = { authorization: 'Bearer tpa_test-admin-key' }
const allow = (f: [string, string][]) => [...setField('scope', 'notes:read')(setField('ttl', '3600')(setField('purpose', 'p')(f))), ['decision', 'allow']] as [string, string][]
const browserOf = (b: TestBroker) => new TestBrowser((p, i) => b.app.request(p, i))

/** Signs `user` in through /authorize and returns the consent page's HTML. */
async function consentPage(browser: TestBrowser, query: string, user = 'alice'): Promise<string> {
  const login = await browser.get(`/authorize?${query}`)
  assert.equal(login.status, 200, `the sign-in page, got ${login.status} ${login.headers.get('location')}`)
  const signedIn = await browser.submit(await login.text(), '/authorize/login', devSignIn(user))
  assert.equal(signedIn.status, 303)
  const page = await browser.get(signedIn.headers.get('location')!)
  assert.equal(page.status, 200, await page.clone().text())
  return page.text()
}

function redeem(b: TestBroker, code: string, verifier: string) {
  return b.post('/token', { grant_type: 'authorization_code', code, code_verifier: verifier, client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, resource: NOTES })
}

const refreshUrl = (html: string) => {
  const m = /http-equiv="refresh" content="\d+;\s*url=([^"]+)"/.exec(html)
  assert.ok(m, 'the wait page refreshes itself')
  return m[1]!.replace(/&amp;/g, '&')
}

function register(b: TestBroker, body: unknown) {
  return b.app.request('/register', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
}

describe('attack: codes and consents', () => {
  it('the redirect carrying a code is never stored by a cache (Cache-Control: no-store)', () =>
    withBroker(opts(), async (b) => {
      const browser = browserOf(b)
      const res = await browser.submit(await consentPage(browser, authorizeQuery(pkce().challenge)), '/authorize/consent', allow)
      assert.equal(res.status, 303)
      assert.ok(new URL(res.headers.get('location')!).searchParams.get('code'))
      assert.equal(res.headers.get('cache-control'), 'no-store')
    }))

  it('the error redirect and the wait page\'s code redirect are not stored either', () =>
    withBroker(withApproval(), async (b) => {
      const browser = browserOf(b)
      const bad = await browser.get(`/authorize?${authorizeQuery(pkce().challenge, { code_challenge_method: 'plain' })}`)
      assert.equal(bad.status, 303)
      assert.equal(bad.headers.get('cache-control'), 'no-store')
      const url = refreshUrl(await (await browser.submit(await consentPage(browser, authorizeQuery(pkce().challenge)), '/authorize/consent', allow)).text())
      const task = (await b.deps.stores.tasks.list({ limit: 1 }))[0]!
      assert.equal((await b.app.request(`/admin/tasks/${task.id}/approve`, { method: 'POST', headers: ADMIN })).status, 200)
      const back = await browser.get(url)
      assert.equal(back.status, 303)
      assert.ok(new URL(back.headers.get('location')!).searchParams.get('code'))
      assert.equal(back.headers.get('cache-control'), 'no-store')
    }))

  it('one consent form submitted twice (a resubmit, a replayed POST) opens one task and issues one code', () =>
    withBroker(opts(), async (b) => {
      const browser = browserOf(b)
      const page = await consentPage(browser, authorizeQuery(pkce().challenge))
      assert.equal((await browser.submit(page, '/authorize/consent', allow)).status, 303)
      const before = await counts(b)
      const codes = async () => (await b.rawQuery<{ n: number }>('select count(*) as n from authorization_codes'))[0]!.n
      const codesBefore = await codes()
      const again = await browser.submit(page, '/authorize/consent', allow)
      assert.equal(again.status, 409, `got ${again.status} ${again.headers.get('location')}`)
      assert.equal(again.headers.get('location'), null)
      assert.deepEqual(await counts(b), before, 'no second task')
      assert.equal(await codes(), codesBefore, 'no second code')
    }))

  it('a resubmitted consent whose task waits for approval shows the wait page again, opening nothing', () =>
    withBroker(withApproval(), async (b) => {
      const browser = browserOf(b)
      const page = await consentPage(browser, authorizeQuery(pkce().challenge))
      assert.equal((await browser.submit(page, '/authorize/consent', allow)).status, 200)
      const before = await counts(b)
      const again = await browser.submit(page, '/authorize/consent', allow)
      assert.equal(again.status, 200)
      refreshUrl(await again.text())
      assert.deepEqual(await counts(b), before)
    }))

  it('two processes answering the same consent at once: the loser finds the winner\'s task, no 500, no second task', () =>
    withBroker(opts(), async (b) => {
      const browser = browserOf(b)
      const page = await consentPage(browser, authorizeQuery(pkce().challenge))
      assert.equal((await browser.submit(page, '/authorize/consent', allow)).status, 303)
      // The other process read "no task yet" just before this one's write committed.
      const tasks = b.deps.stores.tasks
      const get = tasks.get.bind(tasks)
      let first = true
      tasks.get = (id: string) => (first ? ((first = false), Promise.resolve(undefined)) : get(id))
      const before = await counts(b)
      const again = await browser.submit(page, '/authorize/consent', allow)
      assert.equal(again.status, 409, `got ${again.status}`)
      assert.deepEqual(await counts(b), before)
    }))

  it('a request or wait sealed in the shape of an earlier version (no request id) is expired, never a 500 nor a shared task', () =>
    withBroker(withApproval(), async (b) => {
      const browser = browserOf(b)
      const page = await consentPage(browser, authorizeQuery(pkce().challenge))
      const sealed = formsOf(page).find((f) => f.action === '/authorize/consent')!.fields.find(([k]) => k === 'request')![1]
      const { req } = (await b.deps.sealer.open<{ req: Record<string, unknown> }>('authorize-request', sealed))!
      const { requestId: _id, ...old } = req
      const oldRequest = await b.deps.sealer.seal('authorize-request', { req: old }, 600)
      const before = await counts(b)
      const res = await browser.submit(page, '/authorize/consent', (f) => allow(setField('request', oldRequest)(f)))
      // As good as lapsed: its client is told, access_denied (the request still names its checked redirect URI).
      assert.equal(res.status, 303)
      assert.equal(new URL(res.headers.get('location')!).searchParams.get('error'), 'access_denied')
      const oldWait = await b.deps.sealer.seal('approval-wait', { request: sealed, task: 'x' }, 600)
      assert.equal((await browser.get(`/authorize/pending?${new URLSearchParams({ wait: oldWait })}`)).status, 400)
      assert.deepEqual(await counts(b), before)
    }))

  it('another user cannot consent with a request alice started: their consent is their own task', () =>
    withBroker(opts(), async (b) => {
      const alice = browserOf(b)
      const page = await consentPage(alice, authorizeQuery(pkce().challenge))
      assert.equal((await alice.submit(page, '/authorize/consent', allow)).status, 303)
      // Bob, holding the same sealed request, signs in and consents: a task of his, not alice's second.
      const sealed = formsOf(page).find((f) => f.action === '/authorize/consent')!.fields.find(([k]) => k === 'request')![1]
      const bob = browserOf(b)
      const login = await bob.get(`/authorize/consent?${new URLSearchParams({ request: sealed })}`)
      const signedIn = await bob.submit(await login.text(), '/authorize/login', devSignIn('bob'))
      const bobPage = await (await bob.get(signedIn.headers.get('location')!)).text()
      assert.equal((await bob.submit(bobPage, '/authorize/consent', allow)).status, 303)
      assert.deepEqual((await b.deps.stores.tasks.list({ limit: 5 })).map((t) => t.userSub).sort(), ['alice', 'bob'])
    }))

  it('an approval that comes after requestTtl but within the approval window still answers with the code', () =>
    withBroker(withApproval(), async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const url = refreshUrl(await (await browser.submit(await consentPage(browser, authorizeQuery(challenge)), '/authorize/consent', allow)).text())
      const task = (await b.deps.stores.tasks.list({ limit: 1 }))[0]!
      assert.ok(task.approvalExpiresAt! - b.clock.now() > b.deps.config.authorization.requestTtl, 'the approval window outlasts the request')
      b.clock.advance(b.deps.config.authorization.requestTtl + 60)
      assert.equal((await b.app.request(`/admin/tasks/${task.id}/approve`, { method: 'POST', headers: ADMIN })).status, 200)
      const back = await browser.get(url)
      assert.equal(back.status, 303, await back.clone().text())
      const code = new URL(back.headers.get('location')!).searchParams.get('code')!
      assert.equal((await redeem(b, code, verifier)).status, 200)
    }))

  it('once the code of an approved task is spent and pruned, the wait page mints no second code', () =>
    withBroker(withApproval(), async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const url = refreshUrl(await (await browser.submit(await consentPage(browser, authorizeQuery(challenge)), '/authorize/consent', allow)).text())
      const task = (await b.deps.stores.tasks.list({ limit: 1 }))[0]!
      assert.equal((await b.app.request(`/admin/tasks/${task.id}/approve`, { method: 'POST', headers: ADMIN })).status, 200)
      const code = new URL((await browser.get(url)).headers.get('location')!).searchParams.get('code')!
      assert.equal((await redeem(b, code, verifier)).status, 200)
      b.clock.advance(b.deps.config.authorization.codeTtl + b.deps.config.clockSkew + 1)
      assert.equal((await pruneStore(b.deps.stores, b.deps.config, b.clock.now())).codes, 1)
      const again = await browser.get(url)
      assert.equal(again.status, 409, `got ${again.status} ${again.headers.get('location')}`)
    }))
})

describe('attack: a client the configuration no longer lists', () => {
  /** As after a restart with the client taken off its workload's allowlist (the workload itself still enabled). */
  const delist = (b: TestBroker) => {
    // A new configuration object, as a restart or a catalog change makes (the broker never edits one in place).
    const workloads = b.deps.config.workloads.map((w) => (w.id === 'mcp-clients' ? { ...w, oauthClient: { ...w.oauthClient!, clientId: { glob: 'https://other.test.example/**' } } } : w))
    b.deps.config = { ...b.deps.config, workloads }
  }

  it('its refresh token mints nothing more: invalid_grant', () =>
    withBroker(opts(), async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const back = new URL((await browser.submit(await consentPage(browser, authorizeQuery(challenge)), '/authorize/consent', allow)).headers.get('location')!)
      const body = (await (await redeem(b, back.searchParams.get('code')!, verifier)).json()) as { refresh_token: string }
      delist(b)
      const before = await counts(b)
      const res = await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id: CLIENT_ID })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_grant')
      assert.equal((await counts(b)).tokens, before.tokens)
    }))

  it('its unredeemed code buys nothing: invalid_grant', () =>
    withBroker(opts(), async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const back = new URL((await browser.submit(await consentPage(browser, authorizeQuery(challenge)), '/authorize/consent', allow)).headers.get('location')!)
      delist(b)
      const before = await counts(b)
      const res = await redeem(b, back.searchParams.get('code')!, verifier)
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_grant')
      assert.equal((await counts(b)).tokens, before.tokens)
    }))

  it('a registered client once dynamic registration is turned off: its refresh token mints nothing more', () =>
    withBroker(withRegistration, async (b) => {
      const redirect = 'http://127.0.0.1:45123/callback'
      const { client_id } = (await (await register(b, { client_name: 'Desktop', redirect_uris: [redirect], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' })).json()) as { client_id: string }
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const back = new URL((await browser.submit(await consentPage(browser, authorizeQuery(challenge, { client_id, redirect_uri: redirect })), '/authorize/consent', allow)).headers.get('location')!)
      const token = await b.post('/token', { grant_type: 'authorization_code', code: back.searchParams.get('code')!, code_verifier: verifier, client_id, redirect_uri: redirect, resource: NOTES })
      const body = (await token.json()) as { refresh_token: string }
      delete (b.deps.config.authorization as { dynamicRegistration?: unknown }).dynamicRegistration
      const res = await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_grant')
    }))
})

describe('attack: the resource as the client spells it', () => {
  const SPELLED = 'HTTPS://Notes.Test.Example/mcp'
  it('a resource /authorize accepted in another case of scheme and host is the same resource at /token, for the code and the refresh', () =>
    withBroker(opts(), async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const back = new URL((await browser.submit(await consentPage(browser, authorizeQuery(challenge, { resource: SPELLED })), '/authorize/consent', allow)).headers.get('location')!)
      const res = await b.post('/token', { grant_type: 'authorization_code', code: back.searchParams.get('code')!, code_verifier: verifier, client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, resource: SPELLED })
      assert.equal(res.status, 200, await res.clone().text())
      const body = (await res.json()) as { refresh_token: string }
      const refreshed = await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id: CLIENT_ID, resource: SPELLED })
      assert.equal(refreshed.status, 200, await refreshed.clone().text())
    }))

  it('another resource than the code\'s, however spelled, is still invalid_target', () =>
    withBroker(opts(), async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const back = new URL((await browser.submit(await consentPage(browser, authorizeQuery(challenge)), '/authorize/consent', allow)).headers.get('location')!)
      for (const resource of ['https://notes.test.example/MCP', 'https://notes.test.example/mcp/', 'HTTPS://Calendar.Test.Example/mcp']) {
        const res = await b.post('/token', { grant_type: 'authorization_code', code: back.searchParams.get('code')!, code_verifier: verifier, client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, resource })
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_target', resource)
      }
    }))
})

describe('attack: request size', () => {
  it('an authorization request too large to carry through the sign-in is refused at /authorize, back to the client', () =>
    withBroker(opts(), async (b) => {
      const tools = Array.from({ length: 64 }, (_, i) => `tool_${i}_${'x'.repeat(100)}`)
      const query = authorizeQuery(pkce().challenge, { authorization_details: JSON.stringify([{ type: 'mcp_tools', actions: tools }]) })
      const res = await browserOf(b).get(`/authorize?${query}`)
      assert.equal(res.status, 303, `got ${res.status}`)
      const back = new URL(res.headers.get('location')!)
      assert.equal(back.origin + back.pathname, REDIRECT_URI)
      assert.equal(back.searchParams.get('error'), 'invalid_request')
      assert.equal(back.searchParams.get('state'), 'st-123')
      assert.equal(back.searchParams.get('iss'), b.deps.config.issuer)
    }))

  it('the largest state with a plain request still gets through the sign-in', () =>
    withBroker(opts(), async (b) => {
      const page = await consentPage(browserOf(b), authorizeQuery(pkce().challenge, { state: 's'.repeat(1024) }))
      assert.match(page, /Open a task/)
    }))

  it('a registration whose client id /authorize would refuse is refused at /register: invalid_client_metadata', () =>
    withBroker(withRegistration, async (b) => {
      const redirects = Array.from({ length: 20 }, (_, i) => `http://127.0.0.1:${40000 + i}/oauth/callback/with/a/longish/path`)
      const res = await register(b, { client_name: 'Desktop MCP client', redirect_uris: redirects, grant_types: ['authorization_code'], token_endpoint_auth_method: 'none' })
      assert.equal(res.status, 400, `got ${res.status}`)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_client_metadata')
    }))

  it('a registration /register accepts is one /authorize accepts', () =>
    withBroker(withRegistration, async (b) => {
      const redirects = Array.from({ length: 4 }, (_, i) => `http://127.0.0.1:${40000 + i}/callback`)
      const res = await register(b, { client_name: 'Desktop MCP client', redirect_uris: redirects, grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' })
      assert.equal(res.status, 201)
      const { client_id } = (await res.json()) as { client_id: string }
      assert.match(await consentPage(browserOf(b), authorizeQuery(pkce().challenge, { client_id, redirect_uri: redirects[3] })), /Desktop MCP client/)
    }))
})

/** The broker with alice's issuer signing in at an upstream IdP, played by a fake that checks `state` as openid-client does. */
const withOidc = () => ({
  config: (c: ConfigInput): ConfigInput => {
    const x = browserFlowConfig(c)
    return { ...x, subjectIssuers: x.subjectIssuers!.map((si) => (si.issuer === USER_ISSUER ? { ...si, login: { kind: 'oidc' as const, clientId: 'taskpass', name: 'SSO' } } : si)) }
  },
  clientMetadata: fixedClients(),
})
function fakeIdp(b: TestBroker): void {
  let n = 0
  const fake: OidcLogin = {
    begin: (issuer) => {
      const state = `state-${++n}-${'s'.repeat(43)}`
      return Promise.resolve({ url: `${issuer.issuer}/authorize?state=${state}`, state: { issuer: issuer.issuer, codeVerifier: 'v'.repeat(43), state, nonce: 'n'.repeat(43) } })
    },
    complete: (issuer, _redirect, kept, url) => {
      if (url.searchParams.get('state') !== kept.state) return Promise.reject(invalidRequest('the sign-in did not complete', 'state mismatch'))
      return Promise.resolve({ issuer: issuer.issuer, user: url.searchParams.get('user') ?? 'alice', sid: 'idp-sid', claims: {}, authTime: b.clock.now(), exp: b.clock.now() + 600 })
    },
  }
  b.deps.oidcLogin = fake
}

describe('attack: signing in at an upstream IdP', () => {
  it('the largest request /authorize accepts still fits, inside the IdP login state, in a cookie a browser keeps (4,096 bytes)', () =>
    withBroker(withOidc(), async (b) => {
      fakeIdp(b)
      let largest: string | undefined
      for (let tools = 1; tools <= 64; tools++) {
        const query = authorizeQuery(pkce().challenge, { state: 's'.repeat(1024), authorization_details: JSON.stringify([{ type: 'mcp_tools', actions: Array.from({ length: tools }, (_, i) => `tool_${i}_${'x'.repeat(20)}`) }]) })
        const res = await b.app.request(`/authorize?${query}`)
        if (res.status !== 200) break
        largest = query
      }
      assert.ok(largest, 'some request with a long state was accepted')
      const browser = browserOf(b)
      const html = await (await browser.get(`/authorize?${largest}`)).text()
      const href = /href="(\/authorize\/idp\?[^"]+)"/.exec(html)![1]!.replace(/&amp;/g, '&')
      const res = await browser.get(href)
      assert.equal(res.status, 302)
      const cookie = res.headers.getSetCookie().find((c) => c.startsWith('taskpass-oidc='))!
      assert.ok(cookie.split(';')[0]!.length <= 4096, `the IdP login state cookie is ${cookie.split(';')[0]!.length} bytes`)
      assert.match(cookie, /HttpOnly/i)
      assert.match(cookie, /SameSite=Lax/i)
      // …and the sign-in completes onto the consent page.
      const state = new URL(res.headers.get('location')!).searchParams.get('state')!
      const back = await browser.get(`/authorize/callback?${new URLSearchParams({ code: 'c', state })}`)
      assert.equal(back.status, 303)
      assert.match(await (await browser.get(back.headers.get('location')!)).text(), /Open a task/)
    }))

  it('login CSRF: the attacker\'s callback URL in a victim\'s browser signs nobody in', () =>
    withBroker(withOidc(), async (b) => {
      fakeIdp(b)
      const attacker = browserOf(b)
      const started = await attacker.get(`/authorize/idp?${new URLSearchParams({ issuer: USER_ISSUER })}`)
      const state = new URL(started.headers.get('location')!).searchParams.get('state')!
      const callback = `/authorize/callback?${new URLSearchParams({ code: 'c', state, user: 'mallory' })}`
      // The victim has no IdP login state of their own…
      const victim = browserOf(b)
      const res = await victim.get(callback)
      assert.equal(res.status, 400)
      assert.equal([...victim.cookies.keys()].some((k) => k.includes('login')), false)
      // …or one of their own, for another state.
      await victim.get(`/authorize/idp?${new URLSearchParams({ issuer: USER_ISSUER })}`)
      assert.equal((await victim.get(callback)).status, 400)
      assert.equal([...victim.cookies.keys()].some((k) => k.includes('login')), false)
    }))

  it('the callback clears the IdP login state cookie', () =>
    withBroker(withOidc(), async (b) => {
      fakeIdp(b)
      const browser = browserOf(b)
      const started = await browser.get(`/authorize/idp?${new URLSearchParams({ issuer: USER_ISSUER })}`)
      assert.ok(browser.cookies.has('taskpass-oidc'))
      const callback = `/authorize/callback?${new URLSearchParams({ code: 'c', state: new URL(started.headers.get('location')!).searchParams.get('state')! })}`
      assert.equal((await browser.get(callback)).status, 303)
      assert.equal(browser.cookies.has('taskpass-oidc'), false)
      assert.equal((await browser.get(callback)).status, 400)
    }))
})

describe('attack: what held', () => {
  it('on https, every cookie is __Host- prefixed, Secure, HttpOnly, SameSite=Lax, Path=/', () =>
    withBroker({ ...opts(), issuer: 'https://127.0.0.1:8787' }, async (b) => {
      const browser = browserOf(b)
      const login = await browser.get(`/authorize?${authorizeQuery(pkce().challenge)}`)
      const signedIn = await browser.submit(await login.text(), '/authorize/login', devSignIn())
      const set = [...login.headers.getSetCookie(), ...signedIn.headers.getSetCookie()]
      assert.equal(set.length, 2)
      for (const cookie of set) {
        assert.match(cookie, /^__Host-taskpass-(browser|login)=/)
        for (const flag of [/; Secure/i, /; HttpOnly/i, /; SameSite=Lax/i, /; Path=\/(;|$)/]) assert.match(cookie, flag)
        assert.doesNotMatch(cookie, /Domain=/i)
      }
    }))

  it('alice cannot end bob\'s task from her /account page: 404, nothing changed', () =>
    withBroker(opts(), async (b) => {
      const bob = browserOf(b)
      await bob.submit(await consentPage(bob, authorizeQuery(pkce().challenge), 'bob'), '/authorize/consent', allow)
      const bobTask = (await b.deps.stores.tasks.list({ limit: 1 }))[0]!
      assert.equal(bobTask.userSub, 'bob')
      const alice = browserOf(b)
      await consentPage(alice, authorizeQuery(pkce().challenge))
      const csrf = formsOf(await (await alice.get('/account')).text()).find((f) => f.action === '/account/sign-out')!.fields
      const before = await counts(b)
      const res = await alice.post(`/account/tasks/${bobTask.id}/end`, csrf)
      assert.equal(res.status, 404)
      assert.equal((await b.deps.stores.tasks.get(bobTask.id))!.status, 'active')
      assert.deepEqual(await counts(b), before)
    }))

  for (const path of ['/authorize/consent?request=%E0%A4%A', '/authorize?client_id=%ZZ&redirect_uri=%', '/authorize/pending?wait=%FF%FE', '/authorize/idp?issuer=%E0&request=%']) {
    it(`malformed percent-encoding is a 4xx page, never a 500 nor a redirect: ${path}`, () =>
      withBroker(opts(), async (b) => {
        const before = await counts(b)
        const res = await b.app.request(path)
        assert.ok(res.status >= 400 && res.status < 500, `got ${res.status}`)
        assert.equal(res.headers.get('location'), null)
        assert.deepEqual(await counts(b), before)
      }))
  }

  it('no code, refresh token, verifier, state or sealed value reaches a log line, replays included', async () => {
    const logs: LogEntry[] = []
    const access: LogEntry[] = []
    await withBroker({ ...opts(), logger: recordingLogger(logs, access) }, async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const page = await consentPage(browser, authorizeQuery(challenge, { state: 'secret-state-xyz' }))
      const back = new URL((await browser.submit(page, '/authorize/consent', allow)).headers.get('location')!)
      const code = back.searchParams.get('code')!
      const body = (await (await redeem(b, code, verifier)).json()) as { refresh_token: string }
      await redeem(b, code, verifier)
      await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id: CLIENT_ID })
      await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id: CLIENT_ID })
      const sealed = formsOf(page).find((f) => f.action === '/authorize/consent')!.fields.find(([k]) => k === 'request')![1]
      assert.ok(access.length > 5, 'the access log was recorded')
      const text = JSON.stringify([logs, access])
      for (const secret of [code, body.refresh_token, 'secret-state-xyz', sealed, verifier]) assert.equal(text.includes(secret), false, `logged: ${secret.slice(0, 12)}…`)
    })
  })

  it('a scope beyond the workload\'s grant, asked and kept on the page: the policy refuses it back to the client, no task', () =>
    withBroker({ config: (c: ConfigInput) => { const x = browserFlowConfig(c); return { ...x, workloads: x.workloads!.map((w) => (w.id === 'mcp-clients' ? { ...w, grants: [{ resource: NOTES, scopes: ['notes:read'] }] } : w)) } }, clientMetadata: fixedClients() }, async (b) => {
      const browser = browserOf(b)
      const page = await consentPage(browser, authorizeQuery(pkce().challenge, { scope: 'notes:read notes:write' }))
      const before = await counts(b)
      const res = await browser.submit(page, '/authorize/consent', (f) => [...setField('purpose', 'p')(setField('scope', 'notes:read', 'notes:write')(f)), ['decision', 'allow']])
      assert.equal(res.status, 303)
      assert.equal(new URL(res.headers.get('location')!).searchParams.get('error'), 'invalid_scope')
      assert.equal((await counts(b)).tasks, before.tasks)
    }))

  it('redirect URIs that only look like loopback are refused on the page, never redirected to', () =>
    withBroker({ config: browserFlowConfig, clientMetadata: fixedClients([{ clientId: CLIENT_ID, clientName: 'x', redirectUris: ['http://127.0.0.1@evil.example/cb', 'http://localhost.evil.example/cb', 'http://127.0.0.1.evil.example/cb', 'javascript://127.0.0.1/%0aalert(1)', 'http://evil.example/cb'], grantTypes: ['authorization_code'] }]) }, async (b) => {
      for (const uri of ['http://127.0.0.1@evil.example/cb', 'http://localhost.evil.example/cb', 'http://127.0.0.1.evil.example/cb', 'javascript://127.0.0.1/%0aalert(1)', 'http://evil.example/cb', 'HTTP://127.0.0.1:33418/callback', 'http://127.0.0.1:33418/callback/', 'http://127.0.0.1:33419/callback', 'http://127.0.0.1:33418/%63allback']) {
        const res = await b.app.request(`/authorize?${authorizeQuery(pkce().challenge, { redirect_uri: uri })}`)
        assert.equal(res.status, 400, uri)
        assert.equal(res.headers.get('location'), null, uri)
      }
    }))

  it('a refresh after the sign-in\'s session is revoked: invalid_grant, nothing minted', () =>
    withBroker(opts(), async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const back = new URL((await browser.submit(await consentPage(browser, authorizeQuery(challenge)), '/authorize/consent', allow)).headers.get('location')!)
      const body = (await (await redeem(b, back.searchParams.get('code')!, verifier)).json()) as { refresh_token: string; task_id: string }
      const task = (await b.deps.stores.tasks.get(body.task_id))!
      await revokeSession(b.deps, task.subjectIssuer, task.sid!, 'admin:test')
      const before = await counts(b)
      const res = await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id: CLIENT_ID })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_grant')
      assert.equal((await counts(b)).tokens, before.tokens)
      // And the browser's sign-in of that session counts no more.
      const account = await browser.get('/account')
      // Not /End/ alone: a random CSRF token may contain those three letters.
      assert.doesNotMatch(await account.text(), /End task/)
    }))

  it('a code redeemed after the user ended its task on /account: invalid_grant, nothing minted', () =>
    withBroker(opts(), async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const back = new URL((await browser.submit(await consentPage(browser, authorizeQuery(challenge)), '/authorize/consent', allow)).headers.get('location')!)
      const task = (await b.deps.stores.tasks.list({ limit: 1 }))[0]!
      const account = await (await browser.get('/account')).text()
      assert.equal((await browser.submit(account, `/account/tasks/${task.id}/end`)).status, 303)
      const before = await counts(b)
      const res = await redeem(b, back.searchParams.get('code')!, verifier)
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_grant')
      assert.equal((await counts(b)).tokens, before.tokens)
    }))

  it('HTML in a client_name or a purpose is text on every page, never markup', () =>
    withBroker({ config: browserFlowConfig, clientMetadata: fixedClients([{ clientId: CLIENT_ID, clientName: '<script>alert(1)</script>"><img src=x>', redirectUris: [REDIRECT_URI], grantTypes: ['authorization_code'] }]) }, async (b) => {
      const browser = browserOf(b)
      const page = await consentPage(browser, authorizeQuery(pkce().challenge))
      assert.doesNotMatch(page, /<script>|<img src=x>/)
      assert.match(page, /&lt;script&gt;/)
      await browser.submit(page, '/authorize/consent', (f) => allow(f).map(([k, v]) => (k === 'purpose' ? [k, '</p><script>x()</script>'] : [k, v])) as [string, string][])
      const account = await (await browser.get('/account')).text()
      assert.doesNotMatch(account, /<script>/)
      assert.match(account, /&lt;\/p&gt;&lt;script&gt;/)
    }))

  it('a sealed value of another purpose, or a tampered registration, is no client id', () =>
    withBroker(withRegistration, async (b) => {
      const { client_id } = (await (await register(b, { client_name: 'Desktop', redirect_uris: ['http://127.0.0.1:45123/callback'], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none' })).json()) as { client_id: string }
      const request = await b.deps.sealer.seal('authorize-request', { n: 'Evil', r: ['https://evil.example/cb'], g: ['authorization_code'] }, 600)
      const tampered = client_id.slice(0, -3) + (client_id.endsWith('AAA') ? 'BBB' : 'AAA')
      for (const id of [`tpdc_${request}`, tampered]) {
        const res = await b.app.request(`/authorize?${authorizeQuery(pkce().challenge, { client_id: id, redirect_uri: 'https://evil.example/cb' })}`)
        assert.equal(res.status, 400)
        assert.equal(res.headers.get('location'), null)
      }
    }))

  it('a refresh token presented by another client: invalid_grant, and the task lives on', () =>
    withBroker({ config: browserFlowConfig, clientMetadata: fixedClients() }, async (b) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const back = new URL((await browser.submit(await consentPage(browser, authorizeQuery(challenge)), '/authorize/consent', allow)).headers.get('location')!)
      const body = (await (await redeem(b, back.searchParams.get('code')!, verifier)).json()) as { refresh_token: string; task_id: string }
      const res = await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id: 'https://client.test.example/other.json' })
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_grant')
      assert.equal((await b.deps.stores.tasks.get(body.task_id))!.status, 'active')
    }))

  it('an unknown code or refresh token writes no row (unauthenticated traffic never grows the database)', () =>
    withBroker(opts(), async (b) => {
      const before = await counts(b)
      await redeem(b, 'tpc_' + 'x'.repeat(43), pkce().verifier)
      await b.post('/token', { grant_type: 'refresh_token', refresh_token: 'tpr_' + 'y'.repeat(43), client_id: CLIENT_ID })
      await b.app.request(`/authorize?${authorizeQuery(pkce().challenge)}`)
      assert.deepEqual(await counts(b), before)
    }))
})
