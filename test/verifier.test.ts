/**
 * The verifier kit (`@taskpass/verifier`) on its own: every rejection of standards.md Appendix C
 * with its error code, DPoP binding, challenges, option checks, and the revocation feed against
 * a real broker on 127.0.0.1 (SSE, polling fallback, resumption across a restart, fail-closed
 * staleness with an injected clock). Tokens that the broker cannot mint yet (DPoP-bound ones,
 * broken ones) are signed here with a key published by a small local JWKS server.
 */
import assert from 'node:assert/strict'
import { randomBytes, randomUUID } from 'node:crypto'
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server as HttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, beforeEach, describe, it } from 'node:test'
import { serve } from '@hono/node-server'
import { calculateJwkThumbprint, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import { accessTokenHash } from '@taskpass/verifier/dpop'
import { createFixedClock, type Clock, type FixedClock } from '../src/clock.js'
import { Hono } from 'hono'
import { InsufficientScopeError, InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import { OAuthError, OAuthErrorCode } from '@modelcontextprotocol/server'
import {
  checkToolCalls,
  createDecisionCache,
  createFetchGate,
  createFetchToolStep,
  createNodeMiddleware,
  createSseRewriter,
  createTaskTokenVerifier,
  filterNodeToolList,
  filterToolListResponse,
  TOOL_AUTHORIZATION_FAILED,
  TOOL_DENIED,
  toolsInToken,
  VerifierError,
  type TaskAuthInfo,
  type TaskTokenVerifier,
  type TaskTokenVerifierOptions,
} from '@taskpass/verifier'
import { protectedResourceMetadata, taskTokenAuth } from '@taskpass/verifier/hono'
import { toMcpSdkV1Verifier } from '@taskpass/verifier/mcp-sdk-v1'
import { toMcpSdkV2Verifier } from '@taskpass/verifier/mcp-sdk-v2'
import type { ConfigInput } from '../src/config.js'
import { createPdpClient } from '../packages/verifier/src/authorization.js'
import { createVerifierKeySet, jwksMaxAgeSeconds } from '../packages/verifier/src/jwks.js'
import { ADMIN_KEY, CALENDAR, createTestBroker, exchangeParams, NOTES, NOTES_SECRET, openTask, sqliteOnly, testKeys, UNGRANTED, USER_ISSUER, type TestBroker } from './harness.js'

const RESOURCE = 'https://mcp.test.example/mcp'
const MCP_URL = RESOURCE

// ---------------------------------------------------------------------------------------------
// A local token issuer: one ES256 key published as a JWKS on 127.0.0.1.

interface LocalIssuer {
  url: string
  key: { privateKey: CryptoKey; publicJwk: JWK }
  mint(claims?: Record<string, unknown>, header?: Record<string, unknown>, key?: CryptoKey): Promise<string>
  /** JWKS requests served so far. */
  readonly fetches: number
  /** Publishes these keys instead (e.g. withdraws k1). */
  publish(keys: JWK[]): void
  close(): Promise<void>
}

async function startIssuer(clock: Clock, opts: { cacheControl?: string } = {}): Promise<LocalIssuer> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true })
  const publicJwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }
  let published: JWK[] = [publicJwk]
  let fetches = 0
  const server = createServer((req, res) => {
    if (req.url === '/.well-known/jwks.json') {
      fetches++
      res.writeHead(200, { 'content-type': 'application/jwk-set+json', ...(opts.cacheControl ? { 'cache-control': opts.cacheControl } : {}) })
      res.end(JSON.stringify({ keys: published }))
    } else {
      res.writeHead(404)
      res.end()
    }
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    key: { privateKey, publicJwk },
    mint(claims = {}, header = {}, key = privateKey) {
      const now = clock.now()
      const payload = Object.fromEntries(
        Object.entries({
          iss: url,
          sub: 'alice',
          aud: RESOURCE,
          client_id: 'agent-a',
          act: { sub: 'agent-a' },
          scope: 'notes:read notes:write',
          task_id: 'task-1',
          jti: randomUUID(),
          iat: now,
          nbf: now,
          exp: now + 300,
          sid: 'sess-1',
          sub_id: { format: 'iss_sub', iss: 'https://idp.test.example', sub: 'alice' },
          ...claims,
        }).filter(([, v]) => v !== null),
      )
      return new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'at+jwt', ...header } as { alg: string }).sign(key)
    },
    get fetches() { return fetches },
    publish(keys) { published = keys },
    close: () => new Promise<void>((r) => server.close(() => r())),
  }
}

/** An unsigned token (`alg: none`), which jose refuses to produce. */
function unsecured(header: Record<string, unknown>, payload: Record<string, unknown>): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
  return `${b64(header)}.${b64(payload)}.`
}

interface DpopKey {
  privateKey: CryptoKey
  jwk: JWK
  jkt: string
}

async function dpopKey(): Promise<DpopKey> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true })
  const jwk = await exportJWK(publicKey)
  return { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk, 'sha256') }
}

async function proof(key: DpopKey, clock: Clock, opts: { htm?: string; htu?: string; token?: string; jti?: string; iat?: number } = {}): Promise<string> {
  return new SignJWT({ htm: opts.htm ?? 'POST', htu: opts.htu ?? MCP_URL, iat: opts.iat ?? clock.now(), jti: opts.jti ?? randomUUID(), ...(opts.token ? { ath: accessTokenHash(opts.token) } : {}) })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk })
    .sign(key.privateKey)
}

/** Awaits a VerifierError and checks its code (and status); returns it. */
async function rejected(p: Promise<unknown>, code: VerifierError['code'], status?: number): Promise<VerifierError> {
  try {
    await p
  } catch (e) {
    assert.ok(e instanceof VerifierError, `expected a VerifierError, got ${String(e)}`)
    assert.equal(e.code, code, `code: ${e.code} (${e.description})`)
    if (status !== undefined) assert.equal(e.status, status)
    return e
  }
  assert.fail(`expected a ${code} rejection`)
}

const bearer = (token: string, extra: { dpop?: string } = {}) => ({ method: 'POST', url: MCP_URL, authorization: `Bearer ${token}`, ...extra })
const dpopReq = (token: string, proofJwt: string | string[] | undefined, method = 'POST') => ({ method, url: MCP_URL, authorization: `DPoP ${token}`, dpop: proofJwt })

// ---------------------------------------------------------------------------------------------

