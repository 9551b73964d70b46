/**
 * DPoP (RFC 9449) at POST /token and POST /tasks, over HTTP: binding (`cnf.jkt`, `token_type:
 * DPoP`, tasks bound to a key), requirements (resource, workload, bound task), server nonces,
 * the replay cache, metadata, and a rejection matrix. Every rejection row asserts the exact
 * status and `error`, that nothing was issued or opened, and one audit `deny` row whose private
 * reason names the check that fired; every row has controls — the same setup without the fault
 * succeeds. Interop runs oauth4webapi and openid-client against the broker on a real port.
 */
import assert from 'node:assert/strict'
import { randomBytes, randomUUID } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import * as oauth from 'oauth4webapi'
import * as client from 'openid-client'
import { accessTokenHash } from '@taskpass/verifier/dpop'
import { parseConfig, type ConfigInput } from '../src/config.js'
import { assertRefusedAndAudited, counts, createTestBroker, exchangeParams, form, JWT_TYPE, NOTES, NOTES_SECRET, startTestServer, T0, testConfig, testKeys, TOKEN_EXCHANGE, withBroker, type TestBroker } from './harness.js'

type Params = Record<string, string | string[] | undefined>
type Server = TestBroker & { url: string; stop(): Promise<void> }
/** What goes in the DPoP header: nothing, one value, or several header fields. */
type DpopHeader = string | string[] | undefined

const NQCHAR = /^[\x21\x23-\x5B\x5D-\x7E]+$/

// ── keys and proofs ──────────────────────────────────────────────────────────────────────────

interface ProofKey {
  alg: string
  pair: CryptoKeyPair
  publicJwk: JWK
  privateJwk: JWK
  /** RFC 7638 SHA-256 thumbprint, computed here independently of the broker. */
  jkt: string
}

async function proofKey(alg = 'ES256'): Promise<ProofKey> {
  const pair = await generateKeyPair(alg, { extractable: true })
  const publicJwk = await exportJWK(pair.publicKey)
  return { alg, pair, publicJwk, privateJwk: await exportJWK(pair.privateKey), jkt: await calculateJwkThumbprint(publicJwk, 'sha256') }
}

interface DpopKeys {
  k1: ProofKey
  k2: ProofKey
  ed: ProofKey
}
let keysPromise: Promise<DpopKeys> | undefined
const dpopKeys = () => (keysPromise ??= (async () => ({ k1: await proofKey(), k2: await proofKey(), ed: await proofKey('EdDSA') }))())

interface ProofOptions {
  htm?: string
  /** Absolute URL; default the broker's token endpoint. */
  htu?: string
  /** Path on the broker's issuer, instead of `htu`. */
  path?: '/token' | '/tasks'
  iat?: number
  jti?: string
  nonce?: string
  ath?: string
  header?: Record<string, unknown>
  alg?: string
  /** Sign with this instead of the key's private key (a MAC secret, another key). */
  signWith?: CryptoKey | Uint8Array
}

/** A DPoP proof (RFC 9449 §4.2) built with jose, for broker `b` at its current time. */
function proof(b: TestBroker, k: ProofKey, o: ProofOptions = {}): Promise<string> {
  const payload: Record<string, unknown> = {
    jti: o.jti ?? randomUUID(),
    htm: o.htm ?? 'POST',
    htu: o.htu ?? `${b.deps.config.issuer}${o.path ?? '/token'}`,
    iat: o.iat ?? b.clock.now(),
  }
  if (o.nonce !== undefined) payload.nonce = o.nonce
  if (o.ath !== undefined) payload.ath = o.ath
  return new SignJWT(payload).setProtectedHeader({ typ: 'dpop+jwt', alg: o.alg ?? k.alg, jwk: k.publicJwk, ...o.header }).sign(o.signWith ?? k.pair.privateKey)
}

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')

/** An unsecured (`alg: none`) proof: jose will not sign one, so it is assembled by hand. */
function unsignedProof(b: TestBroker, k: ProofKey): string {
  return `${b64url({ typ: 'dpop+jwt', alg: 'none', jwk: k.publicJwk })}.${b64url({ jti: randomUUID(), htm: 'POST', htu: `${b.deps.config.issuer}/token`, iat: b.clock.now() })}.`
}

// ── requests ─────────────────────────────────────────────────────────────────────────────────

function headersWith(base: Record<string, string>, dpop: DpopHeader): Headers {
  const headers = new Headers(base)
  for (const value of dpop === undefined ? [] : typeof dpop === 'string' ? [dpop] : dpop) headers.append('dpop', value)
  return headers
}

async function exchange(b: TestBroker, params: Params = {}, dpop?: DpopHeader): Promise<Response> {
  const body = await exchangeParams(b, params)
  return b.app.request('/token', { method: 'POST', headers: headersWith({ 'content-type': 'application/x-www-form-urlencoded' }, dpop), body: form(body) })
}

const TASK_BODY = { purpose: 'dpop test', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }

async function openTaskWith(b: TestBroker, dpop?: DpopHeader, body: unknown = TASK_BODY): Promise<Response> {
  const headers = headersWith({ 'content-type': 'application/json', authorization: `Bearer ${await b.session()}`, 'actor-token': await b.svid('a') }, dpop)
  return b.app.request('/tasks', { method: 'POST', headers, body: JSON.stringify(body) })
}

async function json(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>
}

