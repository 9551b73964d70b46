/**
 * private_key_jwt client authentication (RFC 7523 §2.2 + draft-ietf-oauth-rfc7523bis) at /token and
 * /revoke, with workload keys registered in config. Every rejection row runs on a fresh broker,
 * asserts status, `error`, no-store, that nothing was issued or opened, and the audit deny row
 * with the private reason that proves the intended check fired; every row has a control that
 * differs from it only by the fault and succeeds. Interop: oauth4webapi `PrivateKeyJwt` on a real port.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { decodeJwt, exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose'
import * as oauth from 'oauth4webapi'
import type { ConfigInput } from '../src/config.js'
import { ConfigError, parseConfig } from '../src/config.js'
import { assertRefusedUnauthenticated, counts, createTestBroker, JWT_TYPE, NOTES, NOTES_SECRET, spiffeId, startTestServer, testConfig, testKeys, TOKEN_EXCHANGE, TRUST_DOMAIN, withBroker, type TestBroker } from './harness.js'

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
const JWT_SPIFFE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe'

type Params = Record<string, string | string[] | undefined>

interface ClientKey {
  kid: string
  alg: string
  privateKey: CryptoKey
  publicJwk: JWK
}

async function clientKey(kid: string, alg = 'ES256'): Promise<ClientKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } }
}

interface Keys {
  a: ClientKey
  aRsa: ClientKey
  b: ClientKey
  strict: ClientKey
  /** Same kid as `a`, never registered. */
  rogue: ClientKey
}
let keys: Keys

/** agent-a and agent-b get keys; agent-strict (a new workload) requires private_key_jwt. */
function withClientKeys(c: ConfigInput): ConfigInput {
  return {
    ...c,
    workloads: [
      ...c.workloads!.map((w) =>
        w.id === 'agent-a' ? { ...w, jwks: { keys: [keys.a.publicJwk, keys.aRsa.publicJwk] as Record<string, unknown>[] } } : w.id === 'agent-b' ? { ...w, jwks: { keys: [keys.b.publicJwk] as Record<string, unknown>[] } } : w,
      ),
      {
        id: 'agent-strict',
        attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('strict') },
        jwks: { keys: [keys.strict.publicJwk as Record<string, unknown>] },
        tokenEndpointAuth: 'private_key_jwt',
        grants: [{ resource: NOTES, scopes: ['notes:read'] }],
      },
    ],
  }
}

/** A client assertion as a careful client builds it; `null` removes a claim or header member. */
async function assertion(
  b: TestBroker,
  opts: { client?: string; key?: ClientKey; claims?: Record<string, unknown>; header?: Record<string, unknown>; secret?: Uint8Array | CryptoKey } = {},
): Promise<string> {
  const now = b.clock.now()
  const client = opts.client ?? 'agent-a'
  const key = opts.key ?? keys.a
  const strip = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined))
  const claims = strip({ iss: client, sub: client, aud: b.deps.config.issuer, iat: now, exp: now + 60, jti: randomUUID(), ...opts.claims })
  const header = strip({ alg: key.alg, kid: key.kid, typ: 'client-authentication+jwt', ...opts.header })
  return new SignJWT(claims).setProtectedHeader(header as { alg: string }).sign(opts.secret ?? key.privateKey)
}

const withAssertion = (a: string): Params => ({ client_assertion_type: JWT_BEARER, client_assertion: a })



/** The request is refused with invalid_client: 400, no challenge, nothing written (the caller failed to authenticate: no audit row), the reason logged. */
async function expectRefusedExchange(b: TestBroker, params: Params, reason: RegExp): Promise<void> {
  const before = await counts(b)
  const res = await b.exchange(params)
  const text = await res.text()
  assert.equal(res.status, 400, text)
  const body = JSON.parse(text) as Record<string, string>
  assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description'])
  assert.equal(body.error, 'invalid_client')
  // Never says which client or why.
  assert.equal(body.error_description, 'client authentication failed')
  assert.equal(res.headers.get('www-authenticate'), null)
  assert.equal(res.headers.get('cache-control'), 'no-store')
  await assertRefusedUnauthenticated(b, before, { error: 'invalid_client', reason })
}

