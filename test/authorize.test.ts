import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { randomUUID } from 'node:crypto'
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose'
import { revokeTasksOutsideCatalog } from '../src/catalog/retirement.js'
import { csrfToken } from '../src/http/pages.js'
import { counts, NOTES, withBroker, type TestBroker } from './harness.js'
import { authorizeQuery, browserFlowConfig, CLIENT_ID, devSignIn, fixedClients, formsOf, pkce, REDIRECT_URI, setField, TestBrowser } from './authorize-fixtures.js'

const opts = () => ({ config: browserFlowConfig, clientMetadata: fixedClients() })

/** Signs alice in and consents with `answer` (scopes, ttl, purpose): the client's callback URL. */
async function consent(b: TestBroker, browser: TestBrowser, query: string, answer: [string, string][] = [['scope', 'notes:read'], ['ttl', '3600'], ['purpose', 'Summarise my notes']]): Promise<URL> {
  const login = await browser.get(`/authorize?${query}`)
  assert.equal(login.status, 200)
  const signedIn = await browser.submit(await login.text(), '/authorize/login', devSignIn())
  assert.equal(signedIn.status, 303, await signedIn.clone().text())
  const page = await browser.get(signedIn.headers.get('location')!)
  assert.equal(page.status, 200)
  const fields = (f: [string, string][]) => {
    let out = f
    for (const name of new Set(answer.map(([k]) => k))) out = setField(name, ...answer.filter(([k]) => k === name).map(([, v]) => v))(out)
    return [...out, ['decision', 'allow']] as [string, string][]
  }
  const answered = await browser.submit(await page.text(), '/authorize/consent', fields)
  assert.equal(answered.status, 303, await answered.clone().text())
  return new URL(answered.headers.get('location')!)
}

function redeem(b: TestBroker, code: string, verifier: string, extra: Record<string, string> = {}) {
  return b.post('/token', { grant_type: 'authorization_code', code, code_verifier: verifier, client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, resource: NOTES, ...extra })
}

describe('authorization code flow', () => {
  it('sign-in and consent open a task; the code buys its token and a rotating refresh token; ending the task kills both', () =>
    withBroker(opts(), async (b) => {
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const { verifier, challenge } = pkce()
      const back = await consent(b, browser, authorizeQuery(challenge))
      assert.equal(back.origin + back.pathname, REDIRECT_URI)
      assert.equal(back.searchParams.get('state'), 'st-123')
      assert.equal(back.searchParams.get('iss'), b.deps.config.issuer)
      const code = back.searchParams.get('code')!
      assert.match(code, /^tpc_/)

      const res = await redeem(b, code, verifier)
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('cache-control'), 'no-store')
      const body = (await res.json()) as Record<string, unknown>
      assert.equal(body.token_type, 'Bearer')
      assert.equal(body.scope, 'notes:read')
      assert.match(String(body.refresh_token), /^tpr_/)
      const claims = decodeJwt(String(body.access_token))
      assert.equal(claims.aud, NOTES)
      assert.equal(claims.client_id, CLIENT_ID)
      assert.deepEqual(claims.act, { sub: CLIENT_ID })
      assert.equal(claims.sub, 'alice')
      assert.equal(claims.task_id, body.task_id)
      const task = (await b.deps.stores.tasks.get(String(body.task_id)))!
      assert.equal(task.workloadId, 'mcp-clients')
      assert.equal(task.clientId, CLIENT_ID)
      assert.equal(task.purpose, 'Summarise my notes')
      assert.equal(task.expiresAt - task.createdAt, 3600)

      // Refresh rotates.
      const r1 = await b.post('/token', { grant_type: 'refresh_token', refresh_token: String(body.refresh_token), client_id: CLIENT_ID })
      assert.equal(r1.status, 200)
      const rotated = (await r1.json()) as Record<string, unknown>
      assert.notEqual(rotated.refresh_token, body.refresh_token)
      assert.equal(rotated.task_id, body.task_id)

      // The user's page lists the task and ends it.
      const account = await browser.get('/account')
      assert.equal(account.status, 200)
      const ended = await browser.submit(await account.text(), `/account/tasks/${String(body.task_id)}/end`)
      assert.equal(ended.status, 303)
      assert.equal((await b.deps.stores.tasks.get(String(body.task_id)))!.status, 'revoked')

      const before = await counts(b)
      const r2 = await b.post('/token', { grant_type: 'refresh_token', refresh_token: String(rotated.refresh_token), client_id: CLIENT_ID })
      assert.equal(r2.status, 400)
      assert.equal(((await r2.json()) as { error: string }).error, 'invalid_grant')
      assert.equal((await counts(b)).tokens, before.tokens)
    }))
})