/** Opens a task bound to `k` and returns its id. */
async function boundTask(b: TestBroker, k: ProofKey): Promise<string> {
  const res = await openTaskWith(b, await proof(b, k, { path: '/tasks' }))
  assert.equal(res.status, 201, await res.clone().text())
  const task = await json(res)
  assert.equal(task.dpop_jkt, k.jkt)
  return task.task_id as string
}

/** The broker's current nonce, learnt the way a client learns it: from a use_dpop_nonce answer. */
async function learnNonce(b: TestBroker, k: ProofKey): Promise<string> {
  const res = await exchange(b, {}, await proof(b, k))
  assert.equal(res.status, 400)
  assert.equal((await json(res)).error, 'use_dpop_nonce')
  const nonce = res.headers.get('dpop-nonce')
  assert.ok(nonce && NQCHAR.test(nonce), `a DPoP-Nonce header: ${nonce}`)
  return nonce
}


async function row<T>(b: TestBroker, sql: string, ...args: unknown[]): Promise<T> {
  return (await b.rawQuery(sql, [...args]))[0] as T
}


// ── config helpers ───────────────────────────────────────────────────────────────────────────

const withNonces = (c: ConfigInput): ConfigInput => ({ ...c, dpop: { ...c.dpop, nonce: true } })
const notesRequiresDpop = (c: ConfigInput): ConfigInput => ({ ...c, resources: c.resources!.map((r) => (r.uri === NOTES ? { ...r, requireDpop: true } : r)) })
const agentARequiresDpop = (c: ConfigInput): ConfigInput => ({ ...c, workloads: c.workloads!.map((w) => (w.id === 'agent-a' ? { ...w, requireDpop: true } : w)) })

// ── the rejection matrix ─────────────────────────────────────────────────────────────────────

interface Row {
  name: string
  /** Which endpoint the request goes to (default /token). */
  target?: 'token' | 'tasks'
  status: number
  error: 'invalid_dpop_proof' | 'use_dpop_nonce' | 'invalid_grant'
  /** What the audit row's private reason must say: proves the intended check fired. */
  reason: RegExp
  config?: (c: ConfigInput) => ConfigInput
  /** State the request needs (an open task…); returns extra /token parameters. */
  arrange?: (b: TestBroker, k: DpopKeys) => Promise<Params>
  /** DPoP headers of requests that succeed with the same setup (each on a fresh broker). */
  controls: ((b: TestBroker, k: DpopKeys) => Promise<DpopHeader>)[]
  /** The one fault: the DPoP header to send, after any side effect on the broker. */
  fault: (b: TestBroker, k: DpopKeys, base: Params) => Promise<DpopHeader>
}

const validProof = (path: '/token' | '/tasks' = '/token') => (b: TestBroker, k: DpopKeys) => proof(b, k.k1, { path })

