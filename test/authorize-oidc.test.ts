/**
 * The authorization-code flow with the sign-in at an upstream OpenID Connect IdP, through the
 * routes (src/routes/authorize.ts): a broker on a real 127.0.0.1 port whose only subject issuer is
 * oidc-provider on 127.0.0.1 (test/oidc-fixtures.ts), with no dev sign-in. The test's browser keeps
 * the broker's cookies over real HTTP; at the IdP it is played by `signIn`, which stops at the
 * IdP's redirect back to the broker's callback.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { decodeJwt } from 'jose'
import type { ConfigInput } from '../src/config.js'
import { ADMIN_KEY, counts, NOTES, startTestServer, type TestBroker } from './harness.js'
import { authorizeQuery, CLIENT_ID, fixedClients, formsOf, pkce, REDIRECT_URI, setField, TestBrowser } from './authorize-fixtures.js'
import { signIn, startIdp, type Idp } from './oidc-fixtures.js'

type Broker = TestBroker & { url: string; stop(): Promise<void> }

const IDP_NAME = 'Test IdP'

/**
 * The test configuration with the IdP as the only subject issuer (users named by their `email`,
 * so the mapping is visible) and the `mcp-clients` OAuth client workload; no dev sign-in.
 */
function oidcFlowConfig(idpIssuer: string) {
  return (c: ConfigInput): ConfigInput => ({
    ...c,
    subjectIssuers: [{ issuer: idpIssuer, jwksUri: `${idpIssuer}/jwks`, userClaim: 'email', policyClaims: ['department'], login: { kind: 'oidc', clientId: 'public-rp', name: IDP_NAME, scopes: ['profile'] } }],
    workloads: [...c.workloads!, { id: 'mcp-clients', oauthClient: { clientId: { glob: 'https://client.test.example/**' } }, grants: [{ resource: NOTES, scopes: ['notes:read', 'notes:write'] }] }],
  })
}

/** A fresh IdP and a broker registered at it (its callback is the IdP's redirect URI), then both stopped. */
async function withIdpBroker(fn: (b: Broker, idp: Idp) => Promise<void>): Promise<void> {
  let broker: Broker | undefined
  const idp = await startIdp({
    callback: async (issuer) => {
      broker = await startTestServer({ config: oidcFlowConfig(issuer), clientMetadata: fixedClients() })
      return `${broker.url}/authorize/callback`
    },
  })
  try {
    await fn(broker!, idp)
  } finally {
    await broker!.stop()
    await idp.close()
  }
}

/** A browser on the broker's real port (absolute URLs, such as the IdP's redirect, are fetched as they are). */
const browserOf = (b: Broker) => new TestBrowser((p, i) => fetch(new URL(p, b.url), i))

/** Every row a refused step must not add to: tasks, tokens, audit, revocations, codes and refresh tokens. */
async function rows(b: TestBroker) {
  const n = async (table: string) => ((await b.rawQuery(`select count(*) as n from ${table}`))[0] as { n: number }).n
  return { ...await counts(b), authorization_codes: await n('authorization_codes'), refresh_tokens: await n('refresh_tokens') }
}

const unescape = (s: string) => s.replaceAll('&amp;', '&').replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>')

/** The sign-in page's link to the IdP (`/authorize/idp?issuer=…&request=…`). */
function idpLink(html: string): string {
  const href = /href="(\/authorize\/idp\?[^"]+)"/.exec(html)?.[1]
  assert.ok(href, 'the sign-in page links the IdP')
  return unescape(href)
}

/** GET /authorize, then the sign-in page's IdP link: the IdP's authorization URL the broker redirected to. */
async function toIdp(b: Broker, idp: Idp, browser: TestBrowser, query: string): Promise<URL> {
  const page = await browser.get(`/authorize?${query}`)
  assert.equal(page.status, 200)
  const html = await page.text()
  assert.match(html, new RegExp(IDP_NAME))
  const link = new URL(idpLink(html), b.url)
  assert.equal(link.searchParams.get('issuer'), idp.issuer)
  assert.ok(link.searchParams.get('request'), 'the link carries the sealed authorization request')
  const go = await browser.get(link.pathname + link.search)
  assert.equal(go.status, 302)
  assert.ok(browser.cookies.has('taskpass-oidc'), 'the sign-in state is kept in a cookie')
  return new URL(go.headers.get('location')!)
}