/** An error redirect to the client: its `error`, with `state` and `iss` (RFC 9207). */
function assertErrorRedirect(b: TestBroker, res: Response, error: string): URL {
  assert.equal(res.status, 303, `a redirect, got ${res.status}`)
  const back = new URL(res.headers.get('location')!)
  assert.equal(back.origin + back.pathname, REDIRECT_URI)
  assert.equal(back.searchParams.get('error'), error)
  assert.equal(back.searchParams.get('state'), 'st-123')
  assert.equal(back.searchParams.get('iss'), b.deps.config.issuer)
  assert.equal(back.searchParams.get('code'), null)
  return back
}

/** A refusal shown to the user, never redirected anywhere. */
async function assertErrorPage(res: Response, status: number): Promise<string> {
  assert.equal(res.status, status)
  assert.equal(res.headers.get('location'), null)
  assert.match(res.headers.get('content-type') ?? '', /text\/html/)
  return res.text()
}

describe('authorization request refusals', () => {
  const { challenge } = pkce()
  const redirected: [string, Record<string, string | undefined>, string][] = [
    ['no code_challenge (PKCE is required)', { code_challenge: undefined }, 'invalid_request'],
    ['plain PKCE', { code_challenge_method: 'plain' }, 'invalid_request'],
    ['no code_challenge_method (the default would be plain)', { code_challenge_method: undefined }, 'invalid_request'],
    ['a malformed challenge', { code_challenge: 'short' }, 'invalid_request'],
    ['response_type token', { response_type: 'token' }, 'unsupported_response_type'],
    ['a resource not ours', { resource: 'https://elsewhere.example/mcp' }, 'invalid_target'],
    ['a registered resource the client has no grant for', { resource: 'https://calendar.test.example/mcp' }, 'invalid_target'],
    ['a scope the resource does not know', { scope: 'notes:read admin' }, 'invalid_scope'],
    ['a request object', { request: 'eyJ' }, 'request_not_supported'],
    ['a malformed dpop_jkt', { dpop_jkt: 'x' }, 'invalid_request'],
    ['bad authorization_details', { authorization_details: '[{"type":"other"}]' }, 'invalid_authorization_details'],
  ]
  for (const [name, overrides, error] of redirected) {
    it(`${name}: ${error}, back to the client`, () =>
      withBroker(opts(), async (b) => {
        const before = await counts(b)
        const res = await new TestBrowser((p, i) => b.app.request(p, i)).get(`/authorize?${authorizeQuery(challenge, overrides)}`)
        assertErrorRedirect(b, res, error)
        assert.deepEqual(await counts(b), before)
      }))
  }

  it('a redirect URI the client did not register: shown to the user, never redirected', () =>
    withBroker(opts(), async (b) => {
      const before = await counts(b)
      const res = await new TestBrowser((p, i) => b.app.request(p, i)).get(`/authorize?${authorizeQuery(challenge, { redirect_uri: 'https://attacker.example/cb' })}`)
      assert.match(await assertErrorPage(res, 400), /redirect/)
      assert.deepEqual(await counts(b), before)
    }))

  it('a client no OAuth client workload matches: refused before its document is fetched', () =>
    withBroker({ config: browserFlowConfig, clientMetadata: fixedClients() }, async (b) => {
      const resolver = (b.deps.clientMetadata as ReturnType<typeof fixedClients>)
      const res = await new TestBrowser((p, i) => b.app.request(p, i)).get(`/authorize?${authorizeQuery(challenge, { client_id: 'https://stranger.example/client.json' })}`)
      await assertErrorPage(res, 400)
      assert.deepEqual(resolver.calls, [], 'no fetch for a client the configuration does not allow')
    }))

  it('a client whose document cannot be had: invalid_client, shown to the user', () =>
    withBroker(opts(), async (b) => {
      const res = await new TestBrowser((p, i) => b.app.request(p, i)).get(`/authorize?${authorizeQuery(challenge, { client_id: 'https://client.test.example/other.json' })}`)
      assert.match(await assertErrorPage(res, 400), /could not be fetched/)
    }))

  it('a disabled client workload: unauthorized_client, shown to the user', () =>
    withBroker({ config: (c) => { const x = browserFlowConfig(c); return { ...x, workloads: x.workloads!.map((w) => (w.id === 'mcp-clients' ? { ...w, enabled: false } : w)) } }, clientMetadata: fixedClients() }, async (b) => {
      const res = await new TestBrowser((p, i) => b.app.request(p, i)).get(`/authorize?${authorizeQuery(challenge)}`)
      await assertErrorPage(res, 400)
    }))
})

