/**
 * Every kind of catalog object (src/catalog/kinds.ts CATALOG_KINDS), one table: each kind is
 * created, read, listed, replaced, switched off and on, and deleted — over HTTP and over the CLI —
 * with a validation error naming the field, auditors and operators refused on every write (403
 * `insufficient_scope`, nothing changed but the refusal's audit row), an audit row with
 * `{before, after}` for every write, and the change in force for the very next request (over the
 * CLI: for a running broker on the same database, at its next refresh).
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, describe, it } from 'node:test'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { argon2Hasher } from '../src/broker.js'
import { refreshCatalog } from '../src/catalog/catalog.js'
import { CATALOG_KINDS, type CatalogKind } from '../src/catalog/kinds.js'
import type { ConfigInput } from '../src/config.js'
import { ADMIN_KEY, createTestBroker, NOTES, spiffeId, TRUST_DOMAIN, testConfig, withBroker, type TestBroker } from './harness.js'

type Json = Record<string, unknown>

const AUDITOR = 'tpa_auditor-key-0123456789'
const OPERATOR = 'tpa_operator-key-0123456789'
let hashes: { auditor: string; operator: string }
/** The Kubernetes issuer's key (the table's cases are built before any hook runs). */
const k8s = await (async () => {
  const { publicKey, privateKey } = await generateKeyPair('ES256')
  return { publicJwk: { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' } as Json, privateKey }
})()

const K8S = 'https://k8s.test.example'
const IDP2 = 'https://idp2.test.example'
const DOCS = 'https://docs.test.example/mcp'

/**
 * The test configuration every kind runs on: role keys, a prefix on the file's subject issuer
 * (so a second one may be added) and a workload attested by the Kubernetes issuer the table adds.
 */
const base = (c: ConfigInput): ConfigInput => ({
  ...c,
  subjectIssuers: c.subjectIssuers!.map((si) => ({ ...si, subjectPrefix: 'idp:' })),
  workloads: [...c.workloads!, { id: 'pod-agent', attestation: { issuer: K8S, subject: 'system:serviceaccount:agents:notes' }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] }],
  admin: { ...c.admin, keys: [{ name: 'audit-1', role: 'auditor', hash: hashes.auditor }, { name: 'ops-1', role: 'operator', hash: hashes.operator }] },
})

/** What a change answered, for the probes that need it (an admin key made). */
interface Made {
  adminKey?: string
}

/** One kind: a new object, its key, a replacement, a bad object and the field it names, and how the next request shows it in force. */
interface KindCase {
  kind: CatalogKind
  key: string
  create: Json
  /** The CLI's `create` arguments (a JSON file by default). */
  cliCreate?: string[]
  update: Json
  cliUpdate?: string[]
  /** A new object refused, and the field path the refusal names. */
  bad: Json
  cliBad?: string[]
  badField: RegExp
  /** Whether the object is in force for the next request (one that uses it). */
  inForce(b: TestBroker, made: Made): Promise<boolean>
  /** What the replacement changed, seen by the next request. */
  updated(b: TestBroker, made: Made): Promise<boolean>
  /** Open tasks a switch-off ends: those the probes opened while it was in force. */
  endsTasks: boolean
}

async function exchangeStatus(b: TestBroker, params: Record<string, string>): Promise<number> {
  return (await b.exchange(params)).status
}

const metadata = async (b: TestBroker) => (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as { protected_resources: string[]; scopes_supported?: string[] }

async function k8sToken(b: TestBroker): Promise<string> {
  const now = b.clock.now()
  return new SignJWT({ 'kubernetes.io': { namespace: 'agents', serviceaccount: { name: 'notes', uid: 'u1' }, pod: { name: 'p', uid: 'p1' } } })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(K8S).setSubject('system:serviceaccount:agents:notes').setAudience(b.deps.config.issuer).setIssuedAt(now).setExpirationTime(now + 600).sign(k8s.privateKey)
}

function cases(): KindCase[] {
  const idp2 = { issuer: IDP2, subjectPrefix: 'two:', algorithms: ['ES256'], jwks: { keys: [] as Json[] } }
  const k8sIssuer = () => ({ kind: 'kubernetes', issuer: K8S, algorithms: ['ES256'], jwks: { keys: [k8s.publicJwk] } })
  const agent = { id: 'agent-new', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('new') }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] }
  return [
    {
      kind: 'subject-issuers',
      key: IDP2,
      create: idp2,
      update: { ...idp2, maxTokenLifetime: 600 },
      bad: { ...idp2, issuer: 'https://idp3.test.example', subjectPrefix: 'three' },
      badField: /subjectPrefix/,
      // A session token of the new issuer is accepted (the same test key signs it).
      inForce: async (b) => (await exchangeStatus(b, { subject_token: await b.session({ iss: IDP2, exp: b.clock.now() + 300 }) })) === 200,
      // At most 600 s: a session token of an hour is now refused.
      updated: async (b) => (await exchangeStatus(b, { subject_token: await b.session({ iss: IDP2 }) })) === 400,
      endsTasks: true,
    },
    {
      kind: 'workload-issuers',
      key: K8S,
      create: k8sIssuer(),
      update: { ...k8sIssuer(), audience: 'https://elsewhere.example' },
      bad: { ...k8sIssuer(), issuer: 'https://k8s3.test.example', algorithms: ['HS256'] },
      badField: /algorithms\.0/,
      inForce: async (b) => (await exchangeStatus(b, { actor_token: await k8sToken(b) })) === 200,
      // Replaced to expect another audience: the attestation minted for the broker is refused.
      updated: async (b) => (await exchangeStatus(b, { actor_token: await k8sToken(b) })) === 400,
      endsTasks: true,
    },
    {
      kind: 'workloads',
      key: 'agent-new',
      create: agent,
      update: { ...agent, grants: [{ resource: NOTES, scopes: ['notes:read', 'notes:write'] }] },
      bad: { ...agent, id: 'agent-bad', maxTtl: -5 },
      badField: /maxTtl/,
      inForce: async (b) => (await exchangeStatus(b, { actor_token: await b.svid('new') })) === 200,
      updated: async (b) => (await exchangeStatus(b, { actor_token: await b.svid('new'), scope: 'notes:write' })) === 200,
      endsTasks: true,
    },
    {
      kind: 'resources',
      key: DOCS,
      create: { uri: DOCS, scopes: ['docs:read'] },
      update: { uri: DOCS, scopes: ['docs:read', 'docs:write'] },
      bad: { uri: 'https://docs3.test.example/mcp', scopes: ['docs:read'], maxTokensPerTask: 0 },
      badField: /maxTokensPerTask/,
      inForce: async (b) => (await metadata(b)).protected_resources.includes(DOCS),
      updated: async (b) => (await metadata(b)).scopes_supported?.includes('docs:write') === true,
      endsTasks: false,
    },
    {
      kind: 'admin-keys',
      key: 'ops-2',
      create: { name: 'ops-2', role: 'operator' },
      cliCreate: ['ops-2', 'operator'],
      update: { role: 'auditor' },
      cliUpdate: ['ops-2', 'auditor'],
      bad: { name: 'ops-3', role: 'root' },
      cliBad: ['ops-3', 'root'],
      badField: /role/,
      // The key made reads the admin API; once an auditor's, it may no longer act on tasks.
      inForce: async (b, made) => (await b.app.request('/admin/tasks', { headers: { authorization: `Bearer ${made.adminKey!}` } })).status === 200,
      updated: async (b, made) => (await b.app.request('/admin/tasks/revoke', { method: 'POST', headers: { authorization: `Bearer ${made.adminKey!}`, 'content-type': 'application/json' }, body: JSON.stringify({ workload: 'agent-a' }) })).status === 403,
      endsTasks: false,
    },
  ]
}