describe('verifier: JWT checks (Appendix C steps 1–6, 8)', () => {
  let clock: FixedClock
  let issuer: LocalIssuer
  let v: TaskTokenVerifier
  const make = (o: Partial<TaskTokenVerifierOptions> = {}) =>
    createTaskTokenVerifier({ issuer: issuer.url, resource: RESOURCE, requiredScopes: ['notes:read'], dpop: 'allowed', revocation: { mode: 'none' }, clock, ...o })

  before(async () => {
    clock = createFixedClock(Math.floor(Date.now() / 1000))
    issuer = await startIssuer(clock)
  })
  after(() => issuer.close())
  beforeEach(() => { v = make() })
  afterEach(() => v.close())

  it('accepts a task token and returns AuthInfo (clientId, scopes, expiresAt, resource, extra)', async () => {
    const token = await issuer.mint({ jti: 'jti-1' })
    const auth = await v.verifyRequest(bearer(token))
    assert.equal(auth.token, token)
    assert.equal(auth.clientId, 'agent-a')
    assert.deepEqual(auth.scopes, ['notes:read', 'notes:write'])
    assert.equal(auth.expiresAt, clock.now() + 300)
    assert.ok(auth.resource instanceof URL)
    assert.equal(auth.resource.href, RESOURCE)
    assert.deepEqual(auth.extra, { sub: 'alice', sub_id: { format: 'iss_sub', iss: 'https://idp.test.example', sub: 'alice' }, act: { sub: 'agent-a' }, task_id: 'task-1', jti: 'jti-1', sid: 'sess-1' })
    // verifyAccessToken (what the SDK gates call) gives the same.
    assert.deepEqual(await v.verifyAccessToken(token), auth)
  })

  it('accepts typ at+jwt, application/at+jwt and at+JWT (case-insensitive media type)', async () => {
    for (const typ of ['at+jwt', 'application/at+jwt', 'at+JWT', 'Application/AT+JWT']) {
      await v.verifyAccessToken(await issuer.mint({}, { typ }))
    }
  })

  const rejections: [string, () => Promise<string>, string?][] = [
    ['wrong iss', () => issuer.mint({ iss: 'https://evil.example' }), 'token issuer is not trusted here'],
    ['iss with a trailing slash', () => issuer.mint({ iss: `${issuer.url}/` })],
    ['wrong aud', () => issuer.mint({ aud: 'https://other.test.example/mcp' }), 'token audience is not this resource'],
    ['aud with a trailing slash', () => issuer.mint({ aud: `${RESOURCE}/` })],
    ['aud listing this and another resource', () => issuer.mint({ aud: [RESOURCE, 'https://other.test.example/mcp'] })],
    ['no aud', () => issuer.mint({ aud: null })],
    ['typ missing', () => issuer.mint({}, { typ: undefined }), 'token typ is not at+jwt'],
    ['typ JWT', () => issuer.mint({}, { typ: 'JWT' })],
    ['typ dpop+jwt', () => issuer.mint({}, { typ: 'dpop+jwt' })],
    ['typ secevent+jwt', () => issuer.mint({}, { typ: 'secevent+jwt' })],
    ['alg none', async () => unsecured({ alg: 'none', typ: 'at+jwt' }, { iss: issuer.url, aud: RESOURCE, exp: clock.now() + 60 }), 'token algorithm is not allowed'],
    ['alg not on the allow-list (HS256)', async () => new SignJWT({ iss: issuer.url }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(randomBytes(32))],
    ['alg in lower case', async () => { const t = await issuer.mint(); const [, p, s] = t.split('.'); return `${Buffer.from(JSON.stringify({ alg: 'es256', kid: 'k1', typ: 'at+jwt' })).toString('base64url')}.${p}.${s}` }],
    ['jku header', () => issuer.mint({}, { jku: 'https://evil.example/jwks' }), 'token header must not carry jku'],
    ['embedded jwk header', () => issuer.mint({}, { jwk: issuer.key.publicJwk })],
    ['x5u header', () => issuer.mint({}, { x5u: 'https://evil.example/cert' })],
    ['signed by another key with the same kid', async () => issuer.mint({}, {}, (await generateKeyPair('ES256')).privateKey), 'token signature is invalid'],
    ['unknown kid', () => issuer.mint({}, { kid: 'nope' }), 'token is signed with an unknown key'],
    ['not a compact JWS (5 segments)', async () => 'a.b.c.d.e', 'token is not a compact JWS'],
    ['expired beyond the leeway', () => issuer.mint({ iat: clock.now() - 400, nbf: clock.now() - 400, exp: clock.now() - 31 }), 'token is expired'],
    ['not yet valid beyond the leeway', () => issuer.mint({ nbf: clock.now() + 31 }), 'token is not valid yet'],
    ['iat in the future beyond the leeway', () => issuer.mint({ iat: clock.now() + 31 })],
    ['no exp', () => issuer.mint({ exp: null }), 'token has no exp'],
    ['no sub', () => issuer.mint({ sub: null }), 'token lacks the sub claim'],
    ['no client_id', () => issuer.mint({ client_id: null }), 'token lacks the client_id claim'],
    ['no jti', () => issuer.mint({ jti: null }), 'token lacks the jti claim'],
    ['no task_id', () => issuer.mint({ task_id: null }), 'token lacks the task_id claim'],
    ['no scope', () => issuer.mint({ scope: null }), 'token lacks the scope claim'],
    ['no act', () => issuer.mint({ act: null }), 'token lacks the act claim'],
    ['act without sub', () => issuer.mint({ act: { iss: 'x' } }), 'token lacks the act claim'],
    ['no sub_id', () => issuer.mint({ sub_id: null }), 'token lacks a valid sub_id claim'],
    ['sub_id of another format', () => issuer.mint({ sub_id: { format: 'email', email: 'alice@example.com' } }), 'token lacks a valid sub_id claim'],
    ['sub_id without iss', () => issuer.mint({ sub_id: { format: 'iss_sub', sub: 'alice' } }), 'token lacks a valid sub_id claim'],
    ['sub_id with an empty sub', () => issuer.mint({ sub_id: { format: 'iss_sub', iss: 'https://idp.test.example', sub: '' } }), 'token lacks a valid sub_id claim'],
    ['sub_id as a string', () => issuer.mint({ sub_id: 'https://idp.test.example alice' }), 'token lacks a valid sub_id claim'],
  ]
  for (const [name, token, description] of rejections) {
    it(`rejects ${name} → 401 invalid_token`, async () => {
      const err = await rejected(v.verifyRequest(bearer(await token())), 'invalid_token', 401)
      if (description) assert.equal(err.description, description)
    })
  }

  it('subjectIssuers: only users of the listed subject issuers are accepted', async () => {
    const only = make({ subjectIssuers: ['https://idp.test.example'] })
    const auth = await only.verifyAccessToken(await issuer.mint())
    assert.deepEqual(auth.extra.sub_id, { format: 'iss_sub', iss: 'https://idp.test.example', sub: 'alice' })
    // The same user name at another issuer is another user.
    const err = await rejected(only.verifyRequest(bearer(await issuer.mint({ sub_id: { format: 'iss_sub', iss: 'https://other-idp.test.example', sub: 'alice' } }))), 'invalid_token', 401)
    assert.equal(err.description, 'token user is from a subject issuer not accepted here')
  })

  it('caches the JWKS for the max-age its response declares, then fetches it again', async () => {
    for (const maxAge of [60, 300]) {
      const c = createFixedClock(clock.now())
      const iss = await startIssuer(c, { cacheControl: `public, max-age=${maxAge}` })
      const verifier = createTaskTokenVerifier({ issuer: iss.url, resource: RESOURCE, dpop: 'off', revocation: { mode: 'none' }, clock: c })
      try {
        await verifier.verifyAccessToken(await iss.mint())
        assert.equal(iss.fetches, 1)
        // The issuer withdraws k1 (a compromise) and publishes another key.
        const { publicKey } = await generateKeyPair('ES256', { extractable: true })
        iss.publish([{ ...(await exportJWK(publicKey)), kid: 'k2', alg: 'ES256', use: 'sig' }])
        c.advance(maxAge - 1)
        // Within max-age the cached set is used: a new token by k1 still verifies, nothing is fetched.
        await verifier.verifyAccessToken(await iss.mint())
        assert.equal(iss.fetches, 1)
        c.advance(1)
        // At max-age the set is fetched again and k1 is gone.
        const err = await rejected(verifier.verifyAccessToken(await iss.mint()), 'invalid_token')
        assert.equal(err.description, 'token is signed with an unknown key')
        assert.equal(iss.fetches, 2, `max-age ${maxAge}`)
      } finally {
        await verifier.close()
        await iss.close()
      }
    }
  })

  it('reads the JWKS freshness from Cache-Control (and Age), within bounds', () => {
    const h = (o: Record<string, string>) => new Headers(o)
    assert.equal(jwksMaxAgeSeconds(h({ 'cache-control': 'public, max-age=300, must-revalidate' })), 300)
    assert.equal(jwksMaxAgeSeconds(h({ 'cache-control': 'max-age=120', age: '20' })), 100)
    assert.equal(jwksMaxAgeSeconds(h({ 'cache-control': 'no-store' })), 1)
    assert.equal(jwksMaxAgeSeconds(h({ 'cache-control': 'max-age=0' })), 1)
    assert.equal(jwksMaxAgeSeconds(h({ 'cache-control': 'max-age=31536000' })), 3600)
    assert.equal(jwksMaxAgeSeconds(h({})), 300)
    assert.equal(jwksMaxAgeSeconds(h({ 'cache-control': 'max-age=soon' })), 300)
  })

  it('never follows a redirect for the JWKS: the keys are unavailable', async () => {
    const server = createServer((_req, res) => {
      res.writeHead(302, { location: `${issuer.url}/.well-known/jwks.json` })
      res.end()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const errors: Error[] = []
    const redirected = make({ jwksUri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`, onError: (e) => errors.push(e) })
    try {
      const err = await rejected(redirected.verifyAccessToken(await issuer.mint()), 'invalid_token', 401)
      assert.equal(err.description, 'issuer signing keys are unavailable')
      assert.equal(errors.length, 1)
    } finally {
      await new Promise<void>((r) => server.close(() => r()))
    }
  })

  it('allows exp, nbf and iat within the leeway', async () => {
    await v.verifyAccessToken(await issuer.mint({ iat: clock.now() - 400, exp: clock.now() - 29 }))
    await v.verifyAccessToken(await issuer.mint({ nbf: clock.now() + 29, iat: clock.now() + 29 }))
  })

  it('a cached token is still re-checked: it expires with the clock', async () => {
    const token = await issuer.mint({ exp: clock.now() + 10 })
    await v.verifyAccessToken(token)
    clock.advance(10 + 30)
    await rejected(v.verifyAccessToken(token), 'invalid_token')
    clock.advance(-40)
  })

  it('a missing required scope → 403 insufficient_scope with the scope in the challenge', async () => {
    const err = await rejected(v.verifyRequest(bearer(await issuer.mint({ scope: 'notes:write' }))), 'insufficient_scope', 403)
    assert.equal(v.challenge(err), `Bearer error="insufficient_scope", error_description="token lacks a required scope", scope="notes:read", resource_metadata="https://mcp.test.example/.well-known/oauth-protected-resource/mcp", DPoP scope="notes:read", resource_metadata="https://mcp.test.example/.well-known/oauth-protected-resource/mcp", algs="ES256 ES384 ES512 EdDSA Ed25519 RS256 PS256"`)
  })

  it('no credentials → 401 with a challenge that carries no error (RFC 6750 §3.1)', async () => {
    const err = await rejected(v.verifyRequest({ method: 'POST', url: MCP_URL, authorization: undefined }), 'invalid_token', 401)
    assert.equal(err.credentialsMissing, true)
    const res = v.errorResponse(err)
    assert.equal(res.status, 401)
    assert.doesNotMatch(res.headers.get('www-authenticate')!, /error=/)
    assert.match(res.headers.get('www-authenticate')!, /^Bearer scope="notes:read", resource_metadata="https:\/\/mcp\.test\.example\/\.well-known\/oauth-protected-resource\/mcp", DPoP /)
    // An unsupported scheme counts as no credentials too.
    assert.equal((await rejected(v.verifyRequest({ method: 'GET', url: MCP_URL, authorization: 'Basic YTpi' }), 'invalid_token')).credentialsMissing, true)
  })

  it('more than one credential → 400 invalid_request', async () => {
    const token = await issuer.mint()
    await rejected(v.verifyRequest({ method: 'POST', url: MCP_URL, authorization: [`Bearer ${token}`, `Bearer ${token}`] }), 'invalid_request', 400)
    await rejected(v.verifyRequest({ method: 'POST', url: MCP_URL, authorization: `Bearer ${token}, DPoP ${token}` }), 'invalid_request', 400)
    await rejected(v.verifyRequest({ method: 'POST', url: `${MCP_URL}?access_token=${token}`, authorization: `Bearer ${token}` }), 'invalid_request', 400)
    await rejected(v.verifyRequest({ method: 'POST', url: MCP_URL, authorization: 'Bearer' }), 'invalid_request', 400)
    // Through the fetch gate, duplicate headers arrive joined by ", ".
    const h = new Headers()
    h.append('authorization', `Bearer ${token}`)
    h.append('authorization', `DPoP ${token}`)
    const res = (await createFetchGate(v)(new Request(MCP_URL, { method: 'POST', headers: h }))) as Response
    assert.equal(res.status, 400)
    assert.deepEqual(await res.json(), { error: 'invalid_request', error_description: 'more than one Authorization credential' })
  })

  it('keeps double quotes out of descriptions (the SDK v1 gate does not escape them)', () => {
    assert.equal(new VerifierError('invalid_token', 'a "b" \\c').description, "a 'b' 'c")
  })

  it('checks its options once, naming the bad one', () => {
    const base: TaskTokenVerifierOptions = { issuer: 'https://as.example', resource: RESOURCE, dpop: 'off', revocation: { mode: 'none' } }
    const cases: [Partial<TaskTokenVerifierOptions> | Record<string, unknown>, RegExp][] = [
      [{ issuer: 'not a url' }, /^"issuer" must be an absolute URL/],
      [{ resource: `${RESOURCE}#frag` }, /^"resource" must not contain a fragment/],
      [{ dpop: 'maybe' }, /^"dpop" must be/],
      [{ revocation: { mode: 'feed', feedUrl: 'x', credentials: { clientId: 'a', clientSecret: 'b' } } }, /^"revocation\.feedUrl"/],
      [{ revocation: { mode: 'feed', feedUrl: 'https://as.example/revocations', credentials: { clientId: 'a' } } }, /^"revocation\.credentials"/],
      [{ revocation: { mode: 'introspection', introspectionUrl: 'https://as.example/introspect', credentials: { clientId: 'a', clientSecret: 'b' }, cacheMs: 60_000 } }, /^"revocation\.cacheMs"/],
      [{ revocation: { mode: 'sometimes' } }, /^"revocation\.mode"/],
      [{ algorithms: ['none'] }, /^"algorithms"/],
      [{ algorithms: ['HS256'] }, /^"algorithms"/],
      [{ leewaySeconds: 600 }, /^"leewaySeconds"/],
      [{ requiredScopes: ['has space'] }, /^"requiredScopes"/],
      [{ subjectIssuers: [] }, /^"subjectIssuers"/],
      [{ subjectIssuers: [''] }, /^"subjectIssuers"/],
      [{ subjectIssuers: 'https://idp.example' }, /^"subjectIssuers"/],
      [{ dpopReplayCacheMaxEntries: 0 }, /^"dpopReplayCacheMaxEntries"/],
    ]
    for (const [patch, message] of cases) {
      assert.throws(() => createTaskTokenVerifier({ ...base, ...patch } as TaskTokenVerifierOptions), (e: unknown) => e instanceof TypeError && message.test(e.message))
    }
  })

  describe('DPoP (RFC 9449 §7)', () => {
    let key: DpopKey
    before(async () => { key = await dpopKey() })

    it('accepts a bound token with a proof of its key, including ath; returns cnf', async () => {
      const token = await issuer.mint({ cnf: { jkt: key.jkt } })
      const auth = await v.verifyRequest(dpopReq(token, await proof(key, clock, { token })))
      assert.deepEqual(auth.extra.cnf, { jkt: key.jkt })
    })

    it('refuses a DPoP-bound token sent as Bearer (§7.2), also through verifyAccessToken', async () => {
      const token = await issuer.mint({ cnf: { jkt: key.jkt } })
      const err = await rejected(v.verifyRequest(bearer(token, { dpop: await proof(key, clock, { token }) })), 'invalid_token', 401)
      assert.equal(err.description, 'token is DPoP-bound and must be sent with the DPoP scheme and a proof')
      await rejected(v.verifyAccessToken(token), 'invalid_token')
    })

    it('refuses a proof made with another key', async () => {
      const token = await issuer.mint({ cnf: { jkt: key.jkt } })
      const other = await dpopKey()
      const err = await rejected(v.verifyRequest(dpopReq(token, await proof(other, clock, { token }))), 'invalid_dpop_proof', 401)
      assert.equal(err.description, 'the DPoP proof key is not the key the token is bound to')
      assert.match(v.challenge(err), /DPoP error="invalid_dpop_proof"/)
    })

    it('proofs made with a stolen token but another key are refused before the replay cache: the key holder is never locked out', async () => {
      const small = make({ dpopReplayCacheMaxEntries: 10 })
      const token = await issuer.mint({ cnf: { jkt: key.jkt } })
      const thief = await dpopKey()
      for (let i = 0; i < 20; i++) {
        const err = await rejected(small.verifyRequest(dpopReq(token, await proof(thief, clock, { token }))), 'invalid_dpop_proof', 401)
        assert.equal(err.description, 'the DPoP proof key is not the key the token is bound to')
      }
      await small.verifyRequest(dpopReq(token, await proof(key, clock, { token })))
    })

    it('one proof key cannot crowd the others out of the replay cache', async () => {
      // 10 entries: one key may hold a tenth of them (1).
      const small = make({ dpopReplayCacheMaxEntries: 10 })
      const busy = await dpopKey()
      const busyToken = await issuer.mint({ cnf: { jkt: busy.jkt } })
      let accepted = 0
      for (let i = 0; i < 20; i++) {
        try {
          await small.verifyRequest(dpopReq(busyToken, await proof(busy, clock, { token: busyToken })))
          accepted++
        } catch (e) {
          assert.ok(e instanceof VerifierError && e.code === 'invalid_dpop_proof' && e.description === 'too many DPoP proofs in flight, retry shortly', String(e))
        }
      }
      assert.equal(accepted, 1)
      // Every other client still gets in.
      for (let i = 0; i < 3; i++) {
        const other = await dpopKey()
        const token = await issuer.mint({ cnf: { jkt: other.jkt } })
        await small.verifyRequest(dpopReq(token, await proof(other, clock, { token })))
      }
      // And the busy key's share frees up as its proofs age out of the window.
      clock.advance(62)
      const later = await issuer.mint({ cnf: { jkt: busy.jkt } })
      await small.verifyRequest(dpopReq(later, await proof(busy, clock, { token: later })))
      clock.advance(-62)
    })

    it('refuses a replayed proof', async () => {
      const token = await issuer.mint({ cnf: { jkt: key.jkt } })
      const p = await proof(key, clock, { token })
      await v.verifyRequest(dpopReq(token, p))
      const err = await rejected(v.verifyRequest(dpopReq(token, p)), 'invalid_dpop_proof')
      assert.equal(err.description, 'the DPoP proof has been used before')
    })

    const proofRejections: [string, (token: string) => Promise<string | string[] | undefined>, string?][] = [
      ['no proof', async () => undefined],
      ['two DPoP headers', async (t) => [await proof(key, clock, { token: t }), await proof(key, clock, { token: t })]],
      ['no ath', async () => proof(key, clock)],
      ['ath of another token', async () => proof(key, clock, { token: 'another.token.value' }), 'the DPoP proof ath does not match the access token'],
      ['wrong htm', async (t) => proof(key, clock, { token: t, htm: 'GET' })],
      ['wrong htu', async (t) => proof(key, clock, { token: t, htu: 'https://mcp.test.example/other' })],
      ['stale iat', async (t) => proof(key, clock, { token: t, iat: clock.now() - 120 })],
    ]
    for (const [name, make, description] of proofRejections) {
      it(`refuses a proof with ${name} → invalid_dpop_proof`, async () => {
        const token = await issuer.mint({ cnf: { jkt: key.jkt } })
        const err = await rejected(v.verifyRequest(dpopReq(token, await make(token))), 'invalid_dpop_proof', 401)
        if (description) assert.equal(err.description, description)
      })
    }

    it('a proof whose htu differs only by query is accepted (§4.3)', async () => {
      const token = await issuer.mint({ cnf: { jkt: key.jkt } })
      await v.verifyRequest({ ...dpopReq(token, await proof(key, clock, { token })), url: `${MCP_URL}?x=1` })
    })

    it('the DPoP scheme with an unbound token is refused', async () => {
      const token = await issuer.mint()
      await rejected(v.verifyRequest(dpopReq(token, await proof(key, clock, { token }))), 'invalid_token')
    })

    it("dpop 'required' refuses Bearer and unbound tokens; 'off' refuses bound ones", async () => {
      const required = make({ dpop: 'required' })
      const bound = await issuer.mint({ cnf: { jkt: key.jkt } })
      const err = await rejected(required.verifyRequest(bearer(await issuer.mint())), 'invalid_token')
      assert.match(required.challenge(err), /^DPoP error="invalid_token", error_description="this resource requires DPoP-bound tokens", scope="notes:read", resource_metadata="[^"]+", algs="[^"]+"$/)
      await required.verifyRequest(dpopReq(bound, await proof(key, clock, { token: bound })))
      assert.equal(required.metadata().dpop_bound_access_tokens_required, true)
      const off = make({ dpop: 'off' })
      await rejected(off.verifyRequest(dpopReq(bound, await proof(key, clock, { token: bound }))), 'invalid_token')
      await rejected(off.verifyAccessToken(bound), 'invalid_token')
      assert.equal(off.challenge(), 'Bearer scope="notes:read", resource_metadata="https://mcp.test.example/.well-known/oauth-protected-resource/mcp"')
      assert.equal(off.metadata().dpop_signing_alg_values_supported, undefined)
    })
  })

  it('publishes RFC 9728 metadata', () => {
    assert.deepEqual(v.metadata({ resourceName: 'Notes' }), {
      resource: RESOURCE,
      authorization_servers: [issuer.url],
      scopes_supported: ['notes:read'],
      bearer_methods_supported: ['header'],
      resource_name: 'Notes',
      dpop_signing_alg_values_supported: ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'RS256', 'PS256'],
    })
    assert.equal(v.resourceMetadataUrl, 'https://mcp.test.example/.well-known/oauth-protected-resource/mcp')
  })
})

describe('verifier: adapters', () => {
  let clock: FixedClock
  let issuer: LocalIssuer
  let v: TaskTokenVerifier
  before(async () => {
    clock = createFixedClock(Math.floor(Date.now() / 1000))
    issuer = await startIssuer(clock)
    v = createTaskTokenVerifier({ issuer: issuer.url, resource: RESOURCE, requiredScopes: ['notes:read'], dpop: 'allowed', revocation: { mode: 'none' }, clock })
  })
  after(async () => {
    await v.close()
    await issuer.close()
  })

  it('MCP SDK v1: rejections are the SDK\'s InvalidTokenError / InsufficientScopeError, never a plain Error', async () => {
    const sdk = toMcpSdkV1Verifier(v)
    const auth = await sdk.verifyAccessToken(await issuer.mint())
    assert.equal(auth.clientId, 'agent-a')
    await assert.rejects(sdk.verifyAccessToken(await issuer.mint({ aud: 'https://other.example/mcp' })), (e: unknown) => e instanceof InvalidTokenError && e.message === 'token audience is not this resource')
    await assert.rejects(sdk.verifyAccessToken('garbage'), (e: unknown) => e instanceof InvalidTokenError)
    await assert.rejects(sdk.verifyAccessToken(await issuer.mint({ scope: 'notes:write' })), (e: unknown) => e instanceof InsufficientScopeError)
    assert.throws(() => toMcpSdkV1Verifier(createTaskTokenVerifier({ issuer: issuer.url, resource: RESOURCE, dpop: 'required', revocation: { mode: 'none' } })), TypeError)
  })

  it('MCP SDK v2: rejections are OAuthError(InvalidToken | InsufficientScope)', async () => {
    const sdk = toMcpSdkV2Verifier(v)
    await sdk.verifyAccessToken(await issuer.mint())
    await assert.rejects(sdk.verifyAccessToken(await issuer.mint({ iss: 'https://evil.example' })), (e: unknown) => e instanceof OAuthError && e.code === OAuthErrorCode.InvalidToken)
    await assert.rejects(sdk.verifyAccessToken(await issuer.mint({ scope: 'notes:write' })), (e: unknown) => e instanceof OAuthError && e.code === OAuthErrorCode.InsufficientScope)
  })

  it('hono: taskTokenAuth sets c.get(\'taskAuth\') or answers with the challenge; the metadata route serves RFC 9728', async () => {
    const app = new Hono<{ Variables: { taskAuth: TaskAuthInfo } }>()
    app.use(protectedResourceMetadata(v.metadata()))
    app.use('/mcp', taskTokenAuth(v))
    app.post('/mcp', (c) => c.json({ task: c.get('taskAuth').extra.task_id }))
    const ok = await app.request(MCP_URL, { method: 'POST', headers: { authorization: `Bearer ${await issuer.mint()}` } })
    assert.equal(ok.status, 200)
    assert.deepEqual(await ok.json(), { task: 'task-1' })
    const none = await app.request(MCP_URL, { method: 'POST' })
    assert.equal(none.status, 401)
    assert.match(none.headers.get('www-authenticate')!, /^Bearer scope="notes:read", resource_metadata=/)
    const meta = await app.request('https://mcp.test.example/.well-known/oauth-protected-resource/mcp')
    assert.equal(meta.status, 200)
    assert.equal(((await meta.json()) as { resource: string }).resource, RESOURCE)
  })

  it('node/express middleware: DPoP over real HTTP (htu is the URL the client called), req.auth set', async () => {
    const mw = createNodeMiddleware(v)
    const server = createServer((req, res) => mw(req, res, () => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify((req as { auth?: TaskAuthInfo }).auth?.extra))
    }))
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`
    try {
      const key = await dpopKey()
      const token = await issuer.mint({ cnf: { jkt: key.jkt } })
      const ok = await fetch(url, { method: 'POST', headers: { authorization: `DPoP ${token}`, dpop: await proof(key, clock, { token, htu: url }) } })
      assert.equal(ok.status, 200)
      assert.deepEqual(((await ok.json()) as { cnf: unknown }).cnf, { jkt: key.jkt })
      const asBearer = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
      assert.equal(asBearer.status, 401)
      assert.match(asBearer.headers.get('www-authenticate')!, /^Bearer error="invalid_token", error_description="token is DPoP-bound/)
      const h = new Headers()
      h.append('authorization', `Bearer ${token}`)
      h.append('authorization', `Bearer ${token}`)
      assert.equal((await fetch(url, { method: 'POST', headers: h })).status, 400)
    } finally {
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    }
  })
})

// ---------------------------------------------------------------------------------------------
// Revocation against a real broker.

/** The real clock plus an offset the test can move (the verifier's injected clock). */
function offsetClock(): Clock & { advance(seconds: number): void } {
  let offsetMs = 0
  return {
    now: () => Math.floor((Date.now() + offsetMs) / 1000),
    nowMs: () => Date.now() + offsetMs,
    advance: (s) => { offsetMs += s * 1000 },
  }
}

const realClock: Clock = { now: () => Math.floor(Date.now() / 1000), nowMs: () => Date.now() }

/**
 * A broker on a real port whose connections the test controls: `down()` answers 503 and cuts
 * every open connection (the SSE stream included), `restart()` opens a new broker process on the
 * same database behind the same port.
 */
async function startBroker(opts: { file?: boolean; config?: (c: ConfigInput) => ConfigInput } = {}) {
  let handler: (r: Request) => Response | Promise<Response> = () => new Response(null, { status: 503 })
  const server = serve({ fetch: (r: Request) => handler(r), hostname: '127.0.0.1', port: 0 }) as HttpServer
  await new Promise<void>((r) => server.once('listening', () => r()))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const dir = mkdtempSync(join(tmpdir(), 'taskpass-verifier-'))
  const kek = randomBytes(32).toString('base64url')
  const dbFile = join(dir, 'broker.db')
  const configure = opts.config ?? ((c: ConfigInput) => c)
  const create = () => createTestBroker({ issuer: url, clock: realClock, config: (c) => configure(opts.file ? { ...c, database: dbFile, keys: { kek } } : c) })
  let b = await create()
  let isUp = true
  handler = (r) => b.app.fetch(r)
  return {
    url,
    get b(): TestBroker { return b },
    /** Stops answering: 503 for new requests, every open connection cut. */
    down() {
      handler = () => new Response(null, { status: 503 })
      server.closeAllConnections()
    },
    async restart() {
      this.down()
      await b.close()
      b = await create()
      handler = (r) => b.app.fetch(r)
    },
    /** Copies the database file as it is now (an operator's backup). */
    async backup(): Promise<string> {
      const copy = join(dir, `backup-${randomUUID()}.db`)
      await b.deps.database.sqlite.backup(copy)
      return copy
    },
    /** Stops the broker, puts `copy` back in place of its database, and starts it again. */
    async restore(copy: string) {
      this.down()
      await b.close()
      for (const f of [`${dbFile}-wal`, `${dbFile}-shm`]) rmSync(f, { force: true })
      copyFileSync(copy, dbFile)
      b = await create()
      handler = (r) => b.app.fetch(r)
    },
    /** Serves everything but polls (to see a stream-only verifier after a reset). */
    refusePolls() {
      handler = (r) => ((r.headers.get('accept') ?? '').includes('text/event-stream') ? b.app.fetch(r) : new Response(null, { status: 503 }))
      server.closeAllConnections()
    },
    /** Serves everything again. */
    serveAll() {
      handler = (r) => b.app.fetch(r)
    },
    /** Serves everything but the SSE stream (to exercise the polling fallback). */
    refuseStreams() {
      handler = (r) => ((r.headers.get('accept') ?? '').includes('text/event-stream') ? new Response(null, { status: 503 }) : b.app.fetch(r))
      server.closeAllConnections()
    },
    async close() {
      if (!isUp) return
      isUp = false
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
      await b.close()
    },
  }
}

type Broker = Awaited<ReturnType<typeof startBroker>>

function feedVerifier(broker: Broker, clock: Clock, extra: { staleAfterSeconds?: number; pollIntervalMs?: number } = {}, onEvent?: (id: string) => void) {
  return createTaskTokenVerifier({
    issuer: broker.url,
    resource: NOTES,
    dpop: 'allowed',
    clock,
    revocation: {
      mode: 'feed',
      feedUrl: `${broker.url}/revocations`,
      credentials: { clientId: 'notes-mcp', clientSecret: NOTES_SECRET },
      staleAfterSeconds: extra.staleAfterSeconds ?? 30,
      pollIntervalMs: extra.pollIntervalMs ?? 100,
      ...(onEvent ? { onEvent: (e) => onEvent(e.id) } : {}),
    },
  })
}

/** Retries `fn` every 10 ms until it stops throwing or `ms` pass. */
async function eventually<T>(fn: () => Promise<T>, ms = 2000): Promise<T> {
  const until = Date.now() + ms
  for (;;) {
    try {
      return await fn()
    } catch (e) {
      if (Date.now() > until) throw e
      await new Promise((r) => setTimeout(r, 10))
    }
  }
}

async function exchangeIn(b: TestBroker, taskId?: string) {
  const res = await b.exchange(taskId ? { task_id: taskId } : {})
  assert.equal(res.status, 200)
  return (await res.json()) as { access_token: string; task_id: string }
}

async function newTask(b: TestBroker): Promise<string> {
  const res = await openTask(b, { purpose: 'verifier test', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })
  assert.equal(res.status, 201)
  return ((await res.json()) as { task_id: string }).task_id
}

describe('verifier: revocation feed (Appendix C step 7)', () => {
  let broker: Broker
  let v: TaskTokenVerifier | undefined
  afterEach(async () => {
    await v?.close()
    v = undefined
    await broker.close()
  })

  it('refuses a revoked jti; the task\'s other tokens stay valid', async () => {
    broker = await startBroker()
    v = feedVerifier(broker, realClock)
    await v.ready()
    const taskId = await newTask(broker.b)
    const first = await exchangeIn(broker.b, taskId)
    const second = await exchangeIn(broker.b, taskId)
    await v.verifyAccessToken(first.access_token)
    const res = await broker.b.post('/revoke', { token: first.access_token }, { authorization: `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}` })
    assert.equal(res.status, 200)
    const err = await eventually(() => rejected(v!.verifyAccessToken(first.access_token), 'invalid_token'), 1000)
    assert.equal(err.description, 'token has been revoked')
    await v.verifyAccessToken(second.access_token)
  })

  it('refuses every token of a completed task, within a second', async () => {
    broker = await startBroker()
    v = feedVerifier(broker, realClock)
    await v.ready()
    const taskId = await newTask(broker.b)
    const tokens = [await exchangeIn(broker.b, taskId), await exchangeIn(broker.b, taskId)]
    const other = await exchangeIn(broker.b)
    for (const t of tokens) await v.verifyAccessToken(t.access_token)
    const t0 = Date.now()
    const done = await broker.b.app.request(`/tasks/${taskId}/complete`, { method: 'POST', headers: { 'actor-token': await broker.b.svid('a') } })
    assert.equal(done.status, 200)
    await eventually(() => rejected(v!.verifyAccessToken(tokens[0]!.access_token), 'invalid_token'), 1000)
    assert.ok(Date.now() - t0 < 1000)
    await rejected(v.verifyAccessToken(tokens[1]!.access_token), 'invalid_token')
    // A token of another task is unaffected.
    await v.verifyAccessToken(other.access_token)
  })

  it('fails closed once the feed is stale (broker unreachable, verifier clock advanced)', async () => {
    broker = await startBroker()
    const clock = offsetClock()
    v = feedVerifier(broker, clock, { staleAfterSeconds: 10 })
    await v.ready()
    const { access_token } = await exchangeIn(broker.b)
    await v.verifyAccessToken(access_token)
    broker.down()
    // Within the bound the deny-set is still trusted.
    clock.advance(5)
    await v.verifyAccessToken(access_token)
    clock.advance(6)
    const err = await rejected(v.verifyAccessToken(access_token), 'invalid_token', 401)
    assert.equal(err.description, 'token status cannot be checked right now')
    assert.equal(v.revocationStatus().feed?.fresh, false)
  })

  it('before its first sync the verifier refuses everything (fail closed)', async () => {
    broker = await startBroker()
    broker.down()
    v = feedVerifier(broker, realClock)
    const { access_token } = await exchangeIn(broker.b)
    await rejected(v.verifyAccessToken(access_token), 'invalid_token')
    await assert.rejects(v.ready(300), /not reachable/)
  })

  it('falls back to polling when the stream is unavailable', async () => {
    broker = await startBroker()
    broker.refuseStreams()
    v = feedVerifier(broker, realClock, { pollIntervalMs: 100 })
    await v.ready()
    const { access_token, task_id } = await exchangeIn(broker.b)
    await v.verifyAccessToken(access_token)
    await broker.b.app.request(`/tasks/${task_id}/revoke`, { method: 'POST', headers: { 'actor-token': await broker.b.svid('a') } })
    await eventually(() => rejected(v!.verifyAccessToken(access_token), 'invalid_token'), 1000)
    assert.equal(v.revocationStatus().feed?.streaming, false)
  })

  it('resumes from its cursor across a broker restart and loses no event', async () => {
    broker = await startBroker({ file: true })
    const seen: string[] = []
    // Polling is slowed to a minute, so the catch-up after the restart has to come through the
    // stream, resumed with Last-Event-ID = the verifier's cursor.
    v = feedVerifier(broker, realClock, { pollIntervalMs: 60_000 }, (id) => seen.push(id))
    await v.ready()
    const a = await exchangeIn(broker.b)
    await broker.b.app.request(`/tasks/${a.task_id}/revoke`, { method: 'POST', headers: { 'actor-token': await broker.b.svid('a') } })
    await eventually(() => rejected(v!.verifyAccessToken(a.access_token), 'invalid_token'), 1000)
    await eventually(async () => assert.equal(v!.revocationStatus().feed?.streaming, true), 1000)

    // The stream is cut; two tasks end while the verifier is disconnected; the broker restarts.
    broker.down()
    const b1 = await exchangeIn(broker.b)
    const c1 = await exchangeIn(broker.b)
    for (const t of [b1, c1]) await broker.b.app.request(`/tasks/${t.task_id}/complete`, { method: 'POST', headers: { 'actor-token': await broker.b.svid('a') } })
    await broker.restart()

    await eventually(() => rejected(v!.verifyAccessToken(c1.access_token), 'invalid_token'), 3000)
    await rejected(v.verifyAccessToken(b1.access_token), 'invalid_token')
    assert.deepEqual(seen, ['1', '2', '3'])
    assert.equal(v.revocationStatus().feed?.cursor, '3')
    // And it streams again: a new revocation arrives without polling's delay.
    await eventually(async () => assert.equal(v!.revocationStatus().feed?.streaming, true), 3000)
    const d = await exchangeIn(broker.b)
    await v.verifyAccessToken(d.access_token)
    await broker.b.app.request(`/tasks/${d.task_id}/revoke`, { method: 'POST', headers: { 'actor-token': await broker.b.svid('a') } })
    await eventually(() => rejected(v!.verifyAccessToken(d.access_token), 'invalid_token'), 1000)
    assert.deepEqual(seen, ['1', '2', '3', '4'])
  })
})

const notesBasic = `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}`

async function endTask(b: TestBroker, taskId: string, how: 'complete' | 'revoke' = 'revoke') {
  const res = await b.app.request(`/tasks/${taskId}/${how}`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
  assert.equal(res.status, 200)
}

const OTHER_IDP = 'https://other-idp.test.example'

/** A second subject issuer whose user ids overlap the first one's ("alice" at both). */
function withSecondIssuer(c: ConfigInput, jwk: JWK): ConfigInput {
  // Two IdPs: each needs its own subjectPrefix, so the tokens' `sub` differ too.
  return { ...c, subjectIssuers: [...(c.subjectIssuers ?? []).map((i) => ({ ...i, subjectPrefix: 'corp:' })), { issuer: OTHER_IDP, subjectPrefix: 'other:', jwks: { keys: [jwk as Record<string, unknown>] }, algorithms: ['ES256'] }] }
}

describe('verifier: feed resets (epoch and head)', () => {
  let broker: Broker
  let v: TaskTokenVerifier | undefined
  afterEach(async () => {
    await v?.close()
    v = undefined
    await broker.close()
  })

  it('a broker restarted on a new database: ids start again, the verifier notices the new epoch and reads the feed again', async () => {
    broker = await startBroker()
    const seen: string[] = []
    v = feedVerifier(broker, realClock, {}, (id) => seen.push(id))
    await v.ready()
    const gone = await exchangeIn(broker.b)
    await v.verifyAccessToken(gone.access_token)
    await endTask(broker.b, gone.task_id)
    for (let i = 0; i < 2; i++) await endTask(broker.b, (await exchangeIn(broker.b)).task_id)
    await eventually(async () => assert.equal(v!.revocationStatus().feed?.cursor, '3'), 1000)
    const epoch = v.revocationStatus().feed?.epoch
    assert.equal(typeof epoch, 'string')

    await broker.restart()
    // The new database's first event has id 1, below the verifier's cursor.
    const next = await exchangeIn(broker.b)
    await endTask(broker.b, next.task_id)
    await eventually(async () => assert.deepEqual(seen, ['1', '2', '3', '1']), 3000)
    const feed = v.revocationStatus().feed!
    assert.notEqual(feed.epoch, epoch)
    assert.equal(feed.cursor, '1')
    await eventually(async () => assert.equal(v!.revocationStatus().feed?.fresh, true), 1000)
    // The deny-set was kept: a token revoked before the reset stays refused.
    assert.equal((await rejected(v.verifyAccessToken(gone.access_token), 'invalid_token')).description, 'token has been revoked')
  })

  it('an older copy of the database restored: same epoch, head below the cursor — the verifier reads the feed again and applies the new events', { skip: sqliteOnly('restores a copy of the SQLite database file') }, async () => {
    broker = await startBroker({ file: true })
    v = feedVerifier(broker, realClock)
    await v.ready()
    const a = await exchangeIn(broker.b)
    await endTask(broker.b, a.task_id)
    await eventually(async () => assert.equal(v!.revocationStatus().feed?.cursor, '1'), 1000)
    const copy = await broker.backup()
    // After the backup: two more tasks end (ids 2 and 3), then the copy is restored.
    const lost = await exchangeIn(broker.b)
    await v.verifyAccessToken(lost.access_token)
    await endTask(broker.b, lost.task_id)
    await endTask(broker.b, (await exchangeIn(broker.b)).task_id)
    await eventually(async () => assert.equal(v!.revocationStatus().feed?.cursor, '3'), 1000)
    const epoch = v.revocationStatus().feed?.epoch
    await broker.restore(copy)

    // On the restored database the next event has id 2 again.
    const d = await exchangeIn(broker.b)
    await eventually(() => v!.verifyAccessToken(d.access_token), 3000)
    await endTask(broker.b, d.task_id)
    assert.equal(((await (await broker.b.app.request('/revocations?after=1', { headers: { authorization: notesBasic } })).json()) as { events: { id: string }[] }).events[0]?.id, '2')
    // (Refused at first as not fresh while the feed is read again, then as revoked.)
    await eventually(async () => assert.equal((await rejected(v!.verifyAccessToken(d.access_token), 'invalid_token')).description, 'token has been revoked'), 3000)
    assert.equal(v.revocationStatus().feed?.epoch, epoch)
    assert.equal(v.revocationStatus().feed?.cursor, '2')
    // What the verifier learned from the lost history stays denied.
    await rejected(v.verifyAccessToken(lost.access_token), 'invalid_token')
  })

  it('after a reset the verifier refuses every token until it has read the feed again (fail closed)', { skip: sqliteOnly('restores a copy of the SQLite database file') }, async () => {
    broker = await startBroker({ file: true })
    v = feedVerifier(broker, realClock)
    await v.ready()
    const keep = await exchangeIn(broker.b)
    await v.verifyAccessToken(keep.access_token)
    const copy = await broker.backup()
    for (let i = 0; i < 2; i++) await endTask(broker.b, (await exchangeIn(broker.b)).task_id)
    await eventually(async () => assert.equal(v!.revocationStatus().feed?.cursor, '2'), 1000)
    await broker.restore(copy)
    // Streams are served, polls are not: the stream's ready event shows the head went back.
    broker.refusePolls()
    await eventually(async () => assert.equal(v!.revocationStatus().feed?.resyncing, true), 3000)
    assert.equal(v.revocationStatus().feed?.fresh, false)
    const err = await rejected(v.verifyAccessToken(keep.access_token), 'invalid_token', 401)
    assert.equal(err.description, 'token status cannot be checked right now')
    broker.serveAll()
    await eventually(() => v!.verifyAccessToken(keep.access_token), 3000)
    assert.deepEqual([v.revocationStatus().feed?.resyncing, v.revocationStatus().feed?.fresh], [false, true])
  })
})

describe('verifier: users of two subject issuers', () => {
  let broker: Broker
  let v: TaskTokenVerifier | undefined
  afterEach(async () => {
    await v?.close()
    v = undefined
    await broker.close()
  })

  it('revoking one "alice"\'s session denies only her tokens, not those of the "alice" of another issuer', async () => {
    const keys = await testKeys()
    broker = await startBroker({ config: (c) => withSecondIssuer(c, keys.untrustedUser.publicJwk) })
    v = feedVerifier(broker, realClock)
    await v.ready()
    // Both users are "alice" with a session "sess-1", each at her own issuer.
    const first = await exchangeIn(broker.b)
    const otherSession = await broker.b.session({ iss: OTHER_IDP }, { key: keys.untrustedUser })
    const res = await broker.b.post('/token', (await exchangeParams(broker.b, { subject_token: otherSession })) as Record<string, string>)
    assert.equal(res.status, 200)
    const second = (await res.json()) as { access_token: string; task_id: string }
    const a1 = await v.verifyAccessToken(first.access_token)
    const a2 = await v.verifyAccessToken(second.access_token)
    assert.deepEqual(a1.extra.sub_id, { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' })
    assert.deepEqual(a2.extra.sub_id, { format: 'iss_sub', iss: OTHER_IDP, sub: 'alice' })
    assert.equal(a1.extra.sid, a2.extra.sid)

    // The session entry is keyed by (subject issuer, sid): the same sid at another issuer is another session.
    const revoked = await broker.b.app.request('/admin/sessions/revoke', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ issuer: USER_ISSUER, sid: 'sess-1' }) })
    assert.equal(revoked.status, 200)
    await eventually(async () => assert.equal(v!.revocationStatus().feed?.denied.sessions, 1), 1000)
    await rejected(v.verifyAccessToken(first.access_token), 'invalid_token')
    // The other issuer's alice, same sid, is unaffected.
    await v.verifyAccessToken(second.access_token)
  })
})

describe('verifier: key revocation through the feed', () => {
  let broker: Broker
  let v: TaskTokenVerifier | undefined
  afterEach(async () => {
    await v?.close()
    v = undefined
    await broker.close()
  })

  it('a key_revoked event: tokens signed by that key are refused at once, cached or not, and the key is not taken back from the JWKS', async () => {
    broker = await startBroker()
    const clock = offsetClock()
    v = feedVerifier(broker, clock)
    await v.ready()
    const t = await exchangeIn(broker.b)
    await v.verifyAccessToken(t.access_token)
    const { kid } = decodeProtectedHeader(t.access_token)
    assert.equal(typeof kid, 'string')
    const now = Math.floor(Date.now() / 1000)
    await broker.b.deps.stores.revocations.insert({ at: now, kind: 'key_revoked', kid, relevantUntil: now + 900, audiences: [NOTES, CALENDAR, UNGRANTED] })
    // The cached token is refused within the feed's latency.
    const err = await eventually(() => rejected(v!.verifyAccessToken(t.access_token), 'invalid_token'), 1000)
    assert.equal(err.description, 'token is signed with a revoked key')
    assert.equal(v.revocationStatus().feed?.denied.keys, 1)
    // A new token by the same key, which the broker still publishes: refused too.
    const again = await exchangeIn(broker.b)
    assert.equal(decodeProtectedHeader(again.access_token).kid, kid)
    assert.equal((await rejected(v.verifyAccessToken(again.access_token), 'invalid_token')).description, 'token is signed with a revoked key')
    // Past the JWKS max-age (the key set is fetched again, with the key in it): still refused.
    clock.advance(301)
    const later = await exchangeIn(broker.b)
    assert.equal((await rejected(v.verifyAccessToken(later.access_token), 'invalid_token')).description, 'token is signed with a revoked key')
  })
})

describe('verifier: introspection mode', () => {
  it('refuses a token at once after its task ends; status unknown → fail closed', async () => {
    const broker = await startBroker()
    const v = createTaskTokenVerifier({
      issuer: broker.url,
      resource: NOTES,
      dpop: 'off',
      revocation: { mode: 'introspection', introspectionUrl: `${broker.url}/introspect`, credentials: { clientId: 'notes-mcp', clientSecret: NOTES_SECRET } },
    })
    try {
      const { access_token, task_id } = await exchangeIn(broker.b)
      await v.verifyAccessToken(access_token)
      await broker.b.app.request(`/tasks/${task_id}/complete`, { method: 'POST', headers: { 'actor-token': await broker.b.svid('a') } })
      assert.equal((await rejected(v.verifyAccessToken(access_token), 'invalid_token')).description, 'token is not active')
      const other = await exchangeIn(broker.b)
      broker.down()
      assert.equal((await rejected(v.verifyAccessToken(other.access_token), 'invalid_token')).description, 'token status cannot be checked right now')
    } finally {
      await v.close()
      await broker.close()
    }
  })
})

describe('verifier: JWKS fetching while the broker fails', () => {
  it('forged tokens with unknown kids cause at most one fetch per cooldown after a failure, not one each', async () => {
    const clock = createFixedClock(1_800_000_000)
    const { publicKey } = await generateKeyPair('ES256')
    const good = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }
    let failing = false
    let fetches = 0
    const reports: Error[] = []
    const fetchImpl = (async () => {
      fetches++
      return failing ? new Response('down', { status: 503 }) : Response.json({ keys: [good] }, { headers: { 'cache-control': 'max-age=300' } })
    }) as typeof fetch
    const set = createVerifierKeySet(new URL('https://broker.test.example/.well-known/jwks.json'), { clock, fetch: fetchImpl, timeoutMs: 1000, cooldownMs: 30_000, onError: (e) => reports.push(e) })
    await set.getKey({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' })
    assert.equal(fetches, 1)
    failing = true
    clock.advance(31) // past the cooldown: the first unknown kid may refetch
    for (let i = 0; i < 50; i++) await assert.rejects(set.getKey({ alg: 'ES256', kid: `forged-${i}` }, { payload: '', signature: '' }))
    assert.equal(fetches, 2, 'one refetch, then the failure holds for the cooldown')
    assert.equal(reports.length, 1)
    clock.advance(31)
    failing = false
    await assert.rejects(set.getKey({ alg: 'ES256', kid: 'forged-x' }, { payload: '', signature: '' }))
    assert.equal(fetches, 3, 'after the cooldown it tries again')
  })
})

// ---------------------------------------------------------------------------------------------
// Tool-call authorization through the broker's AuthZEN PDP (docs/authzen.md).

describe('verifier: authorize (the PDP client and its decision cache)', () => {
  const PDP = 'https://broker.test.example/access/v1/evaluation'
  const CREDENTIALS = { clientId: 'notes-mcp', clientSecret: 'pdp secret' }
  const auth = (jti: string, extra: Record<string, unknown> = {}) =>
    ({ token: `token-of-${jti}`, extra: { jti, task_id: `task-of-${jti}`, sid: 'sess-1', sub_id: { format: 'iss_sub' as const, iss: USER_ISSUER, sub: 'alice' }, sub: 'alice', act: { sub: 'agent-a' }, ...extra } }) as unknown as TaskAuthInfo

  /** A verifier whose PDP is a function: every request it was sent, and what it answers. */
  function withPdp(answer: (body: Record<string, unknown>) => Response | Promise<Response>, opts: { cacheMs?: number; cacheMaxEntries?: number } = {}) {
    const clock = createFixedClock(1_800_000_000)
    const requests: { url: string; headers: Headers; body: Record<string, unknown> }[] = []
    const errors: Error[] = []
    const fetchPdp = (async (url: string | URL | Request, init?: RequestInit) => {
      const body = JSON.parse(String(init?.body)) as Record<string, unknown>
      requests.push({ url: String(url), headers: new Headers(init?.headers), body })
      return answer(body)
    }) as typeof fetch
    const verifier = createTaskTokenVerifier({
      issuer: 'https://broker.test.example',
      resource: RESOURCE,
      dpop: 'off',
      clock,
      revocation: { mode: 'none' },
      authorization: { credentials: CREDENTIALS, ...opts },
      fetch: fetchPdp,
      onError: (e) => errors.push(e),
    })
    return { verifier, clock, requests, errors }
  }
  const permit = () => Response.json({ decision: true, context: { reason: 'permitted' } })

  it('asks POST <issuer>/access/v1/evaluation with the resource credential, subject task_token, action tools/call, resource tool', async () => {
    const { verifier, requests } = withPdp(permit)
    assert.deepEqual(await verifier.authorize(auth('j1'), { tool: 'read_note', arguments: { name: 'todo' } }), { allowed: true, reason: 'permitted' })
    assert.equal(requests.length, 1)
    const [req] = requests
    assert.equal(req!.url, PDP)
    assert.equal(req!.headers.get('authorization'), `Basic ${Buffer.from('notes-mcp:pdp+secret').toString('base64')}`)
    assert.equal(req!.headers.get('content-type'), 'application/json')
    assert.match(String(req!.headers.get('x-request-id')), /^[0-9a-f-]{36}$/)
    assert.deepEqual(req!.body, { subject: { type: 'task_token', id: 'token-of-j1' }, action: { name: 'tools/call' }, resource: { type: 'tool', id: 'read_note' }, context: { arguments: { name: 'todo' } } })
  })

  it('arguments beyond the PDP bounds are left out of the question (they are never evaluated), not refused for their size', async () => {
    const { verifier, requests } = withPdp(permit, { cacheMs: 0 })
    const deep = JSON.parse('{"a":'.repeat(20) + '1' + '}'.repeat(20)) as Record<string, unknown>
    for (const args of [{ text: 'x'.repeat(5000) }, deep]) {
      assert.deepEqual(await verifier.authorize(auth('j1'), { tool: 'write_note', arguments: args }), { allowed: true, reason: 'permitted' })
      assert.deepEqual(requests.at(-1)!.body.context, {})
    }
    await verifier.authorize(auth('j1'), { tool: 'write_note', arguments: { text: 'short' } })
    assert.deepEqual(requests.at(-1)!.body.context, { arguments: { text: 'short' } })
  })

  it('a deny is {allowed: false} with the PDP reason', async () => {
    const { verifier } = withPdp(() => Response.json({ decision: false, context: { reason: 'tool_not_in_task' } }))
    assert.deepEqual(await verifier.authorize(auth('j1'), { tool: 'delete_note' }), { allowed: false, reason: 'tool_not_in_task' })
  })

  it('caches per (jti, tool) and the answer expires with the injected clock', async () => {
    const { verifier, clock, requests } = withPdp(permit, { cacheMs: 2000 })
    await verifier.authorize(auth('j1'), { tool: 'read_note' })
    await verifier.authorize(auth('j1'), { tool: 'read_note', arguments: { other: 'args' } })
    assert.equal(requests.length, 1, 'same token and tool: from the cache (arguments are not evaluated)')
    await verifier.authorize(auth('j1'), { tool: 'write_note' })
    await verifier.authorize(auth('j2'), { tool: 'read_note' })
    assert.equal(requests.length, 3, 'another tool or another token: asked')
    clock.advance(1.999)
    await verifier.authorize(auth('j1'), { tool: 'read_note' })
    assert.equal(requests.length, 3, 'still fresh just before cacheMs')
    clock.advance(0.001)
    await verifier.authorize(auth('j1'), { tool: 'read_note' })
    assert.equal(requests.length, 4, 'asked again once cacheMs has passed')
  })

  it('cacheMs 0 asks every time; concurrent questions about one (jti, tool) share one request', async () => {
    const { verifier, requests } = withPdp(permit, { cacheMs: 0 })
    await verifier.authorize(auth('j1'), { tool: 'read_note' })
    await verifier.authorize(auth('j1'), { tool: 'read_note' })
    assert.equal(requests.length, 2)
    await Promise.all([verifier.authorize(auth('j1'), { tool: 'read_note' }), verifier.authorize(auth('j1'), { tool: 'read_note' })])
    assert.equal(requests.length, 3)
  })

  it('is bounded: beyond cacheMaxEntries the least recently used answer goes first', async () => {
    const { verifier, requests } = withPdp(permit, { cacheMaxEntries: 2 })
    await verifier.authorize(auth('j1'), { tool: 'a' })
    await verifier.authorize(auth('j1'), { tool: 'b' })
    await verifier.authorize(auth('j1'), { tool: 'a' }) // a is now the most recent
    await verifier.authorize(auth('j1'), { tool: 'c' }) // evicts b
    assert.equal(requests.length, 3)
    await verifier.authorize(auth('j1'), { tool: 'a' })
    assert.equal(requests.length, 3, 'a kept')
    await verifier.authorize(auth('j1'), { tool: 'b' })
    assert.equal(requests.length, 4, 'b was evicted')
  })

  it('fails closed: an unreachable, failing or confused PDP is a deny, reported and never cached', async () => {
    const answers: (() => Response)[] = [
      () => { throw new TypeError('fetch failed') },
      () => new Response('oops', { status: 500 }),
      () => Response.json({ error: 'invalid_client' }, { status: 401 }),
      () => new Response('not json', { status: 200 }),
      () => Response.json({ decision: 'yes' }),
      () => Response.json(null),
      () => new Response(null, { status: 302, headers: { location: 'https://elsewhere.example/' } }),
      // Only a 200 is an answer, whatever the body says.
      () => Response.json({ decision: true }, { status: 201 }),
      () => Response.json({ decision: true }, { status: 403 }),
    ]
    for (const [i, answer] of answers.entries()) {
      const { verifier, requests, errors } = withPdp(answer)
      assert.deepEqual(await verifier.authorize(auth('j1'), { tool: 'read_note' }), { allowed: false, reason: 'pdp_unavailable' }, `answer ${i}`)
      assert.equal(errors.length, 1, `answer ${i} is reported`)
      await verifier.authorize(auth('j1'), { tool: 'read_note' })
      assert.equal(requests.length, 2, `answer ${i} is not cached`)
    }
  })

  it('refuses without asking: a tool name MCP does not allow, an identity without jti', async () => {
    const { verifier, requests } = withPdp(permit)
    assert.deepEqual(await verifier.authorize(auth('j1'), { tool: 'bad name' }), { allowed: false, reason: 'invalid_tool_name' })
    assert.deepEqual(await verifier.authorize({ token: 't' } as unknown as TaskAuthInfo, { tool: 'read_note' }), { allowed: false, reason: 'no_token' })
    assert.equal(requests.length, 0)
  })

  it('without any credential for the PDP, authorize is a misuse (TypeError); the options are checked', async () => {
    const v = createTaskTokenVerifier({ issuer: 'https://as.example', resource: RESOURCE, dpop: 'off', revocation: { mode: 'none' } })
    await assert.rejects(v.authorize(auth('j1'), { tool: 'read_note' }), TypeError)
    const base: TaskTokenVerifierOptions = { issuer: 'https://as.example', resource: RESOURCE, dpop: 'off', revocation: { mode: 'none' } }
    for (const [authorization, message] of [
      [{ cacheMs: 5001 }, /"authorization\.cacheMs"/],
      [{ cacheMaxEntries: 0 }, /"authorization\.cacheMaxEntries"/],
      [{ evaluationUrl: 'nope' }, /"authorization\.evaluationUrl"/],
      [{ credentials: { clientId: 'x' } }, /"authorization\.credentials"/],
      [{ timeoutMs: 1 }, /"authorization\.timeoutMs"/],
    ] as const) {
      assert.throws(() => createTaskTokenVerifier({ ...base, authorization: authorization as never }), message)
    }
  })

  it('a revocation event drops the cached answers of its token, task or session; a key revocation drops all', () => {
    const clock = createFixedClock(1_800_000_000)
    const cache = createDecisionCache({ ttlMs: 5000, maxEntries: 100, clock })
    const yes = { allowed: true }
    const fill = () => {
      for (const jti of ['j1', 'j2', 'j3']) cache.set(auth(jti), 'read_note', yes)
      cache.set(auth('j4', { sid: 'sess-2' }), 'read_note', yes)
    }
    fill()
    cache.forget({ type: 'token_revoked', jti: 'j1' })
    assert.equal(cache.get('j1', 'read_note'), undefined)
    assert.deepEqual(cache.get('j2', 'read_note'), yes)
    cache.forget({ type: 'task_completed', task_id: 'task-of-j2' })
    assert.equal(cache.get('j2', 'read_note'), undefined)
    assert.deepEqual(cache.get('j3', 'read_note'), yes)
    cache.forget({ type: 'session_revoked', sid: 'sess-1', sub_id: { format: 'iss_sub', iss: 'https://other-idp.example', sub: 'alice' } })
    assert.deepEqual(cache.get('j3', 'read_note'), yes, "another issuer's session of the same id is not this one")
    cache.forget({ type: 'session_revoked', sid: 'sess-1', sub_id: { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' } })
    assert.equal(cache.get('j3', 'read_note'), undefined)
    assert.deepEqual(cache.get('j4', 'read_note'), yes)
    cache.forget({ type: 'key_revoked' })
    assert.equal(cache.size, 0)
  })

  it('an answer that was in flight when a revocation event arrived is not cached (it may predate the revocation)', async () => {
    const clock = createFixedClock(1_800_000_000)
    const cache = createDecisionCache({ ttlMs: 5000, maxEntries: 100, clock })
    let release!: () => void
    const answered = new Promise<void>((r) => (release = r))
    let asked = 0
    const pdp = createPdpClient({
      evaluationUrl: 'http://127.0.0.1:9/access/v1/evaluation',
      credentials: { clientId: 'notes-mcp', clientSecret: 's' },
      timeoutMs: 1000,
      cache,
      fetch: (async () => {
        asked++
        await answered
        return new Response(JSON.stringify({ decision: true }), { status: 200, headers: { 'content-type': 'application/json' } })
      }) as typeof fetch,
    })
    const inFlight = pdp.authorize(auth('j1'), { tool: 'read_note' })
    cache.forget({ type: 'task_revoked', task_id: 'task-of-j1' })
    release()
    assert.deepEqual(await inFlight, { allowed: true }, 'the answer is returned to the call that asked')
    assert.equal(cache.get('j1', 'read_note'), undefined, 'but not kept')
    // control: with no event in between, the answer is kept
    await pdp.authorize(auth('j2'), { tool: 'read_note' })
    assert.deepEqual(cache.get('j2', 'read_note'), { allowed: true })
    assert.equal(asked, 2)
  })

  it('against a real broker (feed mode, its credential reused): permitted, then denied once the token is revoked, before the cache would expire', async () => {
    const broker = await startBroker()
    const events: string[] = []
    const v = createTaskTokenVerifier({
      issuer: broker.url,
      resource: NOTES,
      dpop: 'allowed',
      revocation: { mode: 'feed', feedUrl: `${broker.url}/revocations`, credentials: { clientId: 'notes-mcp', clientSecret: NOTES_SECRET }, pollIntervalMs: 100, onEvent: (e) => events.push(e.type) },
      authorization: { cacheMs: 5000 },
    })
    try {
      await v.ready()
      const { access_token: token } = await exchangeIn(broker.b, await newTask(broker.b))
      const info = await v.verifyAccessToken(token)
      assert.deepEqual(await v.authorize(info, { tool: 'read_note' }), { allowed: true, reason: 'permitted' })
      const res = await broker.b.post('/revoke', { token }, { authorization: `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}` })
      assert.equal(res.status, 200)
      await eventually(async () => assert.ok(events.includes("token_revoked"), JSON.stringify(events)), 5000)
      assert.deepEqual(await v.authorize(info, { tool: 'read_note' }), { allowed: false, reason: 'token_revoked' })
    } finally {
      await v.close()
      await broker.close()
    }
  })
})

describe('verifier: tool-call checks (the adapters\' option)', () => {
  const call = (id: number | string, name?: string, args: Record<string, unknown> = {}) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { ...(name !== undefined ? { name } : {}), arguments: args } })
  const authInfo = { token: 't', extra: { jti: 'j1', task_id: 'task-1', sub_id: { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' } } }
  const pdp = { authorize: async (_a: unknown, { tool }: { tool: string }) => (tool.startsWith('ok') ? { allowed: true } : tool === 'down' ? { allowed: false, reason: 'pdp_unavailable' } : { allowed: false, reason: 'policy_denied' }) }

  it('lets through messages without tool calls, and permitted calls', async () => {
    assert.equal(await checkToolCalls(pdp, authInfo, { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }), undefined)
    assert.equal(await checkToolCalls(pdp, authInfo, { jsonrpc: '2.0', method: 'tools/call', params: { name: 'bad' } }), undefined, 'a notification runs nothing')
    assert.equal(await checkToolCalls(pdp, authInfo, call(1, 'ok_tool')), undefined)
    assert.equal(await checkToolCalls(pdp, authInfo, 'not an object'), undefined)
  })

  it('a refused call is a JSON-RPC error naming the tool: -32001 deny, -32603 PDP failure, -32602 no tool name', async () => {
    assert.deepEqual((await checkToolCalls(pdp, authInfo, call(7, 'delete_note')))?.body, {
      jsonrpc: '2.0',
      id: 7,
      error: { code: TOOL_DENIED, message: 'tool "delete_note" is not permitted for this task (policy_denied)', data: { tool: 'delete_note', reason: 'policy_denied' } },
    })
    assert.deepEqual((await checkToolCalls(pdp, authInfo, call('a', 'down')))?.body, {
      jsonrpc: '2.0',
      id: 'a',
      error: { code: TOOL_AUTHORIZATION_FAILED, message: 'tool "down" was not run: its authorization could not be checked', data: { tool: 'down', reason: 'pdp_unavailable' } },
    })
    const throwing = { authorize: () => Promise.reject(new TypeError('no credentials')) }
    assert.equal(((await checkToolCalls(throwing, authInfo, call(1, 'ok_tool')))?.body as { error: { code: number } }).error.code, TOOL_AUTHORIZATION_FAILED, 'fails closed')
    assert.equal(((await checkToolCalls(pdp, authInfo, call(1)))?.body as { error: { code: number } }).error.code, -32602)
    assert.equal((await checkToolCalls(pdp, undefined, call(1, 'ok_tool')))?.decision.reason, 'no_token')
  })

  it('a batch with a refused call runs none of it: every request gets an error', async () => {
    const refusal = await checkToolCalls(pdp, authInfo, [call(1, 'ok_a'), call(2, 'delete_note'), { jsonrpc: '2.0', id: 3, method: 'ping' }, { jsonrpc: '2.0', method: 'notifications/initialized' }])
    const body = refusal?.body as { id: number; error: { code: number; message: string } }[]
    assert.deepEqual(body.map((e) => [e.id, e.error.code]), [[1, TOOL_DENIED], [2, TOOL_DENIED], [3, TOOL_DENIED]])
    assert.match(body[0]!.error.message, /^not run: tool "delete_note" is not permitted/)
    assert.equal(await checkToolCalls(pdp, authInfo, [call(1, 'ok_a'), call(2, 'ok_b')]), undefined)
  })

  describe('createFetchGate / createNodeMiddleware with authorizeToolCalls', () => {
    const clock = createFixedClock(1_800_000_000)
    let issuer: LocalIssuer
    let v: TaskTokenVerifier
    const asked: string[] = []
    before(async () => {
      issuer = await startIssuer(clock)
      const PDP = `${issuer.url}/access/v1/evaluation`
      v = createTaskTokenVerifier({
        issuer: issuer.url,
        resource: RESOURCE,
        dpop: 'off',
        clock,
        revocation: { mode: 'none' },
        authorization: { credentials: { clientId: 'mcp', clientSecret: 's' }, cacheMs: 0 },
        // The PDP is answered here; the JWKS comes from the local issuer.
        fetch: (async (url: string | URL | Request, init?: RequestInit) => {
          if (String(url) !== PDP) return fetch(url, init)
          const tool = (JSON.parse(String(init?.body)) as { resource: { id: string } }).resource.id
          asked.push(tool)
          return Response.json({ decision: tool === 'read_note', context: { reason: tool === 'read_note' ? 'permitted' : 'tool_not_in_task' } })
        }) as typeof fetch,
      })
    })
    after(() => issuer.close())

    it('fetch gate: a permitted call yields the auth info, a refused one a JSON-RPC error response; GETs are not read', async () => {
      const gate = createFetchGate(v, { authorizeToolCalls: true })
      const token = await issuer.mint()
      const post = (body: unknown) => new Request(MCP_URL, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
      const ok = await gate(post(call(1, 'read_note')))
      assert.ok(!(ok instanceof Response))
      const refused = await gate(post(call(2, 'delete_note')))
      assert.ok(refused instanceof Response)
      assert.equal(refused.status, 200)
      assert.deepEqual(await refused.json(), { jsonrpc: '2.0', id: 2, error: { code: -32001, message: 'tool "delete_note" is not permitted for this task (tool_not_in_task)', data: { tool: 'delete_note', reason: 'tool_not_in_task' } } })
      assert.ok(!((await createFetchGate(v)(post(call(3, 'delete_note')))) instanceof Response), 'without the option nothing is asked')
      assert.deepEqual(asked.splice(0), ['read_note', 'delete_note'])
    })

    it('node middleware without a body parser: reads the body, leaves it parsed in req.body, refuses before next()', async () => {
      const mw = createNodeMiddleware(v, { authorizeToolCalls: true })
      const server = createServer((req, res) => mw(req, res, () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ handled: (req as { body?: unknown }).body }))
      }))
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`
      try {
        const token = await issuer.mint()
        const send = (body: unknown) => fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
        const ok = await send(call(1, 'read_note'))
        assert.deepEqual(await ok.json(), { handled: call(1, 'read_note') })
        const refused = await send(call(2, 'delete_note'))
        assert.equal(refused.status, 200)
        assert.equal(((await refused.json()) as { error: { code: number } }).error.code, -32001)
        assert.equal((await send({ pad: 'x'.repeat(4 * 1024 * 1024) })).status, 413)
      } finally {
        server.closeAllConnections()
        await new Promise<void>((r) => server.close(() => r()))
      }
    })
  })
})

