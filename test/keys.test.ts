/**
 * Signing keys over HTTP, with the fixed clock: the JWKS document (current + pre-published next
 * key, caching headers, public members only, RFC 7638 kids), rotation (the next key was already
 * published before it signs; a retired key stays published until its last token has expired),
 * and private keys encrypted at rest.
 */
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { randomUUID } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { calculateJwkThumbprint, compactDecrypt, createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors, importJWK, jwtVerify, SignJWT, type JWK } from 'jose'
import { createFixedClock } from '../src/clock.js'
import { JWKS_MAX_AGE, openKeySet, rotateKeys } from '../src/keys/keyset.js'
import { revokeKey } from '../src/keys/revoke.js'
import { openDatabase } from '../src/store/db.js'
import { createStores } from '../src/store/stores.js'
import { ADMIN_KEY, CALENDAR, CALENDAR_SECRET, counts, createTestBroker, NOTES, NOTES_SECRET, startTestServer, T0, testDialect, type TestBroker } from './harness.js'

type Jwks = { keys: JWK[] }
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'] as const

async function getJwks(b: TestBroker, headers: Record<string, string> = {}): Promise<Response> {
  return b.app.request('/.well-known/jwks.json', { headers })
}

async function jwks(b: TestBroker): Promise<Jwks> {
  const res = await getJwks(b)
  assert.equal(res.status, 200)
  return (await res.json()) as Jwks
}

const kids = (set: Jwks) => set.keys.map((k) => k.kid)

async function issue(b: TestBroker): Promise<string> {
  const res = await b.exchange()
  assert.equal(res.status, 200)
  return ((await res.json()) as { access_token: string }).access_token
}

/** A resource server's offline check with a JWKS it holds, at the broker's (fixed) time. */
function verifyWith(b: TestBroker, set: Jwks, token: string) {
  return jwtVerify(token, createLocalJWKSet(set), {
    issuer: b.deps.config.issuer,
    audience: NOTES,
    typ: 'at+jwt',
    algorithms: ['ES256'],
    currentDate: new Date(b.clock.now() * 1000),
  })
}

function rotate(b: TestBroker, authorization?: string, query = ''): Promise<Response> {
  return Promise.resolve(b.app.request(`/admin/keys/rotate${query}`, { method: 'POST', headers: authorization ? { authorization } : {} }))
}

describe('JWKS document', () => {
  let b: TestBroker
  beforeEach(async () => { b = await createTestBroker() })
  afterEach(() => b.close())

  it('publishes the current key, then the pre-published next and standby keys', async () => {
    const set = await jwks(b)
    assert.equal(set.keys.length, 3)
    const current = (await b.deps.keys.current()).kid
    assert.equal(set.keys[0]!.kid, current)
    const next = (await b.rawQuery(`select kid from signing_keys where state = 'next'`))[0] as { kid: string }
    const standby = (await b.rawQuery(`select kid from signing_keys where state = 'standby'`))[0] as { kid: string }
    assert.equal(set.keys[1]!.kid, next.kid)
    assert.equal(set.keys[2]!.kid, standby.kid)
    assert.equal(new Set([current, next.kid, standby.kid]).size, 3)
    for (const k of set.keys) {
      assert.equal(k.kty, 'EC')
      assert.equal(k.crv, 'P-256')
      assert.equal(k.alg, 'ES256')
      assert.equal(k.use, 'sig')
    }
  })

  it('is cacheable: Cache-Control max-age, a strong ETag, If-None-Match → 304 with the validators', async () => {
    const res = await getJwks(b)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^application\/(jwk-set\+)?json/)
    const cc = res.headers.get('cache-control') ?? ''
    const maxAge = /(?:^|,)\s*max-age=(\d+)/.exec(cc)
    assert.ok(maxAge, `Cache-Control has max-age: ${cc}`)
    assert.ok(Number(maxAge[1]) > 0)
    const etag = res.headers.get('etag')
    assert.match(etag ?? '', /^"[^"]+"$/)

    const cached = await getJwks(b, { 'if-none-match': etag! })
    assert.equal(cached.status, 304)
    assert.equal(await cached.text(), '')
    assert.equal(cached.headers.get('etag'), etag)
    assert.equal(cached.headers.get('cache-control'), cc)

    const stale = await getJwks(b, { 'if-none-match': '"not-the-etag"' })
    assert.equal(stale.status, 200)
    assert.equal(((await stale.json()) as Jwks).keys.length, 3)

    // RFC 9110 §13.1.2 weak comparison: a list, a weak validator and `*` all match.
    for (const header of [`"x", ${etag!}`, `W/${etag!}`, '*']) {
      assert.equal((await getJwks(b, { 'if-none-match': header })).status, 304, header)
    }
  })

  it('contains no private key member', async () => {
    const res = await getJwks(b)
    const text = await res.text()
    const set = JSON.parse(text) as Jwks
    assert.ok(set.keys.length > 0)
    for (const k of set.keys) {
      for (const m of PRIVATE_MEMBERS) assert.equal(Object.hasOwn(k, m), false, `JWK ${k.kid} has private member "${m}"`)
    }
    assert.doesNotMatch(text, /"(d|p|q|dp|dq|qi|k|oth)"\s*:/)
  })

  it('every kid is the RFC 7638 SHA-256 thumbprint of its key', async () => {
    const set = await jwks(b)
    assert.equal(set.keys.length, 3)
    for (const k of set.keys) assert.equal(k.kid, await calculateJwkThumbprint(k, 'sha256'))
  })

  it('the issued token names the current kid and verifies with the published JWKS', async () => {
    const set = await jwks(b)
    const token = await issue(b)
    assert.equal(decodeProtectedHeader(token).kid, set.keys[0]!.kid)
    const { protectedHeader } = await verifyWith(b, set, token)
    assert.equal(protectedHeader.alg, 'ES256')
  })
})

