/**
 * Signing the user in at an upstream OpenID Connect IdP (a subject issuer with `login.kind: oidc`)
 * for the authorization-code flow: the broker is the relying party (openid-client), with PKCE (S256),
 * `state` and `nonce`. The identity it returns is the user's session, as a session token would be.
 *
 * Owns: discovery (cached), the authorization URL, the code exchange and the ID token's checks.
 * Imports only the clock, the config types, the errors and the subject-token mapping helpers;
 * never hono, never the store.
 */
import { readFileSync } from 'node:fs'
import { decodeProtectedHeader } from 'jose'
import * as client from 'openid-client'
import { systemClock, type Clock } from '../clock.js'
import { isLoopbackUrl, type SubjectIssuerConfig } from '../config.js'
import { accessDenied, invalidRequest, OAuthError } from '../errors.js'
import { MAX_SUBJECT_LENGTH, policyClaims } from '../exchange/subject-token.js'
import { normalizeTyp } from '../lib/jwt.js'
import { readCappedBody } from '../lib/read-capped.js'

/** Who signed in, and for how long their sign-in counts. */
export interface LoginIdentity {
  /** The subject issuer (its `issuer`). */
  issuer: string
  /** The user at that issuer (its `userClaim`). */
  user: string
  /** The IdP's session id (its `sessionClaim`), when the ID token has one. */
  sid?: string | undefined
  /** The `policyClaims` of the ID token, as strings. */
  claims: Record<string, string>
  /** `auth_time`, else `iat`. */
  authTime: number
  /** The ID token's `exp`. */
  exp: number
}

/** What the browser must bring back from the IdP; the caller keeps it sealed in a cookie. */
export interface OidcLoginState {
  issuer: string
  codeVerifier: string
  state: string
  nonce: string
}

export interface OidcLogin {
  /** The IdP's authorization URL for this issuer, and the state to keep until the callback. */
  begin(issuer: SubjectIssuerConfig, redirectUri: string): Promise<{ url: string; state: OidcLoginState }>
  /**
   * Completes sign-in at the callback (`callbackUrl`: the full URL the IdP redirected to): code
   * exchange with PKCE, ID token validated (signature, `iss`, `aud`, `nonce`, `exp`). Throws
   * `OAuthError` `access_denied` (the IdP's error) or `invalid_request` otherwise.
   */
  complete(issuer: SubjectIssuerConfig, redirectUri: string, state: OidcLoginState, callbackUrl: URL): Promise<LoginIdentity>
}

export interface OidcLoginOptions {
  clock: Clock
  /** Milliseconds for each request to an IdP (discovery, token endpoint, key set), body included. */
  timeout: number
  /** Tolerated clock skew for the ID token's `exp` and `iat`, seconds (the broker's `clockSkew`). Default 60. */
  clockSkew?: number
  /** Largest response accepted from an IdP, bytes. Default 256 KiB. */
  maxBytes?: number
  /** A discovered configuration is used this long before it is fetched again, seconds. Default 3600. */
  discoveryMaxAge?: number
  /** The fetch used for every request to an IdP (tests observe the requests through it). */
  fetch?: typeof fetch
}

/** Public text of every refusal but the IdP's own: the reason is in the private detail. */
const NOT_COMPLETED = 'the sign-in at the identity provider could not be completed'

/** A discovered configuration, with the IdP's key set as openid-client last fetched it. */
interface Discovered {
  metadata: client.ServerMetadata
  fetchedAt: number
  jwksCache: ReturnType<typeof client.getJwksCache>
}

/**
 * The relying party of every subject issuer with `login.kind: oidc` (OpenID Connect Core §3.1,
 * authorization code flow; RFC 7636 PKCE with S256; RFC 9207 `iss` checked when the IdP sends it).
 *
 * The ID token is mapped exactly as a session token of that issuer is by the subject-token
 * verifier: `alg` in `algorithms`, `typ` per `typ`/`allowMissingTyp`, `exp − iat` within
 * `maxTokenLifetime`, the user from `userClaim` (at most 255 characters), the session from
 * `sessionClaim`, `policyClaims` as strings, `authTime` from a sane `auth_time` else `iat`.
 *
 * Time: openid-client reads the wall clock; its `[clockSkew]` offset is set on every exchange to
 * the injected clock's distance from the wall clock, so its `exp` check runs on `opts.clock`, and
 * the checks made here use `opts.clock` directly.
 */
