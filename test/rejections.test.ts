/**
 * POST /token rejection matrix, over HTTP. Every row starts from a request that succeeds (its
 * control test proves it, on a fresh broker with the same setup), injects one fault, and asserts
 * the exact status and `error` code (DESIGN.md "Token exchange rules"), `Cache-Control: no-store`,
 * that nothing was issued or opened (no new `tokens`, `tasks` or `revocation_events` row) and that
 * the refusal was audited: one new `deny` row with the same `error` — or, for requests refused
 * before the exchange grant runs (grant_type), no audit row at all.
 */
import assert from 'node:assert/strict'
import { createPublicKey } from 'node:crypto'
import { describe, it } from 'node:test'
import { decodeJwt, SignJWT, type JWK } from 'jose'
import type { ConfigInput } from '../src/config.js'
import { ACCESS_TOKEN_TYPE, assertRefusedAndAudited, assertRefusedUnauthenticated, CALENDAR, counts, createTestBroker, JWT_TYPE, NOTES, openTask, spiffeId, UNGRANTED, USER_ISSUER, withBroker, type TestBroker } from './harness.js'

type Params = Record<string, string | string[] | undefined>

interface Row {
  name: string
  status: number
  error: string
  /** What the audit row's (private) reason must say: proves the intended check fired. */
  reason?: RegExp
  /** false when the request is refused before the exchange grant runs (nothing to audit). */
  audited?: boolean
  /**
   * false when the request is refused before its caller (the workload) is authenticated: a
   * malformed request or a bad attestation. Nothing is stored (no audit row); it is counted and
   * its reason logged, and the public description says nothing about the subject token.
   */
  authenticated?: boolean
  /** Builds what the row needs (e.g. an open task) and returns a request that is valid as it stands. */
  arrange?: (b: TestBroker) => Promise<Params>
  /** Control requests (default: the arranged one), each expected to succeed with the same setup. */
  controls?: ((b: TestBroker, base: Params) => Promise<Params>)[]
  /** Broker config for the control run (e.g. the workload enabled). */
  controlConfig?: (c: ConfigInput) => ConfigInput
  /** The one fault: the request to send, after any side effect on the broker (end a task, move the clock). */
  fault: (b: TestBroker, base: Params) => Promise<Params>
}

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')

/** A session's default claims, as `b.session()` mints them. */
function sessionClaims(b: TestBroker, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const now = b.clock.now()
  return { iss: USER_ISSUER, sub: 'alice', sid: 'sess-1', aud: b.deps.config.issuer, iat: now, exp: now + 3600, ...extra }
}

/** `alg: none` — an unsecured JWS, empty signature segment (RFC 7515 §A.5). */
function unsignedJwt(b: TestBroker): string {
  return `${b64url({ alg: 'none', typ: 'JWT', kid: b.keys.user.kid })}.${b64url(sessionClaims(b))}.`
}

/** The classic key-confusion attack: HS256 keyed with the bytes of the issuer's public key. */
async function hmacWithPublicKey(b: TestBroker, form: 'spki-pem' | 'jwk-json'): Promise<string> {
  const jwk = b.keys.user.publicJwk
  const secret =
    form === 'spki-pem'
      ? Buffer.from(createPublicKey({ key: jwk as JWK & { kty: string }, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string)
      : Buffer.from(JSON.stringify(jwk))
  return new SignJWT(sessionClaims(b)).setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: b.keys.user.kid }).sign(secret)
}

async function openNotesTask(b: TestBroker, opts: { ttl?: number; scopes?: string[] } = {}): Promise<string> {
  const res = await openTask(b, { purpose: 'rejection matrix', resources: [{ resource: NOTES, scopes: opts.scopes ?? ['notes:read'] }], ...(opts.ttl ? { ttl: opts.ttl } : {}) })
  assert.equal(res.status, 201, await res.clone().text())
  return ((await res.json()) as { task_id: string }).task_id
}

