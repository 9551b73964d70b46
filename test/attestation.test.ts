/**
 * Workload attestation kinds, each with realistic tokens built here with jose (claim shapes from
 * standards.md §7): SPIFFE JWT-SVID, Kubernetes projected service-account token, GitHub Actions
 * OIDC token; claim rules (exact and glob); remote key sets (timeout, size cap, no redirects,
 * cache, cooldown, SPIFFE refresh hint) against a local 127.0.0.1 HTTP server.
 *
 * Every refusal row runs on a fresh broker and asserts status, `error`, no-store, that nothing was
 * issued or opened and the audit deny row with the private reason that proves the intended check
 * fired; every row has a control, on the same setup without the fault, that gets a token.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import type { ConfigInput } from '../src/config.js'
import { ConfigError, parseConfig } from '../src/config.js'
import { claimValue, compileGlob, compileRule, MAX_GLOB_LENGTH, MAX_GLOB_VALUE_LENGTH } from '../src/exchange/attestation/claim-rules.js'
import { parseSpiffeId } from '../src/exchange/attestation/spiffe-id.js'
import { assertRefusedAndAudited, assertRefusedUnauthenticated, counts, createTestBroker, NOTES, testConfig, testKeys, TRUST_DOMAIN, USER_ISSUER, withBroker, type TestBroker } from './harness.js'

type Params = Record<string, string | string[] | undefined>
type Claims = Record<string, unknown>

const K8S_ISSUER = 'https://oidc.eks.eu-west-1.amazonaws.com/id/6A1F0C3E9B2D4E5F8A7B6C5D4E3F2A1B'
const OTHER_CLUSTER = 'https://container.googleapis.com/v1/projects/other/locations/europe-west1/clusters/other'
const GH_ISSUER = 'https://token.actions.githubusercontent.com'
const GH_REPO = 'octo-org/notes-agent'
const GH_WORKFLOW = `${GH_REPO}/.github/workflows/deploy.yml@refs/heads/main`

interface Key {
  kid: string
  alg: string
  privateKey: CryptoKey
  publicJwk: JWK
}

async function makeKey(alg: string, kid?: string): Promise<Key> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
  const jwk = await exportJWK(publicKey)
  const id = kid ?? (await calculateJwkThumbprint(jwk))
  return { kid: id, alg, privateKey, publicJwk: { ...jwk, kid: id, alg } }
}

interface Keys {
  k8s: Key
  k8sOtherCluster: Key
  github: Key
  svidRsa: Key
  svidEd: Key
}
let keys: Keys

before(async () => {
  keys = {
    k8s: await makeKey('RS256'),
    k8sOtherCluster: await makeKey('RS256'),
    github: await makeKey('RS256', 'cc413527-173f-5a05-976e-9c52b1d7b431'),
    svidRsa: await makeKey('RS256', 'svid-rsa-1'),
    svidEd: await makeKey('EdDSA', 'svid-ed-1'),
  }
  keys.k8sOtherCluster = { ...keys.k8sOtherCluster, kid: keys.k8s.kid, publicJwk: { ...keys.k8sOtherCluster.publicJwk, kid: keys.k8s.kid } }
})

const strip = (o: Claims) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined))

async function sign(key: Key | { privateKey: CryptoKey | Uint8Array }, header: Claims, claims: Claims, opts: { crit?: Record<string, boolean> } = {}): Promise<string> {
  return new SignJWT(strip(claims)).setProtectedHeader(strip(header) as { alg: string }).sign(key.privateKey, opts.crit ? { crit: opts.crit } : undefined)
}

// ── realistic tokens ──

/** A projected service-account token as kubelet mounts it (audience set to the broker). */
function k8sClaims(b: TestBroker): Claims {
  const now = b.clock.now()
  return {
    aud: [b.deps.config.issuer],
    exp: now + 3600,
    iat: now,
    nbf: now,
    iss: K8S_ISSUER,
    jti: randomUUID(),
    'kubernetes.io': {
      namespace: 'agents',
      node: { name: 'ip-10-0-12-34.eu-west-1.compute.internal', uid: '5e0e4ab2-8d3e-4d6b-a3c6-1d2c3b4a5f60' },
      pod: { name: 'notes-agent-7c9f8d6b5-x2x9q', uid: 'd1a6e3f0-2b4c-4e8a-9f7d-6c5b4a3e2d10' },
      serviceaccount: { name: 'notes-agent', uid: '0f9e8d7c-6b5a-4f3e-8d2c-1b0a9f8e7d6c' },
    },
    sub: 'system:serviceaccount:agents:notes-agent',
  }
}

async function k8sToken(b: TestBroker, mutate: (c: Claims & { 'kubernetes.io': Claims }) => void = () => {}, opts: { key?: Key; header?: Claims } = {}): Promise<string> {
  const claims = structuredClone(k8sClaims(b)) as Claims & { 'kubernetes.io': Claims }
  mutate(claims)
  const key = opts.key ?? keys.k8s
  return sign(key, { alg: 'RS256', kid: key.kid, ...opts.header }, claims)
}

/** A GitHub Actions OIDC token for a push to main, job in environment production (docs.github.com shape). */
function githubClaims(b: TestBroker): Claims {
  const now = b.clock.now()
  return {
    jti: randomUUID(),
    sub: `repo:${GH_REPO}:environment:production`,
    environment: 'production',
    aud: b.deps.config.issuer,
    ref: 'refs/heads/main',
    sha: 'd2c1f0e9b8a7d6c5b4a3f2e1d0c9b8a7f6e5d4c3',
    repository: GH_REPO,
    repository_owner: 'octo-org',
    repository_owner_id: '65432109',
    repository_id: '123456789',
    repository_visibility: 'private',
    actor: 'octocat',
    actor_id: '583231',
    run_id: '9876543210',
    run_number: '42',
    run_attempt: '1',
    runner_environment: 'github-hosted',
    workflow: 'deploy',
    head_ref: '',
    base_ref: '',
    event_name: 'push',
    ref_protected: 'true',
    ref_type: 'branch',
    workflow_ref: GH_WORKFLOW,
    workflow_sha: 'd2c1f0e9b8a7d6c5b4a3f2e1d0c9b8a7f6e5d4c3',
    job_workflow_ref: GH_WORKFLOW,
    job_workflow_sha: 'd2c1f0e9b8a7d6c5b4a3f2e1d0c9b8a7f6e5d4c3',
    check_run_id: '24681357',
    iss: GH_ISSUER,
    nbf: now - 600,
    exp: now + 300,
    iat: now,
  }
}