async function api(b: TestBroker, method: string, path: string, body?: unknown, key = ADMIN_KEY): Promise<{ status: number; json: Json }> {
  const res = await b.app.request(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  return { status: res.status, json: (await res.json()) as Json }
}

/** The stored catalog, the audit log's length, the open tasks and the catalog in force: what a refused write leaves as it was. */
async function snapshot(b: TestBroker) {
  return {
    catalog: await b.rawQuery('select kind, key, body, enabled from catalog_objects order by id'),
    audit: await b.count('audit_events'),
    tasks: await b.rawQuery("select id from tasks where status in ('active', 'pending_approval') order by id"),
    revision: await b.deps.stores.catalog.revision(),
    config: b.deps.config,
  }
}

interface CatalogAudit {
  action: string
  reason: string
  detail: { kind: string; key: string; before: { enabled: boolean; object: Json } | null; after: { enabled: boolean; object: Json } | null }
}

async function catalogAudits(b: TestBroker): Promise<CatalogAudit[]> {
  return (await b.rawQuery("select action, reason, detail from audit_events where action like 'catalog.%' order by id") as { action: string; reason: string; detail: string }[])
    .map((r) => ({ action: r.action, reason: r.reason, detail: JSON.parse(r.detail) as CatalogAudit['detail'] }))
}

/** Each write's audit row: the action, who, and the entry before and after it. */
function assertAudited(rows: CatalogAudit[], c: KindCase, by: string) {
  assert.deepEqual(rows.map((r) => r.action), ['catalog.create', 'catalog.replace', 'catalog.disable', 'catalog.enable', 'catalog.delete'])
  for (const r of rows) {
    assert.deepEqual([r.detail.kind, r.detail.key], [c.kind, c.key])
    assert.ok(r.reason.endsWith(` by ${by}`), r.reason)
  }
  const [created, replaced, disabled, enabled, deleted] = rows as [CatalogAudit, CatalogAudit, CatalogAudit, CatalogAudit, CatalogAudit]
  assert.equal(created.detail.before, null)
  assert.equal(created.detail.after!.enabled, true)
  // The replacement's before is the object created, its after the one given (secrets redacted).
  assert.deepEqual(replaced.detail.before!.object, created.detail.after!.object)
  assert.notDeepEqual(replaced.detail.after!.object, replaced.detail.before!.object)
  // What the replacement changed is what its row's after says (defaults are filled in around it).
  const changed = Object.entries(c.update).filter(([field, value]) => JSON.stringify(value) !== JSON.stringify(c.create[field]))
  assert.ok(changed.length > 0)
  for (const [field, value] of changed) {
    assert.deepEqual(replaced.detail.after!.object[field], value, `${c.kind}: ${field} after the replacement`)
    assert.notDeepEqual(replaced.detail.before!.object[field], value, `${c.kind}: ${field} before the replacement`)
  }
  assert.deepEqual([disabled.detail.before!.enabled, disabled.detail.after!.enabled], [true, false])
  assert.deepEqual([enabled.detail.before!.enabled, enabled.detail.after!.enabled], [false, true])
  assert.equal(deleted.detail.before!.enabled, true)
  assert.equal(deleted.detail.after, null)
}

before(async () => {
  hashes = { auditor: await argon2Hasher.hash(AUDITOR), operator: await argon2Hasher.hash(OPERATOR) }
})

/** The subject issuer case signs with the harness's user key: its public half, once the keys exist. */
function withUserKey(c: KindCase, b: TestBroker): KindCase {
  if (c.kind !== 'subject-issuers') return c
  const jwks = { keys: [b.keys.user.publicJwk as Json] }
  return { ...c, create: { ...c.create, jwks }, update: { ...c.update, jwks }, bad: { ...c.bad, jwks } }
}

describe('catalog kinds over HTTP', () => {
  it('covers every kind', () => assert.deepEqual(cases().map((c) => c.kind), [...CATALOG_KINDS]))

  for (const kase of cases()) {
    it(`${kase.kind}: created, read, listed, replaced, disabled, enabled, deleted — each in force for the next request, audited with before and after`, () =>
      withBroker(base, async (b) => {
        const c = withUserKey(kase, b)
        const path = `/admin/${c.kind}`
        const one = `${path}/${encodeURIComponent(c.key)}`
        const made: Made = {}
        assert.equal((await api(b, 'GET', one)).status, 404)

        const created = await api(b, 'POST', path, c.create)
        assert.equal(created.status, 201, JSON.stringify(created.json))
        assert.deepEqual([created.json.kind, created.json.key, created.json.action, created.json.tasks_revoked], [c.kind, c.key, 'create', 0])
        if (c.kind === 'admin-keys') made.adminKey = String(created.json.admin_key)
        assert.equal(await c.inForce(b, made), true, 'in force for the next request')

        // Read and listed, by an auditor too, as the change answered it.
        const shown = await api(b, 'GET', one, undefined, AUDITOR)
        assert.equal(shown.status, 200)
        assert.deepEqual(shown.json, created.json.entry)
        assert.deepEqual([shown.json.managed_by, shown.json.enabled], ['api', true])
        const listed = await api(b, 'GET', path, undefined, AUDITOR)
        assert.equal(listed.status, 200)
        assert.deepEqual((listed.json.items as Json[]).filter((e) => e.key === c.key), [shown.json])

        const replaced = await api(b, 'PUT', one, c.update)
        assert.equal(replaced.status, 200, JSON.stringify(replaced.json))
        assert.equal(await c.updated(b, made), true, 'the replacement is in force for the next request')
        const open = (await b.deps.stores.tasks.openRefs()).length

        const disabled = await api(b, 'POST', `${one}/disable`)
        assert.equal(disabled.status, 200, JSON.stringify(disabled.json))
        assert.equal((disabled.json.entry as Json).enabled, false)
        if (c.endsTasks) {
          assert.ok(Number(disabled.json.tasks_revoked) >= 1, 'its open tasks ended')
          assert.equal((await b.deps.stores.tasks.openRefs()).length, open - Number(disabled.json.tasks_revoked))
        }
        assert.equal(await c.inForce(b, made), false, 'off for the next request')

        const enabled = await api(b, 'POST', `${one}/enable`)
        assert.equal(enabled.status, 200, JSON.stringify(enabled.json))
        assert.equal((enabled.json.entry as Json).enabled, true)
        assert.equal(await c.updated(b, made), true, 'on again, as replaced')

        const deleted = await api(b, 'DELETE', one)
        assert.equal(deleted.status, 200, JSON.stringify(deleted.json))
        assert.equal(deleted.json.entry, undefined)
        assert.equal((await api(b, 'GET', one)).status, 404)
        assert.ok(!((await api(b, 'GET', path)).json.items as Json[]).some((e) => e.key === c.key))
        assert.equal(await c.inForce(b, made), false, 'gone for the next request')

        assertAudited(await catalogAudits(b), c, 'admin:key0')
        assert.equal((await b.deps.stores.audit.verify()).ok, true)
      }))

    it(`${kase.kind}: a bad object → 400 invalid_request naming the field in error_description and problems; nothing changed`, () =>
      withBroker(base, async (b) => {
        const c = withUserKey(kase, b)
        const before = await snapshot(b)
        const res = await api(b, 'POST', `/admin/${c.kind}`, c.bad)
        assert.equal(res.status, 400)
        assert.equal(res.json.error, 'invalid_request')
        assert.match(String(res.json.error_description), c.badField)
        assert.ok((res.json.problems as string[]).some((p) => c.badField.test(p.split(':')[0]!)), JSON.stringify(res.json.problems))
        assert.deepEqual(await snapshot(b), before)
      }))

    it(`${kase.kind}: an auditor and an operator are refused every write — 403 insufficient_scope, one admin.refuse row each, nothing else changed`, () =>
      withBroker(base, async (b) => {
        const c = withUserKey(kase, b)
        const one = `/admin/${c.kind}/${encodeURIComponent(c.key)}`
        // An object to refuse changes to (created by the admin).
        assert.equal((await api(b, 'POST', `/admin/${c.kind}`, c.create)).status, 201)
        const writes: [string, string, unknown][] = [['POST', `/admin/${c.kind}`, c.create], ['PUT', one, c.update], ['POST', `${one}/disable`, undefined], ['POST', `${one}/enable`, undefined], ['DELETE', one, undefined]]
        for (const [who, key] of [['audit-1', AUDITOR], ['ops-1', OPERATOR]] as const) {
          for (const [method, path, body] of writes) {
            const before = await snapshot(b)
            const res = await api(b, method, path, body, key)
            assert.equal(res.status, 403, `${who} ${method} ${path}`)
            assert.equal(res.json.error, 'insufficient_scope')
            assert.deepEqual({ ...(await snapshot(b)), audit: before.audit }, before, 'nothing changed')
            assert.equal(await b.count('audit_events'), before.audit + 1)
            const row = (await b.lastAudit())!
            assert.deepEqual([row.action, row.decision], ['admin.refuse', 'deny'])
            assert.match(String(row.reason), new RegExp(`^admin:${who} \\((auditor|operator)\\) may not .*: it needs admin$`))
          }
        }
      }))
  }
})

/** The CLI with a configuration file (the test configuration, on a database file). */
function cli(config: string, args: string[], input?: string) {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args, '--json'], {
    encoding: 'utf8',
    timeout: 60_000,
    ...(input === undefined ? {} : { input }),
    env: { ...process.env, TASKPASS_CONFIG: config },
  })
  return { status: run.status, stdout: run.stdout, stderr: run.stderr }
}