/** Answers the consent page with notes:read for an hour: the client's callback URL. */
async function consent(browser: TestBrowser, consentPath: string): Promise<URL> {
  const page = await browser.get(consentPath)
  assert.equal(page.status, 200)
  const answer = (f: [string, string][]) => [...setField('purpose', 'Summarise my notes')(setField('ttl', '3600')(setField('scope', 'notes:read')(f))), ['decision', 'allow']] as [string, string][]
  const answered = await browser.submit(await page.text(), '/authorize/consent', answer)
  assert.equal(answered.status, 303, await answered.clone().text())
  return new URL(answered.headers.get('location')!)
}

function redeem(b: TestBroker, code: string, verifier: string) {
  return b.post('/token', { grant_type: 'authorization_code', code, code_verifier: verifier, client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, resource: NOTES })
}

/** The whole flow for `login` at the IdP: the token response, the task and the IdP's ID token. */
async function signInAndConsent(b: Broker, idp: Idp, browser: TestBrowser, login = 'alice') {
  const { verifier, challenge } = pkce()
  const callback = await signIn((await toIdp(b, idp, browser, authorizeQuery(challenge))).href, { login })
  const signedIn = await browser.get(callback.pathname + callback.search)
  assert.equal(signedIn.status, 303, await signedIn.clone().text())
  const toClient = await consent(browser, signedIn.headers.get('location')!)
  const res = await redeem(b, toClient.searchParams.get('code')!, verifier)
  assert.equal(res.status, 200)
  const body = (await res.json()) as { access_token: string; refresh_token: string; task_id: string }
  return { body, task: (await b.deps.stores.tasks.get(body.task_id))!, idToken: decodeJwt(idp.idTokens.at(-1)!) }
}

/** A refusal shown to the user: this status, an HTML page, no redirect, and no sign-in cookie set. */
async function assertErrorPage(res: Response, browser: TestBrowser, status: number): Promise<string> {
  assert.equal(res.status, status)
  assert.equal(res.headers.get('location'), null)
  assert.match(res.headers.get('content-type') ?? '', /text\/html/)
  assert.ok(!res.headers.getSetCookie().some((c) => c.startsWith('taskpass-login=')), 'no sign-in cookie set')
  assert.ok(!browser.cookies.has('taskpass-login'))
  return res.text()
}

