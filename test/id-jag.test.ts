/**
 * Enterprise-Managed Authorization: `/token` redeems an enterprise IdP's ID-JAG with the RFC 7523
 * `jwt-bearer` grant (draft-ietf-oauth-identity-assertion-authz-grant). The IdP is simulated here:
 * its ID-JAGs are minted with jose by the subject issuer's key. The workload authenticates with
 * `private_key_jwt` (its registered key) or its attestation as the client assertion. Every refusal
 * runs on a fresh broker and asserts status, `error`, the audit row and that nothing else was written.
 */
import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { randomUUID } from 'node:crypto'
import { before, describe, it } from 'node:test'
import { getRequestListener } from '@hono/node-server'
import { createMcpHandler, McpServer as McpServerV2, requireBearerAuth as requireBearerAuthV2 } from '@modelcontextprotocol/server'
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import { z } from 'zod'
import { createTaskTokenVerifier, protectedResourceMetadataResponse, type TaskAuthInfo } from '@taskpass/verifier'
import { toMcpSdkV2Verifier } from '@taskpass/verifier/mcp-sdk-v2'
import { connectWithIdJag } from '../examples/id-jag-client.js'
import type { ConfigInput } from '../src/config.js'
import { ConfigError, parseConfig } from '../src/config.js'
import { idJagTaskId } from '../src/exchange/jwt-bearer.js'
import { ADMIN_KEY, assertRefusedAndAudited, assertRefusedUnauthenticated, counts, form, ISSUER, JWT_TYPE, mint, NOTES, NOTES_SECRET, startTestServer, testConfig, testKeys, TOKEN_EXCHANGE, USER_ISSUER, withBroker, type TestBroker } from './harness.js'
import { agentA, agentB, CLIENT_JWT, CLIENT_SPIFFE, clientAssertion, clientKey, createClientKeys, enterprise, expectError, ID_JAG_TYP, idJag, JWT_BEARER, ok, redeem, type Params } from './id-jag-fixtures.js'

const PARTNER_IDP = 'https://partner-idp.test.example'

/** The public key of the partner IdP (a configured subject issuer in one row, unknown in the others). */
let partnerKey: JWK

function verifierFor(b: TestBroker) {
  return createTaskTokenVerifier({
    issuer: ISSUER,
    resource: NOTES,
    dpop: 'allowed',
    clock: b.clock,
    revocation: { mode: 'introspection', introspectionUrl: `${ISSUER}/introspect`, credentials: { clientId: 'notes-mcp', clientSecret: NOTES_SECRET } },
    // In process: the broker's JWKS and introspection answered by its app.
    fetch: ((url: string | URL | Request, init?: RequestInit) => Promise.resolve(b.app.request(String(url instanceof Request ? url.url : url), init))) as typeof fetch,
  })
}

before(async () => {
  await createClientKeys()
  partnerKey = (await testKeys()).untrustedUser.publicJwk
})

