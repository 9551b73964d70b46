/**
 * Who the user and the workload are, as every token and answer states them: a user is the pair
 * (subject issuer, subject), `may_act` fails closed, session tokens are explicitly typed and
 * bounded, attestations bound what is minted from them, SPIFFE IDs can be workload ids, and the
 * caller is authenticated before anything is said about the user's session.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { describe, it } from 'node:test'
import { decodeJwt } from 'jose'
import { ConfigError, parseConfig, type ConfigInput } from '../src/config.js'
import {
  ADMIN_KEY,
  assertRefusedAndAudited,
  CALENDAR,
  CALENDAR_SECRET,
  counts,
  ISSUER,
  mint,
  NOTES,
  NOTES_SECRET,
  openTask,
  spiffeId,
  testConfig,
  testKeys,
  TRUST_DOMAIN,
  USER_ISSUER,
  withBroker,
  type TestBroker,
} from './harness.js'

const PARTNER = 'https://partner.test.example'
const KEK = randomBytes(32).toString('base64url')
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`

/** Two trusted IdPs, each with its own prefix; the partner IdP signs with a key of its own. */
const twoIdps = (c: ConfigInput): ConfigInput => ({
  ...c,
  subjectIssuers: [
    { ...c.subjectIssuers![0]!, subjectPrefix: 'corp:' },
    { issuer: PARTNER, subjectPrefix: 'partner:', jwks: c.subjectIssuers![0]!.jwks, algorithms: ['ES256'] },
  ],
})

async function partnerSession(b: TestBroker, claims: Record<string, unknown> = {}): Promise<string> {
  const now = b.clock.now()
  return mint(b.keys.user, { iss: PARTNER, sub: 'alice', sid: 'sess-1', aud: b.deps.config.issuer, iat: now, exp: now + 3600, ...claims })
}

async function tokenFor(b: TestBroker, subjectToken: string): Promise<{ access_token: string; task_id: string }> {
  const res = await b.exchange({ subject_token: subjectToken })
  assert.equal(res.status, 200, await res.clone().text())
  return (await res.json()) as { access_token: string; task_id: string }
}

function configIssues(input: ConfigInput): string[] {
  try {
    parseConfig(input)
    return []
  } catch (e) {
    if (e instanceof ConfigError) return e.issues
    throw e
  }
}

