/**
 * Bad input (DESIGN.md "Bad input"): every malformed, oversized, duplicated-parameter,
 * wrong-content-type or unauthenticated request gets a clear 4xx with an OAuth error body, never
 * a 500, and changes nothing. Each case is paired with a control that differs only by the fault
 * and succeeds, so every assertion can fail.
 *
 * "Changes nothing": no new row in `tokens`, `tasks`, `revocation_events`; no audit row either,
 * except for malformed tokens at /token, which reach the exchange grant and are audited as a deny
 * (DESIGN: every exchange decision is written to the audit log).
 */
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { createTestBroker, exchangeParams, form, JWT_TYPE, NOTES, NOTES_SECRET, openTask, TOKEN_EXCHANGE, type TestBroker } from './harness.js'
import { decodeForm } from '../src/http/form.js'

const FORM = 'application/x-www-form-urlencoded'
const SPIFFE_ASSERTION = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe'
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
const NOTES_BASIC = basic('notes-mcp', NOTES_SECRET)

type Table = 'tokens' | 'tasks' | 'audit_events' | 'revocation_events'
const TABLES: Table[] = ['tokens', 'tasks', 'audit_events', 'revocation_events']

async function snapshot(b: TestBroker): Promise<Record<Table, number>> {
  return Object.fromEntries(await Promise.all(TABLES.map(async (t) => [t, await b.count(t)] as const))) as Record<Table, number>
}

/** Asserts no table grew, except the ones named in `grew` (by exactly that much). */
async function assertUnchanged(b: TestBroker, before: Record<Table, number>, grew: Partial<Record<Table, number>> = {}): Promise<void> {
  for (const t of TABLES) assert.equal(await b.count(t), before[t] + (grew[t] ?? 0), `${t} rows`)
}

/** Reads an error response: exact status, exact `error`, an `error_description`, `Cache-Control: no-store`. */
async function assertError(res: Response, status: number, error: string): Promise<{ error: string; error_description: string }> {
  const text = await res.text()
  assert.equal(res.status, status, text)
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/)
  const body = JSON.parse(text) as { error: string; error_description: string }
  assert.equal(body.error, error, text)
  assert.equal(typeof body.error_description, 'string')
  assert.notEqual(body.error_description, '')
  assert.equal(res.headers.get('cache-control'), 'no-store')
  return body
}

/** A POST with full control over the body bytes and headers (no Content-Type added unless given). */
function rawPost(b: TestBroker, path: string, body: string | ReadableStream<Uint8Array>, headers: Record<string, string> = {}): Promise<Response> {
  // Bytes, not a string: a string body would make fetch add `text/plain;charset=UTF-8` itself.
  const init: RequestInit & { duplex?: 'half' } = { method: 'POST', headers, body: typeof body === 'string' ? Buffer.from(body) : body }
  if (body instanceof ReadableStream) init.duplex = 'half'
  const req = new Request(`http://localhost${path}`, init)
  if (!('content-type' in Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])))) {
    assert.equal(req.headers.get('content-type'), null, 'the request carries no Content-Type')
  }
  return Promise.resolve(b.app.request(req))
}

function streamOf(text: string, chunk = 1024): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text)
  let at = 0
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close()
      controller.enqueue(bytes.slice(at, at + chunk))
      at += chunk
    },
  })
}

/** Issues one token (for /introspect and /revoke cases) and returns it. */
async function issue(b: TestBroker): Promise<string> {
  const res = await b.exchange()
  assert.equal(res.status, 200)
  return ((await res.json()) as { access_token: string }).access_token
}

async function isActive(b: TestBroker, token: string): Promise<boolean> {
  const res = await b.post('/introspect', { token }, { authorization: NOTES_BASIC })
  assert.equal(res.status, 200)
  return ((await res.json()) as { active: boolean }).active
}