async function githubToken(b: TestBroker, mutate: (c: Claims) => void = () => {}, opts: { header?: Claims } = {}): Promise<string> {
  const claims = githubClaims(b)
  mutate(claims)
  return sign(keys.github, { typ: 'JWT', alg: 'RS256', x5t: 'Sv0UvK2N2wkzJ0d8d3e7f5g3h1j', kid: keys.github.kid, ...opts.header }, claims)
}

/** A JWT-SVID as SPIRE mints it: header `{alg, kid, typ: JWT}`, claims `sub`, `aud`, `exp`, `iat`. */
async function svid(b: TestBroker, opts: { sub?: string; claims?: Claims; header?: Claims; key?: Key | { kid: string; privateKey: CryptoKey | Uint8Array }; alg?: string; crit?: Record<string, boolean> } = {}): Promise<string> {
  const now = b.clock.now()
  const key = opts.key ?? keys.svidRsa
  return sign(key, { alg: opts.alg ?? 'RS256', kid: key.kid, typ: 'JWT', ...opts.header }, { sub: opts.sub ?? `spiffe://${TRUST_DOMAIN}/ns/agents/sa/notes-agent`, aud: [b.deps.config.issuer], exp: now + 300, iat: now, ...opts.claims }, opts.crit ? { crit: opts.crit } : {})
}

// ── config ──

const grants = [{ resource: NOTES, scopes: ['notes:read'] }]

function withAttestation(c: ConfigInput): ConfigInput {
  return {
    ...c,
    workloadIssuers: [
      {
        kind: 'spiffe',
        trustDomain: TRUST_DOMAIN,
        jwks: {
          keys: [
            { ...(c.workloadIssuers![0] as { jwks: { keys: Record<string, unknown>[] } }).jwks.keys[0] },
            { ...keys.svidRsa.publicJwk, use: 'jwt-svid' },
            { ...keys.svidEd.publicJwk, use: 'jwt-svid' },
          ],
        },
      },
      { kind: 'kubernetes', issuer: K8S_ISSUER, jwks: { keys: [keys.k8s.publicJwk as Record<string, unknown>] } },
      { kind: 'github', jwks: { keys: [keys.github.publicJwk as Record<string, unknown>] } },
    ],
    workloads: [
      ...c.workloads!,
      { id: 'spiffe-notes-agent', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: { glob: `spiffe://${TRUST_DOMAIN}/ns/agents/sa/*` } }, grants },
      {
        id: 'k8s-notes-agent',
        attestation: {
          issuer: K8S_ISSUER,
          subject: 'system:serviceaccount:agents:notes-agent',
          claims: {
            '/kubernetes.io/namespace': 'agents',
            '/kubernetes.io/serviceaccount/name': 'notes-agent',
            '/kubernetes.io/pod/name': { glob: 'notes-agent-*' },
          },
        },
        grants,
      },
      {
        id: 'gh-deployer',
        attestation: {
          issuer: GH_ISSUER,
          claims: {
            repository: GH_REPO,
            repository_id: '123456789',
            ref: 'refs/heads/main',
            job_workflow_ref: { glob: `${GH_REPO}/.github/workflows/*.yml@refs/heads/main` },
            environment: ['production', 'production-eu'],
          },
        },
        grants,
      },
    ],
  }
}

// ── harness-style helpers ──



async function expectRefused(b: TestBroker, params: Params, reason: RegExp, error = 'invalid_request'): Promise<Record<string, unknown>> {
  const before = await counts(b)
  const res = await b.exchange(params)
  const text = await res.text()
  assert.equal(res.status, 400, text)
  const body = JSON.parse(text) as Record<string, string>
  assert.equal(body.error, error)
  assert.equal(res.headers.get('cache-control'), 'no-store')
  // A bad attestation is refused before the caller is known: counted and logged, never stored.
  await assertRefusedUnauthenticated(b, before, { error, reason })
  return body
}

async function expectIssued(b: TestBroker, params: Params, workload?: string): Promise<Record<string, unknown>> {
  const before = await counts(b)
  const res = await b.exchange(params)
  const text = await res.text()
  assert.equal(res.status, 200, text)
  assert.equal(await b.count('tokens'), before.tokens + 1)
  assert.equal((await b.lastAudit())?.decision, 'allow')
  const claims = decodeJwt((JSON.parse(text) as { access_token: string }).access_token)
  if (workload) assert.equal(claims.client_id, workload)
  return claims
}

interface Row {
  name: string
  reason: RegExp
  fault: (b: TestBroker) => Promise<string>
  control: (b: TestBroker) => Promise<string>
  workload: string
  config?: (c: ConfigInput) => ConfigInput
  controlConfig?: (c: ConfigInput) => ConfigInput
}

function runRows(rows: Row[]): void {
  it('the table has no duplicate row names', () => assert.equal(new Set(rows.map((r) => r.name)).size, rows.length))
  for (const row of rows) {
    it(`${row.name} → 400 invalid_request`, () =>
      withBroker(row.config ?? withAttestation, async (b) => {
        const body = await expectRefused(b, { actor_token: await row.fault(b) }, row.reason)
        assert.match(String(body.error_description), /^actor_token /)
      }))
    it(`control: ${row.name} — without the fault → 200 as ${row.workload}`, () =>
      withBroker(row.controlConfig ?? row.config ?? withAttestation, async (b) => {
        await expectIssued(b, { actor_token: await row.control(b) }, row.workload)
      }))
  }
}