const rows: Row[] = [
  {
    name: 'replayed proof (same jti, same key, same htu)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /has been used before/,
    controls: [validProof()],
    fault: async (b, k) => {
      const p = await proof(b, k.k1)
      const first = await exchange(b, {}, p)
      assert.equal(first.status, 200, await first.text())
      return p
    },
  },
  {
    name: 'wrong htm (GET)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /htm does not match/,
    controls: [validProof()],
    fault: (b, k) => proof(b, k.k1, { htm: 'GET' }),
  },
  {
    name: 'wrong htu (another endpoint of the broker)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /htu does not match/,
    // Controls: htu is compared after RFC 3986 normalisation, ignoring query and fragment (§4.3).
    controls: [validProof(), (b, k) => proof(b, k.k1, { htu: `${b.deps.config.issuer.replace('http://', 'HTTP://')}/token?q=1#f` })],
    fault: (b, k) => proof(b, k.k1, { htu: `${b.deps.config.issuer}/tasks` }),
  },
  {
    name: 'wrong htu (same path, another host)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /htu does not match/,
    controls: [validProof()],
    fault: (b, k) => proof(b, k.k1, { htu: 'http://127.0.0.2:8787/token' }),
  },
  {
    name: 'stale iat (61 s old, window = clockSkew 60 s)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /iat is outside the acceptable window/,
    controls: [(b, k) => proof(b, k.k1, { iat: b.clock.now() - 60 })],
    fault: (b, k) => proof(b, k.k1, { iat: b.clock.now() - 61 }),
  },
  {
    name: 'future iat (61 s ahead)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /iat is outside the acceptable window/,
    controls: [(b, k) => proof(b, k.k1, { iat: b.clock.now() + 60 })],
    fault: (b, k) => proof(b, k.k1, { iat: b.clock.now() + 61 }),
  },
  {
    name: 'private key members (d) in the jwk header',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /must not contain a private key/,
    controls: [validProof()],
    fault: (b, k) => proof(b, k.k1, { header: { jwk: k.k1.privateJwk } }),
  },
  {
    name: 'symmetric alg (HS256, keyed with a random secret)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /the DPoP proof alg is not allowed/,
    controls: [validProof()],
    fault: (b, k) => proof(b, k.k1, { alg: 'HS256', signWith: randomBytes(32) }),
  },
  {
    name: 'alg none (unsigned)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /the DPoP proof alg is not allowed/,
    controls: [validProof()],
    fault: async (b, k) => unsignedProof(b, k.k1),
  },
  {
    name: 'typ is JWT, not dpop+jwt',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /"typ"/,
    controls: [validProof()],
    fault: (b, k) => proof(b, k.k1, { header: { typ: 'JWT' } }),
  },
  {
    name: 'signature by another key than the jwk header names',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /signature verification failed/,
    controls: [validProof()],
    fault: (b, k) => proof(b, k.k1, { signWith: k.k2.pair.privateKey }),
  },
  {
    name: 'not a JWT',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /not a JWT with a jwk header/,
    controls: [validProof()],
    fault: async () => 'not-a-jwt',
  },
  {
    name: 'two DPoP header fields (both valid proofs)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /exactly one DPoP header/,
    controls: [async (b, k) => [await proof(b, k.k1)]],
    fault: async (b, k) => [await proof(b, k.k1), await proof(b, k.k1)],
  },
  {
    name: 'task bound to k1, proof by k2',
    status: 400,
    error: 'invalid_grant',
    reason: /is bound to DPoP key .*, the proof is by /,
    arrange: async (b, k) => ({ task_id: await boundTask(b, k.k1) }),
    controls: [validProof()],
    fault: (b, k) => proof(b, k.k2),
  },
  {
    name: 'task bound to k1, no proof at all',
    status: 400,
    error: 'invalid_grant',
    reason: /is DPoP-bound and the request has no proof/,
    arrange: async (b, k) => ({ task_id: await boundTask(b, k.k1) }),
    controls: [validProof()],
    fault: async () => undefined,
  },
  {
    name: 'implicit task (opened at /token with k1), proof by k2',
    status: 400,
    error: 'invalid_grant',
    reason: /is bound to DPoP key .*, the proof is by /,
    arrange: async (b, k) => {
      const res = await exchange(b, {}, await proof(b, k.k1))
      assert.equal(res.status, 200, await res.clone().text())
      return { task_id: (await json(res)).task_id as string }
    },
    controls: [validProof()],
    fault: (b, k) => proof(b, k.k2),
  },
  {
    name: 'nonces required, proof without nonce',
    status: 400,
    error: 'use_dpop_nonce',
    reason: /a fresh DPoP nonce is required/,
    config: withNonces,
    controls: [async (b, k) => proof(b, k.k1, { nonce: await learnNonce(b, k.k1) })],
    fault: (b, k) => proof(b, k.k1),
  },
  {
    name: 'nonces required, made-up nonce',
    status: 400,
    error: 'use_dpop_nonce',
    reason: /a fresh DPoP nonce is required/,
    config: withNonces,
    controls: [async (b, k) => proof(b, k.k1, { nonce: await learnNonce(b, k.k1) })],
    fault: (b, k) => proof(b, k.k1, { nonce: 'AAAAAAAAAAAAAAAAAAAAAA' }),
  },
  {
    name: 'nonces required, nonce two windows old',
    status: 400,
    error: 'use_dpop_nonce',
    reason: /a fresh DPoP nonce is required/,
    config: withNonces,
    // Control: a nonce from the previous window (T0 starts a window) is still accepted.
    controls: [
      async (b, k) => {
        const nonce = await learnNonce(b, k.k1)
        b.clock.advance(60)
        return proof(b, k.k1, { nonce })
      },
    ],
    fault: async (b, k) => {
      const nonce = await learnNonce(b, k.k1)
      b.clock.advance(120)
      return proof(b, k.k1, { nonce })
    },
  },
  {
    name: 'resource requires DPoP, no proof (implicit task)',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /DPoP is required for agent-a on https:\/\/notes/,
    config: notesRequiresDpop,
    controls: [validProof()],
    fault: async () => undefined,
  },
  {
    name: 'resource requires DPoP, no proof (on an explicit task opened with one)',
    status: 400,
    error: 'invalid_grant',
    reason: /is DPoP-bound and the request has no proof/,
    config: notesRequiresDpop,
    arrange: async (b, k) => ({ task_id: await boundTask(b, k.k1) }),
    controls: [validProof()],
    fault: async () => undefined,
  },
  {
    name: 'workload requires DPoP, no proof',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /DPoP is required for agent-a on/,
    config: agentARequiresDpop,
    controls: [validProof()],
    fault: async () => undefined,
  },
  // ── POST /tasks ──
  {
    name: 'POST /tasks: proof made for /token (wrong htu)',
    target: 'tasks',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /htu does not match/,
    controls: [validProof('/tasks'), async () => undefined],
    fault: (b, k) => proof(b, k.k1, { path: '/token' }),
  },
  {
    name: 'POST /tasks: replayed proof',
    target: 'tasks',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /has been used before/,
    controls: [validProof('/tasks')],
    fault: async (b, k) => {
      const p = await proof(b, k.k1, { path: '/tasks' })
      const first = await openTaskWith(b, p)
      assert.equal(first.status, 201, await first.text())
      return p
    },
  },
  {
    name: 'POST /tasks: private key members in the jwk header',
    target: 'tasks',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /must not contain a private key/,
    controls: [validProof('/tasks')],
    fault: (b, k) => proof(b, k.k1, { path: '/tasks', header: { jwk: k.k1.privateJwk } }),
  },
  {
    name: 'POST /tasks: nonces required, proof without nonce',
    target: 'tasks',
    status: 400,
    error: 'use_dpop_nonce',
    reason: /a fresh DPoP nonce is required/,
    config: withNonces,
    controls: [async (b, k) => proof(b, k.k1, { path: '/tasks', nonce: await learnNonce(b, k.k1) })],
    fault: (b, k) => proof(b, k.k1, { path: '/tasks' }),
  },
  {
    name: 'POST /tasks: resource requires DPoP, no proof',
    target: 'tasks',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /DPoP is required for agent-a on https:\/\/notes/,
    config: notesRequiresDpop,
    controls: [validProof('/tasks')],
    fault: async () => undefined,
  },
  {
    name: 'POST /tasks: workload requires DPoP, no proof',
    target: 'tasks',
    status: 400,
    error: 'invalid_dpop_proof',
    reason: /DPoP is required for agent-a on/,
    config: agentARequiresDpop,
    controls: [validProof('/tasks')],
    fault: async () => undefined,
  },
]