describe('key rotation', () => {
  let b: TestBroker
  beforeEach(async () => { b = await createTestBroker() })
  afterEach(() => b.close())

  it('the pre-published next key signs after rotation; the old key stays published and its tokens verify until they expire; then it is withdrawn', async () => {
    // Rotation waits until the next key has been published for a whole JWKS cache lifetime.
    b.clock.advance(JWKS_MAX_AGE - 10)
    // A verifier fetched the JWKS before the rotation and holds it.
    const beforeRes = await getJwks(b)
    const etagBefore = beforeRes.headers.get('etag')!
    const before = (await beforeRes.json()) as Jwks
    const [oldKid, nextKid, standbyKid] = kids(before) as [string, string, string]
    const oldToken = await issue(b)
    assert.equal(decodeProtectedHeader(oldToken).kid, oldKid)

    b.clock.advance(10)
    const rotatedAt = b.clock.now()
    const res = await rotate(b, `Bearer ${ADMIN_KEY}`)
    assert.equal(res.status, 200)
    const result = (await res.json()) as { retired: string; current: string; next: string; standby: string; warning?: string }
    assert.equal(result.retired, oldKid)
    assert.equal(result.current, nextKid)
    assert.equal(result.next, standbyKid)
    assert.ok(![oldKid, nextKid, standbyKid].includes(result.standby))
    assert.equal(result.warning, undefined, 'a rotation after the wait promotes a key every verifier has seen')
    assert.equal((await b.deps.keys.current()).kid, nextKid)
    assert.equal((await b.lastAudit())?.action, 'keys.rotate')

    // The new signing key is one the verifier already had: no verifier sees an unknown kid.
    const newToken = await issue(b)
    assert.equal(decodeProtectedHeader(newToken).kid, nextKid)
    await verifyWith(b, before, newToken)

    // The JWKS changed (new ETag, old validator no longer matches) and keeps the retired key.
    const afterRes = await getJwks(b, { 'if-none-match': etagBefore })
    assert.equal(afterRes.status, 200)
    assert.notEqual(afterRes.headers.get('etag'), etagBefore)
    const after = (await afterRes.json()) as Jwks
    assert.deepEqual(kids(after), [nextKid, standbyKid, result.standby, oldKid])
    for (const k of after.keys) assert.equal(k.kid, await calculateJwkThumbprint(k, 'sha256'))
    await verifyWith(b, after, oldToken)
    await verifyWith(b, after, newToken)

    // Until the old token's expiry it still verifies (then jose refuses it as expired, not for its key).
    b.clock.set(decodeJwt(oldToken).exp! - 1)
    await verifyWith(b, await jwks(b), oldToken)
    b.clock.advance(1)
    await assert.rejects(verifyWith(b, await jwks(b), oldToken), errors.JWTExpired)

    // The retired key stays published for tokens.maxTtl + clockSkew after retirement…
    const window = b.deps.config.tokens.maxTtl + b.deps.config.clockSkew
    assert.ok(rotatedAt + window > decodeJwt(oldToken).exp!, 'publish window outlasts the last token')
    b.clock.set(rotatedAt + window - 1)
    await b.deps.keys.reload()
    assert.ok(kids(await jwks(b)).includes(oldKid))

    // …and is gone once that window has passed and keys are reloaded.
    b.clock.advance(1)
    await b.deps.keys.reload()
    const later = await jwks(b)
    assert.deepEqual(kids(later), [nextKid, standbyKid, result.standby])
    assert.equal(await b.deps.keys.publicKey(oldKid), undefined)
    // The retired key's row is still stored (state 'retired'), only no longer published.
    const row = (await b.rawQuery('select state, publish_until from signing_keys where kid = ?', [oldKid]))[0] as { state: string; publish_until: number }
    assert.equal(row.state, 'retired')
    assert.equal(row.publish_until, rotatedAt + window)
    await assert.rejects(verifyWith(b, later, oldToken), errors.JWKSNoMatchingKey)
  })

  it('rotation is refused (409, Retry-After) until the next key has been published for the JWKS max-age; forced, the answer says what verifiers will see', async () => {
    const before = kids(await jwks(b))
    const rows = await b.rawQuery('select * from signing_keys order by kid')
    const audits = await b.count('audit_events')
    b.clock.advance(JWKS_MAX_AGE - 1)
    const early = await rotate(b, `Bearer ${ADMIN_KEY}`)
    assert.equal(early.status, 409)
    assert.equal(early.headers.get('retry-after'), '1')
    assert.equal(((await early.json()) as { error: string }).error, 'rotation_too_early')
    assert.deepEqual(kids(await jwks(b)), before)
    assert.deepEqual(await b.rawQuery('select * from signing_keys order by kid'), rows, 'no key row changed')
    assert.equal(await b.count('audit_events'), audits)

    const forced = await rotate(b, `Bearer ${ADMIN_KEY}`, '?force=true')
    assert.equal(forced.status, 200)
    const answer = (await forced.json()) as { current: string; warning?: string; verifiers_may_refuse_for_seconds?: number }
    assert.equal(answer.current, before[1])
    assert.equal((await b.deps.keys.current()).kid, before[1])
    assert.equal(answer.verifiers_may_refuse_for_seconds, 1, 'published 299 s ago: a verifier caching the JWKS for 300 s may lack it for 1 s more')
    assert.match(answer.warning ?? '', new RegExp(`${before[1]}.*only ${JWKS_MAX_AGE - 1} s.*refuses new tokens.*up to 1 s`))
    assert.match(String((await b.lastAudit())?.reason), /\(forced\).*only 299 s/)

    // The standby key, published with the first two, is now next: it has been seen for a full max-age.
    b.clock.advance(1)
    const again = await rotate(b, `Bearer ${ADMIN_KEY}`)
    assert.equal(again.status, 200)
    assert.equal(((await again.json()) as { current: string }).current, before[2])
    // Its successor was generated by the forced rotation a second ago and must wait.
    const third = await rotate(b, `Bearer ${ADMIN_KEY}`)
    assert.equal(third.status, 409, 'the next key generated a second ago must wait')
    assert.equal(third.headers.get('retry-after'), String(JWKS_MAX_AGE - 1))
  })

  it('a token signed before rotation still introspects active afterwards', async () => {
    const { access_token } = (await (await b.exchange()).json()) as { access_token: string }
    assert.equal((await rotate(b, `Bearer ${ADMIN_KEY}`, '?force=true')).status, 200)
    const basic = `Basic ${Buffer.from('notes-mcp:notes-secret-0123456789').toString('base64')}`
    const res = await b.post('/introspect', { token: access_token }, { authorization: basic })
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { active: boolean }).active, true)
  })

  it('rotateKeys() by another process takes effect in the JWKS and for signing on reload', async () => {
    const before = kids(await jwks(b))
    const result = await rotateKeys(b.deps.keyStore, { force: true })
    assert.equal(result.current, before[1])
    assert.equal(result.next, before[2])
    // Not reloaded yet: this process still signs with, and publishes, what it loaded. (SQLite only:
    // a commit on this process's own connection leaves its data_version as it was. On PostgreSQL the
    // rotation's NOTIFY reaches this process's listener within milliseconds, and its next use may
    // already have reloaded: the behaviour several instances rely on.)
    if (testDialect === 'sqlite') {
      assert.deepEqual(kids(await jwks(b)), before)
      assert.equal((await b.deps.keys.current()).kid, before[0])
    }
    await b.deps.keys.reload()
    assert.deepEqual(kids(await jwks(b)), [before[1], before[2], result.standby, before[0]])
    assert.equal(decodeProtectedHeader(await issue(b)).kid, before[1])
  })

  it('POST /admin/keys/rotate without or with a wrong admin key → 401, nothing rotates', async () => {
    const before = kids(await jwks(b))
    const rows = ((await b.rawQuery('select count(*) as n from signing_keys'))[0] as { n: number }).n
    for (const auth of [undefined, 'Bearer tpa_wrong-key', `Basic ${Buffer.from(`admin:${ADMIN_KEY}`).toString('base64')}`]) {
      const res = await rotate(b, auth)
      assert.equal(res.status, 401, `authorization ${auth ?? '(none)'}`)
      assert.ok(res.headers.get('www-authenticate'))
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_token')
    }
    assert.deepEqual(kids(await jwks(b)), before)
    assert.equal((await b.deps.keys.current()).kid, before[0])
    assert.equal(((await b.rawQuery('select count(*) as n from signing_keys'))[0] as { n: number }).n, rows)
  })
})