describe('verifier: the tools a token names (RFC 9396 mcp_tools authorization details)', () => {
  const tools = (actions: unknown, extra: Record<string, unknown> = {}) => ({ type: 'mcp_tools', actions, ...extra })

  it('reads the actions of the mcp_tools details for this resource; no claim or no mcp_tools detail is scope-only', () => {
    assert.deepEqual(toolsInToken(undefined, RESOURCE), { ok: true, tools: undefined })
    assert.deepEqual(toolsInToken([], RESOURCE), { ok: true, tools: undefined })
    assert.deepEqual(toolsInToken([{ type: 'payment_initiation', actions: [1] }], RESOURCE), { ok: true, tools: undefined }, 'another type is not ours to judge')
    assert.deepEqual(toolsInToken([tools(['read_note', 'search_notes'], { locations: [RESOURCE] })], RESOURCE), { ok: true, tools: ['read_note', 'search_notes'] })
    assert.deepEqual(toolsInToken([tools(['read_note'])], RESOURCE), { ok: true, tools: ['read_note'] }, 'no locations: this resource')
    assert.deepEqual(toolsInToken([tools(['read_note'], { locations: [RESOURCE] }), tools(['read_note', 'x.y-z'])], RESOURCE), { ok: true, tools: ['read_note', 'x.y-z'] })
    assert.deepEqual(toolsInToken([tools(['read_note'], { locations: ['https://other.example/mcp'] })], RESOURCE), { ok: true, tools: [] }, 'tools for another resource only: none here')
  })

  const MALFORMED = [
    ['an object', { type: 'mcp_tools', actions: ['read_note'] }],
    ['a string', 'mcp_tools'],
    ['null', null],
    ['a detail that is not an object', ['mcp_tools']],
    ['a null detail', [null]],
    ['a detail without type', [{ actions: ['read_note'] }]],
    ['a numeric type', [{ type: 7, actions: ['read_note'] }]],
    ['actions missing', [{ type: 'mcp_tools' }]],
    ['actions a string', [tools('read_note')]],
    ['actions with a number', [tools(['read_note', 3])]],
    ['an action that is no MCP tool name', [tools(['read note'])]],
    ['locations a string', [tools(['read_note'], { locations: RESOURCE })]],
    ['locations with a number', [tools(['read_note'], { locations: [RESOURCE, 1] })]],
  ] as const

  it('a malformed claim is not ok: not an array, a detail without a string type, mcp_tools with actions or locations that are not string arrays', () => {
    for (const [name, claim] of MALFORMED) assert.equal(toolsInToken(claim, RESOURCE).ok, false, name)
  })

  describe('through the verifier', () => {
    const clock = createFixedClock(1_800_000_000)
    let issuer: LocalIssuer
    let v: TaskTokenVerifier
    before(async () => {
      issuer = await startIssuer(clock)
      v = createTaskTokenVerifier({ issuer: issuer.url, resource: RESOURCE, dpop: 'off', clock, revocation: { mode: 'none' } })
    })
    after(() => issuer.close())

    it('extra.tools: the token’s tools; absent for a scope-only token', async () => {
      assert.deepEqual((await v.verifyAccessToken(await issuer.mint({ authorization_details: [tools(['read_note'], { locations: [RESOURCE] })] }))).extra.tools, ['read_note'])
      assert.ok(!('tools' in (await v.verifyAccessToken(await issuer.mint())).extra))
      assert.ok(!('tools' in (await v.verifyAccessToken(await issuer.mint({ authorization_details: [] }))).extra))
    })

    it('a malformed authorization_details claim → invalid_token (fail closed)', async () => {
      // (`mint` drops null claims: a null one is covered by the parser's own test.)
      for (const [name, claim] of MALFORMED.filter(([, c]) => c !== null)) {
        const e = await rejected(v.verifyRequest(bearer(await issuer.mint({ authorization_details: claim }))), 'invalid_token', 401)
        assert.equal(e.description, 'token authorization_details claim is malformed', name)
      }
    })

    it('pdpConfigured: false with no credential to use, true with authorization.credentials or revocation credentials to reuse', () => {
      assert.equal(v.pdpConfigured, false)
      const base = { issuer: issuer.url, resource: RESOURCE, dpop: 'off' as const, clock }
      assert.equal(createTaskTokenVerifier({ ...base, revocation: { mode: 'none' }, authorization: { credentials: { clientId: 'mcp', clientSecret: 's' } } }).pdpConfigured, true)
      assert.equal(createTaskTokenVerifier({ ...base, revocation: { mode: 'introspection', introspectionUrl: `${issuer.url}/introspect`, credentials: { clientId: 'mcp', clientSecret: 's' } } }).pdpConfigured, true)
    })
  })
})