export function createOidcLogin(opts: OidcLoginOptions): OidcLogin {
  const clockSkew = opts.clockSkew ?? 60
  const maxBytes = opts.maxBytes ?? 256 * 1024
  const discoveryMaxAge = opts.discoveryMaxAge ?? 3600
  const fetchImpl = opts.fetch ?? fetch
  const discovered = new Map<string, Discovered>()
  const inFlight = new Map<string, Promise<Discovered>>()
  const secrets = new Map<string, string>()

  return {
    async begin(issuer, redirectUri) {
      const config = await configure(issuer)
      const codeVerifier = client.randomPKCECodeVerifier()
      const state = client.randomState()
      const nonce = client.randomNonce()
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: redirectUri,
        scope: scopesOf(loginOf(issuer)).join(' '),
        code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: 'S256',
        state,
        nonce,
      })
      return { url: url.href, state: { issuer: issuer.issuer, codeVerifier, state, nonce } }
    },

    async complete(issuer, redirectUri, kept, callbackUrl) {
      // The caller seals the state, but a malformed one must still be a refusal, never a crash.
      if (![kept.issuer, kept.codeVerifier, kept.state, kept.nonce].every((v: unknown) => typeof v === 'string' && v !== '')) throw invalidRequest(NOT_COMPLETED, 'sign-in state is malformed')
      if (kept.issuer !== issuer.issuer) throw invalidRequest(NOT_COMPLETED, `sign-in state is for ${kept.issuer.slice(0, 256)}, not ${issuer.issuer}`)
      const config = await configure(issuer)
      // The token request's redirect_uri is the callback URL without its query (openid-client):
      // it must be the redirect URI of the authorization request, whatever host the request
      // reached us by, so the response parameters are carried over onto it.
      const current = new URL(redirectUri)
      if (current.search !== '' || current.hash !== '') throw invalidRequest(NOT_COMPLETED, 'the redirect URI has a query or fragment')
      for (const [k, v] of callbackUrl.searchParams) current.searchParams.append(k, v)

      let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>
      try {
        tokens = await client.authorizationCodeGrant(config, current, {
          pkceCodeVerifier: kept.codeVerifier,
          expectedState: kept.state,
          expectedNonce: kept.nonce,
          idTokenExpected: true,
        })
      } catch (e) {
        throw refusal(e, issuer)
      } finally {
        remember(issuer, config)
      }
      const claims = tokens.claims()
      if (tokens.id_token === undefined || claims === undefined) throw invalidRequest(NOT_COMPLETED, `${issuer.issuer} returned no ID token`)
      return identityOf(issuer, tokens.id_token, claims)
    },
  }

  /**
   * A fresh openid-client configuration over the cached discovery: fresh because the client
   * metadata (hence the clock offset) is frozen at construction.
   */
  async function configure(issuer: SubjectIssuerConfig): Promise<client.Configuration> {
    const login = loginOf(issuer)
    const insecure = allowsInsecure(issuer)
    const { metadata, jwksCache } = await discover(issuer, insecure)
    const secret = clientSecret(issuer)
    const config = new client.Configuration(
      metadata,
      login.clientId,
      {
        ...(secret !== undefined && { client_secret: secret }),
        [client.clockSkew]: opts.clock.now() - systemClock.now(),
        [client.clockTolerance]: clockSkew,
      },
      // OIDC Core §9: client_secret_basic when there is a secret; a public client sends none (PKCE alone).
      secret !== undefined ? client.ClientSecretBasic(secret) : client.None(),
    )
    config[client.customFetch] = boundedFetch(insecure)
    config.timeout = Math.ceil(opts.timeout / 1000)
    if (insecure) client.allowInsecureRequests(config)
    // The ID token's signature is checked against the IdP's key set, not left to TLS alone
    // (OIDC Core §3.1.3.7 allows that), since a loopback IdP in dev has no TLS.
    client.enableNonRepudiationChecks(config)
    if (jwksCache) client.setJwksCache(config, jwksCache)
    return config
  }

  /** Keeps the key set openid-client fetched during an exchange for the next one. */
  function remember(issuer: SubjectIssuerConfig, config: client.Configuration): void {
    const entry = discovered.get(cacheKey(issuer))
    const jwks = client.getJwksCache(config)
    if (entry && jwks) entry.jwksCache = jwks
  }

  /** The issuer's discovered configuration: cached for `discoveryMaxAge`, one fetch at a time. */
  async function discover(issuer: SubjectIssuerConfig, insecure: boolean): Promise<Discovered> {
    const key = cacheKey(issuer)
    const hit = discovered.get(key)
    if (hit && opts.clock.now() - hit.fetchedAt < discoveryMaxAge) return hit
    let pending = inFlight.get(key)
    if (!pending) {
      pending = fetchDiscovery(issuer, insecure).finally(() => inFlight.delete(key))
      inFlight.set(key, pending)
    }
    return pending
  }

  async function fetchDiscovery(issuer: SubjectIssuerConfig, insecure: boolean): Promise<Discovered> {
    const login = loginOf(issuer)
    const bounded = boundedFetch(insecure)
    // openid-client derives `<issuer>/.well-known/openid-configuration` from the issuer and checks
    // that the document names this issuer (OIDC Discovery §4.3); a configured `discoveryUrl` is
    // fetched in its place, under the same check.
    const discoveryUrl = login.discoveryUrl
    const fetchDocument: client.CustomFetch = discoveryUrl === undefined ? bounded : (_url, init) => bounded(discoveryUrl, init)
    let config: client.Configuration
    try {
      config = await client.discovery(new URL(issuer.issuer), login.clientId, undefined, client.None(), {
        [client.customFetch]: fetchDocument,
        timeout: Math.ceil(opts.timeout / 1000),
        ...(insecure && { execute: [client.allowInsecureRequests] }),
      })
    } catch (e) {
      throw invalidRequest('the identity provider is unavailable', `discovery for ${issuer.issuer}: ${describe(e)}`)
    }
    const metadata = config.serverMetadata()
    // OIDC Discovery §4.3: "MUST be identical" — openid-client compares parsed URLs; the ID
    // token's `iss` is compared with this value, so it must be the configured issuer exactly.
    if (metadata.issuer !== issuer.issuer) throw invalidRequest('the identity provider is unavailable', `discovery for ${issuer.issuer} names issuer ${String(metadata.issuer).slice(0, 256)}`)
    for (const endpoint of ['authorization_endpoint', 'token_endpoint', 'jwks_uri'] as const) {
      const url = metadata[endpoint]
      if (typeof url !== 'string' || !isAllowedUrl(url, insecure)) throw invalidRequest('the identity provider is unavailable', `discovery for ${issuer.issuer}: ${endpoint} is missing or not https`)
    }
    const entry: Discovered = { metadata, fetchedAt: opts.clock.now(), jwksCache: undefined }
    discovered.set(cacheKey(issuer), entry)
    return entry
  }

  /**
   * Every request to an IdP: the whole exchange (headers and body) within `timeout`, the body
   * capped at `maxBytes` while it is read, and plain http only to a loopback host of a loopback
   * issuer — openid-client's `allowInsecureRequests` alone would allow http anywhere.
   */
  function boundedFetch(insecure: boolean): client.CustomFetch {
    return async (url, init) => {
      if (!isAllowedUrl(url, insecure)) throw new TypeError(`request to ${url.slice(0, 256)} refused: not https`)
      const signal = AbortSignal.any([AbortSignal.timeout(opts.timeout), ...(init.signal ? [init.signal] : [])])
      const res = await fetchImpl(url, { ...init, body: init.body as BodyInit | undefined, signal })
      const declared = Number(res.headers.get('content-length') ?? NaN)
      if (Number.isFinite(declared) && declared > maxBytes) {
        await res.body?.cancel().catch(() => {})
        throw new TypeError(`${url.slice(0, 256)}: response of ${declared} bytes exceeds ${maxBytes}`)
      }
      const body = await readCapped(res, maxBytes, url)
      return new Response(res.status === 204 || res.status === 304 ? null : body, { status: res.status, statusText: res.statusText, headers: res.headers })
    }
  }

  function clientSecret(issuer: SubjectIssuerConfig): string | undefined {
    const login = loginOf(issuer)
    if (login.clientSecret !== undefined) return login.clientSecret
    if (login.clientSecretFile === undefined) return undefined
    // Read once, at the first sign-in (begin refuses before the user leaves for the IdP); a new
    // secret in the file takes a restart.
    const key = login.clientSecretFile
    if (!secrets.has(key)) {
      let secret: string
      try {
        secret = readFileSync(login.clientSecretFile, 'utf8').trim()
      } catch (e) {
        throw invalidRequest('sign-in at this identity provider is not available', `clientSecretFile of ${issuer.issuer}: ${(e as Error).message}`)
      }
      if (secret === '') throw invalidRequest('sign-in at this identity provider is not available', `clientSecretFile of ${issuer.issuer} is empty`)
      secrets.set(key, secret)
    }
    return secrets.get(key)
  }

  /**
   * The session of the verified ID token, mapped as the subject-token verifier maps a session
   * token of this issuer (src/exchange/subject-token.ts).
   */
  function identityOf(issuer: SubjectIssuerConfig, idToken: string, payload: client.IDToken): LoginIdentity {
    const refuse = (detail: string) => invalidRequest(NOT_COMPLETED, `ID token of ${issuer.issuer}: ${detail}`)
    const header = decodeProtectedHeader(idToken)
    // openid-client checks the alg against the IdP's advertised list; the issuer's own list decides.
    if (typeof header.alg !== 'string' || !(issuer.algorithms as readonly string[]).includes(header.alg)) throw refuse(`alg ${String(header.alg).slice(0, 32)} not allowed`)
    // RFC 8725 §3.11: only the token types this issuer declared.
    const typ = header.typ
    const typs = new Set(issuer.typ.map(normalizeTyp))
    if (typ === undefined ? !issuer.allowMissingTyp : typeof typ !== 'string' || !typs.has(normalizeTyp(typ))) throw refuse(`typ ${JSON.stringify(typ)?.slice(0, 80)} not accepted`)
    const now = opts.clock.now()
    const { exp, iat } = payload
    if (exp <= now - clockSkew) throw refuse('expired')
    if (iat > now + clockSkew) throw refuse('iat in the future')
    if (exp - iat > issuer.maxTokenLifetime) throw refuse(`lifetime ${exp - iat}s > ${issuer.maxTokenLifetime}s`)
    const user = payload[issuer.userClaim]
    if (typeof user !== 'string' || user === '') throw refuse(`no "${issuer.userClaim}" claim`)
    // OIDC Core §2: a subject "MUST NOT exceed 255 ASCII characters".
    if (user.length > MAX_SUBJECT_LENGTH) throw refuse(`"${issuer.userClaim}" claim is longer than ${MAX_SUBJECT_LENGTH} characters`)
    // A session claim that is not a string would unbind the tasks from the session's revocation.
    const sessionValue = payload[issuer.sessionClaim]
    if (sessionValue !== undefined && (typeof sessionValue !== 'string' || sessionValue === '')) throw refuse(`"${issuer.sessionClaim}" claim must be a non-empty string`)
    const sid = sessionValue === undefined ? undefined : String(sessionValue)
    const authTime = payload.auth_time
    return {
      issuer: issuer.issuer,
      user,
      sid,
      claims: policyClaims(payload, issuer.policyClaims),
      authTime: typeof authTime === 'number' && Number.isSafeInteger(authTime) && authTime <= iat ? authTime : iat,
      exp,
    }
  }
}

