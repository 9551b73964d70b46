/**
 * Attacks on the catalog admin API (/admin/{kind}) and on what it rebuilds at run time: each test
 * names what an admin key (or a workload racing a change) must not be able to do.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { createObject, refreshCatalog, replaceObject } from '../src/catalog/catalog.js'
import { catalogCommand } from '../src/cli/catalog.js'
import { parseConfig, type ConfigInput } from '../src/config.js'
import { OAuthError } from '../src/errors.js'
import { preparedSetCount } from '../src/policy/cedar.js'
import { argon2Hasher } from '../src/broker.js'
import { ADMIN_KEY, assertRefusedAndAudited, CALENDAR, counts, createTestBroker, exchangeParams, GH_ISSUER, githubToken, NOTES, NOTES_SECRET, openTask, platformKeys, withBroker, type TestBroker } from './harness.js'
import { authorizeQuery, browserFlowConfig, CLIENT_ID, devSignIn, fixedClients, pkce, REDIRECT_URI, setField, TestBrowser } from './authorize-fixtures.js'
import { startServer } from './oidc-fixtures.js'
import { childExchange, delegating, openedSubtask, parentTask } from './subtask-fixtures.js'

type Json = Record<string, unknown>

async function api(b: TestBroker, method: string, path: string, body?: unknown, key = ADMIN_KEY): Promise<{ status: number; json: Json }> {
  const res = await b.app.request(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  })
  return { status: res.status, json: (await res.json()) as Json }
}

/** What a refused change must leave as it was: the stored catalog, the audit log, the revision, the catalog in force. */
async function snapshot(b: TestBroker) {
  return {
    catalog: await b.rawQuery('select kind, key, body, enabled from catalog_objects order by id'),
    audit: await b.count('audit_events'),
    revision: await b.deps.stores.catalog.revision(),
    config: b.deps.config,
  }
}

/** The file's subject issuer with a prefix, so that the API may add another. */
const prefixed = (c: ConfigInput): ConfigInput => ({ ...c, subjectIssuers: c.subjectIssuers!.map((s) => ({ ...s, subjectPrefix: 'main:' })) })

describe('attack: files on the broker host', () => {
  it('an API object may not name a file of the broker host (jwksFile, login.clientSecretFile): 400 invalid_request naming the field, nothing changed', () =>
    withBroker(prefixed, async (b) => {
      const dir = mkdtempSync(join(tmpdir(), 'taskpass-attack-'))
      const keysFile = join(dir, 'jwks.json')
      writeFileSync(keysFile, JSON.stringify({ keys: [] }))
      const before = await snapshot(b)
      const cases: [string, unknown, RegExp][] = [
        ['/admin/workload-issuers', { kind: 'oidc', issuer: 'https://wi.example', jwksFile: keysFile }, /^jwksFile: /],
        ['/admin/workload-issuers', { kind: 'oidc', issuer: 'https://wi2.example', jwksFile: join(dir, 'missing.json') }, /^jwksFile: /],
        ['/admin/subject-issuers', { issuer: 'https://si.example', jwksFile: keysFile, subjectPrefix: 'si:' }, /^jwksFile: /],
        ['/admin/subject-issuers', { issuer: 'https://si2.example', jwksUri: 'https://si2.example/jwks', subjectPrefix: 'si2:', login: { kind: 'oidc', clientId: 'broker', clientSecretFile: keysFile } }, /^login\.clientSecretFile: /],
        ['/admin/workloads', { id: 'agent-file', attestation: { issuer: 'spiffe://test.example', subject: 'spiffe://test.example/agent/file' }, jwksFile: keysFile, tokenEndpointAuth: 'private_key_jwt' }, /^jwksFile: /],
      ]
      for (const [path, body, problem] of cases) {
        const res = await api(b, 'POST', path, body)
        assert.equal(res.status, 400, `${path} ${JSON.stringify(body)}: ${JSON.stringify(res.json)}`)
        assert.equal(res.json.error, 'invalid_request')
        assert.ok((res.json.problems as string[]).some((p) => problem.test(p)), `${JSON.stringify(res.json.problems)} should match ${problem}`)
      }
      assert.deepEqual(await snapshot(b), before)
      // Nor through a replacement of an object the API created.
      assert.equal((await api(b, 'POST', '/admin/workload-issuers', { kind: 'oidc', issuer: 'https://wi3.example', jwks: { keys: [] } })).status, 201)
      const created = await snapshot(b)
      const replaced = await api(b, 'PUT', `/admin/workload-issuers/${encodeURIComponent('https://wi3.example')}`, { kind: 'oidc', issuer: 'https://wi3.example', jwksFile: keysFile })
      assert.equal(replaced.status, 400)
      assert.match((replaced.json.problems as string[])[0]!, /^jwksFile: /)
      assert.deepEqual(await snapshot(b), created)
    }))

  it('an admin key cannot have the broker read a file of its host and send it to an IdP of its choosing as the client secret', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-attack-'))
    const secretFile = join(dir, 'kek')
    writeFileSync(secretFile, 'the-key-encryption-key')
    let received: string | undefined
    let url = ''
    const idp = await startServer((req, res) => {
      if (req.url?.startsWith('/.well-known/openid-configuration')) {
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify({ issuer: url, authorization_endpoint: `${url}/auth`, token_endpoint: `${url}/token`, jwks_uri: `${url}/jwks`, response_types_supported: ['code'], subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['ES256'], code_challenge_methods_supported: ['S256'] }))
        return
      }
      if (req.url?.startsWith('/token')) received = req.headers.authorization
      res.statusCode = 400
      res.setHeader('content-type', 'application/json')
      res.end('{"error":"invalid_grant"}')
    })
    url = idp.url
    try {
      await withBroker(prefixed, async (b) => {
        const issuer = await api(b, 'POST', '/admin/subject-issuers', { issuer: url, jwksUri: `${url}/jwks`, subjectPrefix: 'idp:', login: { kind: 'oidc', clientId: 'broker', clientSecretFile: secretFile } })
        assert.equal(issuer.status, 400, JSON.stringify(issuer.json))
        // The rest of what the attack needs is accepted: an OAuth client workload turns the browser flow on.
        assert.equal((await api(b, 'POST', '/admin/workloads', { id: 'mcp-clients', oauthClient: { clientId: { glob: 'https://**' } }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] })).status, 201)
        const begin = await b.app.request(`/authorize/idp?${new URLSearchParams({ issuer: url })}`)
        const location = begin.headers.get('location')
        if (location !== null) {
          const cookie = begin.headers.getSetCookie().map((l) => l.split(';')[0]).join('; ')
          await b.app.request(`/authorize/callback?${new URLSearchParams({ code: 'c', state: new URL(location).searchParams.get('state')! })}`, { headers: { cookie } })
        }
        assert.equal(begin.status, 404, 'no such sign-in provider')
        assert.equal(received, undefined, 'the IdP received no client secret')
      })
    } finally {
      await idp.close()
    }
  })
})

