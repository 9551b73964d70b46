/**
 * The catalog through the admin API: subject issuers, workload issuers, workloads, resources and
 * admin keys created, read, replaced, switched off and on, and deleted — validated as the config
 * file is, audited with before and after, in force for the very next request, and ending the
 * tasks of what is switched off.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { deleteObject, refreshCatalog, setEnabled } from '../src/catalog/catalog.js'
import { ADMIN_KEY, CALENDAR, createTestBroker, NOTES, spiffeId, TRUST_DOMAIN, withBroker, type TestBroker } from './harness.js'
import { argon2Hasher } from '../src/broker.js'

type Json = Record<string, unknown>

async function api(b: TestBroker, method: string, path: string, body?: unknown, key = ADMIN_KEY): Promise<{ status: number; json: Json }> {
  const res = await b.app.request(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  return { status: res.status, json: (await res.json()) as Json }
}

const enc = encodeURIComponent
const NEW_AGENT = { id: 'agent-new', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('new') }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] }

/** What a refused change must leave as it was: the stored catalog, the audit log, the tasks. */
async function snapshot(b: TestBroker) {
  return {
    catalog: await b.rawQuery('select kind, key, body, enabled from catalog_objects order by id'),
    audit: await b.count('audit_events'),
    tasks: (await b.rawQuery("select count(*) as n from tasks where status = 'active'"))[0],
    revision: await b.deps.stores.catalog.revision(),
    config: b.deps.config,
  }
}

async function exchange(b: TestBroker, agent: string, resource = NOTES, scope = 'notes:read') {
  const res = await b.exchange({ actor_token: await b.svid(agent), resource, scope })
  return { status: res.status, json: (await res.json()) as Json }
}

