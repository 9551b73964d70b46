/**
 * Several broker instances on one PostgreSQL database, as behind a load balancer: a task ended at
 * one is ended at every other (introspection, the revocation feed within a second), single-use
 * proofs and assertions are single use across them, keys rotated or revoked at one are in force
 * at all, and an approval decided at one answers a wait held at another.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import type { ConfigInput } from '../src/config.js'
import { ADMIN_KEY, CALENDAR, createTestBroker, exchangeParams, form, freePort, NOTES, NOTES_SECRET, openTask, realTimeExchangeForm, startBrokerProcesses, testConfig, testKeys, type TestBroker } from './harness.js'
import { freshPgDatabase, skipWithoutPostgres } from './pg-fixtures.js'

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
const NOTES_CREDENTIAL = basic('notes-mcp', NOTES_SECRET)

/** Two brokers on one new PostgreSQL database (one clock: the instances agree on time, as NTP makes them). */
async function twoInstances(fn: (a: TestBroker, b: TestBroker) => Promise<void>, more: (c: ConfigInput) => ConfigInput = (c) => c): Promise<void> {
  const database = await freshPgDatabase()
  const a = await createTestBroker({ config: (c) => more({ ...c, database: database.url }) })
  const b = await createTestBroker({ clock: a.clock, config: (c) => more({ ...c, database: database.url, keys: { kek: a.deps.config.keys.kek! } }) })
  try {
    await fn(a, b)
  } finally {
    await Promise.all([a.deps.database.close(), b.deps.database.close()])
    await database.drop()
  }
}

async function introspect(b: TestBroker, token: string): Promise<{ active: boolean }> {
  const res = await b.post('/introspect', { token }, { authorization: NOTES_CREDENTIAL })
  assert.equal(res.status, 200)
  return (await res.json()) as { active: boolean }
}

async function tokenRows(b: TestBroker): Promise<number> {
  return ((await b.deps.database.pool.query('select count(*)::int as n from tokens')).rows[0] as { n: number }).n
}

async function statusOf(res: Response): Promise<string> {
  return `${res.status} ${res.ok ? '' : ((await res.json()) as { error: string }).error}`.trim()
}

/** Reads `stream` until `seen` is in it, for at most `ms`; returns what was read. */
async function readUntil(stream: Response, seen: string, ms: number): Promise<string> {
  const reader = stream.body!.getReader()
  let text = ''
  const deadline = setTimeout(() => void reader.cancel(), ms)
  while (!text.includes(seen)) {
    const { value, done } = await reader.read()
    if (done) break
    text += new TextDecoder().decode(value)
  }
  clearTimeout(deadline)
  await reader.cancel().catch(() => {})
  return text
}