/** Holds every call of `obj[name]` until `release()`; `reached` resolves once one is held. */
function hold<K extends string, O extends Record<K, (...args: never[]) => Promise<unknown>>>(obj: O, name: K) {
  const original = obj[name]
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  let reached!: () => void
  const held = new Promise<void>((r) => (reached = r))
  obj[name] = (async (...args: never[]) => {
    reached()
    await gate
    return original.apply(obj, args)
  }) as O[K]
  return { held, release: () => { obj[name] = original; release() } }
}

const activeTasks = async (b: TestBroker, workload = 'agent-a') => (await b.rawQuery("select count(*) as n from tasks where status in ('active', 'pending_approval') and workload_id = ?", [workload]))[0] as { n: number }
const activeTokens = async (b: TestBroker) => ((await b.rawQuery("select count(*) as n from tokens where revoked_at is null"))[0] as { n: number }).n
const USER_IDP = encodeURIComponent('https://idp.test.example')

describe('attack: a change while a request is in flight', () => {
  for (const [what, path, status, error, reason] of [
    ['its user\'s subject issuer', `/admin/subject-issuers/${USER_IDP}/disable`, 503, 'temporarily_unavailable', /the catalog changed/],
    ['its workload', '/admin/workloads/agent-a/disable', 503, 'temporarily_unavailable', /the catalog changed/],
    // The resource is looked up after the wait: it is unknown then.
    ['its resource', `/admin/resources/${encodeURIComponent(NOTES)}/disable`, 400, 'invalid_target', /unknown resource/],
  ] as const) {
    it(`an exchange verified before ${what} was switched off opens no task and mints no token (${status} ${error}, audited)`, () =>
      withBroker(undefined, async (b) => {
        const params = await exchangeParams(b)
        // The request is verified (user, workload) under the old catalog, then waits on its DPoP check.
        const paused = hold(b.deps.dpop, 'verify')
        const pending = b.post('/token', params as Record<string, string>)
        await paused.held
        const off = await api(b, 'POST', path)
        assert.equal(off.status, 200, JSON.stringify(off.json))
        const before = await counts(b)
        paused.release()
        const res = await pending
        const body = (await res.json()) as Json
        assert.equal(res.status, status, JSON.stringify(body))
        assert.equal(body.error, error)
        await assertRefusedAndAudited(b, before, { error, reason })
        assert.equal((await activeTasks(b)).n, 0)
        assert.equal(await activeTokens(b), 0)
      }))
  }

  it('an exchange signed before its user\'s subject issuer was switched off is not written (503 temporarily_unavailable)', () =>
    withBroker(undefined, async (b) => {
      const params = await exchangeParams(b)
      const paused = hold(b.deps.stores as unknown as Record<'batched', (...args: never[]) => Promise<unknown>>, 'batched')
      const pending = b.post('/token', params as Record<string, string>)
      await paused.held
      assert.equal((await api(b, 'POST', `/admin/subject-issuers/${USER_IDP}/disable`)).status, 200)
      const before = await counts(b)
      paused.release()
      const res = await pending
      const body = (await res.json()) as Json
      assert.equal(res.status, 503, JSON.stringify(body))
      assert.equal(body.error, 'temporarily_unavailable')
      await assertRefusedAndAudited(b, before, { error: 'temporarily_unavailable', reason: /the catalog changed/ })
      assert.equal((await activeTasks(b)).n, 0)
      assert.equal(await activeTokens(b), 0)
    }))

  it('a task opened (POST /tasks) by a workload verified before it was switched off is not recorded (503 temporarily_unavailable, audited)', () =>
    withBroker(undefined, async (b) => {
      const session = await b.session()
      const svid = await b.svid('a')
      const paused = hold(b.deps.dpop, 'verify')
      const pending = openTask(b, { purpose: 'race', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session, svid })
      await paused.held
      assert.equal((await api(b, 'POST', '/admin/workloads/agent-a/disable')).status, 200)
      const before = await counts(b)
      paused.release()
      const res = await pending
      const body = (await res.json()) as Json
      assert.equal(res.status, 503, JSON.stringify(body))
      assert.equal(body.error, 'temporarily_unavailable')
      await assertRefusedAndAudited(b, before, { error: 'temporarily_unavailable', reason: /the catalog changed/, action: 'task.open' })
      assert.equal((await activeTasks(b)).n, 0)
    }))
})