type OidcLoginConfig = Extract<NonNullable<SubjectIssuerConfig['login']>, { kind: 'oidc' }>

function loginOf(issuer: SubjectIssuerConfig): OidcLoginConfig {
  if (issuer.login?.kind !== 'oidc') throw invalidRequest('sign-in at this identity provider is not available', `${issuer.issuer} has no OpenID Connect sign-in`)
  return issuer.login
}

/** OIDC Core §3.1.2.1: `scope` "MUST contain the openid scope value". */
function scopesOf(login: OidcLoginConfig): string[] {
  return [...new Set(['openid', ...login.scopes])]
}

/** Discovery depends on the issuer and where its document is, not on the client. */
function cacheKey(issuer: SubjectIssuerConfig): string {
  return JSON.stringify([issuer.issuer, issuer.login?.kind === 'oidc' ? (issuer.login.discoveryUrl ?? null) : null])
}

/**
 * Plain http only for a loopback IdP (tests, dev): its issuer, its discovery document and every
 * endpoint then on a loopback host. Any other issuer is https throughout.
 */
function allowsInsecure(issuer: SubjectIssuerConfig): boolean {
  const login = loginOf(issuer)
  let urls: URL[]
  try {
    urls = [new URL(issuer.issuer), ...(login.discoveryUrl !== undefined ? [new URL(login.discoveryUrl)] : [])]
  } catch {
    throw invalidRequest('sign-in at this identity provider is not available', `${issuer.issuer} is not a URL`)
  }
  if (urls.every((u) => u.protocol === 'https:')) return false
  if (urls.every((u) => isAllowedUrl(u.href, true))) return true
  throw invalidRequest('sign-in at this identity provider is not available', `${issuer.issuer}: an OpenID Connect issuer must be https (http only on a loopback host)`)
}