describe('jwt-bearer grant with an ID-JAG: success', () => {
  it('mints an ordinary task token for the ID-JAG’s implicit task; the token verifies with taskpass/verifier', () =>
    withBroker(enterprise, async (b) => {
      const jag = await idJag(b, { sid: 'sess-9' })
      const body = await ok(await redeem(b, { assertion: jag }))
      assert.equal(body.token_type, 'Bearer')
      assert.equal(body.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token')
      assert.equal(body.scope, 'notes:read notes:write')
      assert.equal(body.expires_in, 300)
      assert.equal(body.task_id, idJagTaskId(USER_ISSUER, JSON.parse(Buffer.from(jag.split('.')[1]!, 'base64url').toString()).jti))
      assert.equal(Object.hasOwn(body, 'refresh_token'), false, 'no refresh token (ID-JAG §4.3)')

      const task = (await b.deps.stores.tasks.get(body.task_id))!
      assert.equal(task.status, 'active')
      assert.equal(task.userSub, 'alice')
      assert.equal(task.subjectIssuer, USER_ISSUER)
      assert.equal(task.workloadId, 'agent-a')
      assert.equal(task.sid, 'sess-9')
      assert.equal(task.expiresAt, b.clock.now() + 300, 'the task lives as long as its ID-JAG')
      const audit = (await b.lastAudit())!
      assert.equal(audit.action, 'token.exchange')
      assert.equal(audit.decision, 'allow')
      assert.match(String(audit.reason), /implicit task; ID-JAG https:\/\/idp\.test\.example jti /)

      const verifier = verifierFor(b)
      try {
        const auth: TaskAuthInfo = await verifier.verifyAccessToken(body.access_token)
        assert.equal(auth.extra.sub, 'alice')
        assert.equal(auth.extra.task_id, body.task_id)
        assert.equal(auth.extra.act.sub, 'agent-a')
        assert.equal(auth.clientId, 'agent-a')
        assert.deepEqual(auth.scopes, ['notes:read', 'notes:write'])
      } finally {
        await verifier.close()
      }
    }))

  it('presented again (jti is not single use, per the draft) it continues the same task; once the task completes, the ID-JAG is spent', () =>
    withBroker(enterprise, async (b) => {
      const jag = await idJag(b)
      const first = await ok(await redeem(b, { assertion: jag }))
      b.clock.advance(30)
      const second = await ok(await redeem(b, { assertion: jag }))
      assert.equal(second.task_id, first.task_id)
      assert.notEqual(second.access_token, first.access_token)
      assert.equal(second.expires_in, 270, 'never outlives the ID-JAG')
      assert.equal(await b.count('tasks'), 1)

      const done = await b.app.request(`/tasks/${first.task_id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
      assert.equal(done.status, 200, await done.clone().text())
      assert.equal(((await done.json()) as { tokens_revoked: number }).tokens_revoked, 2)
      const verifier = verifierFor(b)
      try {
        await assert.rejects(verifier.verifyAccessToken(second.access_token), /revoked|not active|invalid/i)
      } finally {
        await verifier.close()
      }

      const before = await counts(b)
      await expectError(await redeem(b, { assertion: jag }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /task .* is completed/ })
    }))

  it('its task is revoked by the user like any other, and the ID-JAG with it', () =>
    withBroker(enterprise, async (b) => {
      const jag = await idJag(b)
      const body = await ok(await redeem(b, { assertion: jag }))
      const res = await b.app.request(`/tasks/${body.task_id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${await b.session()}` } })
      assert.equal(res.status, 200, await res.clone().text())
      const intro = await b.post('/introspect', { token: body.access_token }, { authorization: `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}` })
      assert.deepEqual(await intro.json(), { active: false })
      assert.equal(await b.count('revocation_events'), 1)
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: jag }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /task .* is revoked/ })
    }))

  it('two concurrent first redemptions of one ID-JAG open one task: the other is told to retry (503), never a 500', () =>
    withBroker(enterprise, async (b) => {
      const jag = await idJag(b)
      const answers = await Promise.all([redeem(b, { assertion: jag }), redeem(b, { assertion: jag })])
      const bodies = await Promise.all(answers.map((r) => r.text()))
      const statuses = answers.map((r) => r.status).sort()
      assert.ok(statuses[0] === 200 && (statuses[1] === 200 || statuses[1] === 503), `statuses ${statuses.join(', ')}: ${bodies.join(' ')}`)
      const busy = answers.findIndex((r) => r.status === 503)
      if (busy >= 0) {
        assert.equal(answers[busy]!.headers.get('retry-after'), '1')
        assert.equal((JSON.parse(bodies[busy]!) as { error: string }).error, 'temporarily_unavailable')
      }
      assert.equal(await b.count('tasks'), 1)
      const again = await ok(await redeem(b, { assertion: jag }))
      assert.equal(again.task_id, idJagTaskId(USER_ISSUER, JSON.parse(Buffer.from(jag.split('.')[1]!, 'base64url').toString()).jti))
    }))

  it('a resource that requires approval: the ID-JAG’s task waits (stored, audited), and the same ID-JAG mints once it is approved', () =>
    withBroker(
      (c) => {
        const e = enterprise(c)
        return { ...e, resources: e.resources!.map((r) => (r.uri === NOTES ? { ...r, requireApproval: true } : r)) }
      },
      async (b) => {
        const jag = await idJag(b)
        const before = await counts(b)
        await expectError(await redeem(b, { assertion: jag }), 400, 'invalid_grant')
        const taskId = idJagTaskId(USER_ISSUER, JSON.parse(Buffer.from(jag.split('.')[1]!, 'base64url').toString()).jti)
        assert.equal((await b.deps.stores.tasks.get(taskId))!.status, 'pending_approval')
        assert.equal(await b.count('tasks'), before.tasks + 1)
        assert.equal(await b.count('tokens'), before.tokens)
        await expectError(await redeem(b, { assertion: jag }), 400, 'invalid_grant')
        const approved = await b.app.request(`/admin/tasks/${taskId}/approve`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
        assert.equal(approved.status, 200, await approved.clone().text())
        assert.equal((await ok(await redeem(b, { assertion: jag }))).task_id, taskId)
      },
    ))

  it('the workload may authenticate with its attestation as the client assertion (jwt-spiffe)', () =>
    withBroker(enterprise, async (b) => {
      const body = await ok(await redeem(b, { client_assertion_type: CLIENT_SPIFFE, client_assertion: await b.svid('a') }))
      const row = (await b.rawQuery('select attestation from tokens'))[0] as { attestation: string }
      assert.equal(JSON.parse(row.attestation).kind, 'spiffe')
      assert.ok(body.task_id)
    }))

  it('without scope, grants what the ID-JAG grants that the workload may hold, and says so', () =>
    withBroker(enterprise, async (b) => {
      const body = await ok(await redeem(b, { assertion: await idJag(b, { scope: 'notes:read notes:delete' }) }))
      assert.equal(body.scope, 'notes:read')
    }))

  it('a resource the ID-JAG names among several is chosen with "resource"', () =>
    withBroker(enterprise, async (b) => {
      const calendar = 'https://calendar.test.example/mcp'
      const jag = await idJag(b, { resource: [calendar, NOTES], scope: 'notes:read cal:read' })
      const body = await ok(await redeem(b, { assertion: jag, resource: NOTES, scope: 'notes:read' }))
      assert.equal(body.scope, 'notes:read')
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: await idJag(b, { resource: [calendar, NOTES] }) }), 400, 'invalid_target')
      await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /ID-JAG grants .*calendar.*notes/ })
    }))

  it('a DPoP-bound ID-JAG (cnf.jkt) mints a DPoP-bound token with a proof by that key', () =>
    withBroker(enterprise, async (b) => {
      const { publicKey, privateKey } = await generateKeyPair('ES256')
      const jwk = await exportJWK(publicKey)
      const jkt = await calculateJwkThumbprint(jwk)
      const proof = () => new SignJWT({ htm: 'POST', htu: `${ISSUER}/token`, iat: b.clock.now(), jti: randomUUID() }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(privateKey)
      const jag = await idJag(b, { cnf: { jkt } })
      const body = await ok(await redeem(b, { assertion: jag }, { dpop: await proof() }))
      assert.equal(body.token_type, 'DPoP')
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: await idJag(b, { cnf: { jkt } }) }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /cnf\.jkt .* and no DPoP proof/ })
    }))
})

interface Row {
  name: string
  status?: number
  error: string
  reason: RegExp
  /** The refused request's parameters (on top of a valid redemption by agent-a). */
  fault: (b: TestBroker) => Promise<Params>
  /** Something done first (e.g. the ID-JAG's first redemption). */
  arrange?: (b: TestBroker) => Promise<void>
  config?: (c: ConfigInput) => ConfigInput
}

const sharedJti = 'jti-shared-0001'
const rows: Row[] = [
  {
    name: 'untrusted issuer (an IdP the broker does not know)',
    error: 'invalid_grant',
    reason: /^ID-JAG: untrusted issuer https:\/\/partner-idp/,
    fault: async (b) => ({ assertion: await idJag(b, { iss: PARTNER_IDP }, {}, b.keys.untrustedUser) }),
  },
  {
    name: 'untrusted issuer (a subject issuer not configured for ID-JAGs)',
    error: 'invalid_grant',
    reason: /^ID-JAG: untrusted issuer https:\/\/partner-idp/,
    config: (c) => {
      const e = enterprise(c)
      return { ...e, subjectIssuers: [{ ...e.subjectIssuers![0]!, subjectPrefix: 'corp:' }, { issuer: PARTNER_IDP, subjectPrefix: 'partner:', jwks: { keys: [partnerKey as Record<string, unknown>] } }] }
    },
    fault: async (b) => ({ assertion: await idJag(b, { iss: PARTNER_IDP }, {}, b.keys.untrustedUser) }),
  },
  {
    name: 'wrong typ (an ID token of the same IdP, typ JWT)',
    error: 'invalid_grant',
    reason: /typ "JWT" is not oauth-id-jag\+jwt/,
    fault: async (b) => ({ assertion: await idJag(b, {}, { typ: 'JWT' }) }),
  },
  {
    name: 'wrong typ (none)',
    error: 'invalid_grant',
    reason: /typ undefined is not oauth-id-jag\+jwt/,
    fault: async (b) => ({ assertion: await idJag(b, {}, { typ: undefined }) }),
  },
  {
    name: 'signed by another key than the IdP’s',
    error: 'invalid_grant',
    reason: /signature verification failed/,
    fault: async (b) => ({ assertion: await idJag(b, {}, {}, b.keys.untrustedUser) }),
  },
  {
    name: 'aud is another authorization server',
    error: 'invalid_grant',
    reason: /aud "https:\/\/other-as\.example" is not http:\/\/127\.0\.0\.1:8787 as the sole value/,
    fault: async (b) => ({ assertion: await idJag(b, { aud: 'https://other-as.example' }) }),
  },
  {
    name: 'aud names us and another authorization server',
    error: 'invalid_grant',
    reason: /aud \[.*other-as.*\] is not .* as the sole value/,
    fault: async (b) => ({ assertion: await idJag(b, { aud: [ISSUER, 'https://other-as.example'] }) }),
  },
  {
    name: 'client_id is not the authenticated client',
    error: 'invalid_grant',
    reason: /ID-JAG client_id agent-b is not the authenticated workload agent-a/,
    fault: async (b) => ({ assertion: await idJag(b, { client_id: 'agent-b' }) }),
  },
  {
    name: 'replayed jti: the same jti redeemed before by another client',
    error: 'invalid_grant',
    reason: /ID-JAG jti jti-shared-0001: task .* belongs to workload agent-a/,
    arrange: async (b) => void (await ok(await redeem(b, { assertion: await idJag(b, { jti: sharedJti }) }))),
    fault: async (b) => ({ assertion: await idJag(b, { jti: sharedJti, client_id: 'agent-b' }), client_assertion: await clientAssertion(b, 'agent-b', agentB) }),
  },
  {
    name: 'replayed jti: the same jti redeemed before for another user',
    error: 'invalid_grant',
    reason: /ID-JAG jti jti-shared-0001: task .* belongs to another user/,
    arrange: async (b) => void (await ok(await redeem(b, { assertion: await idJag(b, { jti: sharedJti }) }))),
    fault: async (b) => ({ assertion: await idJag(b, { jti: sharedJti, sub: 'bob' }) }),
  },
  {
    name: 'expired (61 s past exp, skew 60 s)',
    error: 'invalid_grant',
    reason: /^ID-JAG: expired: "exp" claim timestamp check failed/,
    fault: async (b) => ({ assertion: await idJag(b, { iat: b.clock.now() - 200, exp: b.clock.now() - 61 }) }),
  },
  {
    name: 'expired within the clock skew: no life left to lend',
    error: 'invalid_grant',
    reason: /expired 1s ago \(within clock skew\)/,
    fault: async (b) => ({ assertion: await idJag(b, { iat: b.clock.now() - 200, exp: b.clock.now() - 1 }) }),
  },
  {
    name: 'lifetime beyond idJag.maxLifetime (301 s > 300 s)',
    error: 'invalid_grant',
    reason: /lifetime 301s > 300s/,
    fault: async (b) => ({ assertion: await idJag(b, { exp: b.clock.now() + 301 }) }),
  },
  {
    name: 'iat in the future',
    error: 'invalid_grant',
    reason: /iat in the future/,
    fault: async (b) => ({ assertion: await idJag(b, { iat: b.clock.now() + 120, exp: b.clock.now() + 300 }) }),
  },
  {
    name: 'a tenant the broker does not trust',
    error: 'invalid_grant',
    reason: /tenant "acme" is not \(none configured\)/,
    fault: async (b) => ({ assertion: await idJag(b, { tenant: 'acme' }) }),
  },
  {
    name: 'resource not ours',
    error: 'invalid_target',
    reason: /unknown resource https:\/\/elsewhere\.example\/mcp/,
    fault: async (b) => ({ assertion: await idJag(b, { resource: 'https://elsewhere.example/mcp' }) }),
  },
  {
    name: 'the request’s resource is not the ID-JAG’s',
    error: 'invalid_target',
    reason: /requested https:\/\/calendar\.test\.example\/mcp, ID-JAG grants https:\/\/notes/,
    fault: async () => ({ resource: 'https://calendar.test.example/mcp' }),
  },
  {
    name: 'no resource in the ID-JAG',
    error: 'invalid_grant',
    reason: /resource undefined is not one to 16 URIs/,
    fault: async (b) => ({ assertion: await idJag(b, { resource: null }), resource: NOTES }),
  },
  {
    name: 'scope beyond the ID-JAG',
    error: 'invalid_scope',
    reason: /beyond the ID-JAG: notes:write/,
    fault: async (b) => ({ assertion: await idJag(b, { scope: 'notes:read' }), scope: 'notes:read notes:write' }),
  },
  {
    name: 'scope beyond what policy grants the workload (the ID-JAG grants it)',
    error: 'invalid_scope',
    reason: /notes:delete/,
    fault: async (b) => ({ assertion: await idJag(b, { scope: 'notes:read notes:delete' }), scope: 'notes:delete' }),
  },
  {
    name: 'no scope the workload may hold among the ID-JAG’s',
    error: 'invalid_scope',
    reason: /grants notes:delete, none of which agent-a may hold/,
    fault: async (b) => ({ assertion: await idJag(b, { scope: 'notes:delete' }) }),
  },
  {
    name: 'a revoked session (the ID-JAG’s sid)',
    error: 'invalid_grant',
    reason: /session sess-1 revoked/,
    arrange: async (b) => void await b.deps.stores.sessions.revoke(USER_ISSUER, 'sess-1', b.clock.now(), b.clock.now() + 86400),
    fault: async (b) => ({ assertion: await idJag(b, { sid: 'sess-1' }) }),
  },
  {
    name: 'authorization_details in the ID-JAG (not enforced, so refused)',
    error: 'invalid_grant',
    reason: /carries authorization_details/,
    fault: async (b) => ({ assertion: await idJag(b, { authorization_details: [{ type: 'mcp_tools', tools: ['read_note'] }] }) }),
  },
]

describe('jwt-bearer grant with an ID-JAG: refusals (audited, nothing else written)', () => {
  for (const row of rows) {
    it(`${row.name} → ${row.status ?? 400} ${row.error}`, () =>
      withBroker(row.config ?? enterprise, async (b) => {
        await row.arrange?.(b)
        const before = await counts(b)
        await expectError(await redeem(b, await row.fault(b)), row.status ?? 400, row.error)
        const audit = await assertRefusedAndAudited(b, before, { error: row.error, reason: row.reason })
        assert.equal(audit.workload_id, row.name.includes('another client') ? 'agent-b' : 'agent-a')
      }))
  }

  it('control: each fault’s valid twin is accepted', () =>
    withBroker(enterprise, async (b) => {
      await ok(await redeem(b, { assertion: await idJag(b, {}, { typ: 'application/oauth-id-jag+jwt' }) }))
      await ok(await redeem(b, { assertion: await idJag(b, { aud: [ISSUER] }) }))
      await ok(await redeem(b, { assertion: await idJag(b, { iat: b.clock.now() - 240, exp: b.clock.now() + 1 }) }))
      await ok(await redeem(b, { assertion: await idJag(b, { exp: b.clock.now() + 300 }), resource: NOTES, scope: 'notes:read' }))
    }))
})

describe('jwt-bearer grant: the client must authenticate (refused before: counted, never stored)', () => {
  const cases: { name: string; params: (b: TestBroker) => Promise<Params>; headers?: Record<string, string>; reason: RegExp }[] = [
    { name: 'no client authentication', params: async () => ({ client_assertion_type: undefined, client_assertion: undefined }), reason: /no client authentication/ },
    { name: 'HTTP Basic (workloads have no secrets)', params: async () => ({ client_assertion_type: undefined, client_assertion: undefined }), headers: { authorization: `Basic ${Buffer.from('agent-a:secret').toString('base64')}` }, reason: /HTTP authentication/ },
    { name: 'a client assertion of agent-a signed by agent-b’s key', params: async (b) => ({ client_assertion: await clientAssertion(b, 'agent-a', agentB) }), reason: /no applicable key/ },
    { name: 'client_id names another client than the assertion', params: async () => ({ client_id: 'agent-b' }), reason: /assertion for agent-a, request for agent-b/ },
  ]
  for (const c of cases) {
    it(`${c.name} → 400 invalid_client`, () =>
      withBroker(enterprise, async (b) => {
        const before = await counts(b)
        const res = await redeem(b, await c.params(b), c.headers)
        await expectError(res, 400, 'invalid_client')
        await assertRefusedUnauthenticated(b, before, { error: 'invalid_client', reason: c.reason })
      }))
  }

  it('a missing assertion → 400 invalid_request before anything else', () =>
    withBroker(enterprise, async (b) => {
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: undefined }), 400, 'invalid_request')
      assert.deepEqual(await counts(b), before)
    }))
})

describe('jwt-bearer grant: configuration and metadata', () => {
  it('metadata advertises the grant and the ID-JAG profile only when an IdP redeems ID-JAGs', async () => {
    await withBroker(enterprise, async (b) => {
      const meta = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
      assert.deepEqual(meta.grant_types_supported, [TOKEN_EXCHANGE, JWT_BEARER])
      assert.deepEqual(meta.authorization_grant_profiles_supported, ['urn:ietf:params:oauth:grant-profile:id-jag'])
      assert.equal(JSON.stringify(meta).includes(USER_ISSUER), false, 'which IdPs are trusted is not said')
    })
    await withBroker(undefined, async (b) => {
      const meta = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
      assert.deepEqual(meta.grant_types_supported, [TOKEN_EXCHANGE])
      assert.equal(meta.authorization_grant_profiles_supported, undefined)
      const before = await counts(b)
      await expectError(await b.post('/token', form({ grant_type: JWT_BEARER, assertion: await idJag(b) })), 400, 'unsupported_grant_type')
      assert.deepEqual(await counts(b), before)
    })
  })

  it('an ID-JAG never passes as a session token at the token-exchange grant', () =>
    withBroker(enterprise, async (b) => {
      const before = await counts(b)
      const res = await b.exchange({ subject_token: await idJag(b), subject_token_type: JWT_TYPE })
      await expectError(res, 400, 'invalid_request')
      await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /typ "oauth-id-jag\+jwt" not accepted/ })
    }))

  it('config: oauth-id-jag+jwt is never a session typ; the broker never redeems its own ID-JAGs', async () => {
    const keys = await testKeys()
    const base = testConfig(keys)
    assert.throws(() => parseConfig({ ...base, subjectIssuers: [{ ...base.subjectIssuers![0]!, typ: ['JWT', 'application/oauth-id-jag+jwt'] }] }), (e: unknown) => e instanceof ConfigError && /subjectIssuers\.0\.typ: oauth-id-jag\+jwt is the ID-JAG type/.test(e.message))
    assert.throws(() => parseConfig({ ...base, subjectIssuers: [{ ...base.subjectIssuers![0]!, issuer: ISSUER, idJag: {} }] }), (e: unknown) => e instanceof ConfigError && /subjectIssuers\.0\.idJag: the broker never redeems an ID-JAG it issued itself/.test(e.message))
    assert.equal(parseConfig({ ...base, subjectIssuers: [{ ...base.subjectIssuers![0]!, idJag: {} }] }).subjectIssuers[0]!.idJag!.maxLifetime, 300)
  })
})

describe('the official MCP SDK v2 client: CrossAppAccessProvider', () => {
  it('discovers the broker from the MCP server, redeems the IdP’s ID-JAG with private_key_jwt, and calls a tool', async () => {
    let listener: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => void res.writeHead(503).end()
    const http: HttpServer = createServer((req, res) => listener(req, res))
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()))
    const mcpUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`
    const s = await startTestServer({
      config: (c) => {
        const e = enterprise(c)
        return { ...e, resources: [...e.resources!, { uri: mcpUrl, scopes: ['notes:read'] }], workloads: e.workloads!.map((w) => (w.id === 'agent-a' ? { ...w, grants: [...(w.grants ?? []), { resource: mcpUrl, scopes: ['notes:read'] }] } : w)) }
      },
    })
    const verifier = createTaskTokenVerifier({ issuer: s.url, resource: mcpUrl, requiredScopes: ['notes:read'], dpop: 'allowed', revocation: { mode: 'none' } })
    try {
      const gate = requireBearerAuthV2({ verifier: toMcpSdkV2Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
      const metadata = verifier.metadata({ resourceName: 'Notes', scopesSupported: ['notes:read'] })
      const handler = createMcpHandler(() => {
        const server = new McpServerV2({ name: 'notes', version: '2.0.0' })
        server.registerTool('whoami', { inputSchema: z.object({}) }, async (_args, ctx) => {
          const auth = ctx.http?.authInfo as TaskAuthInfo | undefined
          return { content: [{ type: 'text' as const, text: `user=${auth?.extra.sub} agent=${auth?.extra.act.sub} task=${auth?.extra.task_id}` }] }
        })
        return server
      })
      listener = getRequestListener(async (request: Request) => {
        const doc = protectedResourceMetadataResponse(request, metadata)
        if (doc) return doc
        const auth = await gate(request)
        if (auth instanceof Response) return auth
        return handler.fetch(request, { authInfo: auth })
      })

      // The IdP side of the flow (its RFC 8693 exchange) is simulated: the callback returns the ID-JAG it would issue.
      const seen: { authorizationServerUrl: string; resourceUrl: string }[] = []
      // examples/id-jag-client.ts, as the docs show it; only the IdP's answer is the test's.
      const client = await connectWithIdJag({
        mcpUrl,
        broker: s.url,
        workload: 'agent-a',
        privateJwk: agentA.privateJwk as Record<string, unknown>,
        assertion: async (ctx) => {
          seen.push({ authorizationServerUrl: String(ctx.authorizationServerUrl), resourceUrl: String(ctx.resourceUrl) })
          const now = Math.floor(Date.now() / 1000)
          return mint(s.keys.user, { iss: USER_ISSUER, sub: 'alice', aud: String(ctx.authorizationServerUrl), client_id: 'agent-a', jti: randomUUID(), iat: now, exp: now + 300, resource: String(ctx.resourceUrl), scope: ctx.scope }, { typ: ID_JAG_TYP })
        },
      })
      try {
        const result = (await client.callTool({ name: 'whoami', arguments: {} })) as { content: { text: string }[] }
        assert.match(result.content[0]!.text, /^user=alice agent=agent-a task=[0-9a-f-]{36}$/)
        assert.deepEqual(seen, [{ authorizationServerUrl: s.url, resourceUrl: mcpUrl }])
        const allow = (await s.lastAudit())!
        assert.equal(allow.decision, 'allow')
        assert.match(String(allow.reason), /ID-JAG/)
      } finally {
        await client.close()
      }
    } finally {
      await verifier.close()
      http.closeAllConnections()
      await new Promise<void>((r) => http.close(() => r()))
      await s.stop()
    }
  })
})