describe('catalog: workloads', () => {
  it('created, replaced, disabled, enabled and deleted through the API, each in force for the next exchange and audited with before and after', () =>
    withBroker(undefined, async (b) => {
      assert.equal((await exchange(b, 'new')).status, 400, 'not a workload yet')

      const created = await api(b, 'POST', '/admin/workloads', NEW_AGENT)
      assert.equal(created.status, 201, JSON.stringify(created.json))
      assert.equal((created.json.entry as Json).managed_by, 'api')
      const firstNew = await exchange(b, "new"); assert.equal(firstNew.status, 200, JSON.stringify(firstNew.json) + JSON.stringify(b.logs.slice(-3)))
      const audit = (await b.lastAudit())!
      assert.equal(audit.action, 'token.exchange')
      const createdRow = (await b.rawQuery("select * from audit_events where action = 'catalog.create'"))[0] as Json
      assert.match(String(createdRow.reason), /workload agent-new created by admin:key0/)
      const detail = JSON.parse(String(createdRow.detail)) as { before: unknown; after: { object: { id: string } } }
      assert.equal(detail.before, null)
      assert.equal(detail.after.object.id, 'agent-new')

      // Replaced: notes:write granted from now on.
      assert.equal((await exchange(b, 'new', NOTES, 'notes:write')).status, 400)
      const replaced = await api(b, 'PUT', '/admin/workloads/agent-new', { ...NEW_AGENT, grants: [{ resource: NOTES, scopes: ['notes:read', 'notes:write'] }] })
      assert.equal(replaced.status, 200, JSON.stringify(replaced.json))
      assert.equal((await exchange(b, 'new', NOTES, 'notes:write')).status, 200)
      const replacedRow = (await b.rawQuery("select detail from audit_events where action = 'catalog.replace'"))[0] as Json
      const change = JSON.parse(String(replacedRow.detail)) as { before: { object: { grants: { scopes: string[] }[] } }; after: { object: { grants: { scopes: string[] }[] } } }
      assert.deepEqual(change.before.object.grants[0]!.scopes, ['notes:read'])
      assert.deepEqual(change.after.object.grants[0]!.scopes, ['notes:read', 'notes:write'])

      // Disabled: its open tasks end, their tokens revoked, the feed told; the next exchange refused.
      const open = await b.deps.stores.tasks.list({ statuses: ['active'], workloadId: 'agent-new', limit: 10 })
      assert.equal(open.length, 2)
      const events = await b.count('revocation_events')
      const disabled = await api(b, 'POST', '/admin/workloads/agent-new/disable')
      assert.equal(disabled.status, 200, JSON.stringify(disabled.json))
      assert.equal(disabled.json.tasks_revoked, 2)
      assert.equal((disabled.json.entry as Json).enabled, false)
      for (const t of open) assert.equal((await b.deps.stores.tasks.get(t.id))!.status, 'revoked')
      assert.equal(await b.count('revocation_events'), events + 2)
      assert.equal(((await b.rawQuery("select count(*) as n from tokens where revoked_at is null and task_id in (select id from tasks where workload_id = 'agent-new')"))[0] as { n: number }).n, 0)
      const refused = await exchange(b, 'new')
      assert.equal(refused.status, 400)
      assert.equal(refused.json.error, 'unauthorized_client')

      assert.equal((await api(b, 'POST', '/admin/workloads/agent-new/enable')).status, 200)
      assert.equal((await exchange(b, 'new')).status, 200)

      const deleted = await api(b, 'DELETE', '/admin/workloads/agent-new')
      assert.equal(deleted.status, 200)
      assert.equal(deleted.json.tasks_revoked, 1)
      assert.equal((await api(b, 'GET', '/admin/workloads/agent-new')).status, 404)
      assert.equal((await exchange(b, 'new')).status, 400)
      const actions = (await b.rawQuery("select action from audit_events where action like 'catalog.%' order by id") as { action: string }[]).map((r) => r.action)
      assert.deepEqual(actions, ['catalog.create', 'catalog.replace', 'catalog.disable', 'catalog.enable', 'catalog.delete'])
      assert.equal((await b.deps.stores.audit.verify()).ok, true)
    }))

  it('refuses a bad object with 400 invalid_request naming every bad field, and changes nothing', () =>
    withBroker(undefined, async (b) => {
      const before = await snapshot(b)
      const cases: [unknown, RegExp][] = [
        [{ ...NEW_AGENT, grants: [{ resource: 'https://nowhere.example/mcp', scopes: ['x'] }] }, /^workloads\[agent-new\]\.grants\.0\.resource: unknown resource https:\/\/nowhere\.example\/mcp$/],
        [{ ...NEW_AGENT, maxTtl: -5 }, /^maxTtl: /],
        [{ ...NEW_AGENT, tokenz: 1 }, /tokenz/],
        [{ ...NEW_AGENT, id: 'bad id!' }, /^id: /],
        [{ ...NEW_AGENT, delegateTo: ['nobody'] }, /^workloads\[agent-new\]\.delegateTo\.0: unknown workload nobody$/],
        [[NEW_AGENT], /^\(body\): a JSON object$/],
      ]
      for (const [body, problem] of cases) {
        const res = await api(b, 'POST', '/admin/workloads', body)
        assert.equal(res.status, 400, JSON.stringify(body))
        assert.equal(res.json.error, 'invalid_request')
        assert.ok((res.json.problems as string[]).some((p) => problem.test(p)), `${JSON.stringify(res.json.problems)} should match ${problem}`)
      }
      const notJson = await b.app.request('/admin/workloads', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: '{' })
      assert.equal(notJson.status, 400)
      assert.equal(((await notJson.json()) as Json).error, 'invalid_request')
      // The key is the path's: a replacement may not rename.
      await api(b, 'POST', '/admin/workloads', NEW_AGENT)
      const afterCreate = await snapshot(b)
      const renamed = await api(b, 'PUT', '/admin/workloads/agent-new', { ...NEW_AGENT, id: 'agent-other' })
      assert.equal(renamed.status, 400)
      assert.match((renamed.json.problems as string[])[0]!, /^id: must stay agent-new/)
      const duplicate = await api(b, 'POST', '/admin/workloads', NEW_AGENT)
      assert.equal(duplicate.status, 409)
      assert.equal(duplicate.json.error, 'conflict')
      assert.deepEqual(await snapshot(b), afterCreate)
      assert.notDeepEqual(before.catalog, afterCreate.catalog)
    }))

  it('an object of the file is the file\'s: 409 conflict to replace, delete or re-create it; it may be switched off, which survives a restart, and on again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-catalog-'))
    const database = join(dir, 'taskpass.db')
    const first = await createTestBroker({ config: (c) => ({ ...c, database }) })
    let kek: string
    try {
      kek = first.deps.config.keys.kek!
      const before = await snapshot(first)
      for (const [method, path, body] of [
        ['PUT', '/admin/workloads/agent-b', { id: 'agent-b', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('b') } }],
        ['DELETE', '/admin/workloads/agent-b', undefined],
        ['POST', '/admin/workloads', { id: 'agent-b', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('b') } }],
      ] as const) {
        const res = await api(first, method, path, body)
        assert.equal(res.status, 409, `${method} ${path}`)
        assert.equal(res.json.error, 'conflict')
        assert.match(String(res.json.error_description), /defined by the configuration file/)
      }
      assert.deepEqual(await snapshot(first), before)
      assert.equal((await exchange(first, 'b')).status, 200)
      const off = await api(first, 'POST', '/admin/workloads/agent-b/disable')
      assert.equal(off.status, 200)
      assert.equal(off.json.tasks_revoked, 1)
      assert.equal((await exchange(first, 'b')).json.error, 'unauthorized_client')
    } finally {
      await first.close()
    }
    // A restart with the same file: still off.
    const second = await createTestBroker({ config: (c) => ({ ...c, database, keys: { kek } }) })
    try {
      const entry = (await api(second, 'GET', '/admin/workloads/agent-b')).json
      assert.equal(entry.managed_by, 'file')
      assert.equal(entry.enabled, false)
      assert.equal((await exchange(second, 'b')).json.error, 'unauthorized_client')
      assert.equal((await api(second, 'POST', '/admin/workloads/agent-b/enable')).status, 200)
      assert.equal((await exchange(second, 'b')).status, 200)
      assert.equal(((await second.rawQuery('select count(*) as n from catalog_objects'))[0] as { n: number }).n, 0, 'on again: nothing of the file is stored')
    } finally {
      await second.close()
    }
  })

  it('the file may not define what the API created: the broker refuses to start, naming it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-catalog-'))
    const database = join(dir, 'taskpass.db')
    const first = await createTestBroker({ config: (c) => ({ ...c, database }) })
    const kek = first.deps.config.keys.kek!
    try {
      assert.equal((await api(first, 'POST', '/admin/workloads', NEW_AGENT)).status, 201)
    } finally {
      await first.close()
    }
    await assert.rejects(
      createTestBroker({ config: (c) => ({ ...c, database, keys: { kek }, workloads: [...c.workloads!, NEW_AGENT] }) }),
      (e: Error & { issues?: string[] }) => e.issues?.some((i) => /^workloads: workload agent-new is defined both in the configuration file and through the admin API/.test(i)) === true,
    )
  })
})