describe('consent refusals', () => {
  async function toConsent(b: TestBroker, query: string) {
    const browser = new TestBrowser((p, i) => b.app.request(p, i))
    const login = await browser.get(`/authorize?${query}`)
    const signedIn = await browser.submit(await login.text(), '/authorize/login', devSignIn())
    const page = await (await browser.get(signedIn.headers.get('location')!)).text()
    return { browser, page }
  }
  const answer = (extra: [string, string][]) => (f: [string, string][]) => [...setField('ttl', '3600')(setField('purpose', 'p')(setField('scope', 'notes:read')(f))), ...extra] as [string, string][]

  it('the user declines: access_denied, no task', () =>
    withBroker(opts(), async (b) => {
      const { browser, page } = await toConsent(b, authorizeQuery(pkce().challenge))
      const before = await counts(b)
      assertErrorRedirect(b, await browser.submit(page, '/authorize/consent', answer([['decision', 'deny']])), 'access_denied')
      assert.deepEqual(await counts(b), before)
    }))

  it('no CSRF token: 403, no task', () =>
    withBroker(opts(), async (b) => {
      const { browser, page } = await toConsent(b, authorizeQuery(pkce().challenge))
      const before = await counts(b)
      await assertErrorPage(await browser.submit(page, '/authorize/consent', (f) => answer([['decision', 'allow']])(f.filter(([k]) => k !== 'csrf'))), 403)
      await assertErrorPage(await browser.submit(page, '/authorize/consent', (f) => answer([['decision', 'allow']])(setField('csrf', 'forged')(f))), 403)
      assert.deepEqual(await counts(b), before)
    }))

  it('a scope the client did not ask for slipped into the answer: refused, no task', () =>
    withBroker(opts(), async (b) => {
      const { browser, page } = await toConsent(b, authorizeQuery(pkce().challenge, { scope: 'notes:read' }))
      const before = await counts(b)
      await assertErrorPage(await browser.submit(page, '/authorize/consent', (f) => [...setField('scope', 'notes:read', 'notes:write')(answer([])(f)), ['decision', 'allow']]), 400)
      assert.deepEqual(await counts(b), before)
    }))

  it('a lifetime not offered: refused, no task', () =>
    withBroker(opts(), async (b) => {
      const { browser, page } = await toConsent(b, authorizeQuery(pkce().challenge))
      const before = await counts(b)
      await assertErrorPage(await browser.submit(page, '/authorize/consent', (f) => [...setField('ttl', '999999')(answer([])(f)), ['decision', 'allow']]), 400)
      assert.deepEqual(await counts(b), before)
    }))

  it('an answer after the request lapsed: access_denied back to the client, no task', () =>
    withBroker(opts(), async (b) => {
      const { browser, page } = await toConsent(b, authorizeQuery(pkce().challenge))
      b.clock.advance(b.deps.config.authorization.requestTtl + 1)
      const before = await counts(b)
      assertErrorRedirect(b, await browser.submit(page, '/authorize/consent', answer([['decision', 'allow']])), 'access_denied')
      assert.deepEqual(await counts(b), before)
    }))

  it('a forged or tampered request: a page, never a redirect, no task', () =>
    withBroker(opts(), async (b) => {
      const { browser, page } = await toConsent(b, authorizeQuery(pkce().challenge))
      const before = await counts(b)
      for (const forged of ['not-a-seal', 'eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..AAAA.BBBB.CCCC']) {
        assert.match(await assertErrorPage(await browser.submit(page, '/authorize/consent', (f) => answer([['decision', 'allow']])(setField('request', forged)(f))), 400), /expired/)
      }
      assert.deepEqual(await counts(b), before)
    }))

  it('a wrong dev password: 401 on the sign-in page, no sign-in cookie', () =>
    withBroker(opts(), async (b) => {
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const login = await browser.get(`/authorize?${authorizeQuery(pkce().challenge)}`)
      const res = await browser.submit(await login.text(), '/authorize/login', (f) => setField('password', 'wrong')(devSignIn()(f)))
      assert.equal(res.status, 401)
      assert.equal([...browser.cookies.keys()].some((k) => k.includes('login')), false)
    }))

  it('the policy refuses the task: its error back to the client, the refusal audited', () =>
    withBroker({ config: (c) => ({ ...browserFlowConfig(c), tasks: { maxTtl: 3600 } }), clientMetadata: fixedClients() }, async (b) => {
      // Disable the workload between /authorize and the answer: the policy refuses (a disabled workload).
      const { browser, page } = await toConsent(b, authorizeQuery(pkce().challenge))
      const w = b.deps.config.workloads.find((x) => x.id === 'mcp-clients')!
      ;(w as { enabled: boolean }).enabled = false
      const before = await counts(b)
      assertErrorRedirect(b, await browser.submit(page, '/authorize/consent', answer([['decision', 'allow']])), 'unauthorized_client')
      assert.equal((await counts(b)).tasks, before.tasks)
    }))
})