describe('attack: what was built when the app was', () => {
  const devLogin = (c: ConfigInput): ConfigInput => ({ ...c, subjectIssuers: c.subjectIssuers!.map((s) => ({ ...s, subjectPrefix: 'main:', login: { kind: 'dev' as const, users: ['alice'], passwordSha256: 'A'.repeat(43) } })) })

  it('the grants /token serves follow the catalog: the authorization-code flow turned on through the API redeems codes, as the metadata says', () =>
    withBroker(devLogin, async (b) => {
      const grants = async () => ((await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as { grant_types_supported: string[] }).grant_types_supported
      const redeem = async () => {
        const res = await b.post('/token', { grant_type: 'authorization_code', client_id: 'https://client.example/oauth/metadata.json', code: 'tpc_unknown', code_verifier: 'v'.repeat(43), redirect_uri: 'https://client.example/cb' })
        return { status: res.status, json: (await res.json()) as Json }
      }
      assert.ok(!(await grants()).includes('authorization_code'))
      assert.equal((await redeem()).json.error, 'unsupported_grant_type')
      assert.equal((await api(b, 'POST', '/admin/workloads', { id: 'mcp-clients', oauthClient: { clientId: { glob: 'https://client.example/**' } }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] })).status, 201)
      assert.ok((await grants()).includes('authorization_code'))
      const on = await redeem()
      assert.equal(on.status, 400, JSON.stringify(on.json))
      assert.equal(on.json.error, 'invalid_grant', 'the grant is served: the code is unknown')
      // Deleted again: neither served nor advertised.
      assert.equal((await api(b, 'DELETE', '/admin/workloads/mcp-clients')).status, 200)
      assert.ok(!(await grants()).includes('authorization_code'))
      assert.equal((await redeem()).json.error, 'unsupported_grant_type')
    }))

  it('the jwt-bearer grant is served once an enterprise IdP is created through the API, as the metadata says', () =>
    withBroker((c) => ({ ...c, subjectIssuers: c.subjectIssuers!.map((s) => ({ ...s, subjectPrefix: 'main:' })) }), async (b) => {
      const redeem = async () => {
        const res = await b.post('/token', { grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: 'not-a-jwt' })
        return { status: res.status, json: (await res.json()) as Json }
      }
      assert.equal((await redeem()).json.error, 'unsupported_grant_type')
      const created = await api(b, 'POST', '/admin/subject-issuers', { issuer: 'https://enterprise.example', jwks: { keys: [b.keys.user.publicJwk] }, subjectPrefix: 'corp:', idJag: {} })
      assert.equal(created.status, 201, JSON.stringify(created.json))
      const metadata = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as Json
      assert.ok((metadata.grant_types_supported as string[]).includes('urn:ietf:params:oauth:grant-type:jwt-bearer'))
      const served = await redeem()
      assert.equal(served.json.error, 'invalid_client', 'the grant is served: it wants the client authenticated')
      assert.equal(served.status, 400)
    }))
})

describe('attack: admin keys', () => {
  const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
  async function consoleSignIn(b: TestBroker, key: string): Promise<string> {
    const res = await b.app.request('/admin/console/login', { method: 'POST', headers: FORM, body: new URLSearchParams({ key }).toString() })
    assert.equal(res.status, 303)
    return res.headers.get('set-cookie')!.split(';')[0]!
  }
  const consoleHtml = async (b: TestBroker, cookie: string) => (await b.app.request('/admin/console', { headers: { cookie } })).text()

  it('a console sign-in with a deleted admin key does not come back when another key gets its name (nor its role)', () =>
    withBroker(undefined, async (b) => {
      const first = await api(b, 'POST', '/admin/admin-keys', { name: 'ops', role: 'operator' })
      assert.equal(first.status, 201)
      const cookie = await consoleSignIn(b, String(first.json.admin_key))
      const page = await consoleHtml(b, cookie)
      assert.match(page, /name="csrf" value="([^"]+)"/)
      const csrf = /name="csrf" value="([^"]+)"/.exec(page)![1]!
      // The key leaks; the admin deletes it and makes the operator a new one, of the same name.
      assert.equal((await api(b, 'DELETE', '/admin/admin-keys/ops')).status, 200)
      assert.match(await consoleHtml(b, cookie), /name="key"/, 'signed out')
      assert.equal((await api(b, 'POST', '/admin/admin-keys', { name: 'ops', role: 'operator' })).status, 201)
      assert.match(await consoleHtml(b, cookie), /name="key"/, 'the old sign-in stays out')
      const task = await openTask(b, { purpose: 'kept', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
      const id = ((await task.json()) as { task_id: string }).task_id
      const before = await counts(b)
      const revoke = await b.app.request(`/admin/console/tasks/${id}/revoke`, { method: 'POST', headers: { ...FORM, cookie }, body: new URLSearchParams({ csrf }).toString() })
      assert.equal(revoke.status, 401)
      assert.equal((await b.deps.stores.tasks.get(id))!.status, 'active')
      assert.deepEqual(await counts(b), before)
    }))
})