describe('authorization code flow with the sign-in at an OIDC IdP', () => {
  it('/authorize → IdP (PKCE, state, nonce) → callback → consent → code → token: the user is the IdP\'s, the task bound to its session', () =>
    withIdpBroker(async (b, idp) => {
      const browser = browserOf(b)
      const { verifier, challenge } = pkce()
      const before = await rows(b)
      const auth = await toIdp(b, idp, browser, authorizeQuery(challenge))
      assert.equal(auth.origin + auth.pathname, `${idp.issuer}/auth`)
      const q = auth.searchParams
      assert.equal(q.get('response_type'), 'code')
      assert.equal(q.get('client_id'), 'public-rp')
      assert.equal(q.get('redirect_uri'), `${b.url}/authorize/callback`)
      assert.equal(q.get('scope'), 'openid profile')
      assert.equal(q.get('code_challenge_method'), 'S256')
      assert.match(q.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/)
      assert.match(q.get('state') ?? '', /^[A-Za-z0-9_-]{43,}$/)
      assert.match(q.get('nonce') ?? '', /^[A-Za-z0-9_-]{43,}$/)
      assert.notEqual(q.get('code_challenge'), challenge, 'the broker\'s own PKCE at the IdP, not the client\'s')
      assert.deepEqual(await rows(b), before, 'nothing written before the sign-in')

      const callback = await signIn(auth.href, { login: 'alice' })
      assert.equal(callback.origin + callback.pathname, `${b.url}/authorize/callback`)
      assert.equal(callback.searchParams.get('state'), q.get('state'))
      assert.ok(callback.searchParams.get('code'))
      const back = await browser.get(callback.pathname + callback.search)
      assert.equal(back.status, 303, await back.clone().text())
      const next = new URL(back.headers.get('location')!, b.url)
      assert.equal(next.pathname, '/authorize/consent')
      assert.ok(browser.cookies.has('taskpass-login'), 'signed in')
      assert.ok(!browser.cookies.has('taskpass-oidc'), 'the sign-in state is spent')
      assert.deepEqual(await rows(b), before, 'signing in writes nothing')

      const toClient = await consent(browser, next.pathname + next.search)
      assert.equal(toClient.origin + toClient.pathname, REDIRECT_URI)
      assert.equal(toClient.searchParams.get('state'), 'st-123')
      assert.equal(toClient.searchParams.get('iss'), b.url)
      const code = toClient.searchParams.get('code')!
      assert.match(code, /^tpc_/)

      const res = await redeem(b, code, verifier)
      assert.equal(res.status, 200)
      const body = (await res.json()) as { access_token: string; task_id: string }
      const claims = decodeJwt(body.access_token)
      assert.equal(claims.sub, 'alice@example.com', 'the user as userClaim (email) maps the ID token')
      assert.deepEqual(claims.sub_id, { format: 'iss_sub', iss: idp.issuer, sub: 'alice@example.com' })
      assert.equal(claims.client_id, CLIENT_ID)

      assert.equal(idp.idTokens.length, 1)
      const idToken = decodeJwt(idp.idTokens[0]!)
      assert.equal(typeof idToken.sid, 'string', 'the IdP put a session id in the ID token')
      const task = (await b.deps.stores.tasks.get(body.task_id))!
      assert.equal(task.subjectIssuer, idp.issuer)
      assert.equal(task.userSub, 'alice@example.com')
      assert.equal(task.sid, idToken.sid, 'the task is bound to the IdP\'s session')
      assert.equal(task.clientId, CLIENT_ID)

      const account = await browser.get('/account')
      assert.equal(account.status, 200)
      const html = await account.text()
      assert.ok(formsOf(html).some((f) => f.action === `/account/tasks/${body.task_id}/end`), 'the user\'s page lists the task')
    }))

  it('the user cancels at the IdP: access_denied back to the client (its request was checked at /authorize), nothing written', () =>
    withIdpBroker(async (b, idp) => {
      const browser = browserOf(b)
      const { challenge } = pkce()
      const before = await rows(b)
      const callback = await signIn((await toIdp(b, idp, browser, authorizeQuery(challenge))).href, { cancel: true })
      assert.equal(callback.searchParams.get('error'), 'access_denied')
      const res = await browser.get(callback.pathname + callback.search)
      assert.equal(res.status, 303, await res.clone().text())
      const back = new URL(res.headers.get('location')!)
      assert.equal(back.origin + back.pathname, REDIRECT_URI)
      assert.equal(back.searchParams.get('error'), 'access_denied')
      assert.equal(back.searchParams.get('error_description'), 'the sign-in was refused at the identity provider', 'what the IdP said stays private')
      assert.equal(back.searchParams.get('state'), 'st-123')
      assert.equal(back.searchParams.get('iss'), b.url)
      assert.equal(back.searchParams.get('code'), null)
      assert.ok(!res.headers.getSetCookie().some((c) => c.startsWith('taskpass-login=')), 'no sign-in cookie set')
      assert.ok(!browser.cookies.has('taskpass-login'))
      assert.ok(!browser.cookies.has('taskpass-oidc'), 'the sign-in state is spent')
      assert.deepEqual(await rows(b), before)
    }))

  it('the user cancels a sign-in begun on their own page (no client waiting): a 400 page', () =>
    withIdpBroker(async (b, idp) => {
      const browser = browserOf(b)
      const before = await rows(b)
      const page = await browser.get('/account')
      assert.equal(page.status, 200)
      const link = idpLink(await page.text())
      assert.equal(new URL(link, b.url).searchParams.get('request'), null)
      const go = await browser.get(link)
      assert.equal(go.status, 302)
      const callback = await signIn(go.headers.get('location')!, { cancel: true })
      const html = await assertErrorPage(await browser.get(callback.pathname + callback.search), browser, 400)
      assert.match(html, /refused at the identity provider/)
      assert.deepEqual(await rows(b), before)
    }))

  describe('a callback the broker did not ask for: a 400 page, no sign-in', () => {
    /** Begins the flow and signs in at the IdP: the browser holds the sign-in state, the callback URL is the IdP's. */
    async function atCallback(b: Broker, idp: Idp, browser: TestBrowser): Promise<URL> {
      const { challenge } = pkce()
      return signIn((await toIdp(b, idp, browser, authorizeQuery(challenge))).href)
    }

    it('without the taskpass-oidc cookie', () =>
      withIdpBroker(async (b, idp) => {
        const browser = browserOf(b)
        const callback = await atCallback(b, idp, browser)
        browser.cookies.delete('taskpass-oidc')
        const before = await rows(b)
        const html = await assertErrorPage(await browser.get(callback.pathname + callback.search), browser, 400)
        assert.match(html, /expired/)
        assert.deepEqual(await rows(b), before)
        assert.equal(idp.idTokens.length, 0, 'the code was never redeemed at the IdP')
      }))

    it('with a tampered taskpass-oidc cookie', () =>
      withIdpBroker(async (b, idp) => {
        const browser = browserOf(b)
        const callback = await atCallback(b, idp, browser)
        const sealed = browser.cookies.get('taskpass-oidc')!
        browser.cookies.set('taskpass-oidc', `${sealed.slice(0, -6)}${sealed.at(-6) === 'A' ? 'B' : 'A'}${sealed.slice(-5)}`)
        const before = await rows(b)
        assert.match(await assertErrorPage(await browser.get(callback.pathname + callback.search), browser, 400), /expired/)
        assert.deepEqual(await rows(b), before)
        assert.equal(idp.idTokens.length, 0, 'the code was never redeemed at the IdP')
      }))

    it('with a state that does not match the cookie\'s', () =>
      withIdpBroker(async (b, idp) => {
        const browser = browserOf(b)
        const callback = await atCallback(b, idp, browser)
        callback.searchParams.set('state', `${callback.searchParams.get('state')}x`)
        const before = await rows(b)
        assert.match(await assertErrorPage(await browser.get(callback.pathname + callback.search), browser, 400), /could not be completed/)
        assert.deepEqual(await rows(b), before)
        assert.equal(idp.idTokens.length, 0, 'the code was never redeemed at the IdP')
      }))

    it('the callback of another sign-in begun in the same browser (the later one owns the cookie)', () =>
      withIdpBroker(async (b, idp) => {
        const browser = browserOf(b)
        const first = await atCallback(b, idp, browser)
        const { challenge } = pkce()
        await toIdp(b, idp, browser, authorizeQuery(challenge))
        const before = await rows(b)
        assert.match(await assertErrorPage(await browser.get(first.pathname + first.search), browser, 400), /could not be completed/)
        assert.deepEqual(await rows(b), before)
        assert.equal(idp.idTokens.length, 0)
      }))
  })

  it('revoking the IdP session at the admin API ends its task and the sign-in: the next /authorize asks to sign in again', () =>
    withIdpBroker(async (b, idp) => {
      const browser = browserOf(b)
      const { body, task, idToken } = await signInAndConsent(b, idp, browser)
      assert.equal(task.sid, idToken.sid)
      assert.equal(task.status, 'active')

      const revoked = await b.app.request('/admin/sessions/revoke', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ issuer: idp.issuer, sid: idToken.sid }) })
      assert.equal(revoked.status, 200)
      assert.deepEqual(((await revoked.json()) as { tasks_revoked: string[] }).tasks_revoked, [task.id])
      assert.equal((await b.deps.stores.tasks.get(task.id))!.status, 'revoked')

      // The refresh token of the ended task buys nothing.
      const before = await rows(b)
      const refreshed = await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id: CLIENT_ID })
      assert.equal(refreshed.status, 400)
      assert.equal(((await refreshed.json()) as { error: string }).error, 'invalid_grant')
      assert.equal((await rows(b)).tokens, before.tokens)

      // The browser still holds its sign-in cookie, but it counts no more.
      assert.ok(browser.cookies.has('taskpass-login'))
      const settled = await rows(b)
      const { challenge } = pkce()
      const again = await browser.get(`/authorize?${authorizeQuery(challenge)}`)
      assert.equal(again.status, 200)
      const html = await again.text()
      idpLink(html)
      assert.ok(!formsOf(html).some((f) => f.action === '/authorize/consent'), 'the sign-in page, not the consent')
      const account = await browser.get('/account')
      assert.equal(account.status, 200)
      assert.ok(!formsOf(await account.text()).some((f) => f.action.startsWith('/account/tasks/')), 'the user\'s page asks to sign in again')
      assert.deepEqual(await rows(b), settled, 'asking to sign in again writes nothing')
    }))
})
