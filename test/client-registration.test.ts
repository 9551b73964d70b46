/**
 * RFC 7591 dynamic registration for MCP clients without a metadata document: stateless (the client
 * id is the sealed registration), so a registration writes nothing; off unless configured.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { decodeJwt } from 'jose'
import { counts, NOTES, withBroker, type TestBroker } from './harness.js'
import { authorizeQuery, browserFlowConfig, devSignIn, fixedClients, pkce, setField, TestBrowser } from './authorize-fixtures.js'
import type { ConfigInput } from '../src/config.js'

const REDIRECT = 'http://127.0.0.1:45123/callback'
const withRegistration = (c: ConfigInput): ConfigInput => ({ ...browserFlowConfig(c), authorization: { dynamicRegistration: { workload: 'mcp-clients' } } })
const opts = { config: withRegistration, clientMetadata: fixedClients() }

function register(b: TestBroker, body: unknown, contentType = 'application/json') {
  return b.app.request('/register', { method: 'POST', headers: { 'content-type': contentType }, body: typeof body === 'string' ? body : JSON.stringify(body) })
}

const metadata = { client_name: 'Desktop MCP client', redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' }

describe('dynamic client registration (RFC 7591)', () => {
  it('registers without a row, and the registered client gets a task token through the browser flow', () =>
    withBroker(opts, async (b) => {
      const meta = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
      assert.equal(meta.registration_endpoint, `${b.deps.config.issuer}/register`)
      const before = await counts(b)
      const res = await register(b, metadata)
      assert.equal(res.status, 201)
      assert.equal(res.headers.get('cache-control'), 'no-store')
      const info = (await res.json()) as Record<string, unknown>
      assert.match(String(info.client_id), /^tpdc_/)
      assert.equal(info.token_endpoint_auth_method, 'none')
      assert.deepEqual(info.redirect_uris, [REDIRECT])
      assert.equal('client_secret' in info, false)
      assert.deepEqual(await counts(b), before, 'a registration writes nothing')

      const clientId = String(info.client_id)
      const { verifier, challenge } = pkce()
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const login = await browser.get(`/authorize?${authorizeQuery(challenge, { client_id: clientId, redirect_uri: REDIRECT })}`)
      assert.equal(login.status, 200)
      const signedIn = await browser.submit(await login.text(), '/authorize/login', devSignIn())
      const page = await (await browser.get(signedIn.headers.get('location')!)).text()
      assert.match(page, /Desktop MCP client/)
      assert.match(page, /name not verified/)
      const back = new URL((await browser.submit(page, '/authorize/consent', (f) => [...setField('scope', 'notes:read')(f), ['decision', 'allow']])).headers.get('location')!)
      const token = await b.post('/token', { grant_type: 'authorization_code', code: back.searchParams.get('code')!, code_verifier: verifier, client_id: clientId, redirect_uri: REDIRECT, resource: NOTES })
      assert.equal(token.status, 200)
      const claims = decodeJwt(((await token.json()) as { access_token: string }).access_token)
      assert.equal(claims.client_id, clientId)
      assert.equal((await b.deps.stores.tasks.get(String(claims.task_id)))!.workloadId, 'mcp-clients')
    }))

  const refused: [string, unknown, number, string][] = [
    ['not JSON', 'client_name=x', 400, 'invalid_request'],
    ['an array', [metadata], 400, 'invalid_client_metadata'],
    ['a client_id of its own', { ...metadata, client_id: 'https://me.example/c.json' }, 400, 'invalid_client_metadata'],
    ['no client_name', { ...metadata, client_name: undefined }, 400, 'invalid_client_metadata'],
    ['no redirect_uris', { ...metadata, redirect_uris: [] }, 400, 'invalid_client_metadata'],
    ['a shared secret', { ...metadata, token_endpoint_auth_method: 'client_secret_basic' }, 400, 'invalid_client_metadata'],
    ['a redirect URI on plain http elsewhere than loopback', { ...metadata, redirect_uris: ['http://evil.example/cb'] }, 400, 'invalid_redirect_uri'],
  ]
  for (const [name, body, status, error] of refused) {
    it(`${name}: ${status} ${error}, nothing written`, () =>
      withBroker(opts, async (b) => {
        const before = await counts(b)
        const res = await register(b, body, typeof body === 'string' ? 'application/x-www-form-urlencoded' : 'application/json')
        assert.equal(res.status, status)
        assert.equal(((await res.json()) as { error: string }).error, error)
        assert.deepEqual(await counts(b), before)
      }))
  }

  it('a forged or expired client id is invalid_client on the page, never redirected', () =>
    withBroker(opts, async (b) => {
      const clientId = String(((await (await register(b, metadata)).json()) as Record<string, unknown>).client_id)
      const browser = new TestBrowser((p, i) => b.app.request(p, i))
      const forged = `${clientId.slice(0, -4)}AAAA`
      const res = await browser.get(`/authorize?${authorizeQuery(pkce().challenge, { client_id: forged, redirect_uri: REDIRECT })}`)
      assert.equal(res.status, 400)
      assert.equal(res.headers.get('location'), null)
      b.clock.advance(30 * 86_400 + 1)
      const expired = await browser.get(`/authorize?${authorizeQuery(pkce().challenge, { client_id: clientId, redirect_uri: REDIRECT })}`)
      assert.equal(expired.status, 400)
      assert.match(await expired.text(), /register again/)
    }))

  it('off unless configured: no endpoint, no registration_endpoint, a tpdc_ client id matches no workload', () =>
    withBroker({ config: browserFlowConfig, clientMetadata: fixedClients() }, async (b) => {
      const meta = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
      assert.equal('registration_endpoint' in meta, false)
      assert.equal((await register(b, metadata)).status, 404)
      const res = await new TestBrowser((p, i) => b.app.request(p, i)).get(`/authorize?${authorizeQuery(pkce().challenge, { client_id: 'tpdc_x', redirect_uri: REDIRECT })}`)
      assert.equal(res.status, 400)
    }))
})