describe('a user is the pair (subject issuer, subject)', () => {
  it('"alice" of two IdPs gets different tokens, introspection answers, task views and feed events', () =>
    withBroker(twoIdps, async (b) => {
      const corp = await tokenFor(b, await b.session())
      const partner = await tokenFor(b, await partnerSession(b))
      const c = decodeJwt(corp.access_token)
      const p = decodeJwt(partner.access_token)
      assert.equal(c.sub, 'corp:alice')
      assert.equal(p.sub, 'partner:alice')
      assert.deepEqual(c.sub_id, { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' })
      assert.deepEqual(p.sub_id, { format: 'iss_sub', iss: PARTNER, sub: 'alice' })

      const introspect = async (token: string) =>
        (await (await b.post('/introspect', { token }, { authorization: basic('notes-mcp', NOTES_SECRET) })).json()) as Record<string, unknown>
      const ci = await introspect(corp.access_token)
      const pi = await introspect(partner.access_token)
      assert.equal(ci.active, true)
      assert.notEqual(ci.sub, pi.sub)
      assert.notDeepEqual(ci.sub_id, pi.sub_id)

      const view = async (id: string) => (await (await b.app.request(`/tasks/${id}`, { headers: { 'actor-token': await b.svid('a') } })).json()) as Record<string, unknown>
      assert.deepEqual((await view(corp.task_id)).sub_id, { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' })
      assert.deepEqual((await view(partner.task_id)).sub_id, { format: 'iss_sub', iss: PARTNER, sub: 'alice' })

      // The audit log names them apart too.
      const audited = await b.rawQuery("select user_sub from audit_events where decision = 'allow' and action = 'token.exchange' order by id") as { user_sub: string }[]
      assert.deepEqual(audited.map((r) => r.user_sub), ['corp:alice', 'partner:alice'])

      // Partner alice cannot use corp alice's task.
      const stolen = await b.exchange({ subject_token: await partnerSession(b), task_id: corp.task_id })
      assert.equal(stolen.status, 400)
      assert.equal(((await stolen.json()) as { error: string }).error, 'invalid_grant')

      const revoke = await b.app.request(`/tasks/${partner.task_id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${await partnerSession(b)}` } })
      assert.equal(revoke.status, 200)
      const feed = (await (await b.app.request('/revocations', { headers: { authorization: basic('notes-mcp', NOTES_SECRET) } })).json()) as { events: Record<string, unknown>[] }
      assert.equal(feed.events.length, 1)
      assert.deepEqual(feed.events[0]!.sub_id, { format: 'iss_sub', iss: PARTNER, sub: 'alice' })
    }),
  )

  it('with several subject issuers, each needs its own subjectPrefix (named in the config error)', async () => {
    const keys = await testKeys()
    const base = testConfig(keys)
    const second = { issuer: PARTNER, jwks: base.subjectIssuers![0]!.jwks }
    assert.deepEqual(configIssues({ ...base, subjectIssuers: [base.subjectIssuers![0]!, second] }), [
      'subjectIssuers.0.subjectPrefix: required when there is more than one subject issuer',
      'subjectIssuers.1.subjectPrefix: required when there is more than one subject issuer',
    ])
    assert.deepEqual(configIssues({ ...base, subjectIssuers: [{ ...base.subjectIssuers![0]!, subjectPrefix: 'x:' }, { ...second, subjectPrefix: 'x:' }] }), ['subjectIssuers.1.subjectPrefix: duplicate subject prefix x:'])
    assert.equal(configIssues({ ...base, subjectIssuers: [{ ...base.subjectIssuers![0]!, subjectPrefix: 'a:b:' }] }).length, 1, 'one ":" only, at the end')
    // One issuer: no prefix needed, `sub` is the IdP's subject as it is.
    assert.deepEqual(configIssues(base), [])
  })
})

describe('may_act fails closed', () => {
  const refused: [string, unknown][] = [
    ['an empty object', {}],
    ['client_id naming another workload', { client_id: 'agent-b' }],
    ['a string', 'agent-a'],
    ['an array', ['agent-a']],
    ['a number', 7],
    ['an unknown member beside a matching sub', { sub: 'agent-a', email: 'x@example.com' }],
    ['a non-string sub', { sub: 1 }],
    ['only iss', { iss: `spiffe://${TRUST_DOMAIN}` }],
    ['a matching sub with another iss', { sub: 'agent-a', iss: 'spiffe://other.example' }],
  ]
  for (const [name, mayAct] of refused) {
    it(`may_act as ${name} → exchange 400 invalid_request and task opening refused, nothing issued`, () =>
      withBroker({}, async (b) => {
        const session = await b.session({ may_act: mayAct })
        const before = await counts(b)
        const res = await b.exchange({ subject_token: session })
        assert.equal(res.status, 400)
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
        await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /^may_act/ })

        const before2 = await counts(b)
        const opened = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session })
        assert.equal(opened.status, 400)
        assert.equal(((await opened.json()) as { error: string }).error, 'invalid_request')
        await assertRefusedAndAudited(b, before2, { error: 'invalid_request', reason: /^may_act/, action: 'task.open' })
      }),
    )
  }

  const accepted: [string, unknown][] = [
    ['sub = the workload id', { sub: 'agent-a' }],
    ['sub = the attested SPIFFE ID', { sub: spiffeId('a') }],
    ['client_id = the workload id', { client_id: 'agent-a' }],
    ['sub and iss both matching', { sub: 'agent-a', iss: `spiffe://${TRUST_DOMAIN}` }],
  ]
  for (const [name, mayAct] of accepted) {
    it(`control: may_act with ${name} → 200`, () =>
      withBroker({}, async (b) => {
        assert.equal((await b.exchange({ subject_token: await b.session({ may_act: mayAct }) })).status, 200)
      }),
    )
  }
})