describe('authorization_code grant refusals', () => {
  async function issued(b: TestBroker, query = authorizeQuery(pkce().challenge)) {
    const browser = new TestBrowser((p, i) => b.app.request(p, i))
    const back = await consent(b, browser, query)
    return back.searchParams.get('code')!
  }
  const error = async (res: Response) => ((await res.json()) as { error: string }).error

  it('a wrong code_verifier: invalid_grant, nothing minted, the code still good', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const code = await issued(b, authorizeQuery(challenge))
      const before = await counts(b)
      const res = await redeem(b, code, pkce().verifier)
      assert.equal(res.status, 400)
      assert.equal(await error(res), 'invalid_grant')
      assert.deepEqual(await counts(b), before)
      assert.equal((await redeem(b, code, verifier)).status, 200)
    }))

  it('no code_verifier: invalid_request', () =>
    withBroker(opts(), async (b) => {
      const code = await issued(b)
      const res = await b.post('/token', { grant_type: 'authorization_code', code, client_id: CLIENT_ID, redirect_uri: REDIRECT_URI })
      assert.equal(res.status, 400)
      assert.equal(await error(res), 'invalid_request')
    }))

  it('a code presented twice: invalid_grant, and the task it opened is revoked with its token', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const code = await issued(b, authorizeQuery(challenge))
      const first = (await (await redeem(b, code, verifier)).json()) as Record<string, string>
      const before = await counts(b)
      const again = await redeem(b, code, verifier)
      assert.equal(again.status, 400)
      assert.equal(await error(again), 'invalid_grant')
      assert.equal((await b.deps.stores.tasks.get(first.task_id!))!.status, 'revoked')
      assert.equal((await b.deps.stores.tokens.get(String(decodeJwt(first.access_token!).jti)))!.status, 'revoked')
      assert.equal((await counts(b)).tokens, before.tokens)
      assert.equal((await counts(b)).revocation_events, before.revocation_events + 1)
      // Its refresh token died with the task.
      const r = await b.post('/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token!, client_id: CLIENT_ID })
      assert.equal(await error(r), 'invalid_grant')
    }))

  it('a client its workload no longer admits: its tasks end with the catalog change, the refresh token dies with them', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const first = (await (await redeem(b, await issued(b, authorizeQuery(challenge)), verifier)).json()) as Record<string, string>
      const other = await revokeTasksOutsideCatalog(b.deps, 'config')
      assert.deepEqual(other, [], 'nothing changed: nothing ended')
      const narrowed = b.deps.config.workloads.map((w) => (w.oauthClient ? { ...w, oauthClient: { ...w.oauthClient, clientId: 'https://another.example/client.json' } } : w))
      const revoked = await revokeTasksOutsideCatalog({ ...b.deps, config: { ...b.deps.config, workloads: narrowed } }, 'config')
      assert.deepEqual(revoked, [first.task_id])
      assert.match(String((await b.deps.stores.tasks.get(first.task_id!))!.endReason), /client https:\/\/client\.test\.example\/oauth\/client\.json no longer one of workload mcp-clients's/)
      const r = await b.post('/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token!, client_id: CLIENT_ID })
      assert.equal(await error(r), 'invalid_grant')
    }))

  it('another redirect_uri, client_id or resource than the code\'s: invalid_grant / invalid_target', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const code = await issued(b, authorizeQuery(challenge))
      const before = await counts(b)
      assert.equal(await error(await redeem(b, code, verifier, { redirect_uri: 'http://127.0.0.1:33418/other' })), 'invalid_grant')
      assert.equal(await error(await redeem(b, code, verifier, { client_id: 'https://client.test.example/x.json' })), 'invalid_grant')
      assert.equal(await error(await redeem(b, code, verifier, { resource: 'https://calendar.test.example/mcp' })), 'invalid_target')
      assert.equal((await counts(b)).tokens, before.tokens)
    }))

  it('an expired code: invalid_grant', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const code = await issued(b, authorizeQuery(challenge))
      b.clock.advance(b.deps.config.authorization.codeTtl)
      const before = await counts(b)
      const res = await redeem(b, code, verifier)
      assert.equal(await error(res), 'invalid_grant')
      assert.deepEqual(await counts(b), before)
    }))

  it('a client secret with the public client\'s grant: invalid_client', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const code = await issued(b, authorizeQuery(challenge))
      const res = await redeem(b, code, verifier, { client_secret: 'x' })
      assert.equal(res.status, 400)
      assert.equal(await error(res), 'invalid_client')
    }))

  it('two presentations of one code at once: one token, the other refused, and the task revoked', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const code = await issued(b, authorizeQuery(challenge))
      const [one, two] = await Promise.all([redeem(b, code, verifier), redeem(b, code, verifier)])
      assert.deepEqual([one.status, two.status].sort(), [200, 400])
      const loser = one.status === 400 ? one : two
      assert.equal(await error(loser), 'invalid_grant')
      const winner = (await (one.status === 200 ? one : two).json()) as Record<string, string>
      assert.equal((await b.deps.stores.tasks.get(winner.task_id!))!.status, 'revoked')
      assert.equal((await b.deps.stores.tokens.get(String(decodeJwt(winner.access_token!).jti)))!.status, 'revoked')
    }))

  it('a mint refused after the code checked out leaves the code unspent', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const code = await issued(b, authorizeQuery(challenge))
      const w = b.deps.config.workloads.find((x) => x.id === 'mcp-clients')! as { enabled: boolean }
      w.enabled = false
      const refused = await redeem(b, code, verifier)
      assert.equal(await error(refused), 'unauthorized_client')
      w.enabled = true
      assert.equal((await redeem(b, code, verifier)).status, 200, 'the code was not spent by the refusal')
    }))

  it('a refresh token presented twice revokes the task', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const first = (await (await redeem(b, await issued(b, authorizeQuery(challenge)), verifier)).json()) as Record<string, string>
      const ok = await b.post('/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token!, client_id: CLIENT_ID })
      assert.equal(ok.status, 200)
      const next = (await ok.json()) as Record<string, string>
      const reused = await b.post('/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token!, client_id: CLIENT_ID })
      assert.equal(await error(reused), 'invalid_grant')
      assert.equal((await b.deps.stores.tasks.get(first.task_id!))!.status, 'revoked')
      assert.equal(await error(await b.post('/token', { grant_type: 'refresh_token', refresh_token: next.refresh_token!, client_id: CLIENT_ID })), 'invalid_grant')
    }))

  it('a refresh may narrow the scope, never widen it', () =>
    withBroker(opts(), async (b) => {
      const { verifier, challenge } = pkce()
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const back = await consent(b, browser, authorizeQuery(challenge), [['scope', 'notes:read'], ['scope', 'notes:write'], ['ttl', '3600'], ['purpose', 'p']])
      const first = (await (await redeem(b, back.searchParams.get('code')!, verifier)).json()) as Record<string, string>
      assert.equal(first.scope, 'notes:read notes:write')
      const narrowed = (await (await b.post('/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token!, client_id: CLIENT_ID, scope: 'notes:read' })).json()) as Record<string, string>
      assert.equal(narrowed.scope, 'notes:read')
      const wider = await b.post('/token', { grant_type: 'refresh_token', refresh_token: narrowed.refresh_token!, client_id: CLIENT_ID, scope: 'notes:read notes:delete' })
      assert.equal(await error(wider), 'invalid_scope')
    }))
})

describe('consent that needs an approval, and DPoP', () => {
  const ADMIN = { authorization: `Bearer tpa_test-admin-key` }
  const refreshUrl = (html: string) => {
    const m = /http-equiv="refresh" content="\d+;\s*url=([^"]+)"/.exec(html)
    assert.ok(m, 'the wait page refreshes itself')
    return m[1]!.replace(/&amp;/g, '&')
  }

  it('the consent opens a pending task; the wait page answers with the code once an admin approves, and only once', () =>
    withBroker({ config: (c) => ({ ...browserFlowConfig(c), resources: c.resources!.map((r) => (r.uri === NOTES ? { ...r, requireApproval: true } : r)) }), clientMetadata: fixedClients() }, async (b) => {
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const { verifier, challenge } = pkce()
      const login = await browser.get(`/authorize?${authorizeQuery(challenge)}`)
      const signedIn = await browser.submit(await login.text(), '/authorize/login', devSignIn())
      const page = await (await browser.get(signedIn.headers.get('location')!)).text()
      const waiting = await browser.submit(page, '/authorize/consent', (f) => [...setField('ttl', '3600')(setField('purpose', 'p')(setField('scope', 'notes:read')(f))), ['decision', 'allow']])
      assert.equal(waiting.status, 200)
      const url = refreshUrl(await waiting.text())
      const task = (await b.deps.stores.tasks.list({ limit: 1 }))[0]!
      assert.equal(task.status, 'pending_approval')
      // Still pending: the same page again. Another browser (no sign-in) may not follow it.
      assert.equal((await browser.get(url)).status, 200)
      assert.equal((await new TestBrowser((p, i) => b.app.request(p, i)).get(url)).status, 403)
      const approved = await b.app.request(`/admin/tasks/${task.id}/approve`, { method: 'POST', headers: ADMIN })
      assert.equal(approved.status, 200)
      const back = await browser.get(url)
      assert.equal(back.status, 303)
      const code = new URL(back.headers.get('location')!).searchParams.get('code')!
      assert.equal((await redeem(b, code, verifier)).status, 200)
      // Reloading the wait page mints no second code.
      assert.equal((await browser.get(url)).status, 409)
    }))

  it('an admin denial sends access_denied back to the client', () =>
    withBroker({ config: (c) => ({ ...browserFlowConfig(c), resources: c.resources!.map((r) => (r.uri === NOTES ? { ...r, requireApproval: true } : r)) }), clientMetadata: fixedClients() }, async (b) => {
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const login = await browser.get(`/authorize?${authorizeQuery(pkce().challenge)}`)
      const signedIn = await browser.submit(await login.text(), '/authorize/login', devSignIn())
      const page = await (await browser.get(signedIn.headers.get('location')!)).text()
      const url = refreshUrl(await (await browser.submit(page, '/authorize/consent', (f) => [...setField('ttl', '3600')(setField('purpose', 'p')(setField('scope', 'notes:read')(f))), ['decision', 'allow']])).text())
      const task = (await b.deps.stores.tasks.list({ limit: 1 }))[0]!
      const denied = await b.app.request(`/admin/tasks/${task.id}/deny`, { method: 'POST', headers: { ...ADMIN, 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'not now' }) })
      assert.equal(denied.status, 200, await denied.clone().text())
      assertErrorRedirect(b, await browser.get(url), 'access_denied')
    }))

  it('dpop_jkt binds the code and the task to the key; the token and the refresh token are DPoP-bound', () =>
    withBroker(opts(), async (b) => {
      const { publicKey, privateKey } = await generateKeyPair('ES256')
      const jwk = await exportJWK(publicKey)
      const jkt = await calculateJwkThumbprint(jwk)
      const proof = () => new SignJWT({ jti: randomUUID(), htm: 'POST', htu: `${b.deps.config.issuer}/token`, iat: b.clock.now() }).setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk }).sign(privateKey)
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const { verifier, challenge } = pkce()
      const code = (await consent(b, browser, authorizeQuery(challenge, { dpop_jkt: jkt }))).searchParams.get('code')!
      const params = { grant_type: 'authorization_code', code, code_verifier: verifier, client_id: CLIENT_ID, redirect_uri: REDIRECT_URI }
      // Without the proof the code is not this caller's.
      const bare = await b.post('/token', params)
      assert.equal(((await bare.json()) as { error: string }).error, 'invalid_grant')
      const res = await b.post('/token', params, { dpop: await proof() })
      assert.equal(res.status, 200, await res.clone().text())
      const body = (await res.json()) as Record<string, string>
      assert.equal(body.token_type, 'DPoP')
      assert.deepEqual(decodeJwt(body.access_token!).cnf, { jkt })
      const noProof = await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token!, client_id: CLIENT_ID })
      assert.equal(((await noProof.json()) as { error: string }).error, 'invalid_grant')
      const refreshed = await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token!, client_id: CLIENT_ID }, { dpop: await proof() })
      assert.equal(refreshed.status, 200)
    }))
})