describe('catalog: resources and issuers', () => {
  it('a resource created is exchangeable at once for a workload granted it; switched off, the tasks that include it end and it is an unknown target', () =>
    withBroker(undefined, async (b) => {
      const DOCS = 'https://docs.test.example/mcp'
      assert.equal((await api(b, 'POST', '/admin/resources', { uri: DOCS, scopes: ['docs:read'] })).status, 201)
      assert.equal((await api(b, 'POST', '/admin/workloads', { ...NEW_AGENT, grants: [{ resource: DOCS, scopes: ['docs:read'] }] })).status, 201)
      assert.equal((await exchange(b, 'new', DOCS, 'docs:read')).status, 200)
      assert.equal((await exchange(b, 'a', CALENDAR, 'cal:read')).status, 200)
      // Deleting it while a workload grants it: refused, naming the grant.
      const inUse = await api(b, 'DELETE', `/admin/resources/${enc(DOCS)}`)
      assert.equal(inUse.status, 400)
      assert.match((inUse.json.problems as string[]).join('\n'), /workloads\[agent-new\]\.grants\.0\.resource: unknown resource/)
      const off = await api(b, 'POST', `/admin/resources/${enc(DOCS)}/disable`)
      assert.equal(off.status, 200, JSON.stringify(off.json))
      assert.equal(off.json.tasks_revoked, 1)
      const refused = await exchange(b, 'new', DOCS, 'docs:read')
      assert.equal(refused.status, 400)
      assert.equal(refused.json.error, 'invalid_target')
      // The calendar task of agent-a was not touched; the file's calendar can be switched off too.
      assert.equal((await b.deps.stores.tasks.list({ statuses: ['active'], workloadId: 'agent-a', limit: 5 })).length, 1)
      const metadata = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as { protected_resources: string[] }
      assert.ok(!metadata.protected_resources.includes(DOCS))
      assert.equal((await api(b, 'POST', `/admin/resources/${enc(DOCS)}/enable`)).status, 200)
      assert.equal((await exchange(b, 'new', DOCS, 'docs:read')).status, 200)
      assert.equal((await api(b, 'GET', `/admin/resources/${enc('https://nowhere.example')}`)).status, 404)
    }))

  it('a subject issuer switched off ends its users\' tasks; another one is validated with the whole catalog (prefixes); secrets are never shown', () =>
    withBroker(undefined, async (b) => {
      assert.equal((await exchange(b, 'a')).status, 200)
      const second = { issuer: 'https://idp2.test.example', jwks: { keys: [b.keys.user.publicJwk] }, subjectPrefix: 'two:' }
      const refused = await api(b, 'POST', '/admin/subject-issuers', second)
      assert.equal(refused.status, 400)
      assert.match((refused.json.problems as string[]).join('\n'), /^subjectIssuers\[https:\/\/idp\.test\.example\]\.subjectPrefix: required when there is more than one subject issuer$/m)
      const off = await api(b, 'POST', `/admin/subject-issuers/${enc('https://idp.test.example')}/disable`)
      assert.equal(off.status, 200)
      assert.equal(off.json.tasks_revoked, 1)
      const now = await exchange(b, 'a')
      assert.equal(now.status, 400)
      assert.equal((await api(b, 'POST', `/admin/subject-issuers/${enc('https://idp.test.example')}/enable`)).status, 200)
      assert.equal((await exchange(b, 'a')).status, 200)
    }))

  it('a workload issuer created attests a workload created with it, at once; deleting the issuer ends that workload\'s tasks', () =>
    withBroker(undefined, async (b) => {
      const { publicKey, privateKey } = await generateKeyPair('ES256')
      const K8S = 'https://k8s.test.example'
      const issuer = { kind: 'kubernetes', issuer: K8S, jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] }, algorithms: ['ES256'] }
      assert.equal((await api(b, 'POST', '/admin/workload-issuers', issuer)).status, 201)
      const workload = { id: 'pod-agent', attestation: { issuer: K8S, subject: 'system:serviceaccount:agents:notes' }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] }
      assert.equal((await api(b, 'POST', '/admin/workloads', workload)).status, 201)
      const now = b.clock.now()
      const token = await new SignJWT({ 'kubernetes.io': { namespace: 'agents', serviceaccount: { name: 'notes', uid: 'u1' }, pod: { name: 'p', uid: 'p1' } } })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(K8S).setSubject('system:serviceaccount:agents:notes').setAudience(b.deps.config.issuer).setIssuedAt(now).setExpirationTime(now + 600).sign(privateKey)
      const res = await b.exchange({ actor_token: token })
      assert.equal(res.status, 200, await res.clone().text())
      const gone = await api(b, 'DELETE', `/admin/workload-issuers/${enc(K8S)}`)
      assert.equal(gone.status, 200)
      assert.equal(gone.json.tasks_revoked, 1)
      assert.equal((await b.exchange({ actor_token: token })).status, 400)
    }))
})