async function expectIssued(b: TestBroker, params: Params): Promise<{ access_token: string; task_id: string }> {
  const before = await counts(b)
  const res = await b.exchange(params)
  const text = await res.text()
  assert.equal(res.status, 200, text)
  assert.equal(await b.count('tokens'), before.tokens + 1)
  assert.equal((await b.lastAudit())?.decision, 'allow')
  return JSON.parse(text) as { access_token: string; task_id: string }
}

interface Row {
  name: string
  reason: RegExp
  /** The faulty request (extra /token parameters). */
  fault: (b: TestBroker) => Promise<Params>
  /** The same request without the fault (default: a valid agent-a assertion). */
  control?: (b: TestBroker) => Promise<Params>
  /** Something to do first on the broker (e.g. use the assertion once). */
  arrange?: (b: TestBroker) => Promise<Params>
}

const rows: Row[] = [
  {
    name: 'client assertion replayed (same jti, second use)',
    reason: /^private_key_jwt: agent-a: jti .* replayed$/,
    arrange: async (b) => {
      const params = withAssertion(await assertion(b))
      await expectIssued(b, params)
      return params
    },
    fault: async () => assert.fail('uses arrange'),
  },
  {
    name: 'aud = the token endpoint URL (7523bis: the issuer is the only audience)',
    reason: /aud ".*\/token" is not the issuer as its sole value/,
    fault: async (b) => withAssertion(await assertion(b, { claims: { aud: `${b.deps.config.issuer}/token` } })),
  },
  {
    name: 'aud = [issuer, another audience]',
    reason: /aud \[.*"https:\/\/other\.example".*\] is not the issuer as its sole value/,
    fault: async (b) => withAssertion(await assertion(b, { claims: { aud: [b.deps.config.issuer, 'https://other.example'] } })),
    control: async (b) => withAssertion(await assertion(b, { claims: { aud: [b.deps.config.issuer] } })),
  },
  {
    name: 'aud missing',
    reason: /"aud" claim/,
    fault: async (b) => withAssertion(await assertion(b, { claims: { aud: null } })),
  },
  {
    name: 'expired (61 s past exp, skew 60 s)',
    reason: /^private_key_jwt: agent-a: "exp" claim timestamp check failed/,
    fault: async (b) => withAssertion(await assertion(b, { claims: { iat: b.clock.now() - 120, exp: b.clock.now() - 61 } })),
    control: async (b) => withAssertion(await assertion(b, { claims: { iat: b.clock.now() - 120, exp: b.clock.now() - 59 } })),
  },
  {
    name: 'exp too far ahead (> maxAssertionLifetime 300 s + skew 60 s)',
    reason: /exp 361s ahead exceeds 300s/,
    fault: async (b) => withAssertion(await assertion(b, { claims: { exp: b.clock.now() + 361 } })),
    control: async (b) => withAssertion(await assertion(b, { claims: { exp: b.clock.now() + 360 } })),
  },
  {
    name: 'typ at+jwt (an access token is not a client assertion)',
    reason: /typ "at\+jwt" is not a client assertion type/,
    fault: async (b) => withAssertion(await assertion(b, { header: { typ: 'at+jwt' } })),
  },
  {
    name: 'typ dpop+jwt',
    reason: /typ "dpop\+jwt" is not a client assertion type/,
    fault: async (b) => withAssertion(await assertion(b, { header: { typ: 'dpop+jwt' } })),
    control: async (b) => withAssertion(await assertion(b, { header: { typ: 'application/client-authentication+jwt' } })),
  },
  {
    name: 'iss ≠ sub',
    reason: /iss agent-a differs from sub agent-b/,
    fault: async (b) => withAssertion(await assertion(b, { claims: { sub: 'agent-b' } })),
  },
  {
    name: 'assertion of another workload (agent-b, validly signed) than the actor token (agent-a)',
    reason: /assertion for agent-b, request for agent-a/,
    fault: async (b) => withAssertion(await assertion(b, { client: 'agent-b', key: keys.b })),
    control: async (b) => ({ ...withAssertion(await assertion(b, { client: 'agent-b', key: keys.b })), actor_token: await b.svid('b') }),
  },
  {
    name: 'signed by an unregistered key (same kid as the registered one)',
    reason: /signature verification failed/,
    fault: async (b) => withAssertion(await assertion(b, { key: keys.rogue })),
  },
  {
    name: 'signed with the RSA key under PS256 while the key is registered for RS256 (one alg per key)',
    reason: /no applicable key/,
    fault: async (b) => {
      // The same RSA key material, imported for RSA-PSS: a valid PS256 signature by the registered key.
      const pss = (await importJWK({ ...(await exportJWK(keys.aRsa.privateKey)), alg: 'PS256' }, 'PS256')) as CryptoKey
      return withAssertion(await assertion(b, { key: keys.aRsa, header: { alg: 'PS256' }, secret: pss }))
    },
    control: async (b) => withAssertion(await assertion(b, { key: keys.aRsa })),
  },
  {
    name: 'HS256 (symmetric) assertion, keyed with the public key text',
    reason: /"alg" \(Algorithm\) Header Parameter value not allowed/,
    fault: async (b) => withAssertion(await assertion(b, { header: { alg: 'HS256' }, secret: new TextEncoder().encode(JSON.stringify(keys.a.publicJwk)) })),
  },
  {
    name: 'no jti',
    reason: /"jti" claim/,
    fault: async (b) => withAssertion(await assertion(b, { claims: { jti: null } })),
  },
  {
    name: 'a jku header (keys from the token are never fetched)',
    reason: /header parameter jku not allowed/,
    fault: async (b) => withAssertion(await assertion(b, { header: { jku: 'https://attacker.example/jwks' } })),
  },
  {
    name: 'an unsupported client_assertion_type at /token (jwt-spiffe)',
    reason: /unsupported client_assertion_type .*jwt-spiffe/,
    fault: async (b) => ({ client_assertion_type: JWT_SPIFFE, client_assertion: await b.svid('a') }),
  },
  {
    name: 'client_assertion_type without client_assertion',
    reason: /client_assertion missing/,
    fault: async () => ({ client_assertion_type: JWT_BEARER }),
  },
  {
    name: 'workload requiring private_key_jwt sends none',
    reason: /^workload agent-strict requires private_key_jwt$/,
    fault: async (b) => ({ actor_token: await b.svid('strict') }),
    control: async (b) => ({ actor_token: await b.svid('strict'), ...withAssertion(await assertion(b, { client: 'agent-strict', key: keys.strict })) }),
  },
  {
    name: 'an assertion from a workload registered without keys (agent-c)',
    reason: /workload agent-c has no registered keys/,
    fault: async (b) => ({ ...withAssertion(await assertion(b, { client: 'agent-c' })), actor_token: await b.svid('c') }),
    control: async (b) => ({ actor_token: await b.svid('c') }),
  },
]