describe('an attestation bounds what is minted from it', () => {
  it('an actor token 30 s past its exp (inside the clock skew) opens nothing and mints nothing', () =>
    withBroker({}, async (b) => {
      const expired = await b.svid('a', { iat: b.clock.now() - 330, exp: b.clock.now() - 30 })
      const res = await b.exchange({ actor_token: expired })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
      assert.deepEqual(await counts(b), { tokens: 0, tasks: 0, audit_events: 0, revocation_events: 0 })
      const opened = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { svid: expired })
      assert.equal(opened.status, 401)
      assert.equal(((await opened.json()) as { error: string }).error, 'invalid_token')
      assert.equal(await b.count('tasks'), 0)
    }),
  )

  it('a cached attestation stops working at its exp, not exp + skew', () =>
    withBroker({}, async (b) => {
      const svid = await b.svid('a')
      assert.equal((await b.exchange({ actor_token: svid })).status, 200)
      b.clock.advance(301)
      const res = await b.exchange({ actor_token: svid })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
    }),
  )

  it('a token never outlives the actor token it was minted from', () =>
    withBroker({}, async (b) => {
      const res = await b.exchange({ actor_token: await b.svid('a', { exp: b.clock.now() + 100 }), ttl: '600' })
      assert.equal(res.status, 200)
      const body = (await res.json()) as { access_token: string; expires_in: number }
      assert.equal(body.expires_in, 100)
      assert.equal(decodeJwt(body.access_token).exp, b.clock.now() + 100)
    }),
  )
})