// ── SPIFFE JWT-SVID ──

describe('SPIFFE JWT-SVID', () => {
  const ok = (b: TestBroker) => svid(b)
  const badIds: [string, string, RegExp][] = [
    ['uppercase trust domain', 'spiffe://Test.example/ns/agents/sa/notes-agent', /the trust domain must be lowercase/],
    ['a ".." path segment', `spiffe://${TRUST_DOMAIN}/ns/agents/sa/../sa/notes-agent`, /a "\.\." path segment/],
    ['a "." path segment', `spiffe://${TRUST_DOMAIN}/ns/./agents/sa/notes-agent`, /a "\." path segment/],
    ['a trailing slash', `spiffe://${TRUST_DOMAIN}/ns/agents/sa/notes-agent/`, /trailing "\/"/],
    ['percent-encoding', `spiffe://${TRUST_DOMAIN}/ns/agents/sa/notes%2Dagent`, /percent-encoding/],
    ['a query', `spiffe://${TRUST_DOMAIN}/ns/agents/sa/notes-agent?x=1`, /a query/],
    ['a fragment', `spiffe://${TRUST_DOMAIN}/ns/agents/sa/notes-agent#x`, /a fragment/],
    ['a port', `spiffe://${TRUST_DOMAIN}:8443/ns/agents/sa/notes-agent`, /a port/],
    ['userinfo', `spiffe://admin@${TRUST_DOMAIN}/ns/agents/sa/notes-agent`, /userinfo/],
    ['an empty segment', `spiffe://${TRUST_DOMAIN}/ns//agents/sa/notes-agent`, /an empty path segment/],
    ['an uppercase scheme', `SPIFFE://${TRUST_DOMAIN}/ns/agents/sa/notes-agent`, /scheme must be lowercase/],
    ['no path (a trust domain ID)', `spiffe://${TRUST_DOMAIN}`, /no path/],
  ]
  const rows: Row[] = [
    { name: 'alg EdDSA (a jwt-svid key in the bundle, but not a JWT-SVID alg)', reason: /^actor_token: JWT-SVID alg "EdDSA" not allowed$/, fault: (b) => svid(b, { key: keys.svidEd, alg: 'EdDSA' }), control: ok, workload: 'spiffe-notes-agent' },
    {
      name: 'alg HS256 keyed with the bundle key text',
      reason: /^actor_token: JWT-SVID alg "HS256" not allowed$/,
      fault: (b) => svid(b, { key: { kid: keys.svidRsa.kid, privateKey: new TextEncoder().encode(JSON.stringify(keys.svidRsa.publicJwk)) }, alg: 'HS256' }),
      control: ok,
      workload: 'spiffe-notes-agent',
    },
    { name: 'extra header field jku', reason: /header parameter "jku" not allowed/, fault: (b) => svid(b, { header: { jku: 'https://attacker.example/bundle' } }), control: ok, workload: 'spiffe-notes-agent' },
    { name: 'extra header field x5u', reason: /header parameter "x5u" not allowed/, fault: (b) => svid(b, { header: { x5u: 'https://attacker.example/cert.pem' } }), control: ok, workload: 'spiffe-notes-agent' },
    { name: 'extra header field crit', reason: /header parameter "crit", "exp" not allowed/, fault: (b) => svid(b, { header: { crit: ['exp'], exp: 1 }, crit: { exp: true } }), control: ok, workload: 'spiffe-notes-agent' },
    { name: 'a private header field', reason: /header parameter "x-tenant" not allowed/, fault: (b) => svid(b, { header: { 'x-tenant': 'a' } }), control: ok, workload: 'spiffe-notes-agent' },
    { name: 'typ at+jwt', reason: /JWT-SVID typ "at\+jwt" not allowed/, fault: (b) => svid(b, { header: { typ: 'at+jwt' } }), control: (b) => svid(b, { header: { typ: 'JOSE' } }), workload: 'spiffe-notes-agent' },
    { name: 'no aud', reason: /missing required "aud" claim/, fault: (b) => svid(b, { claims: { aud: null } }), control: ok, workload: 'spiffe-notes-agent' },
    { name: 'aud with a second audience', reason: /"aud" has more than one value/, fault: (b) => svid(b, { claims: { aud: [b.deps.config.issuer, 'spiffe://test.example/ns/billing'] } }), control: (b) => svid(b, { claims: { aud: b.deps.config.issuer } }), workload: 'spiffe-notes-agent' },
    { name: 'no exp', reason: /missing required "exp" claim/, fault: (b) => svid(b, { claims: { exp: null } }), control: ok, workload: 'spiffe-notes-agent' },
    {
      name: 'signing key present in the bundle only as use x509-svid',
      reason: /no applicable key/,
      fault: ok,
      control: ok,
      workload: 'spiffe-notes-agent',
      config: (c) => bundleWith(c, { ...keys.svidRsa.publicJwk, use: 'x509-svid' }),
      controlConfig: (c) => bundleWith(c, { ...keys.svidRsa.publicJwk, use: 'jwt-svid' }),
    },
    {
      name: 'signing key present in the bundle without use',
      reason: /no applicable key/,
      fault: ok,
      control: ok,
      workload: 'spiffe-notes-agent',
      config: (c) => bundleWith(c, { ...keys.svidRsa.publicJwk }),
      controlConfig: (c) => bundleWith(c, { ...keys.svidRsa.publicJwk, use: 'jwt-svid' }),
    },
    {
      name: 'an empty bundle (keys: [] — every SVID of the domain untrusted)',
      reason: /no applicable key/,
      fault: ok,
      control: ok,
      workload: 'spiffe-notes-agent',
      config: (c) => ({ ...withAttestation(c), workloadIssuers: [{ kind: 'spiffe', trustDomain: TRUST_DOMAIN, jwks: { keys: [] } }] }),
      controlConfig: (c) => bundleWith(c, { ...keys.svidRsa.publicJwk, use: 'jwt-svid' }),
    },
    ...badIds.map(([what, sub, reason]): Row => ({ name: `SPIFFE ID with ${what}`, reason: new RegExp(`^actor_token: invalid SPIFFE ID: .*${reason.source}`), fault: (b) => svid(b, { sub }), control: ok, workload: 'spiffe-notes-agent' })),
    { name: 'SPIFFE ID outside the glob (another namespace)', reason: /^no workload for spiffe:\/\/test\.example spiffe:\/\/test\.example\/ns\/billing\/sa\/notes-agent$/, fault: (b) => svid(b, { sub: `spiffe://${TRUST_DOMAIN}/ns/billing/sa/notes-agent` }), control: ok, workload: 'spiffe-notes-agent' },
    { name: 'SPIFFE ID deeper than the one-segment glob', reason: /^no workload for /, fault: (b) => svid(b, { sub: `spiffe://${TRUST_DOMAIN}/ns/agents/sa/notes-agent/extra` }), control: ok, workload: 'spiffe-notes-agent' },
  ]
  runRows(rows)

  it('parseSpiffeId accepts valid IDs (mixed-case path, . - _) and the 2048-byte maximum, refuses 2049', () => {
    for (const id of [`spiffe://${TRUST_DOMAIN}/a`, 'spiffe://k8s-west.example.com/ns/staging/sa/default', 'spiffe://td_1.example/Path.With-Mixed_Case/x..y']) {
      assert.equal(parseSpiffeId(id).ok, true, id)
    }
    const prefix = `spiffe://${TRUST_DOMAIN}/`
    assert.equal(parseSpiffeId(prefix + 'a'.repeat(2048 - prefix.length)).ok, true)
    assert.deepEqual(parseSpiffeId(prefix + 'a'.repeat(2049 - prefix.length)), { ok: false, reason: 'longer than 2048 bytes' })
    assert.equal(parseSpiffeId(`spiffe://${'a'.repeat(256)}/x`).ok, false)
    assert.equal(parseSpiffeId(`spiffe://${'a'.repeat(255)}/x`).ok, true)
  })

  it('config refuses non-JWT-SVID algorithms for a spiffe issuer', async () => {
    const base = testConfig(await testKeys())
    const input = { ...base, workloadIssuers: [{ kind: 'spiffe' as const, trustDomain: TRUST_DOMAIN, jwks: { keys: [] }, algorithms: ['EdDSA' as const] }] }
    assert.throws(() => parseConfig(input as unknown as ConfigInput), (e: unknown) => e instanceof ConfigError && /workloadIssuers\.0\.algorithms\.0/.test(e.message))
    assert.equal(parseConfig({ ...input, workloadIssuers: [{ ...input.workloadIssuers[0]!, algorithms: ['PS256'] }] } as unknown as ConfigInput).workloadIssuers.length, 1)
  })
})

