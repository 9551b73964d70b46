/**
 * Interop: third-party OAuth code (oauth4webapi v3, jose) against a broker on a real
 * 127.0.0.1 port. The broker's issuer is its URL, so RFC 8414 discovery can check it.
 * oauth4webapi refuses http:// unless told otherwise: `allowInsecureRequests` is set because
 * the broker listens on loopback only.
 */
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import * as oauth from 'oauth4webapi'
import { CALENDAR, JWT_TYPE, NOTES, NOTES_SECRET, startTestServer, TOKEN_EXCHANGE, type TestBroker } from './harness.js'

type Server = TestBroker & { url: string; stop(): Promise<void> }

const insecure = { [oauth.allowInsecureRequests]: true } as const
const agentA: oauth.Client = { client_id: 'agent-a' }
const notesMcp: oauth.Client = { client_id: 'notes-mcp' }

async function discover(s: Server): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(s.url)
  const res = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure })
  return oauth.processDiscoveryResponse(issuer, res)
}

async function exchangeParams(s: Server, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    subject_token: await s.session(),
    subject_token_type: JWT_TYPE,
    actor_token: await s.svid('a'),
    actor_token_type: JWT_TYPE,
    resource: NOTES,
    scope: 'notes:read',
    ...extra,
  }
}

async function exchange(s: Server, as: oauth.AuthorizationServer, client: oauth.Client, params: Record<string, string>) {
  const res = await oauth.genericTokenEndpointRequest(as, client, oauth.None(), TOKEN_EXCHANGE, params, insecure)
  return oauth.processGenericTokenEndpointResponse(as, client, res)
}

async function introspect(as: oauth.AuthorizationServer, token: string) {
  const res = await oauth.introspectionRequest(as, notesMcp, oauth.ClientSecretBasic(NOTES_SECRET), token, insecure)
  return oauth.processIntrospectionResponse(as, notesMcp, res)
}

/** Awaits a rejection and returns it; fails if the promise resolves. */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (e) {
    return e
  }
  assert.fail('expected a rejection')
}

async function expectResponseBodyError(p: Promise<unknown>, error: string, status: number): Promise<oauth.ResponseBodyError> {
  const caught = await rejection(p)
  assert.ok(caught instanceof oauth.ResponseBodyError, `expected a ResponseBodyError, got ${String(caught)}`)
  assert.equal(caught.error, error)
  assert.equal(caught.status, status)
  return caught
}

/**
 * A 401 carrying `WWW-Authenticate` surfaces in oauth4webapi as a WWWAuthenticateChallengeError
 * (body unread) rather than a ResponseBodyError; RFC 6749 §5.2 requires that header whenever the
 * client used the Authorization header. Returns the challenges and the OAuth error body.
 */
async function expectChallenge(p: Promise<unknown>, error: string): Promise<{ challenges: oauth.WWWAuthenticateChallenge[]; body: Record<string, unknown> }> {
  const caught = await rejection(p)
  assert.ok(caught instanceof oauth.WWWAuthenticateChallengeError, `expected a WWWAuthenticateChallengeError, got ${String(caught)}`)
  assert.equal(caught.status, 401)
  const body = (await caught.response.json()) as Record<string, unknown>
  assert.equal(body.error, error)
  return { challenges: caught.cause, body }
}