describe('session tokens are typed, bounded and tied to a published key', () => {
  const typRows: [string, Record<string, unknown>, number][] = [
    ['typ logout+jwt', { typ: 'logout+jwt' }, 400],
    ['typ secevent+jwt', { typ: 'secevent+jwt' }, 400],
    ['typ dpop+jwt', { typ: 'dpop+jwt' }, 400],
    ['typ JWT', { typ: 'JWT' }, 200],
    ['typ at+jwt', { typ: 'at+jwt' }, 200],
    ['typ application/at+jwt (RFC 7515 §4.1.9)', { typ: 'application/at+jwt' }, 200],
  ]
  for (const [name, header, status] of typRows) {
    it(`a session token with ${name} → ${status}`, () =>
      withBroker({}, async (b) => {
        const before = await counts(b)
        const res = await b.exchange({ subject_token: await b.session({}, { header }) })
        assert.equal(res.status, status, await res.clone().text())
        if (status === 400) {
          assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
          await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /typ .* not accepted/ })
        }
      }),
    )
  }

  it('a session token without typ is accepted by default and refused with allowMissingTyp: false', async () => {
    const noTyp = (b: TestBroker) => mint(b.keys.user, { iss: USER_ISSUER, sub: 'alice', sid: 'sess-1', aud: ISSUER, iat: b.clock.now(), exp: b.clock.now() + 3600 }, { typ: undefined })
    await withBroker({}, async (b) => {
      assert.equal((await b.exchange({ subject_token: await noTyp(b) })).status, 200)
    })
    await withBroker((c) => ({ ...c, subjectIssuers: [{ ...c.subjectIssuers![0]!, allowMissingTyp: false }] }), async (b) => {
      const res = await b.exchange({ subject_token: await noTyp(b) })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
    })
  })

  it('one issuer as subject and workload issuer is refused unless explicit types keep them apart; then a session cannot pass as an attestation', async () => {
    const keys = await testKeys()
    const base = testConfig(keys)
    const oidcWorkload = { kind: 'oidc' as const, issuer: USER_ISSUER, jwks: base.subjectIssuers![0]!.jwks }
    const withIssuer = (wi: object, si: object = {}): ConfigInput => ({
      ...base,
      subjectIssuers: [{ ...base.subjectIssuers![0]!, ...si }],
      workloadIssuers: [...base.workloadIssuers!, wi as never],
      workloads: [...base.workloads!, { id: 'idp-agent', attestation: { issuer: USER_ISSUER, subject: 'alice' }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] }],
    })
    assert.match(configIssues(withIssuer(oidcWorkload)).join('\n'), /subjectIssuers\.0\.typ: .* is also a workload issuer/)
    assert.match(configIssues(withIssuer({ ...oidcWorkload, typ: ['JWT'] }, { typ: ['JWT'], allowMissingTyp: false })).join('\n'), /also a workload issuer/)
    const apart = withIssuer({ ...oidcWorkload, typ: ['workload+jwt'] }, { typ: ['JWT'], allowMissingTyp: false })
    assert.deepEqual(configIssues(apart), [])
    await withBroker(() => apart, async (b) => {
      // The user's session (typ JWT) presented as the actor token: refused by type.
      const res = await b.exchange({ actor_token: await b.session() })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
      assert.match(String(b.logs.at(-1)?.fields.detail), /typ "JWT" not accepted/)
      // An attestation of the same issuer (typ workload+jwt) as the subject token: refused by type.
      const now = b.clock.now()
      const attestation = await mint(b.keys.user, { iss: USER_ISSUER, sub: 'alice', aud: ISSUER, iat: now, exp: now + 300 }, { typ: 'workload+jwt' })
      const res2 = await b.exchange({ subject_token: attestation })
      assert.equal(res2.status, 400)
      assert.match(String((await b.lastAudit())?.reason), /typ "workload\+jwt" not accepted/)
      // Control: the attestation as the actor token works.
      assert.equal((await b.exchange({ actor_token: attestation })).status, 200)
    })
  })

  it('a non-string or empty sid is refused, not silently ignored', () =>
    withBroker({}, async (b) => {
      for (const sid of [5, '', { id: 'x' }, ['sess-1']]) {
        const before = await counts(b)
        const res = await b.exchange({ subject_token: await b.session({ sid }) })
        assert.equal(res.status, 400)
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
        await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /"sid" claim must be a non-empty string/ })
      }
    }),
  )

  it('a session token living longer than maxTokenLifetime (default a day) is refused', () =>
    withBroker({}, async (b) => {
      const now = b.clock.now()
      const res = await b.exchange({ subject_token: await b.session({ iat: now, exp: now + 10 * 365 * 86_400 }) })
      assert.equal(res.status, 400)
      assert.match(String((await b.lastAudit())?.reason), /lifetime .* > 86400s/)
      assert.equal((await b.exchange({ subject_token: await b.session({ iat: now, exp: now + 86_400 }) })).status, 200)
    }),
  )

  it('a cached session verification stops once its key leaves the IdP key set', async () => {
    const keys = await testKeys()
    let published = [keys.user.publicJwk]
    const server: Server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: published })))
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`
    try {
      await withBroker((c) => ({ ...c, remoteJwks: { cacheMaxAge: 60, cooldown: 1 }, subjectIssuers: [{ issuer: USER_ISSUER, jwksUri: url, algorithms: ['ES256'] }] }), async (b) => {
        const session = await b.session()
        assert.equal((await b.exchange({ subject_token: session })).status, 200)
        // The IdP removes the key (e.g. after a compromise); the session token is cached as verified.
        published = []
        b.clock.advance(61)
        const before = await counts(b)
        const res = await b.exchange({ subject_token: session })
        assert.equal(res.status, 400)
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
        await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /key no longer published/ })
        // Control: the key back in the set, the same cached token works again.
        published = [keys.user.publicJwk]
        b.clock.advance(2)
        assert.equal((await b.exchange({ subject_token: session })).status, 200)
      })
    } finally {
      server.close()
    }
  })
})

describe('SPIFFE IDs as workload ids', () => {
  const spiffeNamed = (c: ConfigInput): ConfigInput => ({
    ...c,
    workloads: [...c.workloads!, { id: spiffeId('s'), attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('s') }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] }],
  })

  it('a workload named by its SPIFFE ID appears verbatim as client_id and act.sub, and may send it as client_id', () =>
    withBroker(spiffeNamed, async (b) => {
      const res = await b.exchange({ actor_token: await b.svid('s'), client_id: spiffeId('s') })
      assert.equal(res.status, 200, await res.clone().text())
      const claims = decodeJwt(((await res.json()) as { access_token: string }).access_token)
      assert.equal(claims.client_id, spiffeId('s'))
      assert.deepEqual(claims.act, { sub: spiffeId('s') })
    }),
  )

  it('a client_id equal to the attested SPIFFE ID of a plainly named workload is accepted; another SPIFFE ID is invalid_client', () =>
    withBroker({}, async (b) => {
      assert.equal((await b.exchange({ client_id: spiffeId('a') })).status, 200)
      const res = await b.exchange({ client_id: spiffeId('b') })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_client')
    }),
  )

  it('a workload id must be a plain name or a valid SPIFFE ID', async () => {
    const base = testConfig(await testKeys())
    const named = (id: string) => configIssues({ ...base, workloads: [{ ...base.workloads![0]!, id }] })
    assert.deepEqual(named(spiffeId('x')), [])
    for (const bad of ['spiffe://UPPER.example/x', 'spiffe://td.example', 'spiffe://td.example/a/../b', 'agent/a', 'https://x.example/a']) {
      assert.match(named(bad).join('\n'), /workloads\.0\.id: .*SPIFFE ID/, bad)
    }
  })
})

describe('the caller is authenticated before the user', () => {
  it('without a valid attestation, /token answers the same whatever the session token is (valid, revoked, forged, untrusted)', () =>
    withBroker({}, async (b) => {
      const revokedSid = await b.session({ sid: 'revoked-sess' })
      await b.deps.stores.sessions.revoke(USER_ISSUER, 'revoked-sess', b.clock.now(), b.clock.now() + 3600)
      const sessions = [await b.session(), revokedSid, await b.session({}, { key: b.keys.untrustedUser }), await mint(b.keys.user, { iss: 'https://evil.example', sub: 'alice', aud: ISSUER, exp: b.clock.now() + 60 })]
      const badActor = await b.svid('a', {}, { key: b.keys.otherDomain })
      const answers = new Set<string>()
      for (const subject_token of sessions) {
        const res = await b.exchange({ subject_token, actor_token: badActor })
        answers.add(`${res.status} ${await res.text()}`)
      }
      assert.equal(answers.size, 1, [...answers].join('\n'))
      assert.match([...answers][0]!, /^400 .*"actor_token is invalid"/)
      assert.equal(await b.count('audit_events'), 0)
    }),
  )

  it('POST /tasks refuses a bad attestation before looking at the session', () =>
    withBroker({}, async (b) => {
      const answers = new Set<string>()
      for (const session of [await b.session(), await b.session({}, { key: b.keys.untrustedUser })]) {
        const res = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES }] }, { session, svid: await b.svid('a', {}, { key: b.keys.otherDomain }) })
        answers.add(`${res.status} ${await res.text()}`)
      }
      assert.equal(answers.size, 1, [...answers].join('\n'))
      assert.match([...answers][0]!, /^401 /)
    }),
  )

  it('a resource hears of a task only when a token of it was issued for that resource', () =>
    withBroker({}, async (b) => {
      const opened = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }, { resource: CALENDAR, scopes: ['cal:read'] }] })
      const { task_id } = (await opened.json()) as { task_id: string }
      assert.equal((await b.exchange({ task_id, resource: NOTES })).status, 200)
      const revoke = await b.app.request(`/tasks/${task_id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${await b.session()}` } })
      assert.equal(revoke.status, 200)
      const events = async (id: string, secret: string) =>
        ((await (await b.app.request('/revocations', { headers: { authorization: basic(id, secret) } })).json()) as { events: unknown[] }).events
      assert.equal((await events('notes-mcp', NOTES_SECRET)).length, 1)
      assert.deepEqual(await events('calendar-mcp', CALENDAR_SECRET), [], 'the calendar server holds no token of the task: it learns nothing of its user or session')
    }),
  )
})


describe('a workload that may no longer act', () => {
  it('removed from the configuration: its open tasks and tokens are revoked at start, exactly as when disabled', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-removed-'))
    const onFile = (c: ConfigInput): ConfigInput => ({ ...c, database: join(dir, 'broker.db'), keys: { kek: KEK } })
    try {
      let taskId = ''
      await withBroker(onFile, async (b) => {
        const res = await b.exchange({ actor_token: await b.svid('b') })
        assert.equal(res.status, 200)
        taskId = ((await res.json()) as { task_id: string }).task_id
      })
      const withoutB = (c: ConfigInput): ConfigInput => ({ ...onFile(c), workloads: c.workloads!.filter((w) => w.id !== 'agent-b') })
      await withBroker(withoutB, async (b) => {
        const task = (await b.deps.stores.tasks.get(taskId))!
        assert.equal(task.status, 'revoked')
        assert.match(String(task.endReason), /workload agent-b removed from the configuration/)
        const tokens = await b.rawQuery('select status from tokens where task_id = ?', [taskId]) as { status: string }[]
        assert.deepEqual(tokens.map((t) => t.status), ['revoked'])
        const events = await b.rawQuery("select kind, audiences from revocation_events where task_id = ?", [taskId])
        assert.deepEqual(events, [{ kind: 'task_revoked', audiences: NOTES }])
      })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('only the server ends tasks of retired workloads', () => {
  it('a read-only CLI command given a configuration without a workload revokes nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-cli-config-'))
    const database = join(dir, 'broker.db')
    try {
      let taskId = ''
      await withBroker((c) => ({ ...c, database, keys: { kek: KEK } }), async (b) => {
        const res = await b.exchange({ actor_token: await b.svid('b') })
        taskId = ((await res.json()) as { task_id: string }).task_id
      })
      const config = testConfig(await testKeys())
      const file = join(dir, 'stale.json')
      writeFileSync(file, JSON.stringify({ ...config, database, keys: { kek: KEK }, workloads: config.workloads!.filter((w) => w.id !== 'agent-b') }))
      const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'tasks', 'list', '--config', file], { encoding: 'utf8', timeout: 30_000 })
      assert.equal(run.status, 0, run.stderr)
      assert.ok(run.stdout.includes(taskId))
      await withBroker((c) => ({ ...c, database, keys: { kek: KEK } }), async (b) => {
        assert.equal((await b.deps.stores.tasks.get(taskId))?.status, 'active')
      })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('every feed event names the user', () => {
  it('a token revoked alone (RFC 7009) is announced with its task user as sub_id and its session', () =>
    withBroker({}, async (b) => {
      const res = await b.exchange()
      const { access_token } = (await res.json()) as { access_token: string }
      const revoked = await b.post('/revoke', { token: access_token }, { authorization: basic('notes-mcp', NOTES_SECRET) })
      assert.equal(revoked.status, 200)
      const feed = (await (await b.app.request('/revocations', { headers: { authorization: basic('notes-mcp', NOTES_SECRET) } })).json()) as { events: Record<string, unknown>[] }
      assert.equal(feed.events.length, 1)
      assert.equal(feed.events[0]!.type, 'token_revoked')
      assert.deepEqual(feed.events[0]!.sub_id, { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' })
      assert.equal(feed.events[0]!.sid, 'sess-1')
    }),
  )
})

describe('admins find a user as tokens name them', () => {
  it('GET /admin/tasks?user=partner:alice lists only the partner IdP\'s alice', () =>
    withBroker(twoIdps, async (b) => {
      const corp = await tokenFor(b, await b.session())
      const partner = await tokenFor(b, await partnerSession(b))
      const list = async (q: string) =>
        ((await (await b.app.request(`/admin/tasks${q}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json()) as { tasks: { task_id: string }[] }).tasks.map((t) => t.task_id)
      assert.deepEqual(await list('?user=partner:alice'), [partner.task_id])
      assert.deepEqual(await list('?user=corp:alice'), [corp.task_id])
      assert.deepEqual(await list('?user=alice'), [], 'with several IdPs an unprefixed name is nobody')
    }),
  )
})