describe('catalog: admin keys and roles', () => {
  it('an admin key made by the broker works at once with its role; the role can change, the key be switched off and deleted; the hash is never shown', () =>
    withBroker(undefined, async (b) => {
      const made = await api(b, 'POST', '/admin/admin-keys', { name: 'ops', role: 'operator' })
      assert.equal(made.status, 201)
      const opsKey = String(made.json.admin_key)
      assert.match(opsKey, /^tpak_[A-Za-z0-9_-]{43}$/)
      assert.equal(((made.json.entry as Json).object as Json).hash, '[redacted]')
      assert.ok(!JSON.stringify((await b.rawQuery("select detail from audit_events where action = 'catalog.create'"))[0]).includes('$argon2'))
      assert.equal((await api(b, 'GET', '/admin/tasks', undefined, opsKey)).status, 200)
      // An operator acts on tasks, never on the catalog.
      const before = await snapshot(b)
      const refused = await api(b, 'POST', '/admin/subject-issuers', { issuer: 'https://x.example', jwksUri: 'https://x.example/jwks' }, opsKey)
      assert.equal(refused.status, 403)
      assert.equal(refused.json.error, 'insufficient_scope')
      assert.equal((await b.lastAudit())!.action, 'admin.refuse')
      assert.deepEqual({ ...(await snapshot(b)), audit: before.audit }, before)
      assert.equal((await api(b, 'PUT', '/admin/admin-keys/ops', { role: 'auditor' })).status, 200)
      const auditor = await api(b, 'POST', '/admin/tasks/nope/revoke', undefined, opsKey)
      assert.equal(auditor.status, 403)
      assert.equal((await api(b, 'GET', '/admin/workloads', undefined, opsKey)).status, 200, 'an auditor reads the catalog')
      assert.equal((await api(b, 'POST', '/admin/admin-keys/ops/disable')).status, 200)
      assert.equal((await api(b, 'GET', '/admin/tasks', undefined, opsKey)).status, 401)
      assert.equal((await api(b, 'DELETE', '/admin/admin-keys/ops')).status, 200)
      assert.equal((await api(b, 'GET', '/admin/admin-keys/ops')).status, 404)
    }))

  it('the last admin-role key cannot be switched off: 409 conflict, nothing changed', async () => {
    const hash = await argon2Hasher.hash('tpa_root-key')
    await withBroker((c) => ({ ...c, admin: { keys: [{ name: 'root', role: 'admin', hash }] } }), async (b) => {
      const before = await snapshot(b)
      const res = await api(b, 'POST', '/admin/admin-keys/root/disable', undefined, 'tpa_root-key')
      assert.equal(res.status, 409)
      assert.equal(res.json.error, 'conflict')
      assert.deepEqual(await snapshot(b), before)
    })
  })
})