describe('attack: objects that cost more than they should', () => {
  it('a deeply nested object is 400 invalid_request, never a 500, and changes nothing', () =>
    withBroker(undefined, async (b) => {
      const before = await snapshot(b)
      const deep = '['.repeat(3000) + ']'.repeat(3000)
      const res = await api(b, 'POST', '/admin/workload-issuers', `{"kind":"oidc","issuer":"https://deep.example","jwks":{"keys":[{"kty":"EC","x":${deep}}]}}`)
      assert.equal(res.status, 400, JSON.stringify(res.json))
      assert.equal(res.json.error, 'invalid_request')
      assert.match((res.json.problems as string[])[0]!, /nested/)
      assert.deepEqual(await snapshot(b), before)
    }))

  it('an object too large for its audit row (the CLI has no body limit) is refused, and the audit log stays readable', () =>
    withBroker(undefined, async (b) => {
      const before = await snapshot(b)
      const huge = { uri: 'https://huge.example/mcp', scopes: Array.from({ length: 60_000 }, (_, i) => `s${i}`) }
      await assert.rejects(createObject(b.deps, 'resources', huge, 'admin:cli'), (e: unknown) => e instanceof OAuthError && e.status === 400 && e.code === 'invalid_request' && /too large/.test(e.description))
      assert.deepEqual(await snapshot(b), before)
      // One that fits is recorded whole, and the log reads back.
      const large = { uri: 'https://large.example/mcp', scopes: Array.from({ length: 2_000 }, (_, i) => `s${i}`) }
      await createObject(b.deps, 'resources', large, 'admin:cli')
      const audit = await api(b, 'GET', '/admin/audit')
      assert.equal(audit.status, 200)
      const row = (audit.json.events as { action: string; detail?: { after: { object: { scopes: string[] } } } }[]).find((e) => e.action === 'catalog.create')!
      assert.equal(row.detail!.after.object.scopes.length, 2_000)
      assert.equal((await b.deps.stores.audit.verify()).ok, true)
    }))
})

describe('attack: keys that collide', () => {
  it('a resource may not take another\'s credential client id (it would take over that resource\'s /introspect sign-in): 400, nothing changed', () =>
    withBroker(undefined, async (b) => {
      const introspect = (secret: string) =>
        b.post('/introspect', { token: 'x' }, { authorization: `Basic ${Buffer.from(`notes-mcp:${secret}`).toString('base64')}` })
      assert.equal((await introspect(NOTES_SECRET)).status, 200)
      const before = await snapshot(b)
      const res = await api(b, 'POST', '/admin/resources', { uri: 'https://impostor.example/mcp', scopes: ['x'], credential: { clientId: 'notes-mcp', secretHash: await argon2Hasher.hash('impostor-secret-0123456789') } })
      assert.equal(res.status, 400, JSON.stringify(res.json))
      assert.equal(res.json.error, 'invalid_request')
      assert.match((res.json.problems as string[]).join('\n'), /^resources\[https:\/\/impostor\.example\/mcp\]\.credential\.clientId: .*notes-mcp/m)
      assert.deepEqual(await snapshot(b), before)
      assert.equal((await introspect(NOTES_SECRET)).status, 200, 'the notes server still signs in with its own secret')
      assert.equal((await introspect('impostor-secret-0123456789')).status, 401)
    }))
})

describe('attack: switches that do not switch', () => {
  it('a GitHub workload issuer created without "issuer" (the default) is switched off for real: its tokens refused, its workloads\' tasks ended', () =>
    withBroker(undefined, async (b) => {
      const keys = await platformKeys()
      assert.equal((await api(b, 'POST', '/admin/workload-issuers', { kind: 'github', jwks: { keys: [keys.github.publicJwk] } })).status, 201)
      assert.equal((await api(b, 'POST', '/admin/workloads', { id: 'deployer', attestation: { issuer: GH_ISSUER, claims: { repository_id: '123456' } }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] })).status, 201)
      const job = { repository: 'acme/app', repositoryId: '123456', ref: 'refs/heads/main' }
      assert.equal((await b.exchange({ actor_token: await githubToken(b, keys, job) })).status, 200)
      const off = await api(b, 'POST', `/admin/workload-issuers/${encodeURIComponent(GH_ISSUER)}/disable`)
      assert.equal(off.status, 200)
      assert.equal((off.json.entry as Json).enabled, false)
      assert.equal(off.json.tasks_revoked, 1)
      assert.ok(!b.deps.config.workloadIssuers.some((wi) => wi.kind === 'github'), 'not in force')
      const before = await counts(b)
      const refused = await b.exchange({ actor_token: await githubToken(b, keys, job) })
      assert.equal(refused.status, 400)
      assert.deepEqual({ ...await counts(b), audit_events: before.audit_events }, before)
    }))
})