/** agent-c: a workload registered without keys. */
function withAgentC(c: ConfigInput): ConfigInput {
  const base = withClientKeys(c)
  return { ...base, workloads: [...base.workloads!, { id: 'agent-c', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('c') }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] }] }
}

before(async () => {
  keys = {
    a: await clientKey('agent-a-key-1'),
    aRsa: await clientKey('agent-a-key-rsa', 'RS256'),
    b: await clientKey('agent-b-key-1'),
    strict: await clientKey('agent-strict-key-1', 'ES384'),
    rogue: await clientKey('agent-a-key-1'),
  }
})

describe('private_key_jwt at POST /token', () => {
  it('the table has no duplicate row names', () => assert.equal(new Set(rows.map((r) => r.name)).size, rows.length))

  for (const row of rows) {
    it(`${row.name} → 400 invalid_client`, () =>
      withBroker(withAgentC, async (b) => {
        const params = row.arrange ? await row.arrange(b) : await row.fault(b)
        await expectRefusedExchange(b, params, row.reason)
      }))

    it(`control: ${row.name} — without the fault → 200`, () =>
      withBroker(withAgentC, async (b) => {
        const params = await (row.control ?? (async (bb: TestBroker) => withAssertion(await assertion(bb))))(b)
        await expectIssued(b, params)
      }))
  }

  it('typ absent, typ JWT and typ client-authentication+jwt are all accepted; the token is the workload\'s', () =>
    withBroker(withClientKeys, async (b) => {
      for (const typ of [null, 'JWT', 'client-authentication+jwt']) {
        const body = await expectIssued(b, { ...withAssertion(await assertion(b, { header: { typ } })), client_id: 'agent-a' })
        const claims = decodeJwt(body.access_token)
        assert.equal(claims.client_id, 'agent-a')
        assert.deepEqual(claims.act, { sub: 'agent-a' })
      }
    }))

  it('agent-a still exchanges without private_key_jwt (tokenEndpointAuth defaults to none)', () =>
    withBroker(withClientKeys, async (b) => {
      assert.equal(b.deps.config.workloads.find((w) => w.id === 'agent-a')?.tokenEndpointAuth, 'none')
      await expectIssued(b, {})
    }))

  it('the replay cache is per assertion: two assertions with distinct jtis both pass', () =>
    withBroker(withClientKeys, async (b) => {
      await expectIssued(b, withAssertion(await assertion(b, { claims: { jti: 'one' } })))
      await expectIssued(b, withAssertion(await assertion(b, { claims: { jti: 'two' } })))
      // The same jti from another client is another identifier.
      await expectIssued(b, { ...withAssertion(await assertion(b, { client: 'agent-b', key: keys.b, claims: { jti: 'one' } })), actor_token: await b.svid('b') })
    }))
})