describe('catalog: other processes', () => {
  it('a change stored by another process (the CLI) is taken up at the next refresh; a refresh with nothing new does nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-catalog-'))
    const database = join(dir, 'taskpass.db')
    const server = await createTestBroker({ config: (c) => ({ ...c, database }) })
    const other = await createTestBroker({ config: (c) => ({ ...c, database, keys: { kek: server.deps.config.keys.kek! } }) })
    try {
      assert.equal(await refreshCatalog(server.deps), false)
      assert.equal((await api(other, 'POST', '/admin/workloads', NEW_AGENT)).status, 201)
      assert.equal((await exchange(server, 'new')).status, 400, 'not yet taken up')
      assert.equal(await refreshCatalog(server.deps), true)
      assert.equal((await exchange(server, 'new')).status, 200)
      assert.equal((await api(other, 'POST', '/admin/workloads/agent-new/disable')).status, 200)
      assert.equal(await refreshCatalog(server.deps), true)
      assert.equal((await exchange(server, 'new')).json.error, 'unauthorized_client')
      // The task the server opened was ended by the other process already (the same database).
      assert.equal((await server.deps.stores.tasks.list({ statuses: ['active'], workloadId: 'agent-new', limit: 5 })).length, 0)
    } finally {
      await other.close()
      await server.close()
    }
  })
})