describe('bad input', () => {
  let b: TestBroker
  beforeEach(async () => { b = await createTestBroker() })
  afterEach(() => b.close())

  describe('duplicated parameters', () => {
    for (const name of ['scope', 'grant_type', 'subject_token', 'actor_token', 'task_id', 'client_id']) {
      it(`two "${name}" at /token → 400 invalid_request, nothing written`, async () => {
        const good = await exchangeParams(b, { client_id: 'agent-a' })
        const value = (good[name] as string | undefined) ?? 'some-task-id'
        const before = await snapshot(b)
        const res = await b.post('/token', form({ ...good, [name]: [value, value] }))
        await assertError(res, 400, 'invalid_request')
        await assertUnchanged(b, before)
      })
    }

    it('control: the same request with each parameter once → 200', async () => {
      const before = await snapshot(b)
      const res = await b.post('/token', form(await exchangeParams(b, { client_id: 'agent-a' })))
      assert.equal(res.status, 200, await res.clone().text())
      await assertUnchanged(b, before, { tokens: 1, tasks: 1, audit_events: 1 })
    })

    it('an empty body, or parameters that are not valid percent-encoding, at /token → 4xx OAuth error, nothing written', async () => {
      const before = await snapshot(b)
      await assertError(await b.post('/token', ''), 400, 'invalid_request')
      await assertError(await b.post('/token', 'grant_type=%ZZ&x=%FF%FE'), 400, 'unsupported_grant_type')
      await assertError(await b.post('/token', form(await exchangeParams(b)).replace('scope=', 'scope=%ZZ')), 400, 'invalid_scope')
      await assertUnchanged(b, before, { audit_events: 1 })
    })

    it('/introspect and /revoke without "token" → 400 invalid_request', async () => {
      const token = await issue(b)
      const before = await snapshot(b)
      for (const path of ['/introspect', '/revoke']) await assertError(await b.post(path, {}, { authorization: NOTES_BASIC }), 400, 'invalid_request')
      await assertUnchanged(b, before)
      assert.equal(await isActive(b, token), true)
    })

    it('two "token" at /introspect and /revoke → 400 invalid_request; the token stays active', async () => {
      const token = await issue(b)
      const before = await snapshot(b)
      for (const path of ['/introspect', '/revoke']) {
        await assertError(await b.post(path, { token: [token, token] }, { authorization: NOTES_BASIC }), 400, 'invalid_request')
      }
      await assertUnchanged(b, before)
      assert.equal(await isActive(b, token), true)
    })
  })

  describe('content type', () => {
    const wrong: { name: string; headers: Record<string, string>; body: (formText: string, json: string) => string }[] = [
      { name: 'application/json (JSON body)', headers: { 'content-type': 'application/json' }, body: (_f, json) => json },
      { name: 'application/json (form body)', headers: { 'content-type': 'application/json' }, body: (f) => f },
      { name: 'text/plain', headers: { 'content-type': 'text/plain' }, body: (f) => f },
      { name: 'multipart/form-data', headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: (f) => f },
      { name: 'missing', headers: {}, body: (f) => f },
    ]

    for (const ct of wrong) {
      it(`/token with content type ${ct.name} → 400 invalid_request`, async () => {
        const params = await exchangeParams(b)
        const before = await snapshot(b)
        const res = await rawPost(b, '/token', ct.body(form(params), JSON.stringify(params)), ct.headers)
        await assertError(res, 400, 'invalid_request')
        await assertUnchanged(b, before)
      })

      it(`/introspect and /revoke with content type ${ct.name} → 400 invalid_request; the token stays active`, async () => {
        const token = await issue(b)
        const before = await snapshot(b)
        for (const path of ['/introspect', '/revoke']) {
          const res = await rawPost(b, path, ct.body(form({ token }), JSON.stringify({ token })), { authorization: NOTES_BASIC, ...ct.headers })
          await assertError(res, 400, 'invalid_request')
        }
        await assertUnchanged(b, before)
        assert.equal(await isActive(b, token), true)
      })
    }

    it('control: the same bodies as application/x-www-form-urlencoded;charset=UTF-8 succeed', async () => {
      const res = await rawPost(b, '/token', form(await exchangeParams(b)), { 'content-type': `${FORM};charset=UTF-8` })
      assert.equal(res.status, 200, await res.clone().text())
      const token = ((await res.json()) as { access_token: string }).access_token
      const intro = await rawPost(b, '/introspect', form({ token }), { authorization: NOTES_BASIC, 'content-type': `${FORM}; charset=utf-8` })
      assert.equal(intro.status, 200)
      assert.equal(((await intro.json()) as { active: boolean }).active, true)
      const before = await snapshot(b)
      const rev = await rawPost(b, '/revoke', form({ token }), { authorization: NOTES_BASIC, 'content-type': FORM.toUpperCase() })
      assert.equal(rev.status, 200)
      await assertUnchanged(b, before, { revocation_events: 1, audit_events: 1 })
      assert.equal(await isActive(b, token), false)
    })
  })

  describe('body size (limit 16 KiB)', () => {
    const LIMIT = 16 * 1024

    /** A valid exchange form padded with an ignored parameter to exactly `size` bytes. */
    async function paddedExchange(size: number): Promise<string> {
      const text = form(await exchangeParams(b)) + '&padding='
      assert.ok(text.length < size)
      return text + 'x'.repeat(size - text.length)
    }

    it('the limit is the configured 16 KiB', () => {
      assert.equal(b.deps.config.bodyLimit, LIMIT)
    })

    for (const mode of ['content-length', 'streamed'] as const) {
      it(`/token: ${LIMIT + 1} bytes (${mode}) → 413 invalid_request; ${LIMIT} bytes → 200`, async () => {
        const send = (text: string) =>
          mode === 'content-length'
            ? rawPost(b, '/token', text, { 'content-type': FORM, 'content-length': String(Buffer.byteLength(text)) })
            : rawPost(b, '/token', streamOf(text), { 'content-type': FORM })
        const before = await snapshot(b)
        await assertError(await send(await paddedExchange(LIMIT + 1)), 413, 'invalid_request')
        await assertError(await send(await paddedExchange(LIMIT + 64 * 1024)), 413, 'invalid_request')
        await assertUnchanged(b, before)

        const ok = await send(await paddedExchange(LIMIT))
        assert.equal(ok.status, 200, await ok.clone().text())
        await assertUnchanged(b, before, { tokens: 1, tasks: 1, audit_events: 1 })
      })
    }

    it('/introspect and /revoke: an oversized body → 413 invalid_request; the token stays active', async () => {
      const token = await issue(b)
      const before = await snapshot(b)
      for (const path of ['/introspect', '/revoke']) {
        const text = form({ token, padding: 'x'.repeat(LIMIT) })
        await assertError(await rawPost(b, path, streamOf(text), { 'content-type': FORM, authorization: NOTES_BASIC }), 413, 'invalid_request')
      }
      await assertUnchanged(b, before)
      assert.equal(await isActive(b, token), true)
    })

    it('POST /tasks: an oversized JSON body → 413 invalid_request; the same JSON under the limit → 201', async () => {
      const json = JSON.stringify({ purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
      const send = async (padding: number) =>
        rawPost(b, '/tasks', streamOf(json + ' '.repeat(padding)), {
          'content-type': 'application/json',
          authorization: `Bearer ${await b.session()}`,
          'actor-token': await b.svid('a'),
        })
      const before = await snapshot(b)
      await assertError(await send(LIMIT), 413, 'invalid_request')
      await assertUnchanged(b, before)
      const ok = await send(LIMIT - json.length)
      assert.equal(ok.status, 201, await ok.clone().text())
      await assertUnchanged(b, before, { tasks: 1, audit_events: 1 })
    })
  })

  describe('malformed JWTs', () => {
    const header = Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'user-key-1' })).toString('base64url')
    const malformed: { name: string; make: (valid: string) => string }[] = [
      { name: 'garbage', make: () => 'not-a-jwt' },
      { name: 'empty segments', make: () => '..' },
      { name: 'binary noise', make: () => '\u0000\u00ff\ud83d\ude00' },
      { name: 'five segments (JWE shape)', make: (v) => `${v}.AAAA.BBBB` },
      { name: 'JSON with spaces instead of base64url', make: () => `{"alg": "ES256"}.{"sub": "alice", "aud": "x"}.c2ln` },
      { name: 'a valid header with a JSON payload', make: () => `${header}.{"sub":"alice"}.c2ln` },
      { name: 'a valid token with a space inside', make: (v) => `${v.slice(0, 20)} ${v.slice(20)}` },
      { name: 'a valid token with a trailing newline', make: (v) => `${v}\n` },
      { name: 'a valid token with base64 padding', make: (v) => `${v}==` },
      { name: 'base64url segments that are not JSON', make: () => `${Buffer.from('nope').toString('base64url')}.${Buffer.from('nope').toString('base64url')}.c2ln` },
      { name: 'a JSON array payload', make: () => `${header}.${Buffer.from('[1,2]').toString('base64url')}.c2ln` },
      { name: 'longer than 8 KiB', make: (v) => { const [h, p, s] = v.split('.'); return `${h}.${p}${'A'.repeat(9000)}.${s}` } },
    ]

    for (const m of malformed) {
      it(`${m.name}: as subject_token (audited) or actor_token (unauthenticated: nothing stored) at /token → 400 invalid_request, never 500`, async () => {
        for (const param of ['subject_token', 'actor_token'] as const) {
          const valid = param === 'subject_token' ? await b.session() : await b.svid('a')
          const before = await snapshot(b)
          const res = await b.exchange({ [param]: m.make(valid) })
          await assertError(res, 400, 'invalid_request')
          if (param === 'actor_token') {
            await assertUnchanged(b, before, {})
            continue
          }
          await assertUnchanged(b, before, { audit_events: 1 })
          const audit = (await b.lastAudit())!
          assert.equal(audit.decision, 'deny')
          assert.equal(audit.error, 'invalid_request')
        }
      })

      it(`${m.name}: at /tasks (Bearer, Actor-Token) → 401 invalid_token; as client_assertion → 401 invalid_client; at /introspect → inactive`, async () => {
        const token = await issue(b)
        const before = await snapshot(b)
        const body = JSON.stringify({ purpose: 'p', resources: [{ resource: NOTES }] })
        // Only values a header can carry (visible ASCII and inner spaces; fetch trims the ends).
        const headerSafe = (v: string) => /^[\x21-\x7e][\x20-\x7e]*[\x21-\x7e]$/.test(v)
        const userToken = m.make(await b.session())
        // A bad session beside a valid attestation is a decision about a known workload: one audit row.
        const audited = headerSafe(userToken) ? 1 : 0
        if (headerSafe(userToken)) {
          const asUser = await b.app.request('/tasks', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${userToken}`, 'actor-token': await b.svid('a') }, body })
          await assertError(asUser, 401, 'invalid_token')
        }
        const actorToken = m.make(await b.svid('a'))
        if (headerSafe(actorToken)) {
          const asActor = await b.app.request('/tasks', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${await b.session()}`, 'actor-token': actorToken }, body })
          await assertError(asActor, 401, 'invalid_token')
        }
        const assertion = await b.post('/revoke', { token, client_assertion_type: SPIFFE_ASSERTION, client_assertion: m.make(await b.svid('a')) })
        await assertError(assertion, 401, 'invalid_client')
        const intro = await b.post('/introspect', { token: m.make(token) }, { authorization: NOTES_BASIC })
        assert.equal(intro.status, 200)
        assert.deepEqual(await intro.json(), { active: false })
        const rev = await b.post('/revoke', { token: m.make(token) }, { authorization: NOTES_BASIC })
        assert.equal(rev.status, 200)
        await assertUnchanged(b, before, { audit_events: audited })
        assert.equal(await isActive(b, token), true)
      })
    }

    it('control: the valid tokens those were made from are accepted everywhere', async () => {
      assert.equal((await b.exchange()).status, 200)
      const token = await issue(b)
      const opened = await openTask(b, { purpose: 'p', resources: [{ resource: NOTES }] })
      assert.equal(opened.status, 201)
      assert.equal(await isActive(b, token), true)
      const rev = await b.post('/revoke', { token, client_assertion_type: SPIFFE_ASSERTION, client_assertion: await b.svid('a') })
      assert.equal(rev.status, 200)
      assert.equal(await isActive(b, token), false)
    })
  })

  describe('POST /tasks body', () => {
    const cases: { name: string; body: string | Buffer<ArrayBuffer> }[] = [
      { name: 'bad JSON', body: '{"purpose": "p", "resources": [' },
      { name: 'not an object', body: '["purpose"]' },
      { name: 'unknown top-level field', body: JSON.stringify({ purpose: 'p', resources: [{ resource: NOTES }], admin: true }) },
      { name: 'unknown field in a resource', body: JSON.stringify({ purpose: 'p', resources: [{ resource: NOTES, scope: 'notes:read' }] }) },
      { name: 'missing purpose', body: JSON.stringify({ resources: [{ resource: NOTES }] }) },
      { name: 'empty purpose', body: JSON.stringify({ purpose: '', resources: [{ resource: NOTES }] }) },
      { name: 'empty resources', body: JSON.stringify({ purpose: 'p', resources: [] }) },
      { name: 'missing resources', body: JSON.stringify({ purpose: 'p' }) },
      { name: 'resources not an array', body: JSON.stringify({ purpose: 'p', resources: NOTES }) },
      { name: 'ttl as a string', body: JSON.stringify({ purpose: 'p', resources: [{ resource: NOTES }], ttl: '600' }) },
      { name: 'negative ttl', body: JSON.stringify({ purpose: 'p', resources: [{ resource: NOTES }], ttl: -1 }) },
      { name: 'empty body', body: '' },
      { name: 'JSON null', body: 'null' },
      { name: 'invalid UTF-8', body: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) },
      { name: 'a __proto__ key', body: `{"purpose":"p","resources":[{"resource":"${NOTES}"}],"__proto__":{"admin":true}}` },
      { name: 'a __proto__ key in a resource', body: `{"purpose":"p","resources":[{"resource":"${NOTES}","__proto__":{"scopes":["notes:delete"]}}]}` },
      { name: 'a ttl beyond any integer', body: JSON.stringify({ purpose: 'p', resources: [{ resource: NOTES }], ttl: 1e300 }) },
    ]

    async function postTask(body: string | Buffer<ArrayBuffer>, contentType = 'application/json'): Promise<Response> {
      return b.app.request('/tasks', {
        method: 'POST',
        headers: { 'content-type': contentType, authorization: `Bearer ${await b.session()}`, 'actor-token': await b.svid('a') },
        body,
      })
    }

    for (const c of cases) {
      it(`${c.name} → 400 invalid_request, nothing written`, async () => {
        const before = await snapshot(b)
        await assertError(await postTask(c.body), 400, 'invalid_request')
        await assertUnchanged(b, before)
      })
    }

    it('a form body → 400 invalid_request, nothing written', async () => {
      const before = await snapshot(b)
      await assertError(await postTask(form({ purpose: 'p', resource: NOTES }), FORM), 400, 'invalid_request')
      await assertUnchanged(b, before)
    })

    it('control: a valid body with the same credentials → 201, one task and one audit row', async () => {
      const before = await snapshot(b)
      const res = await postTask(JSON.stringify({ purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }], ttl: 600 }))
      assert.equal(res.status, 201, await res.clone().text())
      await assertUnchanged(b, before, { tasks: 1, audit_events: 1 })
    })

    const body = JSON.stringify({ purpose: 'p', resources: [{ resource: NOTES }] })
    // `audited`: the workload authenticated, so refusing the user's part is a decision (one audit row).
    const credentials: { name: string; audited?: true; headers: (b: TestBroker) => Promise<Record<string, string>> }[] = [
      { name: 'without the user token', audited: true, headers: async (b) => ({ 'actor-token': await b.svid('a') }) },
      { name: 'without the Actor-Token header', headers: async (b) => ({ authorization: `Bearer ${await b.session()}` }) },
      { name: 'without either', headers: async () => ({}) },
      { name: 'with Basic instead of Bearer', audited: true, headers: async (b) => ({ authorization: NOTES_BASIC, 'actor-token': await b.svid('a') }) },
      { name: 'with the workload token as the Bearer token', audited: true, headers: async (b) => ({ authorization: `Bearer ${await b.svid('a')}`, 'actor-token': await b.svid('a') }) },
      { name: 'with the user token as the Actor-Token', headers: async (b) => ({ authorization: `Bearer ${await b.session()}`, 'actor-token': await b.session() }) },
    ]
    for (const cred of credentials) {
      it(`${cred.name} → 401 invalid_token with WWW-Authenticate, nothing written${cred.audited ? ' but the audit row' : ''}`, async () => {
        const before = await snapshot(b)
        const res = await b.app.request('/tasks', { method: 'POST', headers: { 'content-type': 'application/json', ...(await cred.headers(b)) }, body })
        await assertError(res, 401, 'invalid_token')
        assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer /)
        await assertUnchanged(b, before, cred.audited ? { audit_events: 1 } : {})
      })
    }
  })

  describe('unknown paths', () => {
    for (const [method, path] of [['GET', '/nope'], ['GET', '/token'], ['POST', '/nope'], ['GET', '/tasks/x/y/z'], ['DELETE', '/introspect']] as const) {
      it(`${method} ${path} → 404, nothing written`, async () => {
        const before = await snapshot(b)
        const res = await b.app.request(path, { method, ...(method === 'POST' ? { headers: { 'content-type': FORM }, body: form(await exchangeParams(b)) } : {}) })
        assert.equal(res.status, 404)
        const body = (await res.json()) as { error: string }
        assert.equal(body.error, 'not_found')
        await assertUnchanged(b, before)
      })
    }
  })

  describe('client authentication at /introspect and /revoke', () => {
    const failures: { name: string; params: (token: string, b: TestBroker) => Promise<Record<string, string>>; headers?: Record<string, string>; names: string[] }[] = [
      { name: 'no credentials', params: async (token) => ({ token }), names: ['notes-mcp', 'calendar-mcp'] },
      { name: 'an unknown client (Basic)', params: async (token) => ({ token }), headers: { authorization: basic('ghost-mcp', NOTES_SECRET) }, names: ['ghost-mcp', 'unknown'] },
      { name: 'a wrong secret (Basic)', params: async (token) => ({ token }), headers: { authorization: basic('notes-mcp', 'wrong-secret') }, names: ['notes-mcp', 'secret'] },
      { name: 'a malformed Basic header', params: async (token) => ({ token }), headers: { authorization: 'Basic !!!' }, names: ['notes-mcp', 'malformed'] },
      { name: 'a Basic header with broken percent-encoding', params: async (token) => ({ token }), headers: { authorization: `Basic ${Buffer.from('notes-mcp:%E0%A4%A').toString('base64')}` }, names: ['notes-mcp'] },
      { name: 'a Bearer header', params: async (token) => ({ token }), headers: { authorization: 'Bearer abc' }, names: ['notes-mcp'] },
      { name: 'a wrong secret (client_secret_post)', params: async (token) => ({ token, client_id: 'notes-mcp', client_secret: 'wrong-secret' }), names: ['notes-mcp', 'secret'] },
      { name: 'client_secret without client_id', params: async (token) => ({ token, client_secret: NOTES_SECRET }), names: ['client_id'] },
      { name: 'an unsupported client_assertion_type', params: async (token, b) => ({ token, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await b.svid('a') }), names: ['jwt-bearer', 'agent-a'] },
      { name: 'a client assertion for an unknown workload', params: async (token, b) => ({ token, client_assertion_type: SPIFFE_ASSERTION, client_assertion: await b.svid('nobody') }), names: ['nobody', 'agent'] },
      { name: 'a client assertion with client_id naming another workload', params: async (token, b) => ({ token, client_assertion_type: SPIFFE_ASSERTION, client_assertion: await b.svid('a'), client_id: 'agent-b' }), names: ['agent-a', 'agent-b'] },
    ]

    for (const f of failures) {
      for (const path of ['/introspect', '/revoke']) {
        // Workload assertions are not accepted at /introspect at all; that is covered below.
        it(`${path} with ${f.name} → 401 invalid_client, WWW-Authenticate, no client named; the token stays active`, async () => {
          const token = await issue(b)
          const before = await snapshot(b)
          const res = await b.post(path, await f.params(token, b), f.headers ?? {})
          const body = await assertError(res, 401, 'invalid_client')
          assert.ok(res.headers.get('www-authenticate'), 'WWW-Authenticate is set')
          assert.equal(body.error_description, 'client authentication failed')
          for (const name of f.names) assert.ok(!body.error_description.includes(name), `description names ${name}`)
          await assertUnchanged(b, before)
          assert.equal(await isActive(b, token), true)
        })
      }
    }

    it('/introspect with a valid workload assertion → 401 invalid_client (resources only)', async () => {
      const token = await issue(b)
      const res = await b.post('/introspect', { token, client_assertion_type: SPIFFE_ASSERTION, client_assertion: await b.svid('a') })
      const body = await assertError(res, 401, 'invalid_client')
      assert.ok(!body.error_description.includes('agent-a'))
      assert.ok(!body.error_description.includes('workload'))
    })

    const doubles: { name: string; params: (token: string, b: TestBroker) => Promise<Record<string, string>>; headers?: Record<string, string> }[] = [
      { name: 'Basic + client_secret', params: async (token) => ({ token, client_id: 'notes-mcp', client_secret: NOTES_SECRET }), headers: { authorization: NOTES_BASIC } },
      { name: 'Basic + client assertion', params: async (token, b) => ({ token, client_assertion_type: SPIFFE_ASSERTION, client_assertion: await b.svid('a') }), headers: { authorization: NOTES_BASIC } },
      { name: 'client_secret + client assertion', params: async (token, b) => ({ token, client_id: 'notes-mcp', client_secret: NOTES_SECRET, client_assertion_type: SPIFFE_ASSERTION, client_assertion: await b.svid('a') }) },
    ]
    for (const d of doubles) {
      it(`two authentication methods at once (${d.name}) → 400 invalid_request at /introspect and /revoke; the token stays active`, async () => {
        const token = await issue(b)
        const before = await snapshot(b)
        for (const path of ['/introspect', '/revoke']) {
          await assertError(await b.post(path, await d.params(token, b), d.headers ?? {}), 400, 'invalid_request')
        }
        await assertUnchanged(b, before)
        assert.equal(await isActive(b, token), true)
      })
    }

    it('control: each of those methods alone works (Basic, client_secret_post at /introspect; client assertion at /revoke)', async () => {
      const token = await issue(b)
      const viaBasic = await b.post('/introspect', { token }, { authorization: NOTES_BASIC })
      assert.equal(((await viaBasic.json()) as { active: boolean }).active, true)
      const viaPost = await b.post('/introspect', { token, client_id: 'notes-mcp', client_secret: NOTES_SECRET })
      assert.equal(viaPost.status, 200)
      assert.equal(((await viaPost.json()) as { active: boolean }).active, true)
      const before = await snapshot(b)
      const viaAssertion = await b.post('/revoke', { token, client_assertion_type: SPIFFE_ASSERTION, client_assertion: await b.svid('a'), client_id: 'agent-a' })
      assert.equal(viaAssertion.status, 200)
      await assertUnchanged(b, before, { revocation_events: 1, audit_events: 1 })
      assert.equal(await isActive(b, token), false)
    })
  })
})