describe('edges of identity', () => {
  it('may_act {sub} names an attested subject only when it is unique: a SPIFFE ID, or with iss', () =>
    withBroker(
      (c) => ({
        ...c,
        workloadIssuers: [...c.workloadIssuers!, { kind: 'oidc', issuer: 'https://ci.test.example', jwks: c.subjectIssuers![0]!.jwks }],
        workloads: [...c.workloads!, { id: 'ci-runner', attestation: { issuer: 'https://ci.test.example', subject: 'agent-a' }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] }],
      }),
      async (b) => {
        const now = b.clock.now()
        const ci = await mint(b.keys.user, { iss: 'https://ci.test.example', sub: 'agent-a', aud: ISSUER, iat: now, exp: now + 300 })
        // Meant for the workload agent-a; ci-runner's attested subject happens to be "agent-a" too.
        const res = await b.exchange({ actor_token: ci, subject_token: await b.session({ may_act: { sub: 'agent-a' } }) })
        assert.equal(res.status, 400)
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
        // With iss pinning the issuer, the attested subject does name ci-runner.
        const pinned = await b.exchange({ actor_token: ci, subject_token: await b.session({ may_act: { sub: 'agent-a', iss: 'https://ci.test.example' } }) })
        assert.equal(pinned.status, 200, await pinned.clone().text())
      },
    ),
  )

  it('POST /tasks gives every bad attestation the same description', () =>
    withBroker({}, async (b) => {
      const bad = [
        await b.svid('a', {}, { key: b.keys.otherDomain }),
        await b.svid('a', { iat: b.clock.now() - 400, exp: b.clock.now() - 100 }),
        await b.svid('nobody'),
        await b.svid('a', { aud: 'https://elsewhere.example' }),
      ]
      const answers = new Set<string>()
      for (const svid of bad) {
        const res = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES }] }, { svid })
        answers.add(`${res.status} ${await res.text()}`)
      }
      assert.deepEqual([...answers], ['401 {"error":"invalid_token","error_description":"actor_token is invalid"}'])
      assert.equal(await b.count('audit_events'), 0)
    }),
  )

  it('POST /tasks audits a bad session once the workload is authenticated', () =>
    withBroker({}, async (b) => {
      const before = await counts(b)
      const res = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES }] }, { session: await b.session({}, { key: b.keys.untrustedUser }) })
      assert.equal(res.status, 401)
      await assertRefusedAndAudited(b, before, { error: 'invalid_token', reason: /^subject: subject_token: signature verification failed/, action: 'task.open' })
      assert.equal((await b.lastAudit())?.workload_id, 'agent-a')
    }),
  )

  it('a subject longer than 255 characters is refused (users stay apart in every stored field)', () =>
    withBroker({}, async (b) => {
      const res = await b.exchange({ subject_token: await b.session({ sub: 'a'.repeat(256) }) })
      assert.equal(res.status, 400)
      assert.match(String((await b.lastAudit())?.reason), /longer than 255/)
      assert.equal((await b.exchange({ subject_token: await b.session({ sub: 'a'.repeat(255) }) })).status, 200)
    }),
  )

  it('a session token without iat is refused, so its lifetime is always bounded', () =>
    withBroker({}, async (b) => {
      const res = await b.exchange({ subject_token: await b.session({ iat: null }) })
      assert.equal(res.status, 400)
      assert.match(String((await b.lastAudit())?.reason), /"iat" claim/)
    }),
  )

  it('maxTokenLifetime may not exceed how long a revoked session is remembered (30 days)', async () => {
    const base = testConfig(await testKeys())
    assert.match(configIssues({ ...base, subjectIssuers: [{ ...base.subjectIssuers![0]!, maxTokenLifetime: 31 * 86_400 }] }).join('\n'), /maxTokenLifetime: at most 30 days/)
  })
})