describe('catalog: review findings', () => {
  it('a broker without any admin-role key (run from the CLI alone) may still change its catalog, the emergency switch included', async () => {
    await withBroker((c) => ({ ...c, admin: { apiKeyHashes: [] } }), async (b) => {
      const off = await setEnabled(b.deps, 'workloads', 'agent-b', false, 'admin:cli')
      assert.equal(off.entry?.enabled, false)
      assert.equal((await exchange(b, 'b')).json.error, 'unauthorized_client')
    })
  })

  it('a secret sent back as the API shows it ([redacted]) is refused, and the stored one kept', () =>
    withBroker(undefined, async (b) => {
      const resource = { uri: 'https://docs.test.example/mcp', scopes: ['docs:read'], credential: { clientId: 'docs-mcp', secretHash: b.keys.hashes.notes } }
      assert.equal((await api(b, 'POST', '/admin/resources', resource)).status, 201)
      const shown = (await api(b, 'GET', `/admin/resources/${enc(resource.uri)}`)).json.object as Json
      assert.equal((shown.credential as Json).secretHash, '[redacted]')
      const before = await snapshot(b)
      const back = await api(b, 'PUT', `/admin/resources/${enc(resource.uri)}`, { ...shown, scopes: ['docs:read', 'docs:write'] })
      assert.equal(back.status, 400)
      assert.equal(back.json.error, 'invalid_request')
      assert.deepEqual(await snapshot(b), before)
      const login = { issuer: 'https://idp3.test.example', subjectPrefix: 'three:', jwks: { keys: [b.keys.user.publicJwk] }, algorithms: ['ES256'], login: { kind: 'oidc', clientId: 'broker', clientSecret: '[redacted]' } }
      assert.match(((await api(b, 'POST', '/admin/subject-issuers', login)).json.problems as string[]).join('\n'), /^login\.clientSecret: the secret itself/m)
    }))

  it('a switch already in place writes nothing, yet finishes a sweep that failed after its change\'s commit', () =>
    withBroker(undefined, async (b) => {
      assert.equal((await exchange(b, 'b')).status, 200)
      const audit = await b.count('audit_events')
      // The sweep fails once after the commit (as when another process holds the database).
      const openRefs = b.deps.stores.tasks.openRefs
      b.deps.stores.tasks.openRefs = () => {
        b.deps.stores.tasks.openRefs = openRefs
        throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' })
      }
      const failed = await api(b, 'POST', '/admin/workloads/agent-b/disable')
      assert.equal(failed.status, 503)
      assert.equal(b.deps.catalog.sweepPending, true)
      assert.equal((await b.deps.stores.tasks.list({ statuses: ['active'], workloadId: 'agent-b', limit: 5 })).length, 1, 'committed, not yet swept')
      assert.equal(await b.count('audit_events'), audit + 1, 'the change itself is committed and audited')
      // Asked again: nothing new is written, the sweep finishes.
      const again = await api(b, 'POST', '/admin/workloads/agent-b/disable')
      assert.equal(again.status, 200)
      assert.equal(again.json.tasks_revoked, 1)
      assert.equal(b.deps.catalog.sweepPending, false)
      assert.equal(((await b.rawQuery("select count(*) as n from audit_events where action like 'catalog.%'"))[0] as { n: number }).n, 1)
      // A refresh with a sweep pending runs it too.
      b.deps.catalog.sweepPending = true
      assert.equal(await refreshCatalog(b.deps), false)
      assert.equal(b.deps.catalog.sweepPending, false)
    }))

  it('a disable or delete of an object another process deleted meanwhile: 404, nothing written', async () => {
    const database = join(mkdtempSync(join(tmpdir(), 'taskpass-catalog-')), 'taskpass.db')
    const a = await createTestBroker({ config: (c) => ({ ...c, database }) })
    const b = await createTestBroker({ config: (c) => ({ ...c, database, keys: { kek: a.deps.config.keys.kek! } }) })
    try {
      assert.equal((await api(a, 'POST', '/admin/workloads', NEW_AGENT)).status, 201)
      // b read the row, then a deleted it before b's transaction.
      const get = b.deps.stores.catalog.get
      b.deps.stores.catalog.get = async (kind, key) => {
        const row = get(kind, key)
        await deleteObject(a.deps, 'workloads', 'agent-new', 'admin:a')
        b.deps.stores.catalog.get = get
        return row
      }
      const byB = async () => ((await b.rawQuery("select count(*) as n from audit_events where reason like '% by admin:b'"))[0] as { n: number }).n
      await assert.rejects(setEnabled(b.deps, 'workloads', 'agent-new', false, 'admin:b'), (e: Error & { status?: number }) => e.status === 404)
      await assert.rejects(deleteObject(b.deps, 'workloads', 'agent-new', 'admin:b'), (e: Error & { status?: number }) => e.status === 404)
      assert.equal(await byB(), 0, 'nothing audited for b: nothing changed')
      assert.equal(((await b.rawQuery("select count(*) as n from audit_events where action = 'catalog.delete'"))[0] as { n: number }).n, 1)
    } finally {
      await b.close()
      await a.close()
    }
  })
})

describe('catalog: unknown keys', () => {
  it('replace, switch and delete of a key no object has: 404 not_found, nothing changed', () =>
    withBroker(undefined, async (b) => {
      const before = await snapshot(b)
      for (const [method, path, body] of [
        ['PUT', '/admin/workloads/nobody', { ...NEW_AGENT, id: 'nobody' }],
        ['POST', '/admin/workloads/nobody/disable', undefined],
        ['POST', '/admin/workloads/nobody/enable', undefined],
        ['DELETE', '/admin/workloads/nobody', undefined],
        ['GET', `/admin/resources/${enc('https://nowhere.example/mcp')}`, undefined],
        ['DELETE', '/admin/admin-keys/nobody', undefined],
      ] as const) {
        const res = await api(b, method, path, body)
        assert.equal(res.status, 404, `${method} ${path}`)
        assert.equal(res.json.error, 'not_found')
      }
      assert.deepEqual(await snapshot(b), before)
      // A kind that does not exist is no route at all.
      assert.equal((await api(b, 'GET', '/admin/gadgets')).status, 404)
    }))
})