describe('private_key_jwt at POST /revoke', () => {
  async function issue(b: TestBroker): Promise<string> {
    return (await expectIssued(b, {})).access_token
  }
  async function introspectActive(b: TestBroker, token: string): Promise<boolean> {
    const res = await b.post('/introspect', { token }, { authorization: `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}` })
    return ((await res.json()) as { active: boolean }).active
  }

  it('the workload revokes its own token with private_key_jwt', () =>
    withBroker(withClientKeys, async (b) => {
      const token = await issue(b)
      const res = await b.post('/revoke', { token, client_id: 'agent-a', ...withAssertion(await assertion(b)) } as Record<string, string>)
      assert.equal(res.status, 200, await res.clone().text())
      assert.equal(await introspectActive(b, token), false)
      assert.equal(await b.count('revocation_events'), 1)
    }))

  const refusals: { name: string; params: (b: TestBroker, token: string) => Promise<Params> }[] = [
    {
      name: 'a replayed assertion',
      params: async (b, token) => {
        const a = await assertion(b)
        const first = await b.post('/revoke', { token: 'unknown-token', ...withAssertion(a) } as Record<string, string>)
        assert.equal(first.status, 200)
        return { token, ...withAssertion(a) }
      },
    },
    { name: 'aud = the token endpoint URL', params: async (b, token) => ({ token, ...withAssertion(await assertion(b, { claims: { aud: `${b.deps.config.issuer}/token` } })) }) },
    { name: 'an assertion signed by an unregistered key', params: async (b, token) => ({ token, ...withAssertion(await assertion(b, { key: keys.rogue })) }) },
    { name: 'client_id naming another workload', params: async (b, token) => ({ token, client_id: 'agent-b', ...withAssertion(await assertion(b)) }) },
    { name: 'a workload requiring private_key_jwt using its attestation (jwt-spiffe)', params: async (b, token) => ({ token, client_assertion_type: JWT_SPIFFE, client_assertion: await b.svid('strict') }) },
  ]
  for (const r of refusals) {
    it(`${r.name} → 401 invalid_client, token stays active`, () =>
      withBroker(withClientKeys, async (b) => {
        const token = await issue(b)
        const params = await r.params(b, token)
        const res = await b.post('/revoke', params as Record<string, string>)
        assert.equal(res.status, 401)
        const body = (await res.json()) as Record<string, string>
        assert.equal(body.error, 'invalid_client')
        assert.equal(body.error_description, 'client authentication failed')
        assert.match(res.headers.get('www-authenticate') ?? '', /^Basic /)
        assert.equal(await introspectActive(b, token), true)
        assert.equal(await b.count('revocation_events'), 0)
      }))
  }

  it('control: a strict workload\'s own assertion is accepted at /revoke (a token it does not own changes nothing)', () =>
    withBroker(withClientKeys, async (b) => {
      const token = await issue(b)
      const res = await b.post('/revoke', { token, ...withAssertion(await assertion(b, { client: 'agent-strict', key: keys.strict })) } as Record<string, string>)
      assert.equal(res.status, 200)
      assert.equal(await introspectActive(b, token), true)
    }))
})

