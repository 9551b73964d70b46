/**
 * Signing in at an upstream OpenID Connect IdP (src/login/oidc.ts) against a real IdP:
 * oidc-provider on 127.0.0.1 (test/oidc-fixtures.ts). The browser is played over HTTP up to the
 * IdP's redirect to the callback, whose URL goes to `complete()`.
 * Nothing is sent anywhere but 127.0.0.1: the callback URL is only read, never fetched.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { calculatePKCECodeChallenge } from 'openid-client'
import { createFixedClock, systemClock, type FixedClock } from '../src/clock.js'
import { parseConfig, type SubjectIssuerConfig } from '../src/config.js'
import { OAuthError, type OAuthErrorCode } from '../src/errors.js'
import { createOidcLogin, type OidcLogin, type OidcLoginOptions, type OidcLoginState } from '../src/login/oidc.js'
import { BROKER, CALLBACK, CONFIDENTIAL_SECRET, ID_TOKEN_TTL, signIn, startIdp, startServer, type Idp } from './oidc-fixtures.js'

/** The subject issuer block as the broker's config parses it (defaults applied). */
function subjectIssuer(issuer: string, over: Record<string, unknown> = {}, login: Record<string, unknown> = {}): SubjectIssuerConfig {
  const config = parseConfig({
    issuer: BROKER,
    subjectIssuers: [{ issuer, jwksUri: `${issuer}/jwks`, policyClaims: ['department', 'level', 'groups', 'absent'], ...over, login: { kind: 'oidc', clientId: 'public-rp', scopes: ['profile'], ...login } }],
  })
  return config.subjectIssuers[0]!
}

interface Seen {
  url: string
  method: string
  authorization: string | null
  body: string
}

/**
 * The fetch the module uses, observed: every request it makes, and every ID token the IdP
 * returned. `rewriteIdToken` replaces the ID token in the token endpoint's answer (a forger
 * on the path).
 */
function tap(rewriteIdToken?: (jwt: string) => string): { fetch: typeof fetch; seen: Seen[]; idTokens: string[]; tokenRequests(): Seen[] } {
  const seen: Seen[] = []
  const idTokens: string[] = []
  const tapped: typeof fetch = async (input, init) => {
    const url = input instanceof Request ? input.url : String(input)
    const body = init?.body
    seen.push({ url, method: init?.method ?? 'GET', authorization: new Headers(init?.headers).get('authorization'), body: typeof body === 'string' || body instanceof URLSearchParams ? body.toString() : '' })
    const res = await fetch(input, init)
    if (!new URL(url).pathname.endsWith('/token') || res.status !== 200) return res
    const json = (await res.json()) as { id_token?: string }
    if (json.id_token) {
      idTokens.push(json.id_token)
      if (rewriteIdToken) json.id_token = rewriteIdToken(json.id_token)
    }
    return new Response(JSON.stringify(json), { status: res.status, headers: res.headers })
  }
  return { fetch: tapped, seen, idTokens, tokenRequests: () => seen.filter((s) => new URL(s.url).pathname.endsWith('/token')) }
}

/** RFC 6749 §2.3.1: HTTP Basic of the form-urlencoded client id and secret. */
function basicCredentials(header: string | null): [string, string] | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/.exec(header ?? '')
  if (!m) return undefined
  const [id, secret] = Buffer.from(m[1]!, 'base64').toString('utf8').split(':') as [string, string]
  const decode = (s: string) => decodeURIComponent(s.replaceAll('+', ' '))
  return [decode(id), decode(secret)]
}

/** `s` with its sixth character changed (never the same string, whatever it was). */
function alter(s: string): string {
  return `${s.slice(0, 5)}${s[5] === 'A' ? 'B' : 'A'}${s.slice(6)}`
}

/**
 * `promise` is refused with exactly this OAuth error (status and code), for the reason `detail`
 * names, and nothing it says — public or private — repeats any of `secrets` (codes, tokens).
 */