describe('attack: names that pass for another', () => {
  it('an admin key may not be named as the unnamed keys (key<n>) or the CLI (cli) are in the audit log: 400, nothing changed; nor in the file', () =>
    withBroker(undefined, async (b) => {
      const before = await snapshot(b)
      for (const name of ['key0', 'key1', 'key42', 'cli']) {
        const res = await api(b, 'POST', '/admin/admin-keys', { name, role: 'admin' })
        assert.equal(res.status, 400, `${name}: ${JSON.stringify(res.json)}`)
        assert.equal(res.json.error, 'invalid_request')
        assert.match((res.json.problems as string[])[0]!, /^name: /)
      }
      assert.deepEqual(await snapshot(b), before)
      // Names that only look alike are fine.
      assert.equal((await api(b, 'POST', '/admin/admin-keys', { name: 'key-rotation', role: 'auditor' })).status, 201)
      assert.equal((await api(b, 'POST', '/admin/admin-keys', { name: 'cli-bot', role: 'auditor' })).status, 201)
      assert.throws(() => parseConfig({ ...b.deps.catalog.base, admin: { keys: [{ name: 'key0', role: 'auditor', hash: '$argon2id$x' }] } }), (e: Error & { issues?: string[] }) => e.issues?.some((i) => /^admin\.keys\.0\.name: /.test(i)) === true)
    }))
})

describe('attack: two changes at once', () => {
  it('two processes creating (or replacing) the same object: the second is 409 conflict, not a silent replacement of the first', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-attack-'))
    const database = join(dir, 'taskpass.db')
    const server = await createTestBroker({ config: (c) => ({ ...c, database }) })
    const cli = await createTestBroker({ config: (c) => ({ ...c, database, keys: { kek: server.deps.config.keys.kek! } }) })
    try {
      const DOCS = 'https://docs.race.example/mcp'
      // The CLI's change commits after the server looked for the key and before its own write.
      const durably = server.deps.stores.durably
      server.deps.stores.durably = async (fn) => {
        server.deps.stores.durably = durably
        await createObject(cli.deps, 'resources', { uri: DOCS, scopes: ['docs:read'] }, 'admin:cli')
        return durably(fn)
      }
      await assert.rejects(createObject(server.deps, 'resources', { uri: DOCS, scopes: ['docs:write'] }, 'admin:key0'), (e: unknown) => e instanceof OAuthError && e.status === 409 && e.code === 'conflict')
      const row = (await server.deps.stores.catalog.get('resources', DOCS))!
      assert.deepEqual((JSON.parse(row.body!) as { scopes: string[] }).scopes, ['docs:read'], 'the first creation stands')
      assert.equal(row.updatedBy, 'admin:cli')
      const creations = (await server.rawQuery("select count(*) as n from audit_events where action = 'catalog.create'"))[0] as { n: number }
      assert.equal(creations.n, 1)

      // A replacement raced by another one: 409, the other stands (nothing is replaced unseen).
      await refreshCatalog(server.deps)
      server.deps.stores.durably = async (fn) => {
        server.deps.stores.durably = durably
        await replaceObject(cli.deps, 'resources', DOCS, { uri: DOCS, scopes: ['docs:read', 'docs:list'] }, 'admin:cli')
        return durably(fn)
      }
      await assert.rejects(replaceObject(server.deps, 'resources', DOCS, { uri: DOCS, scopes: ['docs:write'] }, 'admin:key0'), (e: unknown) => e instanceof OAuthError && e.status === 409 && e.code === 'conflict')
      assert.deepEqual((JSON.parse((await server.deps.stores.catalog.get('resources', DOCS))!.body!) as { scopes: string[] }).scopes, ['docs:read', 'docs:list'])
    } finally {
      await cli.close()
      await server.close()
    }
  })
})