describe('private_key_jwt configuration and metadata', () => {
  it('metadata advertises private_key_jwt and the signing algorithms at the token and revocation endpoints', () =>
    withBroker(withClientKeys, async (b) => {
      const md = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, string[]>
      assert.deepEqual(md.token_endpoint_auth_methods_supported, ['none', 'private_key_jwt'])
      assert.ok(md.revocation_endpoint_auth_methods_supported!.includes('private_key_jwt'))
      for (const field of ['token_endpoint_auth_signing_alg_values_supported', 'revocation_endpoint_auth_signing_alg_values_supported']) {
        assert.ok(md[field]!.includes('ES256'), field)
        assert.ok(!md[field]!.some((a) => a.startsWith('HS') || a === 'none'), field)
      }
    }))

  it('config refuses private_key_jwt without keys, keys without alg, private keys and two key sources', async () => {
    const base = testConfig(await testKeys())
    const bad = (w: Record<string, unknown>) => ({ ...base, workloads: [{ id: 'w', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('w') }, ...w }] })
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ tokenEndpointAuth: 'private_key_jwt' }, /workloads\.0\.tokenEndpointAuth: private_key_jwt needs the workload keys/],
      [{ jwks: { keys: [{ ...keys.a.publicJwk, alg: undefined }] } }, /workloads\.0\.jwks\.keys\.0\.alg: an asymmetric alg/],
      [{ jwks: { keys: [{ ...keys.a.publicJwk, alg: 'HS256' }] } }, /workloads\.0\.jwks\.keys\.0\.alg: an asymmetric alg/],
      [{ jwks: { keys: [{ ...keys.a.publicJwk, d: 'private' }] } }, /workloads\.0\.jwks\.keys\.0: a public key/],
      [{ jwks: { keys: [keys.a.publicJwk] }, jwksUri: 'https://keys.example/jwks' }, /at most one of jwks, jwksFile, jwksUri/],
      [{ jwksUri: 'http://keys.example/jwks' }, /an https URL/],
      [{ tokenEndpointAuth: 'client_secret_basic', jwks: { keys: [keys.a.publicJwk] } }, /tokenEndpointAuth/],
    ]
    for (const [w, message] of cases) {
      assert.throws(() => parseConfig(bad(w)), (e: unknown) => e instanceof ConfigError && message.test(e.message), JSON.stringify(w))
    }
    // Control: the same workload with a proper key parses.
    const ok = parseConfig(bad({ tokenEndpointAuth: 'private_key_jwt', jwks: { keys: [keys.a.publicJwk] } }))
    assert.equal(ok.workloads[0]!.tokenEndpointAuth, 'private_key_jwt')
  })
})