describe('private keys at rest', () => {
  let b: TestBroker
  beforeEach(async () => { b = await createTestBroker() })
  afterEach(() => b.close())

  it('signing_keys.private_jwe is a compact JWE under the KEK; no plaintext private key anywhere in the database', async () => {
    await rotate(b, `Bearer ${ADMIN_KEY}`, '?force=true') // four keys: retired, current, next, standby
    const rows = await b.rawQuery('select kid, public_jwk, private_jwe from signing_keys') as { kid: string; public_jwk: string; private_jwe: string }[]
    assert.equal(rows.length, 4)
    for (const r of rows) {
      const segments = r.private_jwe.split('.')
      assert.equal(segments.length, 5, 'compact JWE has five segments')
      for (const s of segments) assert.match(s, /^[A-Za-z0-9_-]*$/)
      assert.ok(!r.private_jwe.includes('"d"'))
      const header = JSON.parse(Buffer.from(segments[0]!, 'base64url').toString('utf8')) as Record<string, unknown>
      assert.equal(header.alg, 'dir')
      assert.equal(header.enc, 'A256GCM')
      assert.ok(segments[3]!.length > 0, 'ciphertext present')
      assert.equal(Object.hasOwn(JSON.parse(r.public_jwk) as object, 'd'), false)

      // It decrypts with the KEK to the private half of the published public key…
      const { plaintext } = await compactDecrypt(r.private_jwe, b.deps.keyStore.kek)
      const priv = JSON.parse(new TextDecoder().decode(plaintext)) as JWK
      assert.equal(typeof priv.d, 'string')
      const pub = JSON.parse(r.public_jwk) as JWK
      assert.deepEqual([priv.x, priv.y, priv.crv], [pub.x, pub.y, pub.crv])
      assert.equal(await calculateJwkThumbprint(priv, 'sha256'), r.kid)
      // …and with nothing else.
      await assert.rejects(compactDecrypt(r.private_jwe, new Uint8Array(32)))
    }

    // No table holds a JSON private member in clear.
    const tables = await b.rawQuery<{ name: string }>(b.deps.database.dialect === 'postgres' ? "select table_name as name from information_schema.tables where table_schema = 'public'" : "select name from sqlite_master where type = 'table'")
    assert.ok(tables.some((t) => t.name === 'signing_keys'))
    for (const { name } of tables) {
      const dump = JSON.stringify(await b.rawQuery(`select * from "${name}"`))
      assert.doesNotMatch(dump, /\\?"d\\?"\s*:/, `table ${name}`)
    }
  })
})

