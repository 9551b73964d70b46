/**
 * Dev mode serves the browser flow out of the box: its dev users sign in with the password in the
 * data directory, clients without a metadata document register (RFC 7591), and their consent opens
 * a task on the demo resource. Built in-process from the dev configuration (no port is bound).
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { decodeJwt } from 'jose'
import { createApp } from '../src/app.js'
import { argon2Hasher, createBroker } from '../src/broker.js'
import { createFixedClock } from '../src/clock.js'
import { parseConfig } from '../src/config.js'
import { DEV, devConfig, ensureDevMaterial } from '../src/dev/dev-setup.js'
import { devSignIn, pkce, setField, TestBrowser } from './authorize-fixtures.js'
import { recordingLogger, T0 } from './harness.js'

describe('dev mode: any MCP client through the browser', () => {
  it('a client registers, alice signs in with the dev password and consents; the token is for the demo resource', async () => {
    const material = await ensureDevMaterial(mkdtempSync(join(tmpdir(), 'taskpass-dev-')))
    const config = parseConfig({ ...(await devConfig(material, argon2Hasher)), database: ':memory:' })
    const deps = await createBroker({ config, clock: createFixedClock(T0), logger: recordingLogger([]), kek: new Uint8Array(32).fill(7) })
    try {
      const app = createApp(deps)
      const redirect = 'http://127.0.0.1:33600/callback'
      const reg = await app.request('/register', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_name: 'Some desktop client', redirect_uris: [redirect], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' }) })
      assert.equal(reg.status, 201)
      const clientId = ((await reg.json()) as { client_id: string }).client_id
      const { verifier, challenge } = pkce()
      const query = new URLSearchParams({ response_type: 'code', client_id: clientId, redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state: 's', resource: DEV.resource })
      const browser = new TestBrowser((p, i) => app.request(p, i))
      const login = await browser.get(`/authorize?${query}`)
      const signedIn = await browser.submit(await login.text(), '/authorize/login', (f) => setField('password', material.userPassword)(devSignIn('alice')(f)))
      assert.equal(signedIn.status, 303)
      const page = await (await browser.get(signedIn.headers.get('location')!)).text()
      const back = new URL((await browser.submit(page, '/authorize/consent', (f) => [...setField('scope', 'notes:read')(f), ['decision', 'allow']])).headers.get('location')!)
      const res = await app.request('/token', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'authorization_code', code: back.searchParams.get('code')!, code_verifier: verifier, client_id: clientId, redirect_uri: redirect }).toString() })
      assert.equal(res.status, 200)
      const claims = decodeJwt(((await res.json()) as { access_token: string }).access_token)
      assert.equal(claims.aud, DEV.resource)
      assert.equal(claims.sub, 'alice')
      assert.equal(claims.scope, 'notes:read')
      assert.equal((await deps.stores.tasks.get(String(claims.task_id)))!.workloadId, DEV.clientsWorkloadId)
    } finally {
      await deps.database.close()
    }
  })
})