function bundleWith(c: ConfigInput, key: Record<string, unknown>): ConfigInput {
  const full = withAttestation(c)
  return { ...full, workloadIssuers: [{ kind: 'spiffe', trustDomain: TRUST_DOMAIN, jwks: { keys: [key] } }, ...full.workloadIssuers!.slice(1)] }
}

// ── Kubernetes ──

describe('Kubernetes projected service-account token', () => {
  const ok = (b: TestBroker) => k8sToken(b)
  const row = (name: string, reason: RegExp, fault: (b: TestBroker) => Promise<string>, extra: Partial<Row> = {}): Row => ({ name, reason, fault, control: ok, workload: 'k8s-notes-agent', ...extra })
  const noWorkload = /^no workload for https:\/\/oidc\.eks/
  const rows: Row[] = [
    row('namespace fails its rule (default)', noWorkload, (b) =>
      k8sToken(b, (c) => {
        c['kubernetes.io'].namespace = 'default'
        c.sub = 'system:serviceaccount:default:notes-agent'
      }),
    ),
    row('service account name fails its rule', noWorkload, (b) =>
      k8sToken(b, (c) => {
        ;(c['kubernetes.io'].serviceaccount as Claims).name = 'billing-agent'
        c.sub = 'system:serviceaccount:agents:billing-agent'
      }),
    ),
    row('pod name fails its glob (billing-agent-…)', noWorkload, (b) =>
      k8sToken(b, (c) => {
        ;(c['kubernetes.io'].pod as Claims).name = 'billing-agent-5d4c3b2a1-q8w7e'
      }),
    ),
    row('sub disagrees with kubernetes.io (namespace)', /^actor_token: sub system:serviceaccount:agents:notes-agent does not match system:serviceaccount:kube-system:notes-agent$/, (b) =>
      k8sToken(b, (c) => {
        c['kubernetes.io'].namespace = 'kube-system'
      }),
    ),
    row('not bound to a pod (kubectl create token)', /not bound to a pod/, (b) =>
      k8sToken(b, (c) => {
        delete c['kubernetes.io'].pod
      }),
    ),
    row('no kubernetes.io claim', /no "kubernetes\.io" claim/, (b) =>
      k8sToken(b, (c) => {
        delete (c as Claims)['kubernetes.io']
      }),
    ),
    row('the API server default audience', /^actor_token: unexpected "aud" claim value/, (b) =>
      k8sToken(b, (c) => {
        c.aud = ['https://kubernetes.default.svc.cluster.local']
      }),
    ),
    row('the broker and the API server as audiences', /"aud" has more than one value/, (b) =>
      k8sToken(b, (c) => {
        c.aud = [b.deps.config.issuer, 'https://kubernetes.default.svc.cluster.local']
      }),
    ),
    row('another cluster\'s issuer', /^untrusted workload issuer https:\/\/container\.googleapis\.com/, (b) =>
      k8sToken(b, (c) => {
        c.iss = OTHER_CLUSTER
      }, { key: keys.k8sOtherCluster }),
    ),
    row('the trusted issuer, signed by another cluster\'s key (same kid)', /signature verification failed/, (b) => k8sToken(b, () => {}, { key: keys.k8sOtherCluster })),
    row('living longer than maxActorTokenLifetime (extended expiration)', /^lifetime 31536000s > 3600s$/, (b) =>
      k8sToken(b, (c) => {
        c.exp = (c.iat as number) + 365 * 86400
      }),
    ),
    row('typ at+jwt', /typ "at\+jwt" not allowed/, (b) => k8sToken(b, () => {}, { header: { typ: 'at+jwt' } })),
  ]
  runRows(rows)

  it('requireBoundPod: false accepts a token without a pod when the rules do not name one', () =>
    withBroker(
      (c) => {
        const full = withAttestation(c)
        return {
          ...full,
          workloadIssuers: full.workloadIssuers!.map((wi) => (wi.kind === 'kubernetes' ? { ...wi, requireBoundPod: false } : wi)),
          workloads: full.workloads!.map((w) => (w.id === 'k8s-notes-agent' ? { ...w, attestation: { ...w.attestation!, claims: { '/kubernetes.io/namespace': 'agents' } } } : w)),
        }
      },
      async (b) => {
        await expectIssued(b, { actor_token: await k8sToken(b, (c) => void delete c['kubernetes.io'].pod) }, 'k8s-notes-agent')
      },
    ))
})