describe('interop: oauth4webapi PrivateKeyJwt on a real port', () => {
  let s: Awaited<ReturnType<typeof startTestServer>>
  const insecure = { [oauth.allowInsecureRequests]: true } as const
  const agentA: oauth.Client = { client_id: 'agent-a' }

  before(async () => {
    s = await startTestServer({ config: withClientKeys })
  })
  after(async () => {
    await s.stop()
  })

  async function discover(): Promise<oauth.AuthorizationServer> {
    const issuer = new URL(s.url)
    return oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
  }
  async function params(): Promise<Record<string, string>> {
    return { subject_token: await s.session(), subject_token_type: JWT_TYPE, actor_token: await s.svid('a'), actor_token_type: JWT_TYPE, resource: NOTES, scope: 'notes:read' }
  }

  it('token exchange with PrivateKeyJwt (untyped, and typed client-authentication+jwt), then revocation with PrivateKeyJwt', async () => {
    const as = await discover()
    assert.ok(as.token_endpoint_auth_methods_supported?.includes('private_key_jwt'))
    const typed: oauth.ModifyAssertionFunction = (header) => {
      header.typ = 'client-authentication+jwt'
    }
    for (const auth of [oauth.PrivateKeyJwt({ key: keys.a.privateKey, kid: keys.a.kid }), oauth.PrivateKeyJwt({ key: keys.a.privateKey, kid: keys.a.kid }, { [oauth.modifyAssertion]: typed })]) {
      const res = await oauth.genericTokenEndpointRequest(as, agentA, auth, TOKEN_EXCHANGE, await params(), insecure)
      const tokens = await oauth.processGenericTokenEndpointResponse(as, agentA, res)
      assert.equal(tokens.token_type, 'bearer')
      const claims = decodeJwt(tokens.access_token)
      assert.equal(claims.client_id, 'agent-a')
      assert.equal(claims.aud, NOTES)
    }
    const audit = (await s.rawQuery("select count(*) as n from audit_events where action = 'token.exchange' and decision = 'allow'"))[0] as { n: number }
    assert.equal(audit.n, 2)

    const { access_token } = await oauth.processGenericTokenEndpointResponse(
      as,
      agentA,
      await oauth.genericTokenEndpointRequest(as, agentA, oauth.PrivateKeyJwt({ key: keys.a.privateKey, kid: keys.a.kid }), TOKEN_EXCHANGE, await params(), insecure),
    )
    const revoked = await oauth.revocationRequest(as, agentA, oauth.PrivateKeyJwt({ key: keys.a.privateKey, kid: keys.a.kid }), access_token, insecure)
    assert.equal(await oauth.processRevocationResponse(revoked), undefined)
    const row = (await s.rawQuery('select status from tokens where jti = ?', [decodeJwt(access_token).jti]))[0] as { status: string }
    assert.equal(row.status, 'revoked')
  })

  it('PrivateKeyJwt with an unregistered key surfaces as ResponseBodyError invalid_client (400) and issues nothing', async () => {
    const as = await discover()
    const before = await s.count('tokens')
    const res = await oauth.genericTokenEndpointRequest(as, agentA, oauth.PrivateKeyJwt({ key: keys.rogue.privateKey, kid: keys.rogue.kid }), TOKEN_EXCHANGE, await params(), insecure)
    await assert.rejects(oauth.processGenericTokenEndpointResponse(as, agentA, res), (e: unknown) => e instanceof oauth.ResponseBodyError && e.error === 'invalid_client' && e.status === 400)
    assert.equal(await s.count('tokens'), before)
  })
})