describe('metadata, logs and the real metadata-document fetch', () => {
  it('the metadata says what the flow needs (the MCP conformance check, the SDK schema); without the flow it says none of it', async () => {
    await withBroker(opts(), async (b) => {
      const meta = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
      assert.equal(meta.authorization_endpoint, `${b.deps.config.issuer}/authorize`)
      assert.deepEqual(meta.response_types_supported, ['code'])
      assert.deepEqual(meta.code_challenge_methods_supported, ['S256'])
      assert.equal(meta.client_id_metadata_document_supported, true)
      assert.equal(meta.authorization_response_iss_parameter_supported, true)
      assert.ok((meta.grant_types_supported as string[]).includes('authorization_code'))
      assert.ok((meta.grant_types_supported as string[]).includes('refresh_token'))
      assert.ok((meta.token_endpoint_auth_methods_supported as string[]).includes('none'))
    })
    await withBroker(undefined, async (b) => {
      const meta = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
      assert.equal('code_challenge_methods_supported' in meta, false)
      assert.equal((meta.grant_types_supported as string[]).includes('authorization_code'), false)
      const res = await b.app.request(`/authorize?${authorizeQuery(pkce().challenge)}`)
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'unsupported_response_type')
    })
  })

  it('no code, state, token or refresh token reaches a log line', () => {
    const lines: string[] = []
    const logger = { info: (m: string, f?: unknown) => void lines.push(`${m} ${JSON.stringify(f)}`), warn: (m: string, f?: unknown) => void lines.push(`${m} ${JSON.stringify(f)}`), error: (m: string, f?: unknown) => void lines.push(`${m} ${JSON.stringify(f)}`) }
    return withBroker({ ...opts(), logger }, async (b) => {
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const { verifier, challenge } = pkce()
      const back = await consent(b, browser, authorizeQuery(challenge, { state: 'secret-state-value-123' }))
      const code = back.searchParams.get('code')!
      const body = (await (await redeem(b, code, verifier)).json()) as Record<string, string>
      await redeem(b, code, verifier) // a replay: logged as a refusal
      await b.post('/token', { grant_type: 'refresh_token', refresh_token: body.refresh_token!, client_id: CLIENT_ID })
      assert.ok(lines.length > 0, 'the access log recorded the requests')
      for (const secret of [code, verifier, 'secret-state-value-123', body.access_token!, body.refresh_token!]) {
        assert.equal(lines.some((l) => l.includes(secret)), false, `a log line holds ${secret.slice(0, 12)}…`)
      }
    })
  })

  it('a metadata document on a private address is never fetched: invalid_client on the page', () =>
    withBroker({ config: (c) => { const x = browserFlowConfig(c); return { ...x, workloads: x.workloads!.map((w) => (w.id === 'mcp-clients' ? { ...w, oauthClient: { clientId: { glob: 'https://**' } } } : w)) } } }, async (b) => {
      for (const host of ['10.0.0.1', '169.254.169.254', '192.168.1.1', '[fd00::1]']) {
        const res = await new TestBrowser((p, i) => b.app.request(p, i)).get(`/authorize?${authorizeQuery(pkce().challenge, { client_id: `https://${host}/client.json` })}`)
        assert.equal(res.status, 400, host)
        assert.equal(res.headers.get('location'), null)
        assert.match(await res.text(), /could not be fetched/)
      }
    }))
})