describe('interop with oauth4webapi and jose over a real port', () => {
  let s: Server
  beforeEach(async () => { s = await startTestServer() })
  afterEach(async () => { await s.stop() })

  it('RFC 8414 discovery: issuer equals the URL, endpoints and the token-exchange grant are advertised', async () => {
    const as = await discover(s)
    assert.equal(as.issuer, s.url)
    assert.equal(as.token_endpoint, `${s.url}/token`)
    assert.equal(as.jwks_uri, `${s.url}/.well-known/jwks.json`)
    assert.equal(as.introspection_endpoint, `${s.url}/introspect`)
    assert.equal(as.revocation_endpoint, `${s.url}/revoke`)
    assert.ok(as.grant_types_supported?.includes(TOKEN_EXCHANGE))
  })

  it('discovery refuses an issuer that does not match (the check is real)', async () => {
    const res = await oauth.discoveryRequest(new URL(s.url), { algorithm: 'oauth2', ...insecure })
    const other = new URL(s.url.replace('127.0.0.1', 'localhost'))
    await assert.rejects(oauth.processDiscoveryResponse(other, res), (e: unknown) => e instanceof oauth.OperationProcessingError)
  })

  it('token exchange → jose and oauth4webapi verify the token → introspect active → revoke → introspect inactive', async () => {
    const as = await discover(s)
    // An hour-long attestation: a token never outlives its actor token, and this test reads real time.
    const tokens = await exchange(s, as, agentA, await exchangeParams(s, { actor_token: await s.svid('a', { exp: Math.floor(Date.now() / 1000) + 3600 }) }))
    assert.equal(tokens.token_type, 'bearer') // oauth4webapi lowercases token_type
    assert.equal(tokens.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token')
    assert.equal(tokens.scope, 'notes:read')
    assert.equal(tokens.expires_in, 300)
    assert.equal(tokens.refresh_token, undefined)
    assert.equal(typeof tokens.task_id, 'string')
    const token = tokens.access_token

    // A resource server with jose: keys from the broker's JWKS, RFC 9068 §4 checks.
    const jwks = createRemoteJWKSet(new URL(`${s.url}/.well-known/jwks.json`))
    const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer: s.url, audience: NOTES, typ: 'at+jwt', algorithms: ['ES256'] })
    assert.equal(protectedHeader.typ, 'at+jwt')
    assert.equal(payload.sub, 'alice')
    assert.equal(payload.client_id, 'agent-a')
    assert.deepEqual(payload.act, { sub: 'agent-a' })
    assert.equal(payload.task_id, tokens.task_id)
    // …and the same verifier refuses it for another audience.
    await assert.rejects(jwtVerify(token, jwks, { issuer: s.url, audience: CALENDAR, typ: 'at+jwt' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' })

    // A resource server with oauth4webapi (RFC 6750 header + RFC 9068 profile).
    const request = new Request('https://notes.test.example/mcp', { headers: { authorization: `Bearer ${token}` } })
    const claims = await oauth.validateJwtAccessToken(as, request, NOTES, insecure)
    assert.equal(claims.iss, s.url)
    assert.equal(claims.aud, NOTES)
    assert.equal(claims.client_id, 'agent-a')
    assert.equal(claims.scope, 'notes:read')
    assert.equal(decodeProtectedHeader(token).kid, (await s.deps.keys.current()).kid)
    await assert.rejects(
      oauth.validateJwtAccessToken(as, new Request('https://calendar.test.example/mcp', { headers: { authorization: `Bearer ${token}` } }), CALENDAR, insecure),
      (e: unknown) => e instanceof oauth.OperationProcessingError,
    )

    const before = await introspect(as, token)
    assert.equal(before.active, true)
    assert.equal(before.client_id, 'agent-a')
    assert.equal(before.aud, NOTES)
    assert.equal(before.task_id, tokens.task_id)

    const revoked = await oauth.revocationRequest(as, notesMcp, oauth.ClientSecretBasic(NOTES_SECRET), token, insecure)
    assert.equal(await oauth.processRevocationResponse(revoked), undefined)

    const after = await introspect(as, token)
    assert.deepEqual({ ...after }, { active: false })
    assert.equal(await s.count('revocation_events'), 1)
  })

  it('revocation with a wrong resource secret surfaces as invalid_client and revokes nothing', async () => {
    const as = await discover(s)
    const { access_token } = await exchange(s, as, agentA, await exchangeParams(s))
    const res = await oauth.revocationRequest(as, notesMcp, oauth.ClientSecretBasic('not-the-secret'), access_token, insecure)
    const { challenges } = await expectChallenge(oauth.processRevocationResponse(res), 'invalid_client')
    assert.equal(challenges[0]?.scheme, 'basic')
    assert.equal((await introspect(as, access_token)).active, true)
  })

  it('an exchange for a completed task surfaces as ResponseBodyError invalid_grant', async () => {
    const as = await discover(s)
    const first = await exchange(s, as, agentA, await exchangeParams(s))
    const taskId = first.task_id as string
    const done = await fetch(`${s.url}/tasks/${taskId}/complete`, { method: 'POST', headers: { 'actor-token': await s.svid('a') } })
    assert.equal(done.status, 200)

    const tokensBefore = await s.count('tokens')
    const res = await oauth.genericTokenEndpointRequest(as, agentA, oauth.None(), TOKEN_EXCHANGE, await exchangeParams(s, { task_id: taskId }), insecure)
    const err = await expectResponseBodyError(oauth.processGenericTokenEndpointResponse(as, agentA, res), 'invalid_grant', 400)
    assert.equal(err.response.headers.get('cache-control'), 'no-store')
    assert.equal(await s.count('tokens'), tokensBefore)
  })

  it('a client_id naming another workload is refused with invalid_client (no hint which or why)', async () => {
    const as = await discover(s)
    const tokensBefore = await s.count('tokens')
    const agentB: oauth.Client = { client_id: 'agent-b' }
    const res = await oauth.genericTokenEndpointRequest(as, agentB, oauth.None(), TOKEN_EXCHANGE, await exchangeParams(s), insecure)
    // No HTTP authentication was used, so a plain 400 (RFC 6749 §5.2) that oauth4webapi reads as a
    // ResponseBodyError; the description names no one.
    const caught = await expectResponseBodyError(oauth.processGenericTokenEndpointResponse(as, agentB, res), 'invalid_client', 400)
    assert.doesNotMatch(JSON.stringify(caught.cause), /agent-/)
    assert.equal(await s.count('tokens'), tokensBefore)
    // Not the caller it claims to be: nothing stored, the reason is in the server log.
    assert.match(String([...s.logs].reverse().find((l) => l.msg === 'request refused')?.fields.detail), /client_id agent-b/)
  })
})