describe('attack: an admin key switched off while its request is verified', () => {
  for (const [what, change, status, error] of [
    ['switched off', (b: TestBroker) => api(b, 'POST', '/admin/admin-keys/ops/disable'), 401, 'invalid_token'],
    ['deleted', (b: TestBroker) => api(b, 'DELETE', '/admin/admin-keys/ops'), 401, 'invalid_token'],
    ['demoted to auditor', (b: TestBroker) => api(b, 'PUT', '/admin/admin-keys/ops', { role: 'auditor' }), 403, 'insufficient_scope'],
  ] as const) {
    it(`a request whose key was ${what} while argon2 verified it acts with the key as it is now (${status} ${error})`, () =>
      // Two verifications at once: the operator's (held) and the admin's.
      withBroker((c) => ({ ...c, authThrottle: { maxConcurrent: 2 } }), async (b) => {
        const made = await api(b, 'POST', '/admin/admin-keys', { name: 'ops', role: 'operator' })
        const opsKey = String(made.json.admin_key)
        const task = await openTask(b, { purpose: 'kept', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
        const id = ((await task.json()) as { task_id: string }).task_id
        // Only the operator's verification waits; the admin's goes through.
        const hasher = b.deps.hasher
        const verify = hasher.verify
        let release!: () => void
        const gate = new Promise<void>((r) => (release = r))
        let reached!: () => void
        const held = new Promise<void>((r) => (reached = r))
        hasher.verify = async (hash, secret) => {
          if (secret === opsKey) {
            reached()
            await gate
          }
          return verify(hash, secret)
        }
        const pending = api(b, 'POST', `/admin/tasks/${id}/revoke`, undefined, opsKey)
        await held
        assert.equal((await change(b)).status, 200)
        release()
        const res = await pending
        assert.equal(res.status, status, JSON.stringify(res.json))
        assert.equal(res.json.error, error)
        assert.equal((await b.deps.stores.tasks.get(id))!.status, 'active')
      }))
  }
})

describe('attack: changes that change nothing', () => {
  it('enabling a workload its own definition disables (enabled: false, in the file or in its API object) is 409 conflict: nothing stored, audited or bumped', () =>
    withBroker(undefined, async (b) => {
      const before = await snapshot(b)
      const res = await api(b, 'POST', '/admin/workloads/agent-off/enable')
      assert.equal(res.status, 409, JSON.stringify(res.json))
      assert.equal(res.json.error, 'conflict')
      assert.match(String(res.json.error_description), /enabled: false/)
      assert.deepEqual(await snapshot(b), before)
      assert.equal((await api(b, 'POST', '/admin/workloads', { id: 'agent-dormant', attestation: { issuer: 'spiffe://test.example', subject: 'spiffe://test.example/agent/dormant' }, enabled: false })).status, 201)
      const created = await snapshot(b)
      const again = await api(b, 'POST', '/admin/workloads/agent-dormant/enable')
      assert.equal(again.status, 409)
      assert.equal(again.json.error, 'conflict')
      assert.deepEqual(await snapshot(b), created)
    }))
})

describe('attack: a change costs what it costs once', () => {
  it('each catalog change prepares the policy set again in the wasm instance, which keeps what it preparsed: the broker reuses its slots, so changes do not grow it', () =>
    withBroker(undefined, async (b) => {
      assert.equal((await api(b, 'POST', '/admin/workloads/agent-b/disable')).status, 200)
      assert.equal((await api(b, 'POST', '/admin/workloads/agent-b/enable')).status, 200)
      const settled = preparedSetCount()
      for (let i = 0; i < 15; i++) {
        assert.equal((await api(b, 'POST', '/admin/workloads/agent-b/disable')).status, 200)
        assert.equal((await api(b, 'POST', '/admin/workloads/agent-b/enable')).status, 200)
      }
      // Resources come and go: what is prepared is bounded by how many there are at once.
      for (let i = 0; i < 10; i++) {
        const uri = `https://churn-${i}.example/mcp`
        assert.equal((await api(b, 'POST', '/admin/resources', { uri, scopes: ['x'] })).status, 201)
        assert.equal((await api(b, 'DELETE', `/admin/resources/${encodeURIComponent(uri)}`)).status, 200)
      }
      assert.ok(preparedSetCount() - settled <= 2 * 4, `${preparedSetCount() - settled} more preparsed sets after 50 changes`)
    }))
})

describe('held: the authorization-code flow\'s grants end with what the catalog switches off', () => {
  /** Signs alice in and consents (notes:read, one hour): the code the client's callback gets. */
  async function consentedCode(b: TestBroker, challenge: string): Promise<string> {
    const browser = new TestBrowser((p, i) => b.app.request(p, i))
    const login = await browser.get(`/authorize?${authorizeQuery(challenge)}`)
    const signedIn = await browser.submit(await login.text(), '/authorize/login', devSignIn())
    const page = await browser.get(signedIn.headers.get('location')!)
    const answered = await browser.submit(await page.text(), '/authorize/consent', (f) => [...setField('ttl', '3600')(setField('purpose', 'Summarise')(setField('scope', 'notes:read')(f))), ['decision', 'allow']])
    assert.equal(answered.status, 303, await answered.clone().text())
    return new URL(answered.headers.get('location')!).searchParams.get('code')!
  }
  const redeem = (b: TestBroker, code: string, verifier: string) => b.post('/token', { grant_type: 'authorization_code', code, code_verifier: verifier, client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, resource: NOTES })

  // The only sign-in switched off turns the flow off: its grants are not served at all.
  for (const [what, path, refresh, code] of [
    ['the OAuth client workload', '/admin/workloads/mcp-clients/disable', 'invalid_grant', 'invalid_grant'],
    ['the sign-in\'s subject issuer', `/admin/subject-issuers/${USER_IDP}/disable`, 'unsupported_grant_type', 'unsupported_grant_type'],
    ['the resource', `/admin/resources/${encodeURIComponent(NOTES)}/disable`, 'invalid_grant', 'invalid_target'],
  ] as const) {
    it(`${what} switched off: the task ends, its refresh token (400 ${refresh}) and an unredeemed code (400 ${code}) are refused`, () =>
      withBroker({ config: browserFlowConfig, clientMetadata: fixedClients() }, async (b) => {
        const first = pkce()
        const issued = (await (await redeem(b, await consentedCode(b, first.challenge), first.verifier)).json()) as { refresh_token: string; task_id: string }
        const second = pkce()
        const unredeemed = await consentedCode(b, second.challenge)
        const off = await api(b, 'POST', path)
        assert.equal(off.status, 200)
        assert.equal(off.json.tasks_revoked, 2)
        assert.equal((await b.deps.stores.tasks.get(issued.task_id))!.status, 'revoked')
        const before = await counts(b)
        const refreshed = await b.post('/token', { grant_type: 'refresh_token', refresh_token: issued.refresh_token, client_id: CLIENT_ID })
        assert.equal(refreshed.status, 400)
        assert.equal(((await refreshed.json()) as Json).error, refresh)
        const redeemed = await redeem(b, unredeemed, second.verifier)
        assert.equal(redeemed.status, 400)
        assert.equal(((await redeemed.json()) as Json).error, code)
        assert.equal(await b.count('tokens'), before.tokens)
        assert.equal(await activeTokens(b), 0)
      }))
  }
})

describe('attack: what a switch-off ends, and what it leaves', () => {
  it('a delegate switched off ends its sub-tasks and no other task; the delegating workload switched off ends its tasks and their sub-tasks, all counted in tasks_revoked', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const children = [await openedSubtask(b, parent.task_id), await openedSubtask(b, parent.task_id)]
      assert.equal((await childExchange(b, children[0]!.task_id, { scope: 'notes:read' })).status, 200)
      const off = await api(b, 'POST', '/admin/workloads/agent-b/disable')
      assert.equal(off.json.tasks_revoked, 2)
      assert.deepEqual(await Promise.all([parent, ...children].map(async (t) => (await b.deps.stores.tasks.get(t.task_id))!.status)), ['active', 'revoked', 'revoked'])
      assert.equal((await api(b, 'POST', '/admin/workloads/agent-b/enable')).status, 200)
      const again = await openedSubtask(b, parent.task_id)
      const offA = await api(b, 'POST', '/admin/workloads/agent-a/disable')
      assert.equal(offA.json.tasks_revoked, 2)
      assert.deepEqual(await Promise.all([parent, again].map(async (t) => (await b.deps.stores.tasks.get(t.task_id))!.status)), ['revoked', 'revoked'])
      assert.equal(await activeTokens(b), 0)
    }))

  it('a task waiting for approval ends when its resource is switched off, and the request waiting on it is answered at once', () =>
    withBroker((c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }), async (b) => {
      const res = await openTask(b, { purpose: 'wait', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] })
      const task = (await res.json()) as { task_id: string; status: string }
      assert.equal(task.status, 'pending_approval')
      const session = await b.session()
      const started = Date.now()
      const waiting = b.app.request(`/tasks/${task.task_id}?wait=20`, { headers: { authorization: `Bearer ${session}` } })
      const off = await api(b, 'POST', `/admin/resources/${encodeURIComponent(CALENDAR)}/disable`)
      assert.equal(off.json.tasks_revoked, 1)
      const answered = await waiting
      assert.equal(((await answered.json()) as Json).status, 'revoked')
      assert.ok(Date.now() - started < 10_000, 'answered when the task ended, not when the wait ran out')
    }))
})