describe('catalog kinds over the CLI', () => {
  for (const kase of cases()) {
    it(`${kase.kind}: create, show, list, update, disable, enable, delete from the CLI — the API's answers, audited by admin:cli, taken up by a running broker at its next refresh; a bad object exits 1 naming the field`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'taskpass-catalog-kinds-'))
      const database = join(dir, 'taskpass.db')
      const b = await createTestBroker({ config: (c) => ({ ...base(c), database }) })
      try {
        const c = withUserKey(kase, b)
        const configFile = join(dir, 'config.json')
        writeFileSync(configFile, JSON.stringify({ ...base(testConfig(b.keys)), database, keys: { kek: b.deps.config.keys.kek } }))
        const file = (name: string, body: Json) => {
          const path = join(dir, `${name}.json`)
          writeFileSync(path, JSON.stringify(body))
          return path
        }
        const run = (args: string[], input?: string) => {
          const out = cli(configFile, [c.kind, ...args], input)
          assert.equal(out.status, 0, `${c.kind} ${args.join(' ')}: ${out.stderr}`)
          return JSON.parse(out.stdout) as Json
        }
        const made: Made = {}
        const refreshed = async () => assert.equal(await refreshCatalog(b.deps), true, 'the running broker takes the change up')

        const created = run(['create', ...(c.cliCreate ?? [file('create', c.create)])])
        assert.deepEqual([created.kind, created.key, created.action], [c.kind, c.key, 'create'])
        if (c.kind === 'admin-keys') made.adminKey = String(created.admin_key)
        await refreshed()
        assert.equal(await c.inForce(b, made), true)
        // The CLI's answers are the API's.
        assert.deepEqual(run(['show', c.key]), (await api(b, 'GET', `/admin/${c.kind}/${encodeURIComponent(c.key)}`)).json)
        assert.deepEqual(run(['list']), (await api(b, 'GET', `/admin/${c.kind}`)).json)

        assert.equal(run(['update', ...(c.cliUpdate ?? [c.key, file('update', c.update)])]).action, 'replace')
        await refreshed()
        assert.equal(await c.updated(b, made), true)
        const disabled = run(['disable', c.key])
        assert.equal((disabled.entry as Json).enabled, false)
        if (c.endsTasks) assert.ok(Number(disabled.tasks_revoked) >= 1, 'the CLI ended its open tasks')
        await refreshed()
        assert.equal(await c.inForce(b, made), false)
        assert.equal((run(['enable', c.key]).entry as Json).enabled, true)
        await refreshed()
        assert.equal(await c.updated(b, made), true)
        assert.equal(run(['delete', c.key]).action, 'delete')
        await refreshed()
        assert.equal((await api(b, 'GET', `/admin/${c.kind}/${encodeURIComponent(c.key)}`)).status, 404)
        assertAudited(await catalogAudits(b), c, 'admin:cli')

        const before = await snapshot(b)
        const bad = cli(configFile, [c.kind, 'create', ...(c.cliBad ?? ['-'])], c.cliBad ? undefined : JSON.stringify(c.bad))
        assert.equal(bad.status, 1)
        const line = JSON.parse(bad.stderr.trim()) as { error: string; error_description: string; problems: string[] }
        assert.equal(line.error, 'invalid_request')
        assert.match(line.error_description, c.badField)
        assert.ok(line.problems.some((p) => c.badField.test(p.split(':')[0]!)), JSON.stringify(line.problems))
        assert.equal(await refreshCatalog(b.deps), false, 'nothing stored')
        assert.deepEqual(await snapshot(b), before)
      } finally {
        await b.close()
      }
    })
  }
})