// ——— Key compromise: POST /admin/keys/{kid}/revoke ———

const NOTES_BASIC = `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}`
const CALENDAR_BASIC = `Basic ${Buffer.from(`calendar-mcp:${CALENDAR_SECRET}`).toString('base64')}`

type Revocation = { kid: string; was: string; tokens_revoked: number; current: string; next: string; standby: string; warning?: string; verifiers_may_refuse_for_seconds?: number }
type FeedEvent = { id: string; type: string; at: number; until: number; kid?: string; jti?: string }

function revoke(b: TestBroker, kid: string, authorization: string | null = `Bearer ${ADMIN_KEY}`): Promise<Response> {
  return Promise.resolve(b.app.request(`/admin/keys/${encodeURIComponent(kid)}/revoke`, { method: 'POST', headers: authorization ? { authorization } : {} }))
}

async function feed(b: TestBroker, auth = NOTES_BASIC): Promise<FeedEvent[]> {
  const res = await b.app.request('/revocations?after=0', { headers: { authorization: auth } })
  assert.equal(res.status, 200)
  return ((await res.json()) as { events: FeedEvent[] }).events
}

/** What an attacker holding a stolen private key mints: a well-formed task token with a fresh jti. */
async function forge(b: TestBroker, kid: string, claims: Record<string, unknown> = {}): Promise<string> {
  const row = (await b.rawQuery('select private_jwe from signing_keys where kid = ?', [kid]))[0] as { private_jwe: string }
  const { plaintext } = await compactDecrypt(row.private_jwe, b.deps.keyStore.kek)
  const key = await importJWK(JSON.parse(new TextDecoder().decode(plaintext)) as JWK, 'ES256')
  const now = b.clock.now()
  return new SignJWT({ sub: 'mallory', client_id: 'agent-a', act: { sub: 'agent-a' }, scope: 'notes:read notes:write', task_id: 'forged', jti: randomUUID(), ...claims })
    .setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' })
    .setIssuer(b.deps.config.issuer)
    .setAudience(NOTES)
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(key)
}

async function introspect(b: TestBroker, token: string): Promise<boolean> {
  const res = await b.post('/introspect', { token }, { authorization: NOTES_BASIC })
  assert.equal(res.status, 200)
  return ((await res.json()) as { active: boolean }).active
}