describe('form bodies: the fast path answers as URLSearchParams does', () => {
  it('20,000 random bodies of names, values, separators, plus signs and well- and ill-formed percent sequences', () => {
    const pieces = ['a', 'b', 'scope', '=', '=', '&', '&', '+', '%', '%2', '%2B', '%20', '%3D', '%26', '%E2%82%AC', '%E2%82', '%FF', '%C0%AF', '%00', 'é', '€', '\uD800', '\uDC00', '😀', ' ', 'x']
    let seed = 42
    const next = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed)
    for (let i = 0; i < 20_000; i++) {
      const body = Array.from({ length: next() % 24 }, () => pieces[next() % pieces.length]).join('')
      assert.deepEqual(decodeForm(body), [...new URLSearchParams(body)], JSON.stringify(body))
    }
  })

  it('a component decoded before decodes alike again: the same values every request, more distinct ones than are remembered, long ones, malformed ones', () => {
    const every = 'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&resource=https%3A%2F%2Fnotes.example%2Fmcp&scope=notes%3Aread+notes%3Awrite'
    const distinct = Array.from({ length: 700 }, (_, i) => `v=a%3A${i}+%E2%82%AC&w=${i % 2 ? '%E2%82' : '%2B'}${i}`)
    const long = `x=${'%3A'.repeat(200)}&y=${'%E2%82%AC'.repeat(40)}%`
    for (let round = 0; round < 3; round++) {
      for (const body of [every, ...distinct, long, every]) assert.deepEqual(decodeForm(body), [...new URLSearchParams(body)], JSON.stringify(body))
    }
  })
})