describe('held: roles, encodings, secrets, restarts', () => {
  it('an operator or auditor key changes nothing through any method, path spelling or encoding', () =>
    withBroker(undefined, async (b) => {
      const keys = [String((await api(b, 'POST', '/admin/admin-keys', { name: 'ops', role: 'operator' })).json.admin_key), String((await api(b, 'POST', '/admin/admin-keys', { name: 'audit', role: 'auditor' })).json.admin_key)]
      const before = await snapshot(b)
      const body = JSON.stringify({ id: 'agent-x', attestation: { issuer: 'spiffe://test.example', subject: 'spiffe://test.example/agent/x' } })
      for (const key of keys) {
        for (const [method, path] of [
          ['POST', '/admin/workloads'], ['POST', '/admin/workloads/'], ['POST', '/admin/Workloads'], ['POST', '/admin/work%6Coads'], ['POST', '//admin/workloads'], ['POST', '/admin/./workloads'], ['POST', '/ADMIN/workloads'],
          ['PUT', '/admin/workloads/agent-b'], ['PATCH', '/admin/workloads/agent-b'], ['DELETE', '/admin/workloads/agent-b'], ['DELETE', '/admin/workloads/agent-b/'],
          ['POST', '/admin/workloads/agent-b/disable'], ['POST', '/admin/workloads/agent-b/disable/'], ['POST', '/admin/workloads/agent-b%2Fdisable'], ['POST', '/admin/workloads/agent-b/DISABLE'], ['POST', '/admin/workloads/agent-b/%64isable'], ['POST', '/admin/workloads/agent-%62/disable'],
          ['POST', '/admin/admin-keys'], ['PUT', '/admin/admin-keys/ops'], ['POST', '/admin/admin-keys/ops/disable'], ['DELETE', '/admin/admin-keys/audit'],
        ] as const) {
          const res = await b.app.request(path, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-http-method-override': 'POST' }, ...(method === 'DELETE' ? {} : { body: method === 'PUT' && path.includes('admin-keys') ? '{"role":"admin"}' : body }) })
          assert.ok(res.status === 403 || res.status === 404, `${method} ${path}: ${res.status}`)
          assert.match(((await res.json()) as Json).error as string, /^(insufficient_scope|not_found)$/)
        }
      }
      assert.deepEqual({ ...(await snapshot(b)), audit: before.audit }, before)
    }))

  it('objects carrying __proto__ or constructor keys pollute nothing', () =>
    withBroker(undefined, async (b) => {
      const top = await api(b, 'POST', '/admin/resources', '{"uri":"https://p.example/mcp","scopes":["a"],"__proto__":{"polluted":1}}')
      assert.equal(top.status, 400)
      assert.equal(top.json.error, 'invalid_request')
      assert.equal((await api(b, 'POST', '/admin/workload-issuers', '{"kind":"oidc","issuer":"https://z.example","jwks":{"keys":[{"constructor":{"prototype":{"polluted":1}}}],"__proto__":{"polluted":1}}}')).status, 201)
      assert.equal(({} as Json).polluted, undefined)
      assert.equal((Object.prototype as Json).polluted, undefined)
    }))

  it('no answer, audit row or CLI output shows a hash or a secret, of the file’s objects or the API’s', () =>
    withBroker((c) => ({ ...c, subjectIssuers: c.subjectIssuers!.map((s) => ({ ...s, subjectPrefix: 'main:' })) }), async (b) => {
      const secret = 'client-secret-never-shown-0123'
      const password = createHash('sha256').update('dev-pw').digest('base64url')
      assert.equal((await api(b, 'POST', '/admin/subject-issuers', { issuer: 'https://sso.example', jwksUri: 'https://sso.example/jwks', subjectPrefix: 'sso:', login: { kind: 'oidc', clientId: 'broker', clientSecret: secret } })).status, 201)
      assert.equal((await api(b, 'POST', '/admin/subject-issuers', { issuer: 'https://dev.example', jwks: { keys: [] }, subjectPrefix: 'dev:', login: { kind: 'dev', users: ['bob'], passwordSha256: password } })).status, 201)
      assert.equal((await api(b, 'POST', '/admin/resources', { uri: 'https://docs.example/mcp', scopes: ['x'], credential: { clientId: 'docs', secretHash: await argon2Hasher.hash('docs-secret-0123456789') } })).status, 201)
      assert.equal((await api(b, 'POST', '/admin/admin-keys', { name: 'ops', role: 'operator' })).status, 201)
      await api(b, 'PUT', `/admin/subject-issuers/${encodeURIComponent('https://sso.example')}`, { issuer: 'https://sso.example', jwksUri: 'https://sso.example/jwks', subjectPrefix: 'sso:', login: { kind: 'oidc', clientId: 'broker', clientSecret: `${secret}-2` } })
      await api(b, 'POST', `/admin/resources/${encodeURIComponent(NOTES)}/disable`)
      const seen: string[] = []
      for (const kind of ['subject-issuers', 'workload-issuers', 'workloads', 'resources', 'admin-keys']) {
        seen.push(JSON.stringify((await api(b, 'GET', `/admin/${kind}`)).json))
        const write = process.stdout.write
        process.stdout.write = ((chunk: string) => (seen.push(String(chunk)), true)) as typeof process.stdout.write
        try {
          await catalogCommand(b.deps, kind as never, ['list'])
        } finally {
          process.stdout.write = write
        }
      }
      seen.push(JSON.stringify((await api(b, 'GET', '/admin/audit')).json))
      seen.push(JSON.stringify(b.logs))
      const all = seen.join('\n')
      for (const leak of ['$argon2', secret, password]) assert.ok(!all.includes(leak), `${leak} shown`)
      assert.match(all, /\[redacted\]/)
    }))

  it('a restart with the same file takes up everything the API accepted (a GitHub issuer switched off stays off)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-attack-'))
    const database = join(dir, 'taskpass.db')
    const withDb = (c: ConfigInput): ConfigInput => ({ ...prefixed(c), database })
    const first = await createTestBroker({ config: withDb })
    const kek = first.deps.config.keys.kek!
    let config: unknown
    try {
      const keys = await platformKeys()
      for (const [path, body] of [
        ['/admin/workload-issuers', { kind: 'github', jwks: { keys: [keys.github.publicJwk] } }],
        ['/admin/workload-issuers', { kind: 'kubernetes', issuer: 'https://k8s.example', jwks: { keys: [keys.k8s.publicJwk] } }],
        ['/admin/subject-issuers', { issuer: 'https://corp.example', jwks: { keys: [first.keys.user.publicJwk] }, subjectPrefix: 'corp:', idJag: {} }],
        ['/admin/resources', { uri: 'https://docs.example/mcp', scopes: ['docs:read'], requireApproval: true }],
        ['/admin/workloads', { id: 'deployer', attestation: { issuer: GH_ISSUER, claims: { repository_id: '1' } }, grants: [{ resource: 'https://docs.example/mcp', scopes: ['docs:read'] }], delegateTo: ['agent-b'] }],
        ['/admin/workloads', { id: 'mcp-clients', oauthClient: { clientId: { glob: 'https://client.example/**' } }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] }],
        ['/admin/admin-keys', { name: 'ops', role: 'operator' }],
      ] as const) assert.equal((await api(first, 'POST', path, body)).status, 201, `${path} ${JSON.stringify(body)}`)
      assert.equal((await api(first, 'POST', `/admin/workload-issuers/${encodeURIComponent(GH_ISSUER)}/disable`)).status, 200)
      assert.equal((await api(first, 'POST', '/admin/workloads/agent-b/disable')).status, 200)
      config = first.deps.config
    } finally {
      await first.close()
    }
    const second = await createTestBroker({ config: (c) => ({ ...withDb(c), keys: { kek } }) })
    try {
      assert.deepEqual(JSON.parse(JSON.stringify(second.deps.config)), JSON.parse(JSON.stringify({ ...(config as Json), keys: second.deps.config.keys })))
      assert.ok(!second.deps.config.workloadIssuers.some((wi) => wi.kind === 'github'))
    } finally {
      await second.close()
    }
  })
})