describe('DPoP rejection matrix (in-process)', () => {
  for (const r of rows) {
    const send = (b: TestBroker, base: Params, dpop: DpopHeader) => (r.target === 'tasks' ? openTaskWith(b, dpop) : exchange(b, base, dpop))

    it(`${r.name} → ${r.status} ${r.error}`, () =>
      withBroker(r.config, async (b) => {
        const k = await dpopKeys()
        const base = (await r.arrange?.(b, k)) ?? {}
        const dpop = await r.fault(b, k, base)
        const before = await counts(b)

        const res = await send(b, base, dpop)
        const text = await res.text()
        assert.equal(res.status, r.status, text)
        const body = JSON.parse(text) as Record<string, unknown>
        assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description'])
        assert.equal(body.error, r.error)
        assert.equal(res.headers.get('cache-control'), 'no-store')
        // RFC 9449 §8: use_dpop_nonce carries exactly one nonce to use; nothing else sends one.
        const nonce = res.headers.get('dpop-nonce')
        if (r.error === 'use_dpop_nonce') assert.ok(nonce !== null && NQCHAR.test(nonce), `one DPoP-Nonce (1*NQCHAR): ${nonce}`)
        else assert.equal(nonce, null)

        const audit = await assertRefusedAndAudited(b, before, { error: r.error, reason: r.reason, action: r.target === 'tasks' ? 'task.open' : 'token.exchange' })
        assert.equal(audit.user_sub, 'alice')
        assert.equal(audit.workload_id, 'agent-a')
      }),
    )

    r.controls.forEach((control, i) =>
      it(`control ${i + 1}: ${r.name} — same setup without the fault succeeds`, () =>
        withBroker(r.config, async (b) => {
          const k = await dpopKeys()
          const base = (await r.arrange?.(b, k)) ?? {}
          const dpop = await control(b, k)
          const before = await counts(b)
          const res = await send(b, base, dpop)
          const text = await res.text()
          assert.equal(res.status, r.target === 'tasks' ? 201 : 200, text)
          const body = JSON.parse(text) as Record<string, unknown>
          if (r.target === 'tasks') {
            assert.equal(await b.count('tasks'), before.tasks + 1)
            assert.equal(body.dpop_jkt, dpop === undefined ? undefined : k.k1.jkt)
          } else {
            assert.equal(await b.count('tokens'), before.tokens + 1)
            assert.equal(body.token_type, 'DPoP')
            assert.deepEqual(decodeJwt(body.access_token as string).cnf, { jkt: k.k1.jkt })
            if (typeof base.task_id === 'string') assert.equal(body.task_id, base.task_id)
          }
          assert.equal((await b.lastAudit())?.decision, 'allow')
        }),
      ),
    )
  }
})

// ── binding, requirements, nonces, replay cache, metadata (in-process) ─────────────────────