function isAllowedUrl(url: string, insecure: boolean): boolean {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return false
  }
  return u.protocol === 'https:' || (insecure && u.protocol === 'http:' && isLoopbackUrl(u.href))
}

function readCapped(res: Response, maxBytes: number, url: string): Promise<Uint8Array<ArrayBuffer>> {
  return readCappedBody(res, maxBytes, () => new TypeError(`${url.slice(0, 256)}: response exceeds ${maxBytes} bytes`))
}

/**
 * openid-client's error, as the caller's refusal: the IdP's error redirect is `access_denied`
 * (RFC 6749 §4.1.2.1, whatever error the IdP gave); anything else — state, code, ID token, nonce,
 * an unreachable IdP — `invalid_request`. Never a 500, and the detail names the reason only:
 * openid-client keeps the request's parameters (the code) in `cause`, which is never read here.
 */
function refusal(e: unknown, issuer: SubjectIssuerConfig): OAuthError {
  if (e instanceof OAuthError) return e
  if (e instanceof client.AuthorizationResponseError) {
    return accessDenied('the sign-in was refused at the identity provider', `${issuer.issuer} answered ${bounded(e.error)}${e.error_description ? `: ${bounded(e.error_description)}` : ''}`)
  }
  if (e instanceof client.ResponseBodyError) {
    return invalidRequest(NOT_COMPLETED, `token endpoint of ${issuer.issuer} answered ${e.status} ${bounded(e.error)}${e.error_description ? `: ${bounded(e.error_description)}` : ''}`)
  }
  if (e instanceof client.WWWAuthenticateChallengeError) {
    // A 401 with a challenge: the IdP refused the client (RFC 6749 §5.2 invalid_client).
    const error = e.cause.map((c) => c.parameters.error).find((x) => typeof x === 'string')
    return invalidRequest(NOT_COMPLETED, `token endpoint of ${issuer.issuer} answered ${e.status} ${bounded(error ?? 'with a challenge')}`)
  }
  return invalidRequest(NOT_COMPLETED, `${issuer.issuer}: ${describe(e)}`)
}

/** An openid-client error's message and code, and its cause's message when the cause is an error (never its data). */
function describe(e: unknown): string {
  if (!(e instanceof Error)) return 'failed'
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return 'timed out'
  const code = (e as { code?: unknown }).code
  const cause = e.cause instanceof Error ? (e.cause.name === 'TimeoutError' || e.cause.name === 'AbortError' ? 'timed out' : e.cause.message) : undefined
  return bounded(`${e.message}${typeof code === 'string' ? ` [${code}]` : ''}${cause ? ` (${cause})` : ''}`)
}

function bounded(text: string): string {
  return text.length > 300 ? `${text.slice(0, 300)}…` : text
}
