/**
 * Signing keys over HTTP, with the fixed clock: the JWKS document (current + pre-published next
 * key, caching headers, public members only, RFC 7638 kids), rotation (the next key was already
 * published before it signs; a retired key stays published until its last token has expired),
 * and private keys encrypted at rest.
 */
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { calculateJwkThumbprint, compactDecrypt, createLocalJWKSet, decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWK } from 'jose'
import { JWKS_MAX_AGE, rotateKeys } from '../src/keys/keyset.js'
import { ADMIN_KEY, createTestBroker, NOTES, type TestBroker } from './harness.js'

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

  it('publishes the current and the pre-published next key, current first', async () => {
    const set = await jwks(b)
    assert.equal(set.keys.length, 2)
    const current = b.deps.keys.current().kid
    assert.equal(set.keys[0]!.kid, current)
    const next = b.deps.database.sqlite.prepare(`select kid from signing_keys where state = 'next'`).get() as { kid: string }
    assert.equal(set.keys[1]!.kid, next.kid)
    assert.notEqual(next.kid, current)
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
    assert.equal(((await stale.json()) as Jwks).keys.length, 2)

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
    assert.equal(set.keys.length, 2)
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
    const [oldKid, nextKid] = kids(before) as [string, string]
    const oldToken = await issue(b)
    assert.equal(decodeProtectedHeader(oldToken).kid, oldKid)

    b.clock.advance(10)
    const rotatedAt = b.clock.now()
    const res = await rotate(b, `Bearer ${ADMIN_KEY}`)
    assert.equal(res.status, 200)
    const result = (await res.json()) as { retired: string; current: string; next: string }
    assert.equal(result.retired, oldKid)
    assert.equal(result.current, nextKid)
    assert.ok(![oldKid, nextKid].includes(result.next))
    assert.equal(b.deps.keys.current().kid, nextKid)
    assert.equal(b.lastAudit()?.action, 'keys.rotate')

    // The new signing key is one the verifier already had: no verifier sees an unknown kid.
    const newToken = await issue(b)
    assert.equal(decodeProtectedHeader(newToken).kid, nextKid)
    await verifyWith(b, before, newToken)

    // The JWKS changed (new ETag, old validator no longer matches) and keeps the retired key.
    const afterRes = await getJwks(b, { 'if-none-match': etagBefore })
    assert.equal(afterRes.status, 200)
    assert.notEqual(afterRes.headers.get('etag'), etagBefore)
    const after = (await afterRes.json()) as Jwks
    assert.deepEqual(kids(after), [nextKid, result.next, oldKid])
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
    assert.deepEqual(kids(later), [nextKid, result.next])
    assert.equal(b.deps.keys.publicKey(oldKid), undefined)
    // The retired key's row is still stored (state 'retired'), only no longer published.
    const row = b.deps.database.sqlite.prepare('select state, publish_until from signing_keys where kid = ?').get(oldKid) as { state: string; publish_until: number }
    assert.equal(row.state, 'retired')
    assert.equal(row.publish_until, rotatedAt + window)
    await assert.rejects(verifyWith(b, later, oldToken), errors.JWKSNoMatchingKey)
  })

  it('rotation is refused (409, Retry-After) until the next key has been published for the JWKS max-age, unless forced', async () => {
    const before = kids(await jwks(b))
    b.clock.advance(JWKS_MAX_AGE - 1)
    const early = await rotate(b, `Bearer ${ADMIN_KEY}`)
    assert.equal(early.status, 409)
    assert.equal(early.headers.get('retry-after'), '1')
    assert.equal(((await early.json()) as { error: string }).error, 'rotation_too_early')
    assert.deepEqual(kids(await jwks(b)), before)
    const forced = await rotate(b, `Bearer ${ADMIN_KEY}`, '?force=true')
    assert.equal(forced.status, 200)
    assert.equal(b.deps.keys.current().kid, before[1])
    b.clock.advance(1)
    assert.equal((await rotate(b, `Bearer ${ADMIN_KEY}`)).status, 409, 'the freshly published next key must wait again')
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
    // Not reloaded yet: this process still signs with, and publishes, what it loaded.
    assert.deepEqual(kids(await jwks(b)), before)
    assert.equal(b.deps.keys.current().kid, before[0])
    await b.deps.keys.reload()
    assert.deepEqual(kids(await jwks(b)), [before[1], result.next, before[0]])
    assert.equal(decodeProtectedHeader(await issue(b)).kid, before[1])
  })

  it('POST /admin/keys/rotate without or with a wrong admin key → 401, nothing rotates', async () => {
    const before = kids(await jwks(b))
    const rows = (b.deps.database.sqlite.prepare('select count(*) as n from signing_keys').get() as { n: number }).n
    for (const auth of [undefined, 'Bearer tpa_wrong-key', `Basic ${Buffer.from(`admin:${ADMIN_KEY}`).toString('base64')}`]) {
      const res = await rotate(b, auth)
      assert.equal(res.status, 401, `authorization ${auth ?? '(none)'}`)
      assert.ok(res.headers.get('www-authenticate'))
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_token')
    }
    assert.deepEqual(kids(await jwks(b)), before)
    assert.equal(b.deps.keys.current().kid, before[0])
    assert.equal((b.deps.database.sqlite.prepare('select count(*) as n from signing_keys').get() as { n: number }).n, rows)
  })
})

describe('private keys at rest', () => {
  let b: TestBroker
  beforeEach(async () => { b = await createTestBroker() })
  afterEach(() => b.close())

  it('signing_keys.private_jwe is a compact JWE under the KEK; no plaintext private key anywhere in the database', async () => {
    await rotate(b, `Bearer ${ADMIN_KEY}`, '?force=true') // three keys: retired, current, next
    const rows = b.deps.database.sqlite.prepare('select kid, public_jwk, private_jwe from signing_keys').all() as { kid: string; public_jwk: string; private_jwe: string }[]
    assert.equal(rows.length, 3)
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
    const tables = b.deps.database.sqlite.prepare(`select name from sqlite_master where type = 'table'`).all() as { name: string }[]
    assert.ok(tables.some((t) => t.name === 'signing_keys'))
    for (const { name } of tables) {
      const dump = JSON.stringify(b.deps.database.sqlite.prepare(`select * from "${name}"`).all())
      assert.doesNotMatch(dump, /\\?"d\\?"\s*:/, `table ${name}`)
    }
  })
})