// ── GitHub Actions ──

describe('GitHub Actions OIDC token', () => {
  const ok = (b: TestBroker) => githubToken(b)
  const noWorkload = /^no workload for https:\/\/token\.actions\.githubusercontent\.com repo:/
  const row = (name: string, reason: RegExp, mutate: (c: Claims) => void, header?: Claims): Row => ({ name, reason, fault: (b) => githubToken(b, mutate, header ? { header } : {}), control: ok, workload: 'gh-deployer' })
  const rows: Row[] = [
    row('repository re-created under the same name (new repository_id)', noWorkload, (c) => void (c.repository_id = '998877665')),
    row('repository renamed (same id, other name)', noWorkload, (c) => void (c.repository = 'octo-org/notes-agent-old')),
    row('ref fails its rule (a feature branch)', noWorkload, (c) => void (c.ref = 'refs/heads/feature/x')),
    row('job_workflow_ref in another repository', noWorkload, (c) => void (c.job_workflow_ref = `evil-org/notes-agent/.github/workflows/deploy.yml@refs/heads/main`)),
    row('job_workflow_ref below a subdirectory (* does not cross /)', noWorkload, (c) => void (c.job_workflow_ref = `${GH_REPO}/.github/workflows/sub/deploy.yml@refs/heads/main`)),
    row('job_workflow_ref at another ref', noWorkload, (c) => void (c.job_workflow_ref = `${GH_REPO}/.github/workflows/deploy.yml@refs/heads/dev`)),
    row('environment fails its rule (staging)', noWorkload, (c) => void (c.environment = 'staging')),
    row('no environment claim (a job without an environment)', noWorkload, (c) => void delete c.environment),
    row('the default audience (the repository owner URL)', /^actor_token: unexpected "aud" claim value/, (c) => void (c.aud = 'https://github.com/octo-org')),
    row('no repository_id claim', /"repository_id" is missing or not a numeric id/, (c) => void delete c.repository_id),
    row('issued by a GHES host, not github.com', /^untrusted workload issuer https:\/\/ghes\.example\.com\/_services\/token$/, (c) => void (c.iss = 'https://ghes.example.com/_services/token')),
    row('a jku header', /header parameter "jku" not allowed/, () => {}, { jku: 'https://attacker.example/jwks' }),
  ]
  runRows(rows)

  it('the environment rule is a list: production-eu matches too', () =>
    withBroker(withAttestation, async (b) => {
      await expectIssued(b, { actor_token: await githubToken(b, (c) => void (c.environment = 'production-eu')) }, 'gh-deployer')
    }))

  it('config requires a GitHub workload to pin repository_id or repository_owner_id exactly', async () => {
    const base = withAttestation(testConfig(await testKeys()))
    const gh = (claims: Record<string, unknown>) => ({ ...base, workloads: [{ id: 'gh', attestation: { issuer: GH_ISSUER, claims }, grants }] })
    assert.throws(() => parseConfig(gh({ repository: GH_REPO })), (e: unknown) => e instanceof ConfigError && /workloads\.0\.attestation\.claims: a GitHub workload needs an exact repository_id/.test(e.message))
    assert.throws(() => parseConfig(gh({ repository_id: { glob: '*' } })), ConfigError)
    assert.equal(parseConfig(gh({ repository_owner_id: '65432109' })).workloads.length, 1)
  })
})

// ── claim rules ──