describe('page refusals', () => {
  it('an unknown IdP, a password sign-in where there is none, an end without a sign-in, and ending an ended task: each its page, nothing written', () =>
    withBroker(opts(), async (b) => {
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const before = await counts(b)
      assert.equal((await browser.get(`/authorize/idp?${new URLSearchParams({ issuer: 'https://unknown.example' })}`)).status, 404)
      // No sign-in: the user's page answers with the sign-in page, and an end is refused (401) with it.
      const account = await (await browser.get('/account')).text()
      const csrf = formsOf(account).find((f) => f.action === '/authorize/login')!.fields.filter(([k]) => k === 'csrf')
      const end = await browser.post('/account/tasks/01a31850-0000-7000-8000-000000000000/end', csrf)
      assert.equal(end.status, 401)
      assert.deepEqual(await counts(b), before)
      // Signed in, a task ended twice: the second is 409 on a page.
      const back = await consent(b, browser, authorizeQuery(pkce().challenge))
      assert.ok(back.searchParams.get('code'))
      const task = (await b.deps.stores.tasks.list({ limit: 1 }))[0]!
      const page = await (await browser.get('/account')).text()
      assert.equal((await browser.submit(page, `/account/tasks/${task.id}/end`)).status, 303)
      const again = await browser.submit(page, `/account/tasks/${task.id}/end`)
      assert.equal(again.status, 409)
      assert.match(again.headers.get('content-type') ?? '', /text\/html/)
    }))

  it('a password sign-in on a broker whose sign-in is an IdP: 404, no sign-in', () =>
    withBroker({ config: (c) => { const x = browserFlowConfig(c); return { ...x, subjectIssuers: x.subjectIssuers!.map((si) => ({ ...si, login: { kind: 'oidc' as const, clientId: 'taskpass' } })) } }, clientMetadata: fixedClients() }, async (b) => {
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      await browser.get('/account') // the sign-in page (IdP links only) sets the browser cookie
      const bid = [...browser.cookies].find(([k]) => k.endsWith('browser'))![1]
      const res = await browser.post('/authorize/login', [['csrf', csrfToken(b.deps.sealer.key('csrf'), bid)], ['username', 'alice'], ['password', 'x']])
      assert.equal(res.status, 404)
      assert.equal([...browser.cookies.keys()].some((k) => k.includes('login')), false)
    }))
})