describe('DPoP binding at /token and /tasks', () => {
  let b: TestBroker
  let k: DpopKeys
  beforeEach(async () => {
    b = await createTestBroker()
    k = await dpopKeys()
  })
  afterEach(() => b.close())

  it('a proof binds the token: token_type DPoP, cnf.jkt = RFC 7638 thumbprint of the proof key, tokens.cnf_jkt, audit', async () => {
    const res = await exchange(b, {}, await proof(b, k.k1))
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('cache-control'), 'no-store')
    assert.equal(res.headers.get('dpop-nonce'), null, 'nonces are off by default')
    const body = await json(res)
    assert.equal(body.token_type, 'DPoP')
    const claims = decodeJwt(body.access_token as string)
    assert.deepEqual(claims.cnf, { jkt: k.k1.jkt })
    assert.notEqual(k.k1.jkt, k.k2.jkt)
    assert.equal((await row<{ cnf_jkt: string }>(b, 'select cnf_jkt from tokens where jti = ?', claims.jti)).cnf_jkt, k.k1.jkt)
    assert.match(String((await b.lastAudit())?.reason), new RegExp(`DPoP ${k.k1.jkt}$`))
  })

  it('control: without a proof the token is a Bearer token without cnf', async () => {
    const res = await exchange(b)
    assert.equal(res.status, 200)
    const body = await json(res)
    assert.equal(body.token_type, 'Bearer')
    const claims = decodeJwt(body.access_token as string)
    assert.equal(claims.cnf, undefined)
    assert.equal((await row<{ cnf_jkt: string | null }>(b, 'select cnf_jkt from tokens where jti = ?', claims.jti)).cnf_jkt, null)
  })

  it('an EdDSA proof key binds too (thumbprint of an OKP key)', async () => {
    const res = await exchange(b, {}, await proof(b, k.ed))
    assert.equal(res.status, 200, await res.clone().text())
    const body = await json(res)
    assert.equal(body.token_type, 'DPoP')
    assert.deepEqual(decodeJwt(body.access_token as string).cnf, { jkt: k.ed.jkt })
  })

  it('introspection reports token_type DPoP and cnf.jkt (RFC 9449 §6.2); Bearer for an unbound token', async () => {
    const bound = (await json(await exchange(b, {}, await proof(b, k.k1)))).access_token as string
    const plain = (await json(await exchange(b))).access_token as string
    const basic = `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}`
    const a = await json(await b.post('/introspect', { token: bound }, { authorization: basic }))
    assert.equal(a.active, true)
    assert.equal(a.token_type, 'DPoP')
    assert.deepEqual(a.cnf, { jkt: k.k1.jkt })
    const p = await json(await b.post('/introspect', { token: plain }, { authorization: basic }))
    assert.equal(p.active, true)
    assert.equal(p.token_type, 'Bearer')
    assert.equal(p.cnf, undefined)
  })

  it('POST /tasks with a proof binds the task (dpop_jkt in the view, the row and GET /tasks/{id}); every token of it is bound to that key', async () => {
    const id = await boundTask(b, k.k1)
    assert.equal((await row<{ dpop_jkt: string }>(b, 'select dpop_jkt from tasks where id = ?', id)).dpop_jkt, k.k1.jkt)
    const view = await json(await b.app.request(`/tasks/${id}`, { headers: { 'actor-token': await b.svid('a') } }))
    assert.equal(view.dpop_jkt, k.k1.jkt)
    assert.match(String((await row<{ reason: string }>(b, "select reason from audit_events where action = 'task.open'")).reason), new RegExp(`DPoP-bound to ${k.k1.jkt}`))

    for (let i = 0; i < 2; i++) {
      const res = await exchange(b, { task_id: id }, await proof(b, k.k1))
      assert.equal(res.status, 200)
      const body = await json(res)
      assert.equal(body.token_type, 'DPoP')
      assert.equal(body.task_id, id)
      assert.deepEqual(decodeJwt(body.access_token as string).cnf, { jkt: k.k1.jkt })
    }
  })

  it('a bound task answers a non-holder with the same description as a missing task (no probing)', async () => {
    const id = await boundTask(b, k.k1)
    const wrongKey = await json(await exchange(b, { task_id: id }, await proof(b, k.k2)))
    const missing = await json(await exchange(b, { task_id: '00000000-0000-7000-8000-000000000000' }, await proof(b, k.k2)))
    assert.equal(wrongKey.error, 'invalid_grant')
    assert.deepEqual(wrongKey, missing)
    // …even once the task has ended: a non-holder does not learn its state.
    const done = await b.app.request(`/tasks/${id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
    assert.equal(done.status, 200)
    assert.deepEqual(await json(await exchange(b, { task_id: id }, await proof(b, k.k2))), missing)
    // control: the holder does learn it.
    assert.equal((await json(await exchange(b, { task_id: id }, await proof(b, k.k1)))).error_description, 'task is completed')
  })

  it('a task opened without a proof is not bound: no dpop_jkt, and each exchange may bind its own key', async () => {
    const res = await openTaskWith(b)
    assert.equal(res.status, 201)
    const task = await json(res)
    assert.equal(task.dpop_jkt, undefined)
    assert.equal(res.headers.get('dpop-nonce'), null)
    const one = await json(await exchange(b, { task_id: task.task_id as string }, await proof(b, k.k1)))
    const two = await json(await exchange(b, { task_id: task.task_id as string }, await proof(b, k.k2)))
    const three = await json(await exchange(b, { task_id: task.task_id as string }))
    assert.deepEqual(decodeJwt(one.access_token as string).cnf, { jkt: k.k1.jkt })
    assert.deepEqual(decodeJwt(two.access_token as string).cnf, { jkt: k.k2.jkt })
    assert.equal(three.token_type, 'Bearer')
  })

  it('an implicit task opened at /token with a proof is bound to its key', async () => {
    const body = await json(await exchange(b, {}, await proof(b, k.k1)))
    const task = await row<{ dpop_jkt: string }>(b, 'select dpop_jkt from tasks where id = ?', body.task_id)
    assert.equal(task.dpop_jkt, k.k1.jkt)
    const plain = await json(await exchange(b))
    assert.equal((await row<{ dpop_jkt: string | null }>(b, 'select dpop_jkt from tasks where id = ?', plain.task_id)).dpop_jkt, null)
  })

  it('a policy that requires DPoP only at exchange time (not when the task was opened) is honoured per exchange', async () => {
    // The policy seam (DESIGN "Policy"): e.g. a Cedar policy that wants DPoP for writes only.
    const shipped = b.deps.policy
    b.deps.policy = {
      ...shipped,
      version: shipped.version,
      decide(principal, action, resource, context) {
        const d = shipped.decide(principal, action, resource, context)
        return d.allow && action === 'token.exchange' && context.scopes.includes('notes:write') ? { ...d, constraints: { ...d.constraints, dpopRequired: true } } : d
      },
    }
    const res = await openTaskWith(b, undefined, { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read', 'notes:write'] }] })
    assert.equal(res.status, 201)
    const id = (await json(res)).task_id as string
    const before = await counts(b)
    const refused = await exchange(b, { task_id: id, scope: 'notes:write' })
    assert.equal(refused.status, 400)
    assert.equal((await json(refused)).error, 'invalid_dpop_proof')
    assert.equal(await b.count('tokens'), before.tokens)
    assert.equal((await b.lastAudit())?.error, 'invalid_dpop_proof')
    // controls: reads need no proof; writes with one are bound
    assert.equal((await json(await exchange(b, { task_id: id, scope: 'notes:read' }))).token_type, 'Bearer')
    assert.equal((await json(await exchange(b, { task_id: id, scope: 'notes:write' }, await proof(b, k.k1)))).token_type, 'DPoP')
  })

  it('a proof replayed at the last second of its window is still refused (the replay entry outlives the iat check)', async () => {
    const p = await proof(b, k.k1)
    assert.equal((await exchange(b, {}, p)).status, 200)
    b.clock.advance(60) // now = iat + clockSkew: the iat check alone would accept it
    const res = await exchange(b, {}, p)
    assert.equal(res.status, 400)
    assert.equal((await json(res)).error, 'invalid_dpop_proof')
    assert.match(String((await b.lastAudit())?.reason), /used before/)
    // control: one second later the iat check refuses it on its own
    b.clock.advance(1)
    assert.match(String((await json(await exchange(b, {}, p))).error_description), /iat is outside/)
  })

  it('RFC 8414 metadata advertises dpop_signing_alg_values_supported', async () => {
    const meta = await json(await b.app.request('/.well-known/oauth-authorization-server'))
    assert.deepEqual(meta.dpop_signing_alg_values_supported, ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'RS256', 'PS256'])
  })
})

describe('DPoP configuration', () => {
  it('dpop.algorithms narrows what is accepted and advertised (EdDSA refused, ES256 accepted)', () =>
    withBroker((c) => ({ ...c, dpop: { algorithms: ['ES256'] } }), async (b) => {
      const k = await dpopKeys()
      const meta = await json(await b.app.request('/.well-known/oauth-authorization-server'))
      assert.deepEqual(meta.dpop_signing_alg_values_supported, ['ES256'])
      const refused = await exchange(b, {}, await proof(b, k.ed))
      assert.equal(refused.status, 400)
      assert.equal((await json(refused)).error, 'invalid_dpop_proof')
      assert.equal((await exchange(b, {}, await proof(b, k.k1))).status, 200)
    }))

  it('dpop.algorithms refuses symmetric algorithms and none', async () => {
    const keys = await testKeys()
    for (const alg of ['HS256', 'none']) {
      assert.throws(() => parseConfig({ ...testConfig(keys), dpop: { algorithms: [alg] } }), (e: Error) => /dpop\.algorithms\.0/.test(e.message))
    }
    assert.equal(parseConfig({ ...testConfig(keys), dpop: { algorithms: ['PS256'] } }).dpop.algorithms[0], 'PS256')
  })

  it('resources[].requireDpop and workloads[].requireDpop default to false', async () => {
    const config = parseConfig(testConfig(await testKeys()))
    assert.ok(config.resources.every((r) => r.requireDpop === false))
    assert.ok(config.workloads.every((w) => w.requireDpop === false))
    assert.equal(config.dpop.nonce, false)
  })

  it('the replay cache is bounded: full of live proofs it refuses new ones (fail closed), and frees up as they expire', () =>
    withBroker((c) => ({ ...c, dpop: { replayCacheSize: 2 } }), async (b) => {
      const k = await dpopKeys()
      assert.equal((await exchange(b, {}, await proof(b, k.k1))).status, 200)
      assert.equal((await exchange(b, {}, await proof(b, k.k1))).status, 200)
      const full = await exchange(b, {}, await proof(b, k.k1))
      assert.equal(full.status, 400)
      assert.equal((await json(full)).error, 'invalid_dpop_proof')
      assert.match(String((await b.lastAudit())?.reason), /too many DPoP proofs in flight/)
      // Both entries live until iat + 60 + 1.
      b.clock.advance(61)
      assert.equal((await exchange(b, {}, await proof(b, k.k1))).status, 200)
    }))
})

describe('DPoP nonces (stateless)', () => {
  it('success responses at /token and POST /tasks carry a fresh DPoP-Nonce; responses without a proof do not', () =>
    withBroker(withNonces, async (b) => {
      const k = await dpopKeys()
      const nonce = await learnNonce(b, k.k1)
      const token = await exchange(b, {}, await proof(b, k.k1, { nonce }))
      assert.equal(token.status, 200)
      assert.equal(token.headers.get('dpop-nonce'), nonce, 'same window, same nonce')
      const task = await openTaskWith(b, await proof(b, k.k1, { path: '/tasks', nonce }))
      assert.equal(task.status, 201)
      assert.equal(task.headers.get('dpop-nonce'), nonce)
      // next window: the success response hands out the new nonce, and the old one still works once more
      b.clock.advance(60)
      const next = await exchange(b, {}, await proof(b, k.k1, { nonce }))
      assert.equal(next.status, 200)
      const fresh = next.headers.get('dpop-nonce')
      assert.ok(fresh && fresh !== nonce && NQCHAR.test(fresh))
      // Bearer requests are unaffected by nonce mode
      const bearer = await exchange(b)
      assert.equal(bearer.status, 200)
      assert.equal(bearer.headers.get('dpop-nonce'), null)
    }))

  it('nonces are stateless: another broker instance with the same KEK accepts them; one with another KEK does not', async () => {
    const kek = randomBytes(32).toString('base64url')
    const sameKek = (c: ConfigInput): ConfigInput => withNonces({ ...c, keys: { kek } })
    const k = await dpopKeys()
    const a = await createTestBroker({ config: sameKek })
    const twin = await createTestBroker({ config: sameKek })
    const stranger = await createTestBroker({ config: withNonces })
    try {
      const nonce = await learnNonce(a, k.k1)
      assert.equal((await exchange(twin, {}, await proof(twin, k.k1, { nonce }))).status, 200)
      const refused = await exchange(stranger, {}, await proof(stranger, k.k1, { nonce }))
      assert.equal(refused.status, 400)
      assert.equal((await json(refused)).error, 'use_dpop_nonce')
      assert.notEqual(refused.headers.get('dpop-nonce'), nonce)
    } finally {
      await a.close()
      await twin.close()
      await stranger.close()
    }
  })
})

// ── interop over a real port ─────────────────────────────────────────────────────────────────

const insecure = { [oauth.allowInsecureRequests]: true } as const
const agentA: oauth.Client = { client_id: 'agent-a' }

async function discover(s: Server): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(s.url)
  return oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
}

/** Token-exchange parameters for third-party clients, which add `grant_type` themselves. */
async function interopParams(s: Server): Promise<Record<string, string>> {
  return { subject_token: await s.session(), subject_token_type: JWT_TYPE, actor_token: await s.svid('a'), actor_token_type: JWT_TYPE, resource: NOTES, scope: 'notes:read' }
}

/** A resource request to NOTES carrying `token` and (unless `proofKey` is null) a DPoP proof with `ath`. */
async function resourceRequest(token: string, scheme: 'DPoP' | 'Bearer', key: ProofKey | null): Promise<Request> {
  const headers = new Headers({ authorization: `${scheme} ${token}` })
  if (key) {
    const p = await new SignJWT({ jti: randomUUID(), htm: 'GET', htu: NOTES, iat: Math.floor(Date.now() / 1000), ath: accessTokenHash(token) })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: key.alg, jwk: key.publicJwk })
      .sign(key.pair.privateKey)
    headers.set('dpop', p)
  }
  return new Request(NOTES, { headers })
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (e) {
    return e
  }
  return assert.fail('expected a rejection')
}

describe('DPoP interop with oauth4webapi and openid-client over a real port', () => {
  let s: Server
  afterEach(async () => { await s.stop() })

  it('oauth4webapi DPoP(client, keyPair) + genericTokenEndpointRequest → DPoP token that validateJwtAccessToken accepts with requireDPoP', async () => {
    s = await startTestServer()
    const k = await dpopKeys()
    const as = await discover(s)
    assert.deepEqual(as.dpop_signing_alg_values_supported, ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'RS256', 'PS256'])
    const DPoP = oauth.DPoP(agentA, k.k1.pair)
    const res = await oauth.genericTokenEndpointRequest(as, agentA, oauth.None(), TOKEN_EXCHANGE, await interopParams(s), { DPoP, ...insecure })
    const tokens = await oauth.processGenericTokenEndpointResponse(as, agentA, res)
    assert.equal(tokens.token_type, 'dpop') // oauth4webapi lowercases token_type
    const token = tokens.access_token
    assert.equal(await DPoP.calculateThumbprint(), k.k1.jkt)
    assert.deepEqual(decodeJwt(token).cnf, { jkt: k.k1.jkt })

    const claims = await oauth.validateJwtAccessToken(as, await resourceRequest(token, 'DPoP', k.k1), NOTES, { requireDPoP: true, ...insecure })
    assert.deepEqual(claims.cnf, { jkt: k.k1.jkt })
    assert.equal(claims.sub, 'alice')
    assert.equal(claims.client_id, 'agent-a')

    // Controls: the same validator refuses the token with a proof by another key, or as a bearer token.
    const otherKey = await rejection(oauth.validateJwtAccessToken(as, await resourceRequest(token, 'DPoP', k.k2), NOTES, { requireDPoP: true, ...insecure }))
    assert.ok(otherKey instanceof oauth.WWWAuthenticateChallengeError || otherKey instanceof oauth.OperationProcessingError, String(otherKey))
    const asBearer = await rejection(oauth.validateJwtAccessToken(as, await resourceRequest(token, 'Bearer', null), NOTES, { requireDPoP: true, ...insecure }))
    assert.ok(asBearer instanceof oauth.WWWAuthenticateChallengeError || asBearer instanceof oauth.OperationProcessingError, String(asBearer))

    // RFC 7662 through oauth4webapi: the resource learns the binding.
    const notesMcp: oauth.Client = { client_id: 'notes-mcp' }
    const introspection = await oauth.processIntrospectionResponse(as, notesMcp, await oauth.introspectionRequest(as, notesMcp, oauth.ClientSecretBasic(NOTES_SECRET), token, insecure))
    assert.equal(introspection.token_type, 'DPoP')
    assert.deepEqual(introspection.cnf, { jkt: k.k1.jkt })
  })

  it('oauth4webapi nonce flow: use_dpop_nonce + DPoP-Nonce (nothing written), the manual retry with the nonce succeeds', async () => {
    s = await startTestServer({ config: withNonces })
    const k = await dpopKeys()
    const as = await discover(s)
    const DPoP = oauth.DPoP(agentA, k.k1.pair)
    const params = await interopParams(s)
    const before = await counts(s)

    const first = await oauth.genericTokenEndpointRequest(as, agentA, oauth.None(), TOKEN_EXCHANGE, params, { DPoP, ...insecure })
    const nonce = first.headers.get('dpop-nonce')
    const err = await rejection(oauth.processGenericTokenEndpointResponse(as, agentA, first))
    assert.ok(oauth.isDPoPNonceError(err), String(err))
    assert.ok(err instanceof oauth.ResponseBodyError)
    assert.equal(err.status, 400)
    assert.equal(err.error, 'use_dpop_nonce')
    assert.ok(nonce && NQCHAR.test(nonce))
    assert.equal(await s.count('tokens'), before.tokens)
    assert.equal(await s.count('tasks'), before.tasks)
    assert.equal((await s.lastAudit())?.error, 'use_dpop_nonce')

    // The handle cached the nonce from the response: repeating the request is all a client does.
    const retry = await oauth.genericTokenEndpointRequest(as, agentA, oauth.None(), TOKEN_EXCHANGE, params, { DPoP, ...insecure })
    const tokens = await oauth.processGenericTokenEndpointResponse(as, agentA, retry)
    assert.equal(tokens.token_type, 'dpop')
    assert.deepEqual(decodeJwt(tokens.access_token).cnf, { jkt: k.k1.jkt })
    assert.ok(NQCHAR.test(retry.headers.get('dpop-nonce') ?? ''), 'the success response carries the next nonce')
    assert.equal(await s.count('tokens'), before.tokens + 1)
  })

  it('oauth4webapi without DPoP against a resource that requires it → invalid_dpop_proof (control: with DPoP → 200)', async () => {
    s = await startTestServer({ config: notesRequiresDpop })
    const k = await dpopKeys()
    const as = await discover(s)
    const res = await oauth.genericTokenEndpointRequest(as, agentA, oauth.None(), TOKEN_EXCHANGE, await interopParams(s), insecure)
    const err = await rejection(oauth.processGenericTokenEndpointResponse(as, agentA, res))
    assert.ok(err instanceof oauth.ResponseBodyError, String(err))
    assert.equal(err.error, 'invalid_dpop_proof')
    const ok = await oauth.genericTokenEndpointRequest(as, agentA, oauth.None(), TOKEN_EXCHANGE, await interopParams(s), { DPoP: oauth.DPoP(agentA, k.k1.pair), ...insecure })
    assert.equal((await oauth.processGenericTokenEndpointResponse(as, agentA, ok)).token_type, 'dpop')
  })

  it('openid-client v6 getDPoPHandle + genericGrantRequest → DPoP-bound token', async () => {
    s = await startTestServer()
    const k = await dpopKeys()
    const config = await client.discovery(new URL(s.url), 'agent-a', undefined, client.None(), { execute: [client.allowInsecureRequests], algorithm: 'oauth2' })
    const DPoP = client.getDPoPHandle(config, k.k2.pair)
    const tokens = await client.genericGrantRequest(config, TOKEN_EXCHANGE, await interopParams(s), { DPoP })
    assert.equal(tokens.token_type, 'dpop')
    assert.deepEqual(decodeJwt(tokens.access_token).cnf, { jkt: k.k2.jkt })
    // control: without the handle the same call gets a Bearer token
    const plain = await client.genericGrantRequest(config, TOKEN_EXCHANGE, await interopParams(s))
    assert.equal(plain.token_type, 'bearer')
    assert.equal(decodeJwt(plain.access_token).cnf, undefined)
  })

  it('openid-client retries a use_dpop_nonce answer by itself and succeeds', async () => {
    s = await startTestServer({ config: withNonces })
    const k = await dpopKeys()
    const config = await client.discovery(new URL(s.url), 'agent-a', undefined, client.None(), { execute: [client.allowInsecureRequests], algorithm: 'oauth2' })
    const before = await s.count('audit_events')
    const tokens = await client.genericGrantRequest(config, TOKEN_EXCHANGE, await interopParams(s), { DPoP: client.getDPoPHandle(config, k.k1.pair) })
    assert.equal(tokens.token_type, 'dpop')
    assert.deepEqual(decodeJwt(tokens.access_token).cnf, { jkt: k.k1.jkt })
    // The broker saw both attempts: a use_dpop_nonce denial, then the allowed retry.
    const audit = await s.rawQuery('select decision, error from audit_events where id > ? order by id', [before]) as { decision: string; error: string | null }[]
    assert.deepEqual(audit, [{ decision: 'deny', error: 'use_dpop_nonce' }, { decision: 'allow', error: null }])
  })

  it('two DPoP header fields on the wire are refused (control: one field)', async () => {
    s = await startTestServer()
    const k = await dpopKeys()
    const send = async (fields: string[]) => {
      const body = form({ grant_type: TOKEN_EXCHANGE, ...(await interopParams(s)) })
      return new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
        const req = httpRequest(`${s.url}/token`, { method: 'POST' }, (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => { text += c })
          res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as Record<string, unknown> }))
        })
        req.on('error', reject)
        req.setHeader('content-type', 'application/x-www-form-urlencoded')
        req.setHeader('DPoP', fields) // an array: one header line per value
        req.end(body)
      })
    }
    const htu = `${s.url}/token`
    const mk = () => new SignJWT({ jti: randomUUID(), htm: 'POST', htu, iat: s.clock.now() }).setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: k.k1.publicJwk }).sign(k.k1.pair.privateKey)
    const two = await send([await mk(), await mk()])
    assert.equal(two.status, 400)
    assert.equal(two.body.error, 'invalid_dpop_proof')
    const one = await send([await mk()])
    assert.equal(one.status, 200, JSON.stringify(one.body))
    assert.equal(one.body.token_type, 'DPoP')
  })
})

// T0 starts a nonce window (the "two windows old" rows rely on it).
assert.equal(T0 % 60, 0)