/** Polls `probe` on real time until it holds, for at most `ms`; returns the elapsed milliseconds, or fails. */
async function within(ms: number, what: string, probe: () => Promise<boolean>): Promise<number> {
  const started = performance.now()
  while (!(await probe())) {
    if (performance.now() - started > ms) assert.fail(`${what}: not within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
  return performance.now() - started
}

describe('several instances on one PostgreSQL database', { skip: skipWithoutPostgres }, () => {
  it('a task opened on A, exchanged on B and completed on A: B introspects it inactive at once and B\'s feed subscribers hear of it within a second', () =>
    twoInstances(async (a, b) => {
      const opened = await openTask(a, { purpose: 'across instances', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
      assert.equal(opened.status, 201)
      const { task_id } = (await opened.json()) as { task_id: string }
      const exchanged = await b.exchange({ task_id })
      assert.equal(exchanged.status, 200)
      const { access_token } = (await exchanged.json()) as { access_token: string }
      assert.equal((await introspect(b, access_token)).active, true)
      const stream = await b.app.request('/revocations', { headers: { authorization: NOTES_CREDENTIAL, accept: 'text/event-stream' } })
      assert.equal(stream.status, 200)
      const started = performance.now()
      const completed = await a.app.request(`/tasks/${task_id}/complete`, { method: 'POST', headers: { 'actor-token': await a.svid('a') } })
      assert.equal(completed.status, 200)
      assert.deepEqual(await introspect(b, access_token), { active: false })
      const text = await readUntil(stream, task_id, 1000)
      assert.ok(text.includes(`"task_id":"${task_id}"`), `no event at B within 1 s (${Math.round(performance.now() - started)} ms): ${text.slice(0, 300)}`)
      assert.equal(await statusOf(await b.exchange({ task_id })), '400 invalid_grant')
    }))

  it('a DPoP proof used at A is refused at B (shared by default on PostgreSQL)', () =>
    twoInstances(async (a, b) => {
      const { publicKey, privateKey } = await generateKeyPair('ES256')
      const jwk = await exportJWK(publicKey)
      const proof = await new SignJWT({ jti: randomUUID(), htm: 'POST', htu: `${a.deps.config.issuer}/token`, iat: a.clock.now() })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
        .sign(privateKey)
      assert.equal(await statusOf(await a.post('/token', form(await exchangeParams(a)), { dpop: proof })), '200')
      const tokensBefore = await tokenRows(b)
      assert.equal(await statusOf(await b.post('/token', form(await exchangeParams(b)), { dpop: proof })), '400 invalid_dpop_proof')
      assert.equal(await tokenRows(b), tokensBefore, 'no token written')
    }))

  it('a DPoP nonce issued by A is accepted at B (derived from the key-encryption key every instance shares)', () =>
    twoInstances(
      async (a, b) => {
        const { publicKey, privateKey } = await generateKeyPair('ES256')
        const jwk = await exportJWK(publicKey)
        const proof = (nonce?: string) =>
          new SignJWT({ jti: randomUUID(), htm: 'POST', htu: `${a.deps.config.issuer}/token`, iat: a.clock.now(), ...(nonce ? { nonce } : {}) })
            .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
            .sign(privateKey)
        const challenged = await a.post('/token', form(await exchangeParams(a)), { dpop: await proof() })
        assert.equal(await statusOf(challenged), '400 use_dpop_nonce')
        const nonce = challenged.headers.get('dpop-nonce')
        assert.ok(nonce, 'A names a nonce')
        assert.equal(await statusOf(await b.post('/token', form(await exchangeParams(b)), { dpop: await proof(nonce) })), '200')
      },
      (c) => ({ ...c, dpop: { ...c.dpop, nonce: true } }),
    ))

  it('a client assertion used at A is refused at B', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256')
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' } as JWK
    await twoInstances(
      async (a, b) => {
        const now = a.clock.now()
        const assertion = await new SignJWT({ iss: 'agent-a', sub: 'agent-a', aud: a.deps.config.issuer, iat: now, exp: now + 60, jti: randomUUID() })
          .setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'client-authentication+jwt' })
          .sign(privateKey)
        const params = { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }
        assert.equal(await statusOf(await a.post('/token', form({ ...(await exchangeParams(a)), ...params }))), '200')
        assert.equal(await statusOf(await b.post('/token', form({ ...(await exchangeParams(b)), ...params }))), '400 invalid_client')
      },
      (c) => ({ ...c, workloads: c.workloads!.map((w) => (w.id === 'agent-a' ? { ...w, jwks: { keys: [jwk as Record<string, unknown>] } } : w)) }),
    )
  })

  it('a completion at A racing exchanges at B leaves no active token of the ended task', () =>
    twoInstances(async (a, b) => {
      for (let round = 0; round < 3; round++) {
        const { task_id } = (await (await openTask(a, { purpose: `race ${round}`, resources: [{ resource: NOTES, scopes: ['notes:read'] }] })).json()) as { task_id: string }
        await b.exchange({ task_id }) // warm B's verification caches
        const svid = await a.svid('a')
        const exchanges = Array.from({ length: 12 }, async () => b.exchange({ task_id }))
        const completion = a.app.request(`/tasks/${task_id}/complete`, { method: 'POST', headers: { 'actor-token': svid } })
        const answers = await Promise.all([...exchanges, completion])
        assert.equal(answers.at(-1)!.status, 200, 'completed')
        for (const res of answers.slice(0, -1)) assert.ok([200, 400, 503].includes(res.status), `exchange answered ${res.status}`)
        const live = await a.deps.database.pool.query("select count(*)::int as n from tokens where task_id = $1 and status = 'active'", [task_id])
        assert.equal((live.rows[0] as { n: number }).n, 0, `round ${round}: an active token survived the task's end`)
      }
    }))

  it('a key rotation at A: B signs with the new key and publishes it within a second; a key revoked at A is unpublished and unusable at B within a second', () =>
    twoInstances(async (a, b) => {
      const before = (await b.deps.keys.current()).kid
      const rotated = await a.app.request('/admin/keys/rotate?force=true', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(rotated.status, 200)
      const { current } = (await rotated.json()) as { current: string }
      assert.notEqual(current, before)
      const kidOf = async (res: Response) => JSON.parse(Buffer.from(((await res.json()) as { access_token: string }).access_token.split('.')[0]!, 'base64url').toString()) as { kid: string }
      await within(1000, 'B signs with the rotated key', async () => (await kidOf(await b.exchange())).kid === current)
      // Revoking the (new) current key at A: B stops publishing it, and its tokens introspect inactive there.
      const { access_token } = (await (await b.exchange()).json()) as { access_token: string }
      const revoked = await a.app.request(`/admin/keys/${current}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(revoked.status, 200)
      await within(1000, 'B unpublishes the revoked key', async () => !((await (await b.app.request('/.well-known/jwks.json')).json()) as { keys: { kid: string }[] }).keys.some((k) => k.kid === current))
      assert.deepEqual(await introspect(b, access_token), { active: false })
      assert.notEqual((await kidOf(await b.exchange())).kid, current)
    }))

  it('an approval decided at A answers the wait held at B', () =>
    twoInstances(
      async (a, b) => {
        const opened = await openTask(b, { purpose: 'needs a human', resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] })
        assert.equal(opened.status, 201)
        const { task_id } = (await opened.json()) as { task_id: string }
        const session = await b.session()
        const started = performance.now()
        const wait = b.app.request(`/tasks/${task_id}?wait=10`, { headers: { authorization: `Bearer ${session}` } })
        await new Promise((r) => setTimeout(r, 50)) // the wait is held at B
        const approved = await a.app.request(`/admin/tasks/${task_id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
        assert.equal(approved.status, 200)
        const answer = await wait
        assert.equal(answer.status, 200)
        assert.equal(((await answer.json()) as { status: string }).status, 'active')
        assert.ok(performance.now() - started < 2000, `answered after ${Math.round(performance.now() - started)} ms`)
      },
      (c) => ({ ...c, resources: c.resources!.map((r) => (r.uri === CALENDAR ? { ...r, requireApproval: true } : r)) }),
    ))

  it('kill -9 of one instance under load: the other keeps serving, and every token either answered is in the database', async () => {
    const database = await freshPgDatabase()
    const keys = await testKeys()
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-instances-'))
    const issuer = 'http://127.0.0.1:1'
    const configFile = join(dir, 'taskpass.json')
    writeFileSync(configFile, JSON.stringify({ ...testConfig(keys, issuer), rateLimits: { perIp: false, perWorkload: false }, logging: { level: 'warn' } }))
    const ports = [await freePort(), await freePort()]
    const root = new URL('../', import.meta.url)
    // The command the README shows, as written (the file, URL and port replaced by the test's).
    const readme = readFileSync(new URL('README.md', root), 'utf8')
    const command = /## Running several instances[\s\S]*?```\n([\s\S]*?)```/.exec(readme)![1]!.trim()
    assert.match(command, /^TASKPASS_CONFIG=taskpass\.json TASKPASS_DATABASE=postgres:\/\/\S+ npm start$/)
    const brokers = await startBrokerProcesses(ports, { TASKPASS_CONFIG: configFile, TASKPASS_DATABASE: database.url })
    try {
      const body = await realTimeExchangeForm(keys, issuer)
      const answered: string[] = []
      const survivor = new Map<number, number>()
      let killed = false
      const load = (port: number, requests: number) =>
        Array.from({ length: 6 }, async () => {
          for (let i = 0; i < requests; i++) {
            let res: Response
            try {
              res = await fetch(`http://127.0.0.1:${port}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body })
            } catch {
              if (port === ports[0] && killed) return // the killed instance: its connections die with it
              throw new Error(`instance on ${port} refused a connection`)
            }
            const text = await res.text().catch(() => '')
            if (res.status === 200) answered.push(JSON.parse(text).access_token as string)
            if (port === ports[1]) survivor.set(res.status, (survivor.get(res.status) ?? 0) + 1)
          }
        })
      const running = [...load(ports[0]!, 1000), ...load(ports[1]!, 40)]
      await new Promise((r) => setTimeout(r, 400))
      killed = true
      brokers.kill(0)
      await Promise.all(running)
      assert.deepEqual([...survivor.keys()].filter((s) => s !== 200 && s !== 503), [], `the survivor answered ${JSON.stringify([...survivor])}`)
      assert.ok((survivor.get(200) ?? 0) >= 200, `the survivor kept serving: ${JSON.stringify([...survivor])}`)
      // Nothing lost: every token an instance answered with was committed first.
      const jtis = answered.map((t) => (JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti)
      const pool = new (await import('pg')).default.Pool({ connectionString: database.url })
      try {
        const stored = await pool.query('select count(*)::int as n from tokens where jti = any($1)', [jtis])
        assert.equal((stored.rows[0] as { n: number }).n, jtis.length, `${jtis.length} tokens answered`)
      } finally {
        await pool.end()
      }
    } finally {
      await brokers.stop()
      await database.drop()
    }
  })
})

describe('upkeep across instances', { skip: skipWithoutPostgres }, () => {
  it('pruning runs at one instance at a time: a second instance skips the run while the first holds it, and runs once it is done', async () => {
    const database = await freshPgDatabase()
    const { openPgDatabase } = await import('../src/store/pg/db.js')
    const { createPgStores } = await import('../src/store/pg/stores.js')
    const [pa, pb] = await Promise.all([openPgDatabase(database.url), openPgDatabase(database.url)])
    try {
      const [a, b] = [createPgStores(pa), createPgStores(pb)]
      let release!: () => void
      const held = new Promise<void>((r) => (release = r))
      let started!: () => void
      const running = new Promise<void>((r) => (started = r))
      const first = a.alone('prune', async () => {
        started()
        await held
        return 'a pruned'
      })
      await running
      assert.equal(await b.alone('prune', async () => 'b pruned'), undefined, 'skipped while A prunes')
      release()
      assert.equal(await first, 'a pruned')
      assert.equal(await b.alone('prune', async () => 'b pruned'), 'b pruned', 'runs once A is done')
      assert.equal(await a.alone('prune', async () => 'a again'), 'a again', 'and A again after B')
    } finally {
      await Promise.all([pa.close(), pb.close()])
      await database.drop()
    }
  })
})

describe('the change watch without a notification', { skip: skipWithoutPostgres }, () => {
  it('answers true within its fallback bound even while its listening connection looks up (a change no NOTIFY announced)', async () => {
    const database = await freshPgDatabase()
    const { openPgDatabase } = await import('../src/store/pg/db.js')
    const { createPgStores } = await import('../src/store/pg/stores.js')
    const { WATCH_FALLBACK_MS } = await import('../src/store/stores.js')
    const pg = await openPgDatabase(database.url)
    try {
      const changed = createPgStores(pg).watch('keys')
      // Until the listener is up the watch may answer true once ("read what came before"): drain it.
      const started = performance.now()
      while (performance.now() - started < 300) {
        changed()
        await new Promise((r) => setTimeout(r, 20))
      }
      // A change written with no announcement (as a silent, half-open listener would miss one).
      await pg.pool.query("insert into broker_meta (name, value) values ('probe', '1')")
      const since = performance.now()
      const elapsed = await within(WATCH_FALLBACK_MS + 500, 'the watch answers true', async () => changed())
      assert.ok(elapsed <= WATCH_FALLBACK_MS + 500, `after ${Math.round(performance.now() - since)} ms`)
    } finally {
      await pg.close()
      await database.drop()
    }
  })
})