describe('verifier: the tool step checks the token’s tools, then the PDP when one is configured', () => {
  const call = (id: number, name: string) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } })
  const auth = (tools?: unknown) => ({ token: 't', extra: { jti: 'j1', task_id: 'task-1', sub_id: { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' }, ...(tools !== undefined ? { tools } : {}) } })
  const pdp = (pdpConfigured?: boolean) => {
    const asked: string[] = []
    return { asked, pdpConfigured, authorize: async (_a: unknown, { tool }: { tool: string }) => (asked.push(tool), { allowed: true, reason: 'permitted' }) }
  }

  it('a tool the token does not name is refused (tool_not_in_token, -32001 naming it) without asking the PDP; one it names is asked', async () => {
    const p = pdp(true)
    const refused = await checkToolCalls(p, auth(['read_note']), call(1, 'write_note'))
    assert.deepEqual(refused?.body, { jsonrpc: '2.0', id: 1, error: { code: TOOL_DENIED, message: 'tool "write_note" is not permitted for this task (tool_not_in_token)', data: { tool: 'write_note', reason: 'tool_not_in_token' } } })
    assert.deepEqual(p.asked, [])
    assert.equal(await checkToolCalls(p, auth(['read_note']), call(2, 'read_note')), undefined)
    assert.deepEqual(p.asked, ['read_note'])
    // An object without pdpConfigured (the kit's older shape) is asked, as before.
    const legacy = pdp(undefined)
    assert.equal(await checkToolCalls(legacy, auth(), call(3, 'anything')), undefined)
    assert.deepEqual(legacy.asked, ['anything'])
  })

  it('no PDP configured: the token’s tools alone decide; a scope-only token may call any tool', async () => {
    const p = pdp(false)
    assert.equal(await checkToolCalls(p, auth(['read_note']), call(1, 'read_note')), undefined)
    assert.equal((await checkToolCalls(p, auth(['read_note']), call(2, 'write_note')))?.decision.reason, 'tool_not_in_token')
    assert.equal(await checkToolCalls(p, auth(), call(3, 'write_note')), undefined)
    assert.deepEqual(p.asked, [])
  })

  it('an extra.tools that is not a list of names refuses every call (it did not come from this kit)', async () => {
    for (const bad of ['read_note', [1], { read_note: true }, null]) assert.equal((await checkToolCalls(pdp(false), auth(bad), call(1, 'read_note')))?.decision.reason, 'tool_not_in_token', JSON.stringify(bad))
  })

  it('a real verifier: no credential → local check only; a configured PDP that cannot be reached → pdp_unavailable (-32603), fail closed', async () => {
    const clock = createFixedClock(1_800_000_000)
    const issuer = await startIssuer(clock)
    try {
      const base = { issuer: issuer.url, resource: RESOURCE, dpop: 'off' as const, clock, revocation: { mode: 'none' as const } }
      const token = await issuer.mint({ authorization_details: [{ type: 'mcp_tools', locations: [RESOURCE], actions: ['read_note'] }] })
      const post = (body: unknown) => new Request(MCP_URL, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
      const local = createFetchGate(createTaskTokenVerifier(base), { authorizeToolCalls: true })
      assert.ok(!((await local(post(call(1, 'read_note')))) instanceof Response), 'no PDP: the token allows it')
      const refused = await local(post(call(2, 'write_note')))
      assert.ok(refused instanceof Response)
      assert.equal(((await refused.json()) as { error: { data: { reason: string } } }).error.data.reason, 'tool_not_in_token')
      // The gate noted the request's tools/list: its respond step narrows the handler's answer.
      const listing = post({ jsonrpc: '2.0', id: 4, method: 'tools/list' })
      assert.ok(!((await local(listing)) instanceof Response))
      const answer = Response.json({ jsonrpc: '2.0', id: 4, result: { tools: [{ name: 'read_note' }, { name: 'write_note' }] } })
      assert.deepEqual(await local.respond(listing, answer).json(), { jsonrpc: '2.0', id: 4, result: { tools: [{ name: 'read_note' }] } })
      const down = createFetchGate(
        createTaskTokenVerifier({ ...base, authorization: { credentials: { clientId: 'mcp', clientSecret: 's' }, evaluationUrl: `${issuer.url}/access/v1/evaluation` } }),
        { authorizeToolCalls: true },
      )
      const unavailable = await down(post(call(3, 'read_note')))
      assert.ok(unavailable instanceof Response)
      assert.equal(((await unavailable.json()) as { error: { code: number } }).error.code, TOOL_AUTHORIZATION_FAILED)
    } finally {
      await issuer.close()
    }
  })
})

describe('verifier: tools/list answers narrowed to the token’s tools', () => {
  const filter = { tools: ['read_note'], ids: [1, 'b'] }
  const list = (id: number | string, names: string[], extra: Record<string, unknown> = {}) => ({ jsonrpc: '2.0', id, result: { tools: names.map((name) => ({ name, inputSchema: { type: 'object' } })), ...extra } })
  const enc = (s: string) => new TextEncoder().encode(s)
  const dec = (b: Uint8Array) => new TextDecoder().decode(b)
  /** Feeds `text` to a fresh rewriter cut at `cut` bytes (and the rest), returns everything it gave back. */
  const rewriteCut = (text: string, cut: number) => {
    const r = createSseRewriter(filter)
    const bytes = enc(text)
    return dec(r.push(bytes.subarray(0, cut))) + dec(r.push(bytes.subarray(cut))) + dec(r.end())
  }

  it('SSE: the data of a response to a tools/list id is rewritten, other fields kept; every other byte passes unchanged, however the stream is cut', () => {
    const other = `: keepalive\r\n\r\nevent: message\r\nid: 7\r\ndata: ${JSON.stringify(list(2, ['write_note']))}\r\n\r\nevent: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\n\n`
    const ours = `event: message\nid: 8\ndata: ${JSON.stringify(list(1, ['read_note', 'write_note'], { nextCursor: 'c2' }))}\n\n`
    const expected = `${other}event: message\nid: 8\ndata: ${JSON.stringify(list(1, ['read_note'], { nextCursor: 'c2' }))}\n\n`
    for (let cut = 0; cut <= other.length + ours.length; cut++) assert.equal(rewriteCut(other + ours, cut), expected, `cut at ${cut}`)
    // Multi-line data and CR line ends are read as SSE defines them.
    const json = JSON.stringify(list('b', ['write_note', 'read_note']), null, 1)
    const multi = `data: ${json.split('\n').join('\rdata: ')}\r\r`
    assert.equal(rewriteCut(multi, 5), `data: ${JSON.stringify(list('b', ['read_note']))}\n\n`)
    // An unterminated last event is passed on as it is.
    assert.equal(rewriteCut(`data: ${JSON.stringify(list(1, ['write_note']))}`, 3), `data: ${JSON.stringify(list(1, ['write_note']))}`)
  })

  it('fetch: a JSON body (one answer or a batch) and an SSE body are filtered, content-length dropped; anything else is the same Response', async () => {
    const json = new Response(JSON.stringify([list(1, ['read_note', 'write_note']), list(3, ['write_note'])]), { headers: { 'content-type': 'application/json', 'content-length': '999' } })
    const filtered = filterToolListResponse(json, filter)
    assert.equal(filtered.headers.get('content-length'), null)
    assert.deepEqual(await filtered.json(), [list(1, ['read_note']), list(3, ['write_note'])])
    const sse = new Response(new ReadableStream({ start(c) { const b = enc(`event: message\ndata: ${JSON.stringify(list(1, ['write_note', 'read_note']))}\n\n`); c.enqueue(b.subarray(0, 10)); c.enqueue(b.subarray(10)); c.close() } }), { headers: { 'content-type': 'text/event-stream' } })
    assert.equal(await filterToolListResponse(sse, filter).text(), `event: message\ndata: ${JSON.stringify(list(1, ['read_note']))}\n\n`)
    const html = new Response('<p>', { headers: { 'content-type': 'text/html' } })
    assert.equal(filterToolListResponse(html, filter), html)
    assert.equal(filterToolListResponse(json, undefined), json)
  })

  it('fetch tool step: respond filters only the requests whose tools/list the step saw, for a token that names tools', async () => {
    const step = createFetchToolStep({ pdpConfigured: false, authorize: async () => ({ allowed: true }) })
    const auth = { token: 't', extra: { tools: ['read_note'] } }
    const request = new Request(MCP_URL, { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) })
    const answer = () => Response.json(list(1, ['read_note', 'write_note']))
    assert.equal(await step(request, auth), undefined)
    assert.deepEqual(await step.respond(request, answer()).json(), list(1, ['read_note']))
    const unseen = new Request(MCP_URL, { method: 'POST', body: '{}' })
    assert.deepEqual(await step.respond(unseen, answer()).json(), list(1, ['read_note', 'write_note']))
    const scopeOnly = new Request(MCP_URL, { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) })
    assert.equal(await step(scopeOnly, { token: 't', extra: {} }), undefined)
    assert.deepEqual(await step.respond(scopeOnly, answer()).json(), list(1, ['read_note', 'write_note']))
  })

  it('hono: the handler’s JSON answer is filtered and not sent with its unfiltered content-length', async () => {
    const clock = createFixedClock(1_800_000_000)
    const issuer = await startIssuer(clock)
    try {
      const v = createTaskTokenVerifier({ issuer: issuer.url, resource: RESOURCE, dpop: 'off', clock, revocation: { mode: 'none' } })
      const token = await issuer.mint({ authorization_details: [{ type: 'mcp_tools', locations: [RESOURCE], actions: ['read_note'] }] })
      const body = JSON.stringify(list(1, ['read_note', 'write_note']))
      const app = new Hono().all('/mcp', taskTokenAuth(v, { authorizeToolCalls: true }), () => new Response(body, { headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } }))
      const res = await app.request(MCP_URL, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) })
      assert.equal(res.headers.get('content-length'), null)
      assert.deepEqual(await res.json(), list(1, ['read_note']))
    } finally {
      await issuer.close()
    }
  })

  it('node: writeHead with a content-length, implicit headers, and streamed SSE writes are all filtered; content-length is the new length', async () => {
    const body = JSON.stringify(list(1, ['read_note', 'write_note']))
    const server = createServer((req, res) => {
      filterNodeToolList(res, filter)
      if (req.url === '/explicit') res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }).end(body)
      else if (req.url === '/implicit') {
        res.setHeader('content-type', 'application/json; charset=utf-8')
        res.setHeader('content-length', Buffer.byteLength(body))
        res.write(body.slice(0, 10))
        res.end(body.slice(10))
      } else if (req.url === '/sse') {
        res.writeHead(200, ['Content-Type', 'text/event-stream', 'Cache-Control', 'no-cache'])
        res.flushHeaders()
        const event = `event: message\ndata: ${body}\n\n`
        res.write(event.slice(0, 20))
        setImmediate(() => res.end(event.slice(20)))
      } else res.writeHead(404, { 'content-type': 'application/json' }).end(body)
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    try {
      const expected = JSON.stringify(list(1, ['read_note']))
      for (const path of ['/explicit', '/implicit']) {
        const res = await fetch(base + path)
        assert.equal(res.headers.get('content-length'), String(Buffer.byteLength(expected)), path)
        assert.equal(await res.text(), expected, path)
      }
      const sse = await fetch(`${base}/sse`)
      assert.equal(sse.headers.get('content-length'), null)
      assert.equal(sse.headers.get('cache-control'), 'no-cache')
      assert.equal(await sse.text(), `event: message\ndata: ${expected}\n\n`)
      assert.equal(await (await fetch(`${base}/other`)).text(), body, 'a non-200 answer passes unchanged')
    } finally {
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    }
  })
})
