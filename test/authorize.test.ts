import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { decodeJwt } from 'jose'
import { counts, NOTES, withBroker, type TestBroker } from './harness.js'
import { authorizeQuery, browserFlowConfig, CLIENT_ID, DEV_PASSWORD, fixedClients, pkce, REDIRECT_URI, setField, TestBrowser } from './authorize-fixtures.js'

const opts = () => ({ config: browserFlowConfig, clientMetadata: fixedClients() })

/** Signs alice in and consents with `answer` (scopes, ttl, purpose): the client's callback URL. */
async function consent(b: TestBroker, browser: TestBrowser, query: string, answer: [string, string][] = [['scope', 'notes:read'], ['ttl', '3600'], ['purpose', 'Summarise my notes']]): Promise<URL> {
  const login = await browser.get(`/authorize?${query}`)
  assert.equal(login.status, 200)
  const signedIn = await browser.submit(await login.text(), '/authorize/login', (f) => [...f, ['user', 'alice'], ['password', DEV_PASSWORD]])
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
      const task = b.deps.stores.tasks.get(String(body.task_id))!
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
      assert.equal(b.deps.stores.tasks.get(String(body.task_id))!.status, 'revoked')

      const before = counts(b)
      const r2 = await b.post('/token', { grant_type: 'refresh_token', refresh_token: String(rotated.refresh_token), client_id: CLIENT_ID })
      assert.equal(r2.status, 400)
      assert.equal(((await r2.json()) as { error: string }).error, 'invalid_grant')
      assert.equal(counts(b).tokens, before.tokens)
    }))
})