describe('claim rules', () => {
  it('globs: * within a segment (/ and : separate), ** across, the rest literal', () => {
    const cases: [string, string, boolean][] = [
      ['notes-agent-*', 'notes-agent-7c9f8d6b5-x2x9q', true],
      ['notes-agent-*', 'notes-agent', false],
      ['notes-agent-*', 'billing-agent-1', false],
      ['a/*/c', 'a/b/c', true],
      ['a/*/c', 'a/b/x/c', false],
      ['a/**/c', 'a/b/x/c', true],
      ['repo:octo-org/*:ref:refs/heads/main', 'repo:octo-org/notes:ref:refs/heads/main', true],
      ['repo:octo-org/*:ref:refs/heads/main', 'repo:octo-org/notes:environment:x:ref:refs/heads/main', false],
      ['*.yml', 'deploy.yml', true],
      ['*.yml', 'deployXyml', false],
      ['a.b', 'aXb', false],
      ['(x)', '(x)', true],
      ['a**', 'a', true],
      ['**b', 'x/y:b', true],
      ['a*b*c', 'abc', true],
      ['a*b*c', 'a:b:c', false],
      ['a***', 'a/x', true],
      ['', '', true],
      ['x', '', false],
    ]
    for (const [glob, value, expected] of cases) assert.equal(compileGlob(glob).test(value), expected, `${glob} vs ${value}`)
  })

  it('a glob with many wildcards on a long value costs at most len(value) × (len(glob)+1) steps, not exponential', () => {
    // A backtracking regex for these globs tries every way of splitting the run of '-' between the
    // wildcards before failing on the missing suffix: exponential in the number of wildcards.
    const value = '-'.repeat(MAX_GLOB_VALUE_LENGTH - 1) + 'x'
    for (const glob of ['*-*-*-*-prod', '*-*-*-*-*-*-prod', '**-**-**-**-**-prod']) {
      const meter = { steps: 0 }
      assert.equal(compileGlob(glob).test(value, meter), false, glob)
      assert.ok(meter.steps > 0 && meter.steps <= value.length * (glob.length + 1), `${glob}: ${meter.steps} steps`)
    }
    const meter = { steps: 0 }
    assert.equal(compileGlob('*-*-*-*-prod').test(`${'-'.repeat(1000)}prod`, meter), true)
    assert.ok(meter.steps <= 1004 * 13, `${meter.steps} steps`)
  })

  it('a claim value longer than the cap never matches a glob; config refuses a glob longer than its cap', async () => {
    assert.equal(compileGlob('**').test('a'.repeat(MAX_GLOB_VALUE_LENGTH)), true)
    assert.equal(compileGlob('**').test('a'.repeat(MAX_GLOB_VALUE_LENGTH + 1)), false)
    assert.equal(compileRule({ glob: 'a*' })(`a${'b'.repeat(MAX_GLOB_VALUE_LENGTH)}`), false)
    const base = testConfig(await testKeys())
    const withGlob = (glob: string) => ({ ...base, workloads: [{ id: 'w', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: { glob } }, grants: [] }] })
    assert.equal(parseConfig(withGlob('x'.repeat(MAX_GLOB_LENGTH))).workloads.length, 1)
    assert.throws(() => parseConfig(withGlob('x'.repeat(MAX_GLOB_LENGTH + 1))), (e: unknown) => e instanceof ConfigError && /workloads\.0\.attestation\.subject\.glob: a glob of at most 256 characters/.test(e.message))
  })

  it('a plain string is exact (a * in it is literal); a list matches any; missing claims never match', () => {
    assert.equal(compileRule('a*')('a*'), true)
    assert.equal(compileRule('a*')('abc'), false)
    assert.equal(compileRule(['x', { glob: 'y-*' }])('y-1'), true)
    assert.equal(compileRule(['x', { glob: 'y-*' }])('z'), false)
    assert.equal(compileRule({ glob: '**' })(undefined), false)
  })

  it('claim values: top-level names, JSON Pointers into nested claims (~1 for /), numbers and booleans as JSON', () => {
    const payload = { 'kubernetes.io': { pod: { name: 'p' } }, 'https://example.com/x': 'u', 'a/b': { c: 1 }, n: 42, t: true, o: { x: 1 }, arr: ['a'] }
    assert.equal(claimValue(payload, '/kubernetes.io/pod/name'), 'p')
    assert.equal(claimValue(payload, 'https://example.com/x'), 'u')
    assert.equal(claimValue(payload, '/a~1b/c'), '1')
    assert.equal(claimValue(payload, 'n'), '42')
    assert.equal(claimValue(payload, 't'), 'true')
    assert.equal(claimValue(payload, 'o'), undefined)
    assert.equal(claimValue(payload, 'arr'), undefined)
    assert.equal(claimValue(payload, '/kubernetes.io/pod/uid'), undefined)
    assert.equal(claimValue(payload, 'toString'), undefined)
  })

  it('two workloads whose rules both match are refused as ambiguous (no silent pick)', () =>
    withBroker(
      (c) => {
        const full = withAttestation(c)
        return { ...full, workloads: [...full.workloads!, { id: 'spiffe-catch-all', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: { glob: `spiffe://${TRUST_DOMAIN}/**` } }, grants }] }
      },
      async (b) => {
        await expectRefused(b, { actor_token: await svid(b) }, /^ambiguous: .* matches spiffe-notes-agent, spiffe-catch-all$/)
      },
    ))
})

// ── remote key sets ──

type Handler = (req: IncomingMessage, res: ServerResponse) => void

/** A local key server: named routes, a hit counter per path. */
interface KeyServer {
  url: string
  hits: Map<string, number>
  routes: Map<string, Handler>
  close(): Promise<void>
}