async function assertRefused(promise: Promise<unknown>, code: OAuthErrorCode, detail: RegExp, secrets: string[] = []): Promise<OAuthError> {
  const e = await promise.then(
    () => assert.fail('expected a refusal'),
    (err: unknown) => err,
  )
  assert.ok(e instanceof OAuthError, `expected an OAuthError, got ${String(e)}`)
  assert.equal(e.status, 400)
  assert.equal(e.code, code)
  assert.match(e.detail, detail)
  for (const secret of secrets) {
    for (const text of [e.message, e.description, e.detail, JSON.stringify(e.toJSON())]) assert.ok(!text.includes(secret), `the error repeats a secret: ${text}`)
  }
  return e
}

function login(clock: FixedClock, extra: Partial<OidcLoginOptions> = {}): OidcLogin {
  return createOidcLogin({ clock, timeout: 3000, clockSkew: 60, ...extra })
}

describe('OIDC sign-in at an upstream IdP (oidc-provider on 127.0.0.1)', () => {
  let idp: Idp
  let clock: FixedClock

  before(async () => {
    idp = await startIdp()
  })
  after(() => idp.close())

  /** A fresh clock at the IdP's (wall-clock) time: the IdP's tokens are minted now. */
  function freshClock(): FixedClock {
    clock = createFixedClock(systemClock.now())
    return clock
  }

  describe('a full sign-in', () => {
    it('public client: PKCE S256, state and nonce sent; the identity is the ID token mapped as a session token', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer)
      const { url, state } = await rp.begin(issuer, CALLBACK)

      const auth = new URL(url)
      assert.equal(auth.origin + auth.pathname, `${idp.issuer}/auth`)
      const q = Object.fromEntries(auth.searchParams)
      assert.deepEqual(
        { response_type: q.response_type, client_id: q.client_id, redirect_uri: q.redirect_uri, scope: q.scope, code_challenge_method: q.code_challenge_method, state: q.state, nonce: q.nonce },
        { response_type: 'code', client_id: 'public-rp', redirect_uri: CALLBACK, scope: 'openid profile', code_challenge_method: 'S256', state: state.state, nonce: state.nonce },
      )
      assert.equal(q.code_challenge, await calculatePKCECodeChallenge(state.codeVerifier))
      assert.equal(state.issuer, idp.issuer)
      assert.ok(state.state.length >= 43 && state.nonce.length >= 43 && state.codeVerifier.length >= 43, 'state, nonce and verifier carry at least 256 bits')

      const callback = await signIn(url)
      const identity = await rp.complete(issuer, CALLBACK, state, callback)

      assert.equal(t.idTokens.length, 1)
      const idToken = decodeJwt(t.idTokens[0]!)
      assert.equal(typeof idToken.sid, 'string', 'the IdP put a session id in the ID token')
      assert.equal(typeof idToken.auth_time, 'number')
      assert.deepEqual(identity, {
        issuer: idp.issuer,
        user: 'alice',
        sid: idToken.sid,
        // Scalars as strings; `groups` (an array) and the absent claim left out; `email` not listed.
        claims: { department: 'eng', level: '3' },
        authTime: idToken.auth_time,
        exp: idToken.exp,
      })
      assert.equal(identity.exp - (idToken.iat as number), ID_TOKEN_TTL)

      const [tokenRequest, ...more] = t.tokenRequests()
      assert.equal(more.length, 0)
      assert.equal(tokenRequest!.authorization, null, 'a public client sends no client authentication')
      const form = new URLSearchParams(tokenRequest!.body)
      assert.equal(form.get('code_verifier'), state.codeVerifier)
      assert.equal(form.get('client_id'), 'public-rp')
      assert.equal(form.get('redirect_uri'), CALLBACK)
    })

    it('confidential client: the secret goes as client_secret_basic and the sign-in completes', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer, {}, { clientId: 'confidential-rp', clientSecret: CONFIDENTIAL_SECRET })
      const { url, state } = await rp.begin(issuer, CALLBACK)
      const identity = await rp.complete(issuer, CALLBACK, state, await signIn(url, { login: 'bob' }))
      assert.equal(identity.user, 'bob')
      assert.equal(identity.sid, decodeJwt(t.idTokens[0]!).sid)
      const [tokenRequest] = t.tokenRequests()
      assert.deepEqual(basicCredentials(tokenRequest!.authorization), ['confidential-rp', CONFIDENTIAL_SECRET])
      assert.equal(new URLSearchParams(tokenRequest!.body).get('client_secret'), null, 'never the secret in the body as well')
    })

    it('confidential client with clientSecretFile: the file is read (trimmed) and used', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'taskpass-oidc-'))
      const file = join(dir, 'secret')
      writeFileSync(file, `${CONFIDENTIAL_SECRET}\n`)
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer, {}, { clientId: 'confidential-rp', clientSecretFile: file })
      const { url, state } = await rp.begin(issuer, CALLBACK)
      const identity = await rp.complete(issuer, CALLBACK, state, await signIn(url))
      assert.equal(identity.user, 'alice')
      assert.deepEqual(basicCredentials(t.tokenRequests()[0]!.authorization), ['confidential-rp', CONFIDENTIAL_SECRET])
    })

    it('userClaim and sessionClaim are the issuer\'s: the user from `email`', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer, { userClaim: 'email' })
      const { url, state } = await rp.begin(issuer, CALLBACK)
      const identity = await rp.complete(issuer, CALLBACK, state, await signIn(url, { login: 'carol' }))
      assert.equal(identity.user, 'carol@example.com')
    })

    it('a user of exactly 255 characters is accepted', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { url, state } = await rp.begin(issuer, CALLBACK)
      const identity = await rp.complete(issuer, CALLBACK, state, await signIn(url, { login: 'u'.repeat(255) }))
      assert.equal(identity.user, 'u'.repeat(255))
    })

    it('an ES256 ID token passes an issuer that allows only ES256', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer, { algorithms: ['ES256'] }, { clientId: 'es256-rp' })
      const { url, state } = await rp.begin(issuer, CALLBACK)
      const t = tap()
      const identity = await login(clock, { fetch: t.fetch }).complete(issuer, CALLBACK, state, await signIn(url))
      assert.equal(identity.user, 'alice')
      assert.equal(decodeProtectedHeader(t.idTokens[0]!).alg, 'ES256')
      const idToken = decodeJwt(t.idTokens[0]!)
      assert.equal(idToken.auth_time, undefined)
      assert.equal(identity.authTime, idToken.iat, 'without auth_time the sign-in counts from iat')
    })

    it('discovery is fetched once and reused until discoveryMaxAge, then fetched again', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch, discoveryMaxAge: 600 })
      const issuer = subjectIssuer(idp.issuer)
      const discoveries = () => t.seen.filter((s) => s.url === `${idp.issuer}/.well-known/openid-configuration`).length
      await rp.begin(issuer, CALLBACK)
      await rp.begin(issuer, CALLBACK)
      assert.equal(discoveries(), 1)
      clock.advance(601)
      await rp.begin(issuer, CALLBACK)
      assert.equal(discoveries(), 2)
    })

    it('concurrent sign-ins share one discovery; the IdP\'s key set is fetched once for several sign-ins', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer)
      const [a, b] = await Promise.all([rp.begin(issuer, CALLBACK), rp.begin(issuer, CALLBACK)])
      assert.equal(t.seen.filter((s) => s.url.endsWith('/.well-known/openid-configuration')).length, 1)
      await rp.complete(issuer, CALLBACK, a.state, await signIn(a.url))
      await rp.complete(issuer, CALLBACK, b.state, await signIn(b.url, { login: 'bob' }))
      assert.equal(t.tokenRequests().length, 2)
      assert.equal(t.seen.filter((s) => new URL(s.url).pathname === '/jwks').length, 1)
    })

    it('scope: openid always, once, first; the default is openid alone', async () => {
      const rp = login(freshClock())
      const scopeOf = async (scopes?: string[]) => new URL((await rp.begin(subjectIssuer(idp.issuer, {}, { scopes }), CALLBACK)).url).searchParams.get('scope')
      assert.equal(await scopeOf(undefined), 'openid')
      assert.equal(await scopeOf(['profile', 'openid', 'email']), 'openid profile email')
      assert.equal(await scopeOf(['profile']), 'openid profile')
    })

    it('a configured discoveryUrl is fetched instead of <issuer>/.well-known/openid-configuration', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const discoveryUrl = `${idp.issuer}/.well-known/openid-configuration?tenant=x`
      const issuer = subjectIssuer(idp.issuer, {}, { discoveryUrl })
      const { url, state } = await rp.begin(issuer, CALLBACK)
      assert.deepEqual(t.seen.map((s) => s.url), [discoveryUrl])
      assert.equal((await rp.complete(issuer, CALLBACK, state, await signIn(url))).user, 'alice')
    })
  })

  describe('refusals', () => {
    /** Begins a sign-in for `issuer` and plays the browser to the callback. */
    async function signedIn(rp: OidcLogin, issuer: SubjectIssuerConfig, opts: { login?: string; cancel?: boolean } = {}): Promise<{ state: OidcLoginState; callback: URL; code: string }> {
      const { url, state } = await rp.begin(issuer, CALLBACK)
      const callback = await signIn(url, opts)
      return { state, callback, code: callback.searchParams.get('code') ?? '' }
    }

    it('state mismatch: invalid_request, and the code is never sent to the token endpoint', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback, code } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK, { ...state, state: `${state.state}x` }, callback), 'invalid_request', /"state"/, [code])
      const missing = new URL(callback)
      missing.searchParams.delete('state')
      await assertRefused(rp.complete(issuer, CALLBACK, state, missing), 'invalid_request', /"state"/, [code])
      assert.equal(t.tokenRequests().length, 0)
      // The same callback with the right state still completes: nothing was spent by the refusals.
      assert.equal((await rp.complete(issuer, CALLBACK, state, callback)).user, 'alice')
    })

    it('the IdP redirects back with an error (the user pressed Cancel): access_denied, no token request', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback } = await signedIn(rp, issuer, { cancel: true })
      assert.equal(callback.searchParams.get('error'), 'access_denied')
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'access_denied', /answered access_denied: End-User aborted interaction/)
      assert.equal(t.tokenRequests().length, 0)
    })

    it('any other error from the IdP is access_denied too (here login_required)', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state } = await rp.begin(issuer, CALLBACK)
      const callback = new URL(`${CALLBACK}?error=login_required&state=${state.state}&iss=${encodeURIComponent(idp.issuer)}`)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'access_denied', /answered login_required/)
    })

    it('an error redirect with the wrong state is a state mismatch, not the IdP\'s answer', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state } = await rp.begin(issuer, CALLBACK)
      const callback = new URL(`${CALLBACK}?error=access_denied&state=forged&iss=${encodeURIComponent(idp.issuer)}`)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /"state"/)
    })

    it('a callback naming another issuer (RFC 9207 iss): invalid_request', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback, code } = await signedIn(rp, issuer)
      const mixedUp = new URL(callback)
      mixedUp.searchParams.set('iss', 'https://other-idp.test.example')
      await assertRefused(rp.complete(issuer, CALLBACK, state, mixedUp), 'invalid_request', /"iss"/, [code])
    })

    it('a replayed code: the second completion is invalid_request, and no error repeats the code', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback, code } = await signedIn(rp, issuer)
      await rp.complete(issuer, CALLBACK, state, callback)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /answered 400 invalid_grant/, [code])
    })

    it('an invalid code: invalid_request', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback, code } = await signedIn(rp, issuer)
      const forged = new URL(callback)
      forged.searchParams.set('code', alter(code))
      await assertRefused(rp.complete(issuer, CALLBACK, state, forged), 'invalid_request', /answered 400 invalid_grant/, [code, forged.searchParams.get('code')!])
    })

    it('a wrong PKCE verifier: invalid_request (the IdP checks the code challenge)', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback, code } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK, { ...state, codeVerifier: alter(state.codeVerifier) }, callback), 'invalid_request', /invalid_grant/, [code])
    })

    it('a redirect URI other than the authorization request\'s: invalid_request', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback, code } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK.replace('callback', 'elsewhere'), state, callback), 'invalid_request', /invalid_grant/, [code])
    })

    it('nonce mismatch (the kept state tampered): invalid_request', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback, code } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK, { ...state, nonce: `${state.nonce}x` }, callback), 'invalid_request', /"nonce"/, [code, ...t.idTokens])
      assert.equal(t.idTokens.length, 1, 'the IdP did answer; its ID token was refused')
    })

    it('sign-in state of another issuer: invalid_request before anything is sent', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback } = await signedIn(rp, issuer)
      const before = t.seen.length
      await assertRefused(rp.complete(issuer, CALLBACK, { ...state, issuer: 'https://other-idp.test.example' }, callback), 'invalid_request', /sign-in state is for https:\/\/other-idp/)
      assert.equal(t.seen.length, before)
    })

    it('malformed sign-in state (not strings, empty): invalid_request, never a crash', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback } = await signedIn(rp, issuer)
      for (const bad of [{ issuer: 42 }, { issuer: null }, { state: '' }, { nonce: {} }, { codeVerifier: undefined }]) {
        await assertRefused(rp.complete(issuer, CALLBACK, { ...state, ...bad } as unknown as OidcLoginState, callback), 'invalid_request', /sign-in state is malformed/)
      }
    })

    it('an ID token whose alg the issuer does not allow (RS256 where only ES256 is): invalid_request', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer, { algorithms: ['ES256'] })
      const { state, callback, code } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /alg RS256 not allowed/, [code, ...t.idTokens])
    })

    it('an ID token with a forged signature: invalid_request', async () => {
      const t = tap((jwt) => {
        const [h, p, s] = jwt.split('.') as [string, string, string]
        return `${h}.${p}.${alter(s)}`
      })
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback, code } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /signature/i, [code, ...t.idTokens])
    })

    it('an ID token without typ where the issuer requires one (allowMissingTyp: false): invalid_request', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer, { allowMissingTyp: false })
      const { state, callback } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /typ undefined not accepted/)
    })

    it('an ID token living longer than maxTokenLifetime: invalid_request', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer, { maxTokenLifetime: ID_TOKEN_TTL - 1 })
      const { state, callback } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', new RegExp(`lifetime ${ID_TOKEN_TTL}s > ${ID_TOKEN_TTL - 1}s`))
    })

    it('a user longer than 255 characters: invalid_request', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback } = await signedIn(rp, issuer, { login: 'u'.repeat(256) })
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /"sub" claim is longer than 255 characters/)
    })

    it('a userClaim the ID token lacks: invalid_request', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer, { userClaim: 'preferred_username' })
      const { state, callback } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /no "preferred_username" claim/)
    })

    it('a session claim that is not a string (sessionClaim: level, a number): invalid_request', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer, { sessionClaim: 'level' })
      const { state, callback } = await signedIn(rp, issuer)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /"level" claim must be a non-empty string/)
    })

    it('the injected clock decides: past the ID token\'s exp (plus skew) it is refused', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback } = await signedIn(rp, issuer)
      clock.advance(ID_TOKEN_TTL + 61)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /"exp"|expired/)
    })

    it('the injected clock decides: within the skew after exp it is still accepted', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback } = await signedIn(rp, issuer)
      clock.advance(ID_TOKEN_TTL + 30)
      assert.equal((await rp.complete(issuer, CALLBACK, state, callback)).user, 'alice')
    })

    it('the injected clock decides: an ID token issued in the clock\'s future (beyond skew) is refused', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer)
      const { state, callback } = await signedIn(rp, issuer)
      clock.advance(-120)
      await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /iat in the future/)
    })
  })

  describe('discovery and transport', () => {
    it('discovery naming another issuer (a configured discoveryUrl of another IdP): invalid_request at begin', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(`${idp.issuer}/tenant-a`, {}, { discoveryUrl: `${idp.issuer}/.well-known/openid-configuration` })
      await assertRefused(rp.begin(issuer, CALLBACK), 'invalid_request', /issuer does not match/)
    })

    it('discovery at <issuer>/.well-known naming another issuer (an impostor serving the real document): invalid_request', async () => {
      const realDocument = await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).text()
      const impostor = await startServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(realDocument))
      try {
        const rp = login(freshClock())
        await assertRefused(rp.begin(subjectIssuer(impostor.url), CALLBACK), 'invalid_request', /issuer does not match/)
      } finally {
        await impostor.close()
      }
    })

    it('the issuer must be identical, not merely equal as a URL (a trailing slash): invalid_request', async () => {
      const rp = login(freshClock())
      await assertRefused(rp.begin(subjectIssuer(`${idp.issuer}/`), CALLBACK), 'invalid_request', new RegExp(`names issuer ${idp.issuer.replaceAll('.', '\\.')}$`))
    })

    it('a non-loopback http issuer is refused before any request', async () => {
      const t = tap()
      const rp = login(freshClock(), { fetch: t.fetch })
      const issuer = subjectIssuer('http://idp.test.example', { jwksUri: undefined, jwks: { keys: [] } })
      await assertRefused(rp.begin(issuer, CALLBACK), 'invalid_request', /must be https/)
      assert.equal(t.seen.length, 0)
    })

    it('a loopback issuer whose metadata points an endpoint at a non-loopback http host: invalid_request, nothing sent there', async () => {
      let base = ''
      const seen: string[] = []
      const impostor = await startServer((req, res) => {
        seen.push(req.url ?? '')
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({ issuer: base, authorization_endpoint: `${base}/auth`, token_endpoint: 'http://idp.test.example/token', jwks_uri: `${base}/jwks`, response_types_supported: ['code'] }),
        )
      })
      base = impostor.url
      try {
        const t = tap()
        const rp = login(freshClock(), { fetch: t.fetch })
        await assertRefused(rp.begin(subjectIssuer(base), CALLBACK), 'invalid_request', /token_endpoint is missing or not https/)
        assert.deepEqual(t.seen.map((s) => s.url), [`${base}/.well-known/openid-configuration`])
      } finally {
        await impostor.close()
      }
    })

    it('an unreachable IdP: invalid_request', async () => {
      const gone = await startServer(() => {})
      await gone.close()
      const rp = login(freshClock())
      await assertRefused(rp.begin(subjectIssuer(gone.url), CALLBACK), 'invalid_request', /discovery for .*fetch failed/)
    })

    it('an IdP that never answers: invalid_request once the timeout has passed', async () => {
      const silent = await startServer(() => {})
      try {
        const rp = login(freshClock(), { timeout: 200 })
        const started = performance.now()
        await assertRefused(rp.begin(subjectIssuer(silent.url), CALLBACK), 'invalid_request', /timed out/)
        assert.ok(performance.now() - started < 5000, 'bounded by the timeout')
      } finally {
        await silent.close()
      }
    })

    it('an IdP that sends its headers and then stalls the body: invalid_request once the timeout has passed', async () => {
      const stalling = await startServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"issuer":')
      })
      try {
        const rp = login(freshClock(), { timeout: 200 })
        const started = performance.now()
        await assertRefused(rp.begin(subjectIssuer(stalling.url), CALLBACK), 'invalid_request', /timed out/)
        assert.ok(performance.now() - started < 5000, 'bounded by the timeout')
      } finally {
        await stalling.close()
      }
    })

    it('a discovery document over maxBytes: invalid_request', async () => {
      const big = await startServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ issuer: 'x', padding: 'p'.repeat(20_000) }))
      })
      try {
        const rp = login(freshClock(), { maxBytes: 10_000 })
        await assertRefused(rp.begin(subjectIssuer(big.url), CALLBACK), 'invalid_request', /exceeds 10000/)
      } finally {
        await big.close()
      }
    })

    it('a missing clientSecretFile: invalid_request', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer, {}, { clientId: 'confidential-rp', clientSecretFile: join(tmpdir(), 'taskpass-no-such-secret') })
      await assertRefused(rp.begin(issuer, CALLBACK), 'invalid_request', /clientSecretFile .*ENOENT/)
    })

    it('a wrong client secret: invalid_request (the IdP refuses the client)', async () => {
      const rp = login(freshClock())
      const issuer = subjectIssuer(idp.issuer, {}, { clientId: 'confidential-rp', clientSecret: 'not-the-secret' })
      const { url, state } = await rp.begin(issuer, CALLBACK)
      const callback = await signIn(url)
      const e = await assertRefused(rp.complete(issuer, CALLBACK, state, callback), 'invalid_request', /invalid_client/, [callback.searchParams.get('code')!, 'not-the-secret'])
      assert.equal(e.description, 'the sign-in at the identity provider could not be completed')
    })
  })
})