/** Arrange: an active task of alice/sess-1/agent-a on NOTES with notes:read; the request names it. */
const withTask = (opts: { ttl?: number } = {}) => async (b: TestBroker): Promise<Params> => ({ task_id: await openNotesTask(b, opts) })

async function endTaskOverHttp(b: TestBroker, taskId: string, how: 'complete' | 'revoke'): Promise<void> {
  const headers: Record<string, string> = how === 'complete' ? { 'actor-token': await b.svid('a') } : { authorization: `Bearer ${await b.session()}` }
  const res = await b.app.request(`/tasks/${taskId}/${how}`, { method: 'POST', headers })
  assert.equal(res.status, 200, await res.clone().text())
}

/** Arrange: one successful exchange with a fixed session and SVID, so both sit in the verifiers' caches. */
async function warmTokens(b: TestBroker): Promise<Params> {
  const base = { subject_token: await b.session(), actor_token: await b.svid('a') }
  const res = await b.exchange(base)
  assert.equal(res.status, 200, await res.text())
  return base
}

const enableAgentOff = (c: ConfigInput): ConfigInput => ({ ...c, workloads: c.workloads!.map((w) => (w.id === 'agent-off' ? { ...w, enabled: true } : w)) })

const rows: Row[] = [
  // ── subject token: every failure is invalid_request (RFC 8693 §2.2.2), never invalid_grant ──
  {
    name: 'subject token with a bad signature (untrusted key, same kid)',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: signature verification failed/,
    fault: async (b) => ({ subject_token: await b.session({}, { key: b.keys.untrustedUser }) }),
  },
  {
    name: 'subject token with alg none',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: .*alg.* not allowed/,
    fault: async (b) => ({ subject_token: unsignedJwt(b) }),
  },
  {
    name: 'subject token HS256-signed with the issuer public key (SPKI PEM) as the secret',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: .*alg.* not allowed/,
    fault: async (b) => ({ subject_token: await hmacWithPublicKey(b, 'spki-pem') }),
  },
  {
    name: 'subject token HS256-signed with the issuer public JWK as the secret',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: .*alg.* not allowed/,
    fault: async (b) => ({ subject_token: await hmacWithPublicKey(b, 'jwk-json') }),
  },
  {
    name: 'subject token with an unknown kid',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: no applicable key/,
    fault: async (b) => ({ subject_token: await b.session({}, { header: { kid: 'no-such-key' } }) }),
  },
  {
    name: 'expired subject token (61 s past exp, skew is 60 s)',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: "exp"/,
    // Control: the same old session, still valid for 30 s → a 30 s token.
    controls: [async (b) => ({ subject_token: await b.session({ iat: b.clock.now() - 3570, exp: b.clock.now() + 30 }) })],
    fault: async (b) => ({ subject_token: await b.session({ iat: b.clock.now() - 3661, exp: b.clock.now() - 61 }) }),
  },
  {
    name: 'subject token expired 30 s ago (inside the skew: verifies, but has no lifetime left to give)',
    status: 400,
    error: 'invalid_request',
    reason: /subject_token .*expired/,
    controls: [async (b) => ({ subject_token: await b.session({ iat: b.clock.now() - 3570, exp: b.clock.now() + 1 }) })],
    fault: async (b) => ({ subject_token: await b.session({ iat: b.clock.now() - 3630, exp: b.clock.now() - 30 }) }),
  },
  {
    name: 'subject token expiring exactly now',
    status: 400,
    error: 'invalid_request',
    reason: /subject_token .*expired/,
    fault: async (b) => ({ subject_token: await b.session({ iat: b.clock.now() - 3600, exp: b.clock.now() }) }),
  },
  {
    name: 'subject token without exp',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: .*"exp" claim/,
    fault: async (b) => ({ subject_token: await b.session({ exp: null }) }),
  },
  {
    name: 'subject token issued in the future (iat 61 s ahead)',
    status: 400,
    error: 'invalid_request',
    reason: /^iat in the future$/,
    controls: [async (b) => ({ subject_token: await b.session({ iat: b.clock.now() + 59 }) })],
    fault: async (b) => ({ subject_token: await b.session({ iat: b.clock.now() + 61 }) }),
  },
  {
    name: 'subject token without a user (sub)',
    status: 400,
    error: 'invalid_request',
    reason: /has no "sub" claim/,
    fault: async (b) => ({ subject_token: await b.session({ sub: null }) }),
  },
  {
    name: 'subject token that verified earlier (cached) and has since expired',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: "exp"/,
    arrange: warmTokens,
    fault: async (b, base) => {
      b.clock.advance(3600 + 61)
      return { ...base, actor_token: await b.svid('a') }
    },
  },
  {
    name: 'subject token not yet valid (nbf 61 s ahead, skew is 60 s)',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: "nbf"/,
    // Control: nbf inside the skew is tolerated.
    controls: [async (b) => ({ subject_token: await b.session({ nbf: b.clock.now() + 59 }) })],
    fault: async (b) => ({ subject_token: await b.session({ nbf: b.clock.now() + 61 }) }),
  },
  {
    name: 'subject token for another audience',
    status: 400,
    error: 'invalid_request',
    reason: /^subject_token: unexpected "aud"/,
    fault: async (b) => ({ subject_token: await b.session({ aud: 'https://other-broker.example' }) }),
  },
  {
    name: 'subject token from an untrusted issuer',
    status: 400,
    error: 'invalid_request',
    reason: /^untrusted subject issuer https:\/\/evil-idp\.example$/,
    fault: async (b) => ({ subject_token: await b.session({ iss: 'https://evil-idp.example' }) }),
  },
  // ── actor token: invalid_request; a disabled workload: unauthorized_client ──
  {
    name: 'actor token for another audience',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /^actor_token: unexpected "aud"/,
    fault: async (b) => ({ actor_token: await b.svid('a', { aud: 'https://other-broker.example' }) }),
  },
  {
    name: 'expired actor token (61 s past exp)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /^actor_token: "exp"/,
    controls: [async (b) => ({ actor_token: await b.svid('a', { iat: b.clock.now() - 270, exp: b.clock.now() + 30 }) })],
    fault: async (b) => ({ actor_token: await b.svid('a', { iat: b.clock.now() - 361, exp: b.clock.now() - 61 }) }),
  },
  {
    name: 'actor token that verified earlier (cached) and has since expired',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /^actor_token: "exp"/,
    arrange: warmTokens,
    fault: async (b, base) => {
      b.clock.advance(300 + 61)
      return { ...base, subject_token: await b.session() }
    },
  },
  {
    name: 'actor token from an untrusted trust domain (spiffe://evil.example)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /^untrusted workload issuer spiffe:\/\/evil\.example$/,
    fault: async (b) => ({ actor_token: await b.svid('a', { sub: spiffeId('a', 'evil.example') }, { key: b.keys.otherDomain }) }),
  },
  {
    name: 'actor token claiming the trusted domain, signed with another domain key',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /^actor_token: /,
    fault: async (b) => ({ actor_token: await b.svid('a', {}, { key: b.keys.otherDomain }) }),
  },
  {
    name: 'actor token claiming the trusted domain, signed with the user issuer key (same alg, other kid)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /^actor_token: no applicable key/,
    fault: async (b) => ({ actor_token: await b.svid('a', {}, { key: b.keys.user }) }),
  },
  {
    name: 'actor token with alg none',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /^actor_token: .*alg.* not allowed/,
    fault: async (b) => {
      const now = b.clock.now()
      return { actor_token: `${b64url({ alg: 'none', typ: 'JWT', kid: b.keys.spiffe.kid })}.${b64url({ sub: spiffeId('a'), aud: b.deps.config.issuer, iat: now, exp: now + 300 })}.` }
    },
  },
  {
    name: 'actor token issued in the future (iat 61 s ahead)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /iat|not yet valid/,
    controls: [async (b) => ({ actor_token: await b.svid('a', { iat: b.clock.now() + 59 }) })],
    fault: async (b) => ({ actor_token: await b.svid('a', { iat: b.clock.now() + 61 }) }),
  },
  {
    name: 'a subject (user) token presented as the actor token',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /untrusted workload issuer/,
    fault: async (b) => ({ actor_token: await b.session() }),
  },
  {
    name: 'an actor token (JWT-SVID) presented as the subject token',
    status: 400,
    error: 'invalid_request',
    reason: /untrusted subject issuer/,
    fault: async (b) => ({ subject_token: await b.svid('a') }),
  },
  {
    name: 'actor token of the trusted domain mapping to no workload (agent/nobody)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /^no workload for .*agent\/nobody$/,
    fault: async (b) => ({ actor_token: await b.svid('nobody') }),
  },
  {
    name: 'actor token of a disabled workload (agent-off)',
    authenticated: false,
    status: 400,
    error: 'unauthorized_client',
    reason: /agent-off (is )?disabled/,
    arrange: async (b) => ({ actor_token: await b.svid('off') }),
    controlConfig: enableAgentOff,
    fault: async (_b, base) => base,
  },
  {
    name: 'actor token living longer than maxActorTokenLifetime (3601 s > 3600 s)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /^lifetime 3601s > 3600s$/,
    controls: [async (b) => ({ actor_token: await b.svid('a', { exp: b.clock.now() + 3600 }) })],
    fault: async (b) => ({ actor_token: await b.svid('a', { exp: b.clock.now() + 3601 }) }),
  },
  {
    name: 'subject token may_act naming another workload',
    status: 400,
    error: 'invalid_request',
    reason: /^may_act .*agent-b/,
    controls: [
      async (b) => ({ subject_token: await b.session({ may_act: { sub: 'agent-a' } }) }),
      async (b) => ({ subject_token: await b.session({ may_act: { sub: spiffeId('a') } }) }),
    ],
    fault: async (b) => ({ subject_token: await b.session({ may_act: { sub: 'agent-b' } }) }),
  },
  {
    name: 'client_id naming another workload',
    authenticated: false,
    status: 400,
    error: 'invalid_client',
    reason: /^client_id agent-b is not the acting workload agent-a$/,
    controls: [async () => ({ client_id: 'agent-a' })],
    fault: async () => ({ client_id: 'agent-b' }),
  },
  // ── the task: invalid_grant ──
  {
    name: "another workload's task (agent-b with agent-a's task)",
    status: 400,
    error: 'invalid_grant',
    reason: /belongs to workload agent-a$/,
    arrange: withTask(),
    fault: async (b, base) => ({ ...base, actor_token: await b.svid('b') }),
  },
  {
    name: "another user's task",
    status: 400,
    error: 'invalid_grant',
    reason: /belongs to another user$/,
    arrange: withTask(),
    fault: async (b, base) => ({ ...base, subject_token: await b.session({ sub: 'bob' }) }),
  },
  {
    name: 'a task bound to another session (sid)',
    status: 400,
    error: 'invalid_grant',
    reason: /bound to another session$/,
    arrange: withTask(),
    fault: async (b, base) => ({ ...base, subject_token: await b.session({ sid: 'sess-2' }) }),
  },
  {
    name: 'a completed task',
    status: 400,
    error: 'invalid_grant',
    reason: / is completed$/,
    arrange: withTask(),
    fault: async (b, base) => {
      await endTaskOverHttp(b, base.task_id as string, 'complete')
      return base
    },
  },
  {
    name: 'a revoked task',
    status: 400,
    error: 'invalid_grant',
    reason: / is revoked$/,
    arrange: withTask(),
    fault: async (b, base) => {
      await endTaskOverHttp(b, base.task_id as string, 'revoke')
      return base
    },
  },
  {
    name: 'an expired task (clock moved past its ttl)',
    status: 400,
    error: 'invalid_grant',
    reason: / is expired$/,
    arrange: withTask({ ttl: 120 }),
    fault: async (b, base) => {
      b.clock.advance(120)
      return base
    },
  },
  {
    name: 'an unknown task_id',
    status: 400,
    error: 'invalid_grant',
    reason: / not found$/,
    arrange: withTask(),
    fault: async () => ({ task_id: '0190d2c4-0000-7000-8000-000000000000' }),
  },
  // ── the resource: invalid_target ──
  {
    name: 'an unregistered resource',
    status: 400,
    error: 'invalid_target',
    reason: /^unknown resource https:\/\/unknown\.test\.example\/mcp$/,
    fault: async () => ({ resource: 'https://unknown.test.example/mcp' }),
  },
  {
    name: 'a resource outside the task (task for NOTES, request CALENDAR)',
    status: 400,
    error: 'invalid_target',
    reason: /does not cover https:\/\/calendar\.test\.example\/mcp$/,
    arrange: withTask(),
    // Controls: the task works for NOTES, and agent-a may use CALENDAR (cal:read) without a task:
    // only the task stands in the way.
    controls: [async (_b, base) => base, async () => ({ resource: CALENDAR, scope: 'cal:read' })],
    fault: async (_b, base) => ({ ...base, resource: CALENDAR, scope: 'cal:read' }),
  },
  {
    name: 'a resource the workload has no grant for (UNGRANTED)',
    status: 400,
    error: 'invalid_target',
    reason: /has no grant for https:\/\/ungranted\.test\.example\/mcp$/,
    fault: async () => ({ resource: UNGRANTED, scope: 'x:read' }),
  },
  {
    name: 'two resource parameters',
    authenticated: false,
    status: 400,
    error: 'invalid_target',
    reason: /exactly one resource/,
    fault: async () => ({ resource: [NOTES, CALENDAR] }),
  },
  {
    name: 'resource and audience that differ',
    authenticated: false,
    status: 400,
    error: 'invalid_target',
    reason: /name different targets/,
    // Control: an audience equal to the resource is accepted.
    arrange: async () => ({ resource: NOTES, audience: NOTES }),
    fault: async (_b, base) => ({ ...base, audience: CALENDAR }),
  },
  {
    name: 'a resource with a fragment',
    authenticated: false,
    status: 400,
    error: 'invalid_target',
    reason: /fragment/,
    fault: async () => ({ resource: `${NOTES}#frag` }),
  },
  {
    name: 'no resource and no audience',
    authenticated: false,
    status: 400,
    error: 'invalid_target',
    reason: /"resource" is required/,
    fault: async () => ({ resource: undefined }),
  },
  // ── scope: invalid_scope ──
  {
    name: 'scope beyond the task (task has notes:read, ask notes:read notes:write)',
    status: 400,
    error: 'invalid_scope',
    reason: /^beyond task: notes:write$/,
    arrange: withTask(),
    // Controls: the task works for notes:read, and agent-a holds notes:write on NOTES (implicit
    // task): only the task stands in the way.
    controls: [async (_b, base) => base, async () => ({ scope: 'notes:read notes:write' })],
    fault: async (_b, base) => ({ ...base, scope: 'notes:read notes:write' }),
  },
  {
    name: 'scope beyond the workload (notes:delete exists on NOTES, agent-a has no grant for it)',
    status: 400,
    error: 'invalid_scope',
    reason: /beyond the workload's grant: notes:delete$/,
    fault: async () => ({ scope: 'notes:read notes:delete' }),
  },
  {
    name: 'scope unknown to the resource',
    status: 400,
    error: 'invalid_scope',
    reason: /beyond the workload's grant: notes:admin$/,
    fault: async () => ({ scope: 'notes:admin' }),
  },
  // ── request parameters: invalid_request ──
  {
    name: 'missing subject_token',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /"subject_token" is required/,
    fault: async () => ({ subject_token: undefined }),
  },
  {
    name: 'missing subject_token_type',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /"subject_token_type" is required/,
    fault: async () => ({ subject_token_type: undefined }),
  },
  {
    name: 'missing actor_token (no impersonation)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /"actor_token" is required/,
    fault: async () => ({ actor_token: undefined, actor_token_type: undefined }),
  },
  {
    name: 'actor_token without actor_token_type',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /"actor_token_type" is required/,
    fault: async () => ({ actor_token_type: undefined }),
  },
  {
    name: 'wrong subject_token_type (saml2)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /"subject_token_type" is not supported/,
    // Control: the other accepted types for a JWT from an IdP.
    arrange: async () => ({ subject_token_type: 'urn:ietf:params:oauth:token-type:id_token' }),
    fault: async () => ({ subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' }),
  },
  {
    name: 'wrong actor_token_type (access_token)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /"actor_token_type" must be/,
    fault: async () => ({ actor_token_type: ACCESS_TOKEN_TYPE }),
  },
  {
    name: 'requested_token_type other than access_token (jwt)',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /"requested_token_type" must be/,
    arrange: async () => ({ requested_token_type: ACCESS_TOKEN_TYPE }),
    fault: async () => ({ requested_token_type: JWT_TYPE }),
  },
  {
    name: 'a ttl that is not a positive integer',
    authenticated: false,
    status: 400,
    error: 'invalid_request',
    reason: /"ttl" must be/,
    arrange: async () => ({ ttl: '60' }),
    fault: async () => ({ ttl: '-5' }),
  },
  // ── refused before the grant runs: no audit row ──
  {
    name: 'unsupported grant_type (authorization_code)',
    status: 400,
    error: 'unsupported_grant_type',
    audited: false,
    fault: async () => ({ grant_type: 'authorization_code' }),
  },
  {
    name: 'missing grant_type',
    status: 400,
    error: 'invalid_request',
    audited: false,
    fault: async () => ({ grant_type: undefined }),
  },
]



describe('POST /token rejection matrix', () => {
  it('the matrix has no duplicate row names', () => {
    assert.equal(new Set(rows.map((r) => r.name)).size, rows.length)
  })

  for (const row of rows) {
    it(`${row.name} → ${row.status} ${row.error}`, () =>
      withBroker({}, async (b) => {
        const base = (await row.arrange?.(b)) ?? {}
        const params = await row.fault(b, base)
        const before = await counts(b)

        const res = await b.exchange(params)
        const text = await res.text()
        assert.equal(res.status, row.status, text)
        const body = JSON.parse(text) as Record<string, unknown>
        assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description'])
        assert.equal(body.error, row.error)
        assert.equal(typeof body.error_description, 'string')
        assert.equal(res.headers.get('cache-control'), 'no-store')
        assert.match(res.headers.get('content-type') ?? '', /^application\/json/)

        if (row.audited === false) {
          assert.deepEqual(await counts(b), before, 'refused before the grant: nothing written, not even an audit row')
        } else if (row.authenticated === false) {
          assert.ok(row.reason, 'the row names its reason')
          await assertRefusedUnauthenticated(b, before, { error: row.error, reason: row.reason })
          assert.doesNotMatch(String(body.error_description), /subject_token (is|has|cannot)|session/, 'nothing about the subject token before the caller is known')
        } else {
          // The private reason names the check that fired: the row fails for the reason it claims.
          assert.ok(row.reason, 'an audited row names its reason')
          await assertRefusedAndAudited(b, before, { error: row.error, reason: row.reason })
        }
      }),
    )

    it(`control: ${row.name} — same setup without the fault → 200`, () =>
      withBroker(row.controlConfig ? { config: row.controlConfig } : {}, async (b) => {
        const base = (await row.arrange?.(b)) ?? {}
        for (const control of row.controls ?? [async (_b: TestBroker, p: Params) => p]) {
          const params = await control(b, base)
          const before = await counts(b)
          const res = await b.exchange(params)
          const text = await res.text()
          assert.equal(res.status, 200, text)
          assert.equal(res.headers.get('cache-control'), 'no-store')
          const body = JSON.parse(text) as { access_token: string; task_id: string }
          assert.equal(typeof body.access_token, 'string')
          if (typeof params.task_id === 'string') assert.equal(body.task_id, params.task_id)
          assert.equal(await b.count('tokens'), before.tokens + 1)
          assert.equal(await b.count('audit_events'), before.audit_events + 1)
          assert.equal((await b.lastAudit())?.decision, 'allow')
        }
      }),
    )
  }

  it('client_id naming another workload: invalid_client does not say which client or why', () =>
    withBroker({}, async (b) => {
      const res = await b.exchange({ client_id: 'agent-b' })
      // RFC 6749 §5.2: no HTTP authentication was attempted at the token endpoint, so 400 without a challenge.
      assert.equal(res.status, 400)
      const body = (await res.json()) as { error: string; error_description: string }
      assert.equal(body.error, 'invalid_client')
      for (const leak of ['agent-a', 'agent-b', 'workload']) assert.ok(!body.error_description.includes(leak), body.error_description)
      assert.equal(res.headers.get('www-authenticate'), null)
      // The caller is not who it claims: nothing is stored; the reason goes to the server log.
      assert.equal(await b.count('audit_events'), 0)
      assert.match(String(b.logs.at(-1)?.fields.detail), /agent-b/)
    }),
  )

  it('an invalid subject token is invalid_request, not invalid_grant, even when the task is fine', () =>
    withBroker({}, async (b) => {
      const taskId = await openNotesTask(b)
      const res = await b.exchange({ task_id: taskId, subject_token: await b.session({ exp: b.clock.now() - 61, iat: b.clock.now() - 120 }) })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
    }),
  )
})

describe('POST /token lifetime', () => {
  it('a ttl above the ceiling is clamped to tokens.maxTtl (900 s); ttl=60 gives 60 s', () =>
    withBroker({}, async (b) => {
      assert.equal(b.deps.config.tokens.maxTtl, 900)
      const taskId = await openNotesTask(b)
      const before = await counts(b)

      // An hour-long attestation, so the token is not capped by it (a token never outlives its actor token).
      const actor_token = await b.svid('a', { exp: b.clock.now() + 3600 })
      const big = await b.exchange({ task_id: taskId, ttl: '100000', actor_token })
      assert.equal(big.status, 200)
      assert.equal(big.headers.get('cache-control'), 'no-store')
      const bigBody = (await big.json()) as { access_token: string; expires_in: number }
      assert.equal(bigBody.expires_in, 900)
      const bigClaims = decodeJwt(bigBody.access_token)
      assert.equal(bigClaims.exp! - bigClaims.iat!, 900)

      const small = await b.exchange({ task_id: taskId, ttl: '60', actor_token })
      assert.equal(small.status, 200)
      const smallBody = (await small.json()) as { access_token: string; expires_in: number }
      assert.equal(smallBody.expires_in, 60)
      const smallClaims = decodeJwt(smallBody.access_token)
      assert.equal(smallClaims.exp! - smallClaims.iat!, 60)

      // Without ttl: the default (5 minutes).
      const dflt = (await (await b.exchange({ task_id: taskId, actor_token })).json()) as { expires_in: number }
      assert.equal(dflt.expires_in, b.deps.config.tokens.defaultTtl)
      assert.equal(dflt.expires_in, 300)

      assert.equal(await b.count('tokens'), before.tokens + 3)
      assert.equal(await b.count('tasks'), before.tasks)
      assert.equal(await b.count('audit_events'), before.audit_events + 3)
      assert.equal((await b.lastAudit())?.decision, 'allow')
    }),
  )
})