async function startKeyServer(): Promise<KeyServer> {
  const hits = new Map<string, number>()
  const routes = new Map<string, Handler>()
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/'
    hits.set(path, (hits.get(path) ?? 0) + 1)
    const h = routes.get(path)
    if (!h) {
      res.writeHead(404).end()
      return
    }
    h(req, res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    routes,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const { port } = s.address() as AddressInfo
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

const json = (body: unknown, headers: Record<string, string> = {}): Handler => (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
}

describe('remote key sets (local 127.0.0.1 server)', () => {
  let ks: KeyServer
  before(async () => {
    ks = await startKeyServer()
  })
  after(() => ks.close())

  const spiffeBundle = (extra: Claims = {}) => ({ keys: [{ ...keys.svidRsa.publicJwk, use: 'jwt-svid' }, { ...keys.k8s.publicJwk, use: 'x509-svid', x5c: ['MIIB'] }], spiffe_sequence: 7, spiffe_refresh_hint: 60, ...extra })
  const remoteSpiffe = (url: string, remote: Record<string, number> = {}) => (c: ConfigInput): ConfigInput => {
    const full = withAttestation(c)
    return { ...full, remoteJwks: { timeout: 500, ...remote }, workloadIssuers: [{ kind: 'spiffe', trustDomain: TRUST_DOMAIN, jwksUri: url }, ...full.workloadIssuers!.slice(1)] }
  }
  const remoteUser = (url: string) => (c: ConfigInput): ConfigInput => ({ ...c, remoteJwks: { timeout: 500 }, subjectIssuers: [{ issuer: USER_ISSUER, jwksUri: url, algorithms: ['ES256'] }] })
  const unavailable = /keys unavailable|failed|exceeds|not a JWK Set/

  it('control: a SPIFFE bundle endpoint serving the bundle → JWT-SVID accepted; x509-svid entries ignored', async () => {
    ks.routes.set('/bundle', json(spiffeBundle()))
    await withBroker(remoteSpiffe(`${ks.url}/bundle`), async (b) => {
      await expectIssued(b, { actor_token: await svid(b) }, 'spiffe-notes-agent')
    })
  })

  it('unreachable bundle endpoint → invalid_request for the actor token (keys unavailable), nothing written', async () => {
    const port = await deadPort()
    await withBroker(remoteSpiffe(`http://127.0.0.1:${port}/bundle`), async (b) => {
      const body = await expectRefused(b, { actor_token: await svid(b) }, /^actor_token: fetching http:\/\/127\.0\.0\.1:\d+\/bundle failed/)
      // Until the caller is known, every attestation failure has the same public description.
      assert.equal(body.error_description, 'actor_token is invalid')
    })
  })

  it('unreachable subject issuer JWKS → invalid_request for the subject token; control: the same issuer served', async () => {
    const port = await deadPort()
    await withBroker(remoteUser(`http://127.0.0.1:${port}/jwks`), async (b) => {
      // The caller (workload) is authenticated, so this refusal is a decision and is audited.
      const before = await counts(b)
      const res = await b.exchange({})
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
      await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /^subject_token: fetching .* failed/ })
    })
    ks.routes.set('/user-jwks', json({ keys: [(await testKeys()).user.publicJwk] }))
    await withBroker(remoteUser(`${ks.url}/user-jwks`), async (b) => {
      await expectIssued(b, {})
    })
  })

  it('oversized response (Content-Length) and oversized chunked response → refused; control: same keys under the limit', async () => {
    const padded = { ...spiffeBundle(), padding: 'x'.repeat(200 * 1024) }
    ks.routes.set('/big', json(padded))
    ks.routes.set('/big-chunked', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      const text = JSON.stringify(padded)
      for (let i = 0; i < text.length; i += 16 * 1024) res.write(text.slice(i, i + 16 * 1024))
      res.end()
    })
    await withBroker(remoteSpiffe(`${ks.url}/big`), async (b) => {
      await expectRefused(b, { actor_token: await svid(b) }, /exceeds 131072/)
    })
    await withBroker(remoteSpiffe(`${ks.url}/big-chunked`), async (b) => {
      await expectRefused(b, { actor_token: await svid(b) }, /exceeds 131072 bytes/)
    })
    await withBroker(remoteSpiffe(`${ks.url}/big`, { maxBytes: 512 * 1024 }), async (b) => {
      await expectIssued(b, { actor_token: await svid(b) }, 'spiffe-notes-agent')
    })
  })

  it('a redirect is never followed, even to valid keys; control: the target itself works', async () => {
    ks.routes.set('/bundle', json(spiffeBundle()))
    ks.routes.set('/moved', (_req, res) => res.writeHead(302, { location: `${ks.url}/bundle` }).end())
    const before = ks.hits.get('/bundle') ?? 0
    await withBroker(remoteSpiffe(`${ks.url}/moved`), async (b) => {
      await expectRefused(b, { actor_token: await svid(b) }, /fetching .*\/moved failed/)
    })
    assert.equal(ks.hits.get('/bundle') ?? 0, before, 'the redirect target was not fetched')
    await withBroker(remoteSpiffe(`${ks.url}/bundle`), async (b) => {
      await expectIssued(b, { actor_token: await svid(b) }, 'spiffe-notes-agent')
    })
  })

  it('a slow endpoint times out → refused; an HTTP 500 → refused; not a JWK Set → refused', async () => {
    ks.routes.set('/slow', (_req, res) => {
      const t = setTimeout(() => json(spiffeBundle())(_req, res), 2000)
      res.on('close', () => clearTimeout(t))
    })
    ks.routes.set('/error', (_req, res) => res.writeHead(500).end('oops'))
    ks.routes.set('/not-a-set', json({ hello: 'world' }))
    await withBroker(remoteSpiffe(`${ks.url}/slow`, { timeout: 200 }), async (b) => {
      await expectRefused(b, { actor_token: await svid(b) }, /timed out/)
    })
    await withBroker(remoteSpiffe(`${ks.url}/error`), async (b) => {
      await expectRefused(b, { actor_token: await svid(b) }, /HTTP 500/)
    })
    await withBroker(remoteSpiffe(`${ks.url}/not-a-set`), async (b) => {
      await expectRefused(b, { actor_token: await svid(b) }, /not a JWK Set/)
    })
  })

  it('the bundle is refreshed per spiffe_refresh_hint: a rotated-out key stops verifying after the hint, not before', async () => {
    let bundle: unknown = spiffeBundle({ spiffe_refresh_hint: 60 })
    ks.routes.set('/rotating', (req, res) => json(bundle)(req, res))
    ks.hits.set('/rotating', 0)
    await withBroker(remoteSpiffe(`${ks.url}/rotating`), async (b) => {
      await expectIssued(b, { actor_token: await svid(b) }, 'spiffe-notes-agent')
      assert.equal(ks.hits.get('/rotating'), 1)
      // The trust domain rotates: the old key leaves the bundle.
      bundle = { keys: [{ ...keys.svidEd.publicJwk, use: 'jwt-svid' }], spiffe_refresh_hint: 60 }
      b.clock.advance(59)
      await expectIssued(b, { actor_token: await svid(b) }, 'spiffe-notes-agent')
      assert.equal(ks.hits.get('/rotating'), 1, 'no fetch before the hint')
      b.clock.advance(2)
      await expectRefused(b, { actor_token: await svid(b) }, /no applicable key/)
      assert.equal(ks.hits.get('/rotating'), 2, 'refetched after the hint')
    })
  })

  it('an unknown kid refetches at most once per cooldown', async () => {
    ks.routes.set('/cool', json(spiffeBundle({ spiffe_refresh_hint: 600 })))
    ks.hits.set('/cool', 0)
    await withBroker(remoteSpiffe(`${ks.url}/cool`, { cooldown: 30 }), async (b) => {
      const unknownKid = () => svid(b, { header: { kid: 'not-in-bundle' } })
      await expectRefused(b, { actor_token: await unknownKid() }, /no applicable key/)
      assert.equal(ks.hits.get('/cool'), 1)
      b.clock.advance(10)
      await expectRefused(b, { actor_token: await unknownKid() }, /no applicable key/)
      assert.equal(ks.hits.get('/cool'), 1, 'within cooldown: no refetch')
      b.clock.advance(21)
      await expectRefused(b, { actor_token: await unknownKid() }, /no applicable key/)
      assert.equal(ks.hits.get('/cool'), 2, 'after cooldown: one refetch')
      await expectIssued(b, { actor_token: await svid(b) }, 'spiffe-notes-agent')
    })
  })

  it('after a failed fetch: refused within the cooldown without refetching, accepted once the keys are back and the cooldown passed', async () => {
    let up = false
    ks.routes.set('/flaky', (req, res) => (up ? json(spiffeBundle())(req, res) : res.writeHead(503).end()))
    ks.hits.set('/flaky', 0)
    await withBroker(remoteSpiffe(`${ks.url}/flaky`, { cooldown: 30 }), async (b) => {
      await expectRefused(b, { actor_token: await svid(b) }, /HTTP 503/)
      up = true
      b.clock.advance(10)
      await expectRefused(b, { actor_token: await svid(b) }, /last fetch failed/)
      assert.equal(ks.hits.get('/flaky'), 1)
      b.clock.advance(21)
      await expectIssued(b, { actor_token: await svid(b) }, 'spiffe-notes-agent')
      assert.equal(ks.hits.get('/flaky'), 2)
    })
  })

  it('stale keys are never used: after cacheMaxAge with the endpoint down, refusal', async () => {
    let up = true
    ks.routes.set('/stale', (req, res) => (up ? json({ keys: [{ ...keys.svidRsa.publicJwk, use: 'jwt-svid' }] })(req, res) : res.writeHead(503).end()))
    await withBroker(remoteSpiffe(`${ks.url}/stale`, { cacheMaxAge: 120 }), async (b) => {
      await expectIssued(b, { actor_token: await svid(b) }, 'spiffe-notes-agent')
      up = false
      b.clock.advance(100)
      await expectIssued(b, { actor_token: await svid(b) }, 'spiffe-notes-agent')
      b.clock.advance(21)
      await expectRefused(b, { actor_token: await svid(b) }, /HTTP 503/)
    })
  })

  it('GitHub issuer without a key source fetches <issuer>/.well-known/jwks', async () => {
    ks.routes.set('/_services/token/.well-known/jwks', json({ keys: [keys.github.publicJwk] }))
    const ghes = `${ks.url}/_services/token`
    await withBroker(
      (c) => {
        const full = withAttestation(c)
        return {
          ...full,
          workloadIssuers: [...full.workloadIssuers!.filter((wi) => wi.kind !== 'github'), { kind: 'github', issuer: ghes }],
          workloads: full.workloads!.map((w) => (w.id === 'gh-deployer' ? { ...w, attestation: { ...w.attestation, issuer: ghes } } : w)),
        }
      },
      async (b) => {
        await expectIssued(b, { actor_token: await githubToken(b, (c) => void (c.iss = ghes)) }, 'gh-deployer')
      },
    )
  })
})

describe('README examples', () => {
  it('the JSON config examples of "Client authentication" and "Workload attestation" are valid config', () => {
    const md = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
    const section = md.slice(md.indexOf('## Client authentication'), md.indexOf('\n## ', md.indexOf('## Workload attestation') + 1))
    const blocks = [...section.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]!) as Record<string, unknown>)
    assert.equal(blocks.length, 2)
    const base = {
      issuer: 'https://broker.example.com',
      database: ':memory:',
      resources: [{ uri: 'https://notes.example.com/mcp', scopes: ['notes:read'] }],
      workloadIssuers: [{ kind: 'spiffe', trustDomain: 'prod.example.com', jwksUri: 'https://spire.prod.example.com/bundle' }],
    }
    const [clientAuth, attestation] = blocks.map((b) => parseConfig({ ...base, ...b }))
    assert.equal(clientAuth!.workloads[0]!.tokenEndpointAuth, 'private_key_jwt')
    assert.deepEqual(attestation!.workloadIssuers.map((w) => w.kind), ['spiffe', 'kubernetes', 'github'])
    assert.deepEqual(attestation!.workloads.map((w) => w.id), ['notes-agent', 'k8s-notes-agent', 'gh-deployer'])
  })
})