const keyRows = (b: TestBroker) => b.rawQuery('select * from signing_keys order by kid')
const tokenRows = (b: TestBroker) => b.rawQuery('select * from tokens order by jti')
const tokenStatus = async (b: TestBroker, t: string) => ((await b.rawQuery('select status from tokens where jti = ?', [decodeJwt(t).jti]))[0] as { status: string }).status

describe('key revocation (compromise)', () => {
  let b: TestBroker
  beforeEach(async () => { b = await createTestBroker() })
  afterEach(() => b.close())

  it('revoking the current key: unpublished at once, its unexpired tokens revoked, the next key signs, one key_revoked event for every resource, audited', async () => {
    b.clock.advance(JWKS_MAX_AGE) // next and standby have been published for a full cache lifetime
    const [k1, k2, k3] = kids(await jwks(b)) as [string, string, string]
    const t1 = await issue(b)
    const t2 = await issue(b)
    const expired = await issue(b)
    const lastExp = decodeJwt(t2).exp!
    await b.rawQuery('update tokens set exp = ? where jti = ?', [b.clock.now() - 1, decodeJwt(expired).jti])
    assert.equal(await introspect(b, t1), true) // warms the own-token cache
    const before = await counts(b)
    const revokedAt = b.clock.now()

    const res = await revoke(b, k1)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('cache-control'), 'no-store')
    const answer = (await res.json()) as Revocation
    assert.deepEqual({ ...answer, standby: '' }, { kid: k1, was: 'current', tokens_revoked: 2, current: k2, next: k3, standby: '' })
    assert.ok(![k1, k2, k3].includes(answer.standby))
    assert.equal(answer.warning, undefined, 'the promoted key had been published for the JWKS max-age')

    // One durable transaction wrote: the two token revocations, one feed event, one audit row.
    const after = await counts(b)
    assert.deepEqual(after, { ...before, revocation_events: before.revocation_events + 1, audit_events: before.audit_events + 1 })
    const audit = (await b.lastAudit())!
    assert.equal(audit.action, 'keys.revoke')
    assert.equal(audit.decision, 'allow')
    assert.match(String(audit.reason), new RegExp(`current key ${k1} revoked by admin:key0; 2 token\\(s\\) it signed and 0 without a recorded key revoked; current ${k2}`))

    // The feed: `key_revoked` naming the kid, for every registered resource, relevant for the token ceiling.
    const ceiling = b.deps.config.tokens.maxTtl + b.deps.config.clockSkew
    for (const auth of [NOTES_BASIC, CALENDAR_BASIC]) {
      const events = (await feed(b, auth)).filter((e) => e.type === 'key_revoked')
      assert.equal(events.length, 1)
      assert.deepEqual({ ...events[0], id: '' }, { id: '', type: 'key_revoked', at: revokedAt, until: Math.max(lastExp, revokedAt + ceiling), kid: k1 })
    }

    // Gone from the JWKS and from this broker's own verification at once; the next key signs.
    assert.deepEqual(kids(await jwks(b)), [k2, k3, answer.standby])
    assert.equal(await b.deps.keys.publicKey(k1), undefined)
    const t3 = await issue(b)
    assert.equal(decodeProtectedHeader(t3).kid, k2)
    await verifyWith(b, await jwks(b), t3)

    assert.deepEqual([await tokenStatus(b, t1), await tokenStatus(b, t2), await tokenStatus(b, expired), await tokenStatus(b, t3)], ['revoked', 'revoked', 'active', 'active'])
    assert.equal(await introspect(b, t1), false)
    assert.equal(await introspect(b, t3), true)

    // A token forged with the stolen key: no JWKS verifies it, introspection says inactive.
    const forged = await forge(b, k1, { jti: decodeJwt(t3).jti }) // even reusing a live jti
    await assert.rejects(verifyWith(b, await jwks(b), forged), errors.JWKSNoMatchingKey)
    assert.equal(await introspect(b, forged), false)
    const row = (await b.rawQuery('select state, publish_until from signing_keys where kid = ?', [k1]))[0] as { state: string; publish_until: number }
    assert.deepEqual(row, { state: 'revoked', publish_until: revokedAt })
  })

  it('a forged token is refused by a freshly started jose verifier against the broker port', async () => {
    const server = await startTestServer({ clock: createFixedClock(T0) })
    try {
      const [k1] = kids((await (await fetch(`${server.url}/.well-known/jwks.json`)).json()) as Jwks) as [string]
      const forged = await forge(server, k1, { aud: NOTES })
      const verify = (token: string) =>
        jwtVerify(token, createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`)), { issuer: server.url, audience: NOTES, typ: 'at+jwt', currentDate: new Date(server.clock.now() * 1000) })
      await verify(forged) // before the revocation the stolen key is trusted: that is what revocation is for
      assert.equal((await revoke(server, k1)).status, 200)
      await assert.rejects(verify(forged), errors.JWKSNoMatchingKey)
    } finally {
      await server.stop()
    }
  })

  it('the own-token cache: a token verified before its key was revoked no longer verifies', async () => {
    const token = await issue(b)
    const kid = decodeProtectedHeader(token).kid!
    assert.equal((await b.deps.ownTokens.verify(token))?.jti, decodeJwt(token).jti) // cached now
    assert.equal((await revoke(b, kid)).status, 200)
    assert.equal(await b.deps.ownTokens.verify(token), undefined)
  })

  it('revoking a current key whose successor is fresh says how long verifiers may refuse new tokens', async () => {
    b.clock.advance(40)
    const [k1, k2] = kids(await jwks(b)) as [string, string]
    const res = await revoke(b, k1)
    assert.equal(res.status, 200)
    const answer = (await res.json()) as Revocation
    assert.equal(answer.current, k2)
    assert.equal(answer.verifiers_may_refuse_for_seconds, JWKS_MAX_AGE - 40)
    assert.match(answer.warning ?? '', new RegExp(`${k2} has been in the JWKS for only 40 s.*up to ${JWKS_MAX_AGE - 40} s`))
    assert.match(String((await b.lastAudit())?.reason), /for only 40 s/)
  })

  it('revoking the next key replaces it from the standby; revoking the standby replaces it; neither touches the current key', async () => {
    const [k1, k2, k3] = kids(await jwks(b)) as [string, string, string]
    const t = await issue(b)
    const a = (await (await revoke(b, k2)).json()) as Revocation
    assert.deepEqual({ ...a, standby: '' }, { kid: k2, was: 'next', tokens_revoked: 0, current: k1, next: k3, standby: '' })
    const c = (await (await revoke(b, a.standby)).json()) as Revocation
    assert.deepEqual({ ...c, standby: '' }, { kid: a.standby, was: 'standby', tokens_revoked: 0, current: k1, next: k3, standby: '' })
    assert.deepEqual(kids(await jwks(b)), [k1, k3, c.standby])
    assert.equal(await tokenStatus(b, t), 'active')
    assert.equal((await b.deps.keys.current()).kid, k1)
    assert.equal((await feed(b)).filter((e) => e.type === 'key_revoked').length, 2)
  })

  it('revoking a retired key unpublishes it before its window ends and revokes its remaining tokens', async () => {
    const [k1, k2, k3] = kids(await jwks(b)) as [string, string, string]
    const old = await issue(b)
    const rotated = (await (await rotate(b, `Bearer ${ADMIN_KEY}`, '?force=true')).json()) as { standby: string }
    assert.deepEqual(kids(await jwks(b)), [k2, k3, rotated.standby, k1])
    const a = (await (await revoke(b, k1)).json()) as Revocation
    assert.deepEqual(a, { kid: k1, was: 'retired', tokens_revoked: 1, current: k2, next: k3, standby: rotated.standby })
    assert.deepEqual(kids(await jwks(b)), [k2, k3, rotated.standby])
    assert.equal(await tokenStatus(b, old), 'revoked')
  })

  it('tokens issued before tokens recorded their key (kid NULL) are revoked too, each with its own token_revoked event', async () => {
    const [k1, k2] = kids(await jwks(b)) as [string, string]
    const legacy = await issue(b)
    const mine = await issue(b)
    await b.rawQuery('update tokens set kid = null where jti = ?', [decodeJwt(legacy).jti])
    // Revoking a key that signed nothing still revokes the token of unknown signer: it may have been this key.
    const a = (await (await revoke(b, k2)).json()) as Revocation
    assert.equal(a.tokens_revoked, 1)
    assert.deepEqual([await tokenStatus(b, legacy), await tokenStatus(b, mine)], ['revoked', 'active'])
    const events = await feed(b)
    assert.deepEqual(events.map((e) => [e.type, e.jti ?? e.kid]), [['token_revoked', decodeJwt(legacy).jti], ['key_revoked', k2]])
    assert.equal((await b.deps.keys.current()).kid, k1)
  })

  it('refusals change nothing: unknown kid → 404 not_found, revoked kid → 409 key_already_revoked, no admin key → 401', async () => {
    const [k1, k2] = kids(await jwks(b)) as [string, string]
    await issue(b)
    assert.equal((await revoke(b, k2)).status, 200)
    const snapshot = async () => ({ counts: await counts(b), keys: await keyRows(b), tokens: await tokenRows(b) })
    const before = await snapshot()
    const jwksBefore = await jwks(b)
    const cases: [string, string | null, number, string][] = [
      ['unknown-kid', `Bearer ${ADMIN_KEY}`, 404, 'not_found'],
      ['x'.repeat(2000), `Bearer ${ADMIN_KEY}`, 404, 'not_found'],
      [k2, `Bearer ${ADMIN_KEY}`, 409, 'key_already_revoked'],
      [k1, null, 401, 'invalid_token'],
      [k1, 'Bearer tpa_wrong-key', 401, 'invalid_token'],
    ]
    for (const [kid, auth, status, error] of cases) {
      const res = await revoke(b, kid, auth)
      assert.equal(res.status, status, `${kid.slice(0, 20)} ${auth ?? '(none)'}`)
      assert.equal(((await res.json()) as { error: string }).error, error)
      assert.equal(res.headers.get('cache-control'), 'no-store')
      assert.deepEqual(await snapshot(), before, 'nothing changed')
    }
    assert.deepEqual(await jwks(b), jwksBefore)
    assert.equal((await b.deps.keys.current()).kid, k1)
    // GET is not a route.
    assert.equal((await b.app.request(`/admin/keys/${k1}/revoke`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 404)
  })
})

describe('keys changed by another process (the CLI)', () => {
  it('a revocation through another connection stops signing, verifying and publishing in the running broker on its next request, without a reload', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-keys-'))
    const path = join(dir, 'broker.db')
    const b = await createTestBroker({ config: (c) => ({ ...c, database: path }) })
    const other = openDatabase(path)
    try {
      b.clock.advance(JWKS_MAX_AGE)
      const [k1, k2] = kids(await jwks(b)) as [string, string]
      const token = await issue(b)
      assert.ok(await b.deps.keys.publicKey(k1))
      const otherStores = createStores(other)
      const cli = { ...b.deps.keyStore, stores: otherStores }
      const result = await revokeKey({ keyStore: cli, stores: otherStores, audiences: [NOTES, CALENDAR] }, k1, 'admin:cli')
      assert.equal(result.current, k2)
      // No reload() here: the running broker notices the other connection's commit by itself.
      assert.equal(await b.deps.keys.publicKey(k1), undefined)
      assert.equal((await b.deps.keys.current()).kid, k2)
      assert.ok(!kids(await jwks(b)).includes(k1))
      assert.equal(decodeProtectedHeader(await issue(b)).kid, k2)
      assert.equal(await b.deps.ownTokens.verify(token), undefined)
      assert.equal(await introspect(b, token), false)
      // The background load picks up the new standby key.
      await b.deps.keys.reload()
      assert.deepEqual(kids(await jwks(b)), [k2, result.next, result.standby])
    } finally {
      other.close()
      await b.close()
    }
  })
})

describe('a key revoked by another process while an exchange signs with it', () => {
  it('leaves no token row of it: the exchange reads the key in its own write, not the key set\'s memory (503, nothing written)', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'taskpass-keys-')), 'broker.db')
    const b = await createTestBroker({ config: (c) => ({ ...c, database: path }) })
    const other = openDatabase(path)
    try {
      await b.exchange() // warm the verification caches
      const otherStores = createStores(other)
      const current = b.deps.keys.current
      let kid = ''
      b.deps.keys.current = async () => {
        b.deps.keys.current = current
        const key = await current()
        kid = key.kid
        // The CLI revokes it now: committed before the exchange writes, unheard of by this process's key set.
        await revokeKey({ keyStore: { ...b.deps.keyStore, stores: otherStores }, stores: otherStores, audiences: [NOTES] }, kid, 'admin:cli')
        return key
      }
      const before = await counts(b)
      const res = await b.exchange()
      assert.equal(res.status, 503)
      assert.equal(((await res.json()) as { error: string }).error, 'temporarily_unavailable')
      assert.equal((await counts(b)).tokens, before.tokens, 'no token row signed by the revoked key')
      assert.notEqual((await b.deps.keys.current()).kid, kid)
    } finally {
      other.close()
      await b.close()
    }
  })
})

describe('a key change seen while the database cannot be read', () => {
  it('is read at the next use: the revoked key never answers, even though the change was noticed by the failed one', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'taskpass-keys-')), 'broker.db')
    const b = await createTestBroker({ config: (c) => ({ ...c, database: path }) })
    const other = openDatabase(path)
    try {
      b.clock.advance(JWKS_MAX_AGE)
      const k1 = (await b.deps.keys.current()).kid
      const otherStores = createStores(other)
      await revokeKey({ keyStore: { ...b.deps.keyStore, stores: otherStores }, stores: otherStores, audiences: [NOTES] }, k1, 'admin:cli')
      // The first use after the other process's commit notices it, and its read fails (busy).
      const all = b.deps.stores.signingKeys.all
      b.deps.stores.signingKeys.all = () => {
        b.deps.stores.signingKeys.all = all
        return Promise.reject(Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' }))
      }
      await assert.rejects(b.deps.keys.current(), /database is locked/)
      assert.notEqual((await b.deps.keys.current()).kid, k1, 'the next use reads the keys and signs with the new current key')
      assert.equal(await b.deps.keys.publicKey(k1), undefined)
    } finally {
      other.close()
      await b.close()
    }
  })
})

describe('keys read while this process has a transaction open', () => {
  it('are never the transaction\'s uncommitted rows: a revocation that rolls back leaves the current key signing', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'taskpass-keys-')), 'broker.db')
    const b = await createTestBroker({ config: (c) => ({ ...c, database: path }) })
    const other = openDatabase(path)
    try {
      const current = (await b.deps.keys.current()).kid
      // Another process commits (its commit counter moves), then this process's own transaction
      // marks the current key revoked and, between two of its awaits, a request signs.
      other.sqlite.prepare("insert into broker_meta (name, value) values ('probe', '1')").run()
      let seen: string | undefined
      await assert.rejects(
        b.deps.stores.durably(async () => {
          await b.rawQuery("update signing_keys set state = 'revoked' where kid = ?", [current])
          await Promise.resolve()
          seen = (await b.deps.keys.current()).kid
          throw new Error('the revocation fails and rolls back')
        }),
        /rolls back/,
      )
      assert.equal(seen, current, 'signed with the committed current key')
      assert.equal((await b.deps.keys.current()).kid, current, 'and still does after the rollback')
      assert.ok(kids(await jwks(b)).includes(current))
    } finally {
      other.close()
      await b.close()
    }
  })
})

describe('two processes starting on one empty store', () => {
  it('create one current, one next and one standby key between them, and both sign with the same current key', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'taskpass-keys-')), 'broker.db')
    const [a, b] = [openDatabase(path), openDatabase(path)]
    try {
      const options = (database: typeof a) => ({ stores: createStores(database), clock: createFixedClock(T0), kek: new Uint8Array(32).fill(7), alg: 'ES256' as const, retiredPublishSeconds: 900 })
      // Both read an empty key table before either writes: the starts interleave at every await.
      const [ka, kb] = await Promise.all([openKeySet(options(a)), openKeySet(options(b))])
      const states = a.sqlite.prepare('SELECT state, count(*) AS n FROM signing_keys GROUP BY state ORDER BY state').all()
      assert.deepEqual(states, [{ state: 'current', n: 1 }, { state: 'next', n: 1 }, { state: 'standby', n: 1 }])
      assert.equal((await ka.current()).kid, (await kb.current()).kid)
      assert.deepEqual(kids(await ka.jwks()), kids(await kb.jwks()))
      // The store itself refuses a second current key, whoever tries.
      assert.throws(() => a.sqlite.prepare("UPDATE signing_keys SET state = 'current' WHERE state = 'next'").run(), { code: 'SQLITE_CONSTRAINT_UNIQUE' })
    } finally {
      a.close()
      b.close()
    }
  })
})

// ——— What verifiers see across quick forced rotations (item: no unseen signing key) ———

describe('forced rotations and verifiers that cached the JWKS', () => {
  it('two quick forced rotations promote only keys verifiers have already fetched; a third says how long they may refuse — and they do', async () => {
    const server = await startTestServer({ clock: createFixedClock(T0) })
    try {
      const jwksUrl = new URL(`${server.url}/.well-known/jwks.json`)
      // A verifier within its refetch cooldown (jose's default is 30 s; made long so the test does not depend on wall time).
      const cached = createRemoteJWKSet(jwksUrl, { cooldownDuration: 600_000, cacheMaxAge: 600_000 })
      const verify = (token: string, set = cached) => jwtVerify(token, set, { issuer: server.url, audience: NOTES, typ: 'at+jwt', currentDate: new Date(server.clock.now() * 1000) })
      const forced = async () => {
        const res = await rotate(server, `Bearer ${ADMIN_KEY}`, '?force=true')
        assert.equal(res.status, 200)
        return (await res.json()) as { current: string; warning?: string; verifiers_may_refuse_for_seconds?: number }
      }

      server.clock.advance(JWKS_MAX_AGE)
      await verify(await issue(server)) // the verifier fetches the JWKS now: current, next, standby

      const first = await forced()
      assert.equal(first.warning, undefined)
      await verify(await issue(server))

      server.clock.advance(10)
      const second = await forced()
      assert.equal(second.warning, undefined, 'the standby key was published with the first fetch')
      assert.equal(decodeProtectedHeader(await issue(server)).kid, second.current)
      await verify(await issue(server))

      server.clock.advance(10)
      const third = await forced()
      assert.equal(third.verifiers_may_refuse_for_seconds, JWKS_MAX_AGE - 20)
      assert.match(third.warning ?? '', /only 20 s/)
      const token = await issue(server)
      // What the warning says: the verifier that cached the JWKS before that key existed refuses…
      await assert.rejects(verify(token), errors.JWKSNoMatchingKey)
      // …while one that fetches now accepts.
      await verify(token, createRemoteJWKSet(jwksUrl))
    } finally {
      await server.stop()
    }
  })
})
