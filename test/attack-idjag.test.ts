/**
 * Security review by test of the jwt-bearer grant redeeming an ID-JAG
 * (draft-ietf-oauth-identity-assertion-authz-grant). Plain tests: attacks that are refused as they
 * should be. `todo` tests: findings (they fail on the current code).
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { before, describe, it } from 'node:test'
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import type { ConfigInput } from '../src/config.js'
import { idJagTaskId } from '../src/exchange/jwt-bearer.js'
import { assertRefusedAndAudited, assertRefusedUnauthenticated, CALENDAR, counts, form, ISSUER, mint, NOTES, testDialect, USER_ISSUER, withBroker, type TestBroker } from './harness.js'
import { agentA, agentB, CLIENT_JWT, CLIENT_SPIFFE, clientAssertion, clientKey, createClientKeys, enterprise, expectError, ID_JAG_TYP, idJag, JWT_BEARER, ok, redeem, type Params } from './id-jag-fixtures.js'

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')
const jtiOf = (jwt: string) => (JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti

before(async () => {
  await createClientKeys()
})

describe('attack: ID-JAG algorithm and header confusion (refused)', () => {
  it('alg none → 400 invalid_grant, audited', () =>
    withBroker(enterprise, async (b) => {
      const now = b.clock.now()
      const unsigned = `${b64({ alg: 'none', typ: ID_JAG_TYP })}.${b64({ iss: USER_ISSUER, sub: 'alice', aud: ISSUER, client_id: 'agent-a', jti: randomUUID(), iat: now, exp: now + 300, resource: NOTES })}.`
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: unsigned }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /ID-JAG/ })
    }))

  it('HS256 with the IdP’s public key as the secret → 400 invalid_grant', () =>
    withBroker(enterprise, async (b) => {
      const now = b.clock.now()
      const secret = new TextEncoder().encode(JSON.stringify(b.keys.user.publicJwk))
      const forged = await new SignJWT({ sub: 'alice', aud: ISSUER, client_id: 'agent-a', jti: randomUUID(), iat: now, exp: now + 300, resource: NOTES }).setIssuer(USER_ISSUER).setProtectedHeader({ alg: 'HS256', typ: ID_JAG_TYP, kid: b.keys.user.kid }).sign(secret)
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: forged }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /ID-JAG/ })
    }))

  for (const typ of ['oauth-id-jag+jwt ', 'id-jag+jwt', 'oauth-id-jag', 'at+jwt', 'application/jwt', '']) {
    it(`typ ${JSON.stringify(typ)} → 400 invalid_grant`, () =>
      withBroker(enterprise, async (b) => {
        const before = await counts(b)
        await expectError(await redeem(b, { assertion: await idJag(b, {}, { typ }) }), 400, 'invalid_grant')
        await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /is not oauth-id-jag\+jwt/ })
      }))
  }

  it('typ compares case-insensitively (RFC 7515 §4.1.9): OAUTH-ID-JAG+JWT and Application/… are accepted', () =>
    withBroker(enterprise, async (b) => {
      await ok(await redeem(b, { assertion: await idJag(b, {}, { typ: 'OAUTH-ID-JAG+JWT' }) }))
      await ok(await redeem(b, { assertion: await idJag(b, {}, { typ: 'Application/oauth-id-jag+jwt' }) }))
    }))

  for (const extra of [{ jwk: { kty: 'EC' } }, { jku: 'https://attacker.example/jwks' }, { x5u: 'https://attacker.example/cert' }]) {
    it(`header ${Object.keys(extra)[0]} → 400 invalid_grant`, () =>
      withBroker(enterprise, async (b) => {
        const before = await counts(b)
        await expectError(await redeem(b, { assertion: await idJag(b, {}, extra) }), 400, 'invalid_grant')
        await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /not allowed/ })
      }))
  }

  it('aud [us, us] (two members) and aud as a number → 400 invalid_grant', () =>
    withBroker(enterprise, async (b) => {
      for (const aud of [[ISSUER, ISSUER], 5, `${ISSUER}/`]) {
        const before = await counts(b)
        await expectError(await redeem(b, { assertion: await idJag(b, { aud }) }), 400, 'invalid_grant')
        await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /ID-JAG/ })
      }
    }))
})

describe('attack: other tokens presented as an ID-JAG (refused)', () => {
  it('the broker’s own task token as the assertion → 400 invalid_grant (typ)', () =>
    withBroker(enterprise, async (b) => {
      const token = (await ok(await redeem(b))).access_token
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: token }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /typ .* is not oauth-id-jag\+jwt/ })
    }))

  it('an ID-JAG signed by the broker’s own key with iss = the broker → 400 invalid_grant (untrusted issuer)', () =>
    withBroker(enterprise, async (b) => {
      const { kid, alg, privateKey } = await b.deps.keys.current()
      const now = b.clock.now()
      const own = await new SignJWT({ iss: ISSUER, sub: 'alice', aud: ISSUER, client_id: 'agent-a', jti: randomUUID(), iat: now, exp: now + 300, resource: NOTES }).setProtectedHeader({ alg, kid, typ: ID_JAG_TYP }).sign(privateKey)
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: own }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /untrusted issuer http:\/\/127\.0\.0\.1:8787/ })
    }))

  it('the user’s session ID token (typ JWT) as the assertion → 400 invalid_grant', () =>
    withBroker(enterprise, async (b) => {
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: await b.session() }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /typ .* is not oauth-id-jag\+jwt/ })
    }))
})

describe('attack: client authentication and binding (refused)', () => {
  it('an attestation of agent-b with an ID-JAG for agent-a → 400 invalid_grant, audited as agent-b', () =>
    withBroker(enterprise, async (b) => {
      const before = await counts(b)
      await expectError(await redeem(b, { client_assertion_type: CLIENT_SPIFFE, client_assertion: await b.svid('b') }), 400, 'invalid_grant')
      const audit = await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /client_id agent-a is not the authenticated workload agent-b/ })
      assert.equal(audit.workload_id, 'agent-b')
    }))

  it('an ID-JAG but no client authentication, many times: no row is written', () =>
    withBroker(enterprise, async (b) => {
      const before = await counts(b)
      for (let i = 0; i < 5; i++) await expectError(await redeem(b, { client_assertion_type: undefined, client_assertion: undefined }), 400, 'invalid_client')
      await assertRefusedUnauthenticated(b, before, { error: 'invalid_client', reason: /no client authentication/ })
    }))

  it('a client_assertion_type of jwt-bearer carrying agent-b’s attestation → 400 invalid_client', () =>
    withBroker(enterprise, async (b) => {
      const before = await counts(b)
      await expectError(await redeem(b, { client_assertion: await b.svid('b') }), 400, 'invalid_client')
      assert.deepEqual(await counts(b), before)
    }))

  it('cnf.jkt of key K1 with a DPoP proof by key K2 → 400 invalid_grant', () =>
    withBroker(enterprise, async (b) => {
      const k1 = await generateKeyPair('ES256')
      const k2 = await generateKeyPair('ES256')
      const jwk2 = await exportJWK(k2.publicKey)
      const proof = await new SignJWT({ htm: 'POST', htu: `${ISSUER}/token`, iat: b.clock.now(), jti: randomUUID() }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: jwk2 }).sign(k2.privateKey)
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: await idJag(b, { cnf: { jkt: await calculateJwkThumbprint(await exportJWK(k1.publicKey)) } }) }, { dpop: proof }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /cnf\.jkt .*, proof by / })
    }))

  it('an ID-JAG first redeemed with a DPoP proof binds its task: presented again without a proof it is refused', () =>
    withBroker(enterprise, async (b) => {
      const k = await generateKeyPair('ES256')
      const jwk = await exportJWK(k.publicKey)
      const proof = await new SignJWT({ htm: 'POST', htu: `${ISSUER}/token`, iat: b.clock.now(), jti: randomUUID() }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(k.privateKey)
      const jag = await idJag(b)
      assert.equal((await ok(await redeem(b, { assertion: jag }, { dpop: proof }))).token_type, 'DPoP')
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: jag }), 400, 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /DPoP-bound/ })
    }))
})

describe('attack: resource, scope and the ID-JAG’s task', () => {
  it('a task opened for one of the ID-JAG’s resources never mints for another of them (no landing outside the task)', () =>
    withBroker(enterprise, async (b) => {
      const jag = await idJag(b, { resource: [NOTES, CALENDAR], scope: 'notes:read cal:read' })
      await ok(await redeem(b, { assertion: jag, resource: NOTES, scope: 'notes:read' }))
      const before = await counts(b)
      const res = await redeem(b, { assertion: jag, resource: CALENDAR, scope: 'cal:read' })
      assert.equal(res.status, 400, await res.clone().text())
      assert.equal((await counts(b)).tokens, before.tokens)
    }))

  it('a requested scope the ID-JAG does not name, with a tab as separator, is not smuggled', () =>
    withBroker(enterprise, async (b) => {
      const res = await redeem(b, { assertion: await idJag(b, { scope: 'notes:read' }), scope: 'notes:read\tnotes:write' })
      assert.equal(res.status, 400, await res.clone().text())
    }))

  it('the task id depends on the issuer and the jti alone, and separates them', () => {
    assert.notEqual(idJagTaskId(USER_ISSUER, 'x'), idJagTaskId('https://other.example', 'x'))
    assert.match(idJagTaskId(USER_ISSUER, 'x'), /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
  })

  it('a huge ttl is capped by the ID-JAG’s exp', () =>
    withBroker(enterprise, async (b) => {
      const body = await ok(await redeem(b, { ttl: '999999999' }))
      assert.ok(body.expires_in <= 300, String(body.expires_in))
    }))

  it('a repeated "assertion" parameter → 400 invalid_request (RFC 6749 §3.2)', () =>
    withBroker(enterprise, async (b) => {
      const before = await counts(b)
      await expectError(await redeem(b, { assertion: [await idJag(b), await idJag(b, { sub: 'bob' })] }), 400, 'invalid_request')
      assert.deepEqual(await counts(b), before)
    }))

  it('a client assertion replayed (same jti) is refused', () =>
    withBroker(enterprise, async (b) => {
      const assertion = await clientAssertion(b)
      await ok(await redeem(b, { client_assertion: assertion }))
      await expectError(await redeem(b, { client_assertion: assertion }), 400, 'invalid_client')
    }))

  it('an iat ahead within the clock skew does not stretch the task beyond idJag.maxLifetime from now', () =>
    withBroker(enterprise, async (b) => {
      const now = b.clock.now()
      const body = await ok(await redeem(b, { assertion: await idJag(b, { iat: now + 60, exp: now + 360 }) }))
      assert.ok(body.expires_in <= 300, `expires_in ${body.expires_in} > maxLifetime 300`)
    }))
})

describe('attack: malformed ID-JAG claims are 4xx, never 500', () => {
  const variants: Record<string, unknown>[] = [
    { iss: { a: 1 } }, { jti: 5 }, { jti: '' }, { resource: [1] }, { resource: [] }, { resource: 'x'.repeat(5000) }, { scope: 5 }, { cnf: 'x' }, { cnf: { jkt: 5 } }, { cnf: null },
    { sid: 5 }, { sid: '' }, { client_id: 5 }, { sub: null }, { sub: 'x'.repeat(10_000) }, { tenant: {} }, { exp: '100' }, { iat: 'x' }, { exp: null }, { authorization_details: null },
    { auth_time: 'yesterday' }, { resource: [NOTES, NOTES] },
  ]
  for (const v of variants) {
    it(`claims ${JSON.stringify(v).slice(0, 60)} → not 5xx`, () =>
      withBroker(enterprise, async (b) => {
        const res = await redeem(b, { assertion: await idJag(b, v) })
        assert.ok(res.status < 500, `${res.status} ${await res.text()}`)
      }))
  }

  for (const [name, assertion] of [
    ['not a JWT', 'abc'],
    ['three dots of garbage', 'a.b.c'],
    ['a header that is not JSON', `${b64('not json')}.${b64({})}.c2ln`],
    ['a payload that is an array', `${b64({ alg: 'ES256', typ: ID_JAG_TYP })}.${b64([1, 2])}.c2ln`],
    ['a 1 MB assertion', 'a'.repeat(1_000_000)],
  ] as const) {
    it(`${name} → 400 invalid_grant or invalid_request, nothing stored but the audit row`, () =>
      withBroker(enterprise, async (b) => {
        const before = await counts(b)
        const res = await redeem(b, { assertion })
        const text = await res.text()
        assert.ok(res.status === 400 || res.status === 413, `${res.status} ${text}`)
        assert.equal((await counts(b)).tasks, before.tasks)
        assert.equal((await counts(b)).tokens, before.tokens)
      }))
  }

  it('a fractional exp (within maxLifetime) never yields a non-integer expires_in or a 500', () =>
    withBroker(enterprise, async (b) => {
      const now = b.clock.now()
      const res = await redeem(b, { assertion: await idJag(b, { iat: now, exp: now + 299.5 }) })
      const text = await res.text()
      assert.ok(res.status < 500, text)
      if (res.status === 200) {
        const body = JSON.parse(text) as { expires_in: number; task_id: string }
        assert.ok(Number.isInteger(body.expires_in), `expires_in ${body.expires_in}`)
        assert.ok(Number.isInteger((await b.deps.stores.tasks.get(body.task_id))!.expiresAt), 'task expiry is an integer')
      }
    }))

  it('a jti with a NUL in it lands on its own task (SQLite); PostgreSQL, whose text cannot hold U+0000, refuses it 400 invalid_request, audited, nothing else written', () =>
    withBroker(enterprise, async (b) => {
      const jag = await idJag(b, { jti: 'a\u0000b' })
      const before = await counts(b)
      const res = await redeem(b, { assertion: jag })
      if (testDialect === 'postgres') {
        assert.equal(res.status, 400)
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
        // The refusal audited as such; no task, token or feed row.
        assert.deepEqual(await counts(b), { ...before, audit_events: before.audit_events + 1 })
        const audit = (await b.lastAudit())!
        assert.deepEqual([audit.decision, audit.error], ['deny', 'invalid_request'])
        return
      }
      const body = await ok(res)
      assert.equal(body.task_id, idJagTaskId(USER_ISSUER, jtiOf(jag)))
    }))
})
