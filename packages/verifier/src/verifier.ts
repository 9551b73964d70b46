import { compactVerify, errors, type CryptoKey, type KeyObject } from 'jose'
import { systemClock, type Clock } from './clock.js'
import { createProofKeyCache, createReplayCache, DPOP_ALGORITHMS, DpopError, verifyDpopProof } from './dpop.js'
import { TtlCache } from './ttl-cache.js'
import type { SubjectId } from './feed-events.js'
import { createDecisionCache, createPdpClient, type AuthorizedToken, type PdpClient, type ToolCall, type ToolDecision } from './authorization.js'
import { buildWwwAuthenticate, VerifierError, type AuthScheme } from './errors.js'
import { createIntrospectionClient, type IntrospectionClient } from './introspection.js'
import { createVerifierKeySet } from './jwks.js'
import { buildProtectedResourceMetadata, protectedResourceMetadataUrl, type ProtectedResourceMetadata } from './metadata.js'
import { checkOptions, type TaskTokenVerifierOptions } from './options.js'
import { createRevocationFeedClient, type FeedStatus, type RevocationFeedClient } from './revocation-feed.js'
import { toolsInToken } from './token-tools.js'

/**
 * What a verified task token says, shaped as the MCP SDK's `AuthInfo` (v1 and v2): `expiresAt`
 * and `resource` are always set, so the SDK gates' expiry and `expectedResource` checks work.
 */
export interface TaskAuthInfo {
  token: string
  clientId: string
  scopes: string[]
  /** Epoch seconds (the token's `exp`). */
  expiresAt: number
  /** The token's `aud`: this server's resource URI. */
  resource: URL
  extra: {
    /** The token's `sub`: the broker's identifier for the user, opaque to a resource server. */
    sub: string
    /** RFC 9493 §3.2.5: the user as (subject issuer, subject) — what to key per-user data on. */
    sub_id: SubjectId
    act: { sub: string; [claim: string]: unknown }
    task_id: string
    jti: string
    sid?: string
    cnf?: { jkt: string }
    /**
     * The MCP tools this token may call on this resource: the `actions` of its RFC 9396
     * `mcp_tools` authorization details for this resource. Absent for a scope-only token (its
     * task declared no tools); the adapters' tool step refuses any other tool.
     */
    tools?: string[]
  }
}

/** The parts of an HTTP request the verifier reads. */
export interface TaskTokenRequest {
  method: string
  /** The absolute request URL (the DPoP `htu` is compared with it, RFC 9449 §4.3). */
  url: string
  /** Every `Authorization` header value (a web `Headers` joins duplicates with ", "). */
  authorization: string | readonly string[] | null | undefined
  /** Every `DPoP` header value. */
  dpop?: string | readonly string[] | null | undefined
}

export interface RevocationStatus {
  mode: 'feed' | 'introspection' | 'none'
  feed?: FeedStatus
}

export interface TaskTokenVerifier {
  readonly issuer: string
  readonly resource: string
  readonly dpop: 'required' | 'allowed' | 'off'
  readonly requiredScopes: readonly string[]
  /** RFC 9728 metadata URL for challenges (`resource_metadata`). */
  readonly resourceMetadataUrl: string
  /**
   * Whether a PDP credential is configured (`authorization.credentials`, or the revocation
   * credentials to reuse): the adapters' tool step then asks the PDP after the token's own tools;
   * without one it checks the token's tools alone.
   */
  readonly pdpConfigured: boolean
  /** Standards.md Appendix C, steps 1–8, for one request. Throws {@link VerifierError}. */
  verifyRequest(request: TaskTokenRequest): Promise<TaskAuthInfo>
  /**
   * Steps 2–8 for a token already taken from an `Authorization: Bearer` header — what the MCP
   * SDK gates hand a verifier. A DPoP-bound token is refused here (RFC 9449 §7.2).
   */
  verifyAccessToken(token: string): Promise<TaskAuthInfo>
  /** The `WWW-Authenticate` value for a rejection (or for a request without credentials). */
  challenge(error?: VerifierError): string
  /** A complete web `Response` for a rejection: status, challenge, `{error, error_description}`. */
  errorResponse(error: unknown): Response
  /** This resource's RFC 9728 protected-resource metadata document. */
  metadata(extra?: { resourceName?: string; resourceDocumentation?: string; scopesSupported?: readonly string[] }): ProtectedResourceMetadata
  /**
   * Asks the broker's AuthZEN PDP whether this verified token may call `call.tool` now
   * (docs/authzen.md): the task's state and declared tools, then the `call_tool` policy.
   * Answers are cached briefly per (jti, tool); a revocation event drops them. Fails closed:
   * an unreachable or confused PDP is `{allowed: false, reason: 'pdp_unavailable'}`.
   * @throws TypeError when no credential for the PDP is configured
   */
  authorize(auth: Pick<TaskAuthInfo, 'token' | 'extra'>, call: ToolCall): Promise<ToolDecision>
  /** Resolves once revocation status is known (feed caught up); at once for other modes. */
  ready(timeoutMs?: number): Promise<void>
  revocationStatus(): RevocationStatus
  /** Stops the feed (stream and timers). */
  close(): Promise<void>
}

interface Claims {
  iss: string
  sub: string
  sub_id: SubjectId
  aud: unknown
  client_id: string
  act: { sub: string; [claim: string]: unknown }
  scope: string
  task_id: string
  jti: string
  iat: number
  exp: number
  nbf?: number
  sid?: string
  cnf?: { jkt: string }
  authorization_details?: unknown
}

/** RFC 7515 §7.1 compact serialization: three base64url segments and nothing else (RFC 8725bis §3.4). */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/
/** RFC 6750 §2.1 `b64token`. */
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/
/** Header parameters that would let the token choose its own key (RFC 8725 §3.10) or demand unknown processing. */
const FORBIDDEN_HEADERS = ['jku', 'x5u', 'jwk', 'x5c', 'crit'] as const

/** A verified token's claims and the `kid` of the key it was signed with (checked on every use). */
interface Verified {
  claims: Claims
  kid: string | undefined
}

const invalidToken = (description: string, scheme?: AuthScheme, detail?: string) => new VerifierError('invalid_token', description, { scheme, ...(detail ? { detail } : {}) })

function decodeSegment(segment: string): unknown {
  try {
    return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
  } catch {
    return undefined
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** RFC 9068 §4 step 1: `at+jwt` or `application/at+jwt`, compared case-insensitively (RFC 7515 §4.1.9). */
function isAccessTokenTyp(typ: unknown): boolean {
  if (typeof typ !== 'string') return false
  const t = typ.toLowerCase()
  return t === 'at+jwt' || t === 'application/at+jwt'
}

function joseFailure(e: unknown, scheme: AuthScheme): VerifierError {
  if (e instanceof errors.JWKSNoMatchingKey) return invalidToken('token is signed with an unknown key', scheme)
  if (e instanceof errors.JWSSignatureVerificationFailed) return invalidToken('token signature is invalid', scheme)
  if (e instanceof errors.JOSEAlgNotAllowed || e instanceof errors.JOSENotSupported) return invalidToken('token algorithm is not allowed', scheme, String(e))
  if (e instanceof errors.JWKSTimeout || e instanceof errors.JWKSInvalid) return invalidToken('issuer signing keys are unavailable', scheme, String(e))
  return invalidToken('token signature could not be verified', scheme, e instanceof Error ? e.message : String(e))
}

/**
 * Creates the verifier an MCP server uses for taskpass task tokens (RFC 9068 JWTs). The checks
 * run in the order of standards.md Appendix C and stop at the first failure; see
 * {@link TaskTokenVerifier.verifyRequest}. Options are validated here, once.
 */
export function createTaskTokenVerifier(options: TaskTokenVerifierOptions): TaskTokenVerifier {
  checkOptions(options)
  const clock = options.clock ?? systemClock
  const fetchImpl = options.fetch ?? globalThis.fetch
  const { issuer, resource, dpop } = options
  const requiredScopes = [...(options.requiredScopes ?? [])]
  const leeway = options.leewaySeconds ?? 30
  const algorithms = [...(options.algorithms ?? ['ES256', 'EdDSA'])]
  const dpopAlgorithms = [...(options.dpopAlgorithms ?? DPOP_ALGORITHMS)]
  const dpopWindow = options.dpopProofWindowSeconds ?? 60
  const maxTokenLength = options.maxTokenLength ?? 8192
  const resourceMetadataUrl = protectedResourceMetadataUrl(resource)
  const reportError = (e: Error) => options.onError?.(e)

  const subjectIssuers = options.subjectIssuers ? new Set(options.subjectIssuers) : undefined
  // The key set is cached for the JWKS response's max-age, refetched at most once per cooldown
  // for an unknown `kid`, fetched with a timeout and without redirects.
  const jwks = createVerifierKeySet(new URL(options.jwksUri ?? `${issuer}/.well-known/jwks.json`), { clock, fetch: fetchImpl, timeoutMs: 3000, cooldownMs: 30_000, onError: reportError })
  // Each distinct token is signature-checked once; its claims are then served from memory until `exp`.
  const cacheMaxEntries = options.cacheMaxEntries ?? 10_000
  let verified = new TtlCache<Verified>(cacheMaxEntries)
  // Bumped by every key revocation: a verification that started before it must not fill the new cache.
  let keyRevocations = 0
  // RFC 9449 §11.1: one acceptance per proof; a tenth of the room per proof key, so no client crowds out the rest.
  const replayMaxEntries = options.dpopReplayCacheMaxEntries ?? 100_000
  // Each proof key may hold a tenth of the room: one busy client cannot lock the others out.
  const replay = createReplayCache(replayMaxEntries, Math.max(1, Math.floor(replayMaxEntries / 10)))
  const proofKeys = createProofKeyCache()

  /** A `key_revoked` feed event: the key is distrusted at once, and so is every token it signed, cached or not. */
  function revokeKey(kid: string, until: number): void {
    jwks.exclude(kid, until + leeway)
    keyRevocations++
    verified = new TtlCache<Verified>(cacheMaxEntries)
  }

  const revocation = options.revocation
  const authz = options.authorization ?? {}
  const decisions = createDecisionCache({ ttlMs: authz.cacheMs ?? 2000, maxEntries: authz.cacheMaxEntries ?? 10_000, clock })
  let feed: RevocationFeedClient | undefined
  let introspection: IntrospectionClient | undefined
  if (revocation.mode === 'feed') {
    feed = createRevocationFeedClient({
      feedUrl: revocation.feedUrl,
      credentials: revocation.credentials,
      staleAfterSeconds: revocation.staleAfterSeconds ?? 30,
      pollIntervalMs: revocation.pollIntervalMs ?? 1000,
      leewaySeconds: leeway,
      clock,
      fetch: fetchImpl,
      onEvent: (event, receivedAtMs) => {
        // A revoked token, task or session loses its cached tool decisions at once.
        decisions.forget(event)
        revocation.onEvent?.(event, receivedAtMs)
      },
      onError: reportError,
      onKeyRevoked: revokeKey,
    })
  } else if (revocation.mode === 'introspection') {
    introspection = createIntrospectionClient({
      introspectionUrl: revocation.introspectionUrl,
      credentials: revocation.credentials,
      cacheMs: revocation.cacheMs ?? 0,
      clock,
      fetch: fetchImpl,
      onError: reportError,
    })
  }

  const pdpCredentials = authz.credentials ?? (revocation.mode === 'none' ? undefined : revocation.credentials)
  const pdp: PdpClient | undefined = pdpCredentials
    ? createPdpClient({
        evaluationUrl: authz.evaluationUrl ?? `${issuer}/access/v1/evaluation`,
        credentials: pdpCredentials,
        timeoutMs: authz.timeoutMs ?? 3000,
        cache: decisions,
        fetch: fetchImpl,
        onError: reportError,
        ...(feed ? { isRevoked: (t: AuthorizedToken) => feed!.isRevoked(t.extra) } : {}),
      })
    : undefined

  /** Steps 2–3: syntax, header, issuer, signature. The result is cached per token string. */
  async function verifySignature(token: string, scheme: AuthScheme): Promise<Claims> {
    if (token.length > maxTokenLength) throw invalidToken('token is too large', scheme)
    if (!COMPACT_JWS.test(token)) throw invalidToken('token is not a compact JWS', scheme)
    const now = clock.now()
    const cached = verified.get(token, now)
    if (cached) {
      if (cached.kid !== undefined && jwks.isExcluded(cached.kid, now)) throw invalidToken('token is signed with a revoked key', scheme)
      return cached.claims
    }
    const generation = keyRevocations

    const [headerPart, payloadPart] = token.split('.') as [string, string, string]
    const header = decodeSegment(headerPart)
    if (!isObject(header)) throw invalidToken('token header is not a JSON object', scheme)
    if (!isAccessTokenTyp(header.typ)) throw invalidToken('token typ is not at+jwt', scheme, `typ ${JSON.stringify(header.typ)}`)
    // RFC 8725bis: alg is compared case-sensitively against an allow-list; `none` is never on it.
    if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) throw invalidToken('token algorithm is not allowed', scheme, `alg ${JSON.stringify(header.alg)}`)
    for (const name of FORBIDDEN_HEADERS) {
      if (name in header) throw invalidToken(`token header must not carry ${name}`, scheme)
    }
    const payload = decodeSegment(payloadPart)
    if (!isObject(payload)) throw invalidToken('token payload is not a JSON object', scheme)
    // RFC 9068 §4 step 3, before any key is fetched: a foreign token never makes us call out.
    if (payload.iss !== issuer) throw invalidToken('token issuer is not trusted here', scheme, `iss ${JSON.stringify(payload.iss)}`)
    const kid = typeof header.kid === 'string' ? header.kid : undefined
    if (kid !== undefined && jwks.isExcluded(kid, now)) throw invalidToken('token is signed with a revoked key', scheme)

    try {
      await compactVerify(token, jwks.getKey, { algorithms })
    } catch (e) {
      if (e instanceof errors.JWKSMultipleMatchingKeys) {
        // No `kid` and several candidate keys: try each (as jose's jwtVerify does).
        let ok = false
        for await (const key of e as unknown as AsyncIterable<CryptoKey | KeyObject>) {
          try {
            await compactVerify(token, key, { algorithms })
            ok = true
            break
          } catch {
            // next key
          }
        }
        if (!ok) throw invalidToken('token signature is invalid', scheme)
      } else {
        if (e instanceof errors.JWKSTimeout || (e instanceof Error && !(e instanceof errors.JOSEError))) reportError(e)
        throw joseFailure(e, scheme)
      }
    }
    const claims = payload as unknown as Claims
    if (typeof claims.exp === 'number' && Number.isFinite(claims.exp) && generation === keyRevocations) verified.set(token, { claims, kid }, claims.exp + leeway)
    return claims
  }

  /** Steps 4–8 after the signature; DPoP inputs are present only for a `DPoP`-scheme request. */
  async function verifyClaims(token: string, claims: Claims, scheme: AuthScheme, proof: { headers: string[]; method: string; url: string } | undefined): Promise<TaskAuthInfo> {
    const now = clock.now()
    // Step 4 — RFC 8707 / RFC 9068 §4 step 4: exactly this resource, as a single value.
    const aud = Array.isArray(claims.aud) && claims.aud.length === 1 ? claims.aud[0] : claims.aud
    if (aud !== resource) throw invalidToken('token audience is not this resource', scheme, `aud ${JSON.stringify(claims.aud)}`)

    // Step 5 — times with a small leeway, then the claims every task token carries.
    if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) throw invalidToken('token has no exp', scheme)
    if (now >= claims.exp + leeway) throw invalidToken('token is expired', scheme)
    if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf > now + leeway)) throw invalidToken('token is not valid yet', scheme)
    if (typeof claims.iat !== 'number' || claims.iat > now + leeway) throw invalidToken('token iat is missing or in the future', scheme)
    for (const name of ['sub', 'client_id', 'jti', 'task_id', 'scope'] as const) {
      if (typeof claims[name] !== 'string' || claims[name] === '') throw invalidToken(`token lacks the ${name} claim`, scheme)
    }
    if (!isObject(claims.act) || typeof claims.act.sub !== 'string' || claims.act.sub === '') throw invalidToken('token lacks the act claim', scheme)
    // RFC 9493 §3.2.5: the user is (subject issuer, subject); `sub` alone names no one outside the broker.
    const subId = claims.sub_id as unknown
    if (!isObject(subId) || subId.format !== 'iss_sub' || typeof subId.iss !== 'string' || subId.iss === '' || typeof subId.sub !== 'string' || subId.sub === '') {
      throw invalidToken('token lacks a valid sub_id claim', scheme)
    }
    if (subjectIssuers && !subjectIssuers.has(claims.sub_id.iss)) throw invalidToken('token user is from a subject issuer not accepted here', scheme, `sub_id.iss ${JSON.stringify(claims.sub_id.iss)}`)
    if (claims.sid !== undefined && typeof claims.sid !== 'string') throw invalidToken('token sid is malformed', scheme)
    // RFC 9396: the tools the task declared. The broker never mints a malformed claim: refuse one.
    const tokenTools = toolsInToken(claims.authorization_details, resource)
    if (!tokenTools.ok) throw invalidToken('token authorization_details claim is malformed', scheme, tokenTools.why)

    // Step 6 — sender constraint (RFC 9449 §7).
    if (claims.cnf !== undefined) {
      if (!isObject(claims.cnf) || typeof claims.cnf.jkt !== 'string' || claims.cnf.jkt === '') throw invalidToken('token cnf claim is malformed', scheme)
      if (dpop === 'off') throw invalidToken('DPoP-bound tokens are not accepted here', scheme)
      // §7.2: a resource that accepts both schemes MUST reject a DPoP-bound token sent as Bearer.
      if (scheme !== 'DPoP' || !proof) throw invalidToken('token is DPoP-bound and must be sent with the DPoP scheme and a proof', scheme)
      let jkt: string
      try {
        ;({ jkt } = await verifyDpopProof(proof.headers, {
          htm: proof.method,
          htu: proof.url,
          now,
          iatWindow: dpopWindow,
          replay,
          keys: proofKeys,
          algorithms: dpopAlgorithms,
          accessToken: token,
          // §7.1: only the bound key's proofs reach the signature check and the replay cache.
          expectedJkt: claims.cnf.jkt,
        }))
      } catch (e) {
        if (e instanceof DpopError) throw new VerifierError('invalid_dpop_proof', e.message, { scheme: 'DPoP' })
        throw e
      }
      if (jkt !== claims.cnf.jkt) throw new VerifierError('invalid_dpop_proof', 'the DPoP proof key is not the key the token is bound to', { scheme: 'DPoP' })
    } else {
      if (scheme === 'DPoP') throw invalidToken('token is not DPoP-bound; send it with the Bearer scheme', scheme)
      if (dpop === 'required') throw invalidToken('a DPoP-bound token is required', scheme)
    }

    // Step 7 — revocation, failing closed when status cannot be known.
    if (feed) {
      if (!feed.isFresh()) throw invalidToken('token status cannot be checked right now', scheme, 'revocation feed is stale')
      if (feed.isRevoked(claims)) throw invalidToken('token has been revoked', scheme)
    } else if (introspection) {
      const status = await introspection.status(token, claims)
      if (status === 'unavailable') throw invalidToken('token status cannot be checked right now', scheme, 'introspection unavailable')
      if (status === 'inactive') throw invalidToken('token is not active', scheme)
    }

    // Step 8 — scope.
    const scopes = claims.scope.split(' ').filter(Boolean)
    const missing = requiredScopes.filter((s) => !scopes.includes(s))
    if (missing.length > 0) throw new VerifierError('insufficient_scope', 'token lacks a required scope', { scheme, requiredScopes, detail: `missing ${missing.join(' ')}` })

    return {
      token,
      clientId: claims.client_id,
      scopes,
      expiresAt: claims.exp,
      resource: new URL(resource),
      extra: {
        sub: claims.sub,
        sub_id: { format: 'iss_sub', iss: claims.sub_id.iss, sub: claims.sub_id.sub },
        act: claims.act,
        task_id: claims.task_id,
        jti: claims.jti,
        ...(claims.sid !== undefined ? { sid: claims.sid } : {}),
        ...(claims.cnf !== undefined ? { cnf: { jkt: claims.cnf.jkt } } : {}),
        ...(tokenTools.tools !== undefined ? { tools: tokenTools.tools } : {}),
      },
    }
  }

  async function check(token: string, scheme: AuthScheme, proof: { headers: string[]; method: string; url: string } | undefined): Promise<TaskAuthInfo> {
    try {
      const claims = await verifySignature(token, scheme)
      return await verifyClaims(token, claims, scheme, proof)
    } catch (e) {
      if (e instanceof VerifierError) throw e
      // Fail closed on anything unexpected, and say so to whoever watches.
      reportError(e instanceof Error ? e : new Error(String(e)))
      throw invalidToken('token could not be verified', scheme, e instanceof Error ? e.message : String(e))
    }
  }

  function values(v: string | readonly string[] | null | undefined): string[] {
    if (v === undefined || v === null) return []
    return typeof v === 'string' ? [v] : [...v]
  }

  const verifier: TaskTokenVerifier = {
    issuer,
    resource,
    dpop,
    requiredScopes,
    resourceMetadataUrl,
    pdpConfigured: pdp !== undefined,

    async verifyRequest(request) {
      // Step 1 — exactly one credential (RFC 6750 §2, RFC 9449 §7.2).
      let url: URL
      try {
        url = new URL(request.url)
      } catch {
        throw new VerifierError('invalid_request', 'request URL is malformed')
      }
      // A web Headers object joins repeated headers with ", "; token68 never contains a comma.
      const credentials = values(request.authorization).flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean)
      if (url.searchParams.has('access_token')) throw new VerifierError('invalid_request', 'access tokens are accepted in the Authorization header only')
      if (credentials.length === 0) throw new VerifierError('invalid_token', 'no access token', { credentialsMissing: true })
      if (credentials.length > 1) throw new VerifierError('invalid_request', 'more than one Authorization credential')
      const [schemeText = '', ...rest] = credentials[0]!.split(/ +/)
      const schemeName = schemeText.toLowerCase()
      // RFC 6750 §3.1: an unsupported method counts as no credentials (a challenge without an error).
      if (schemeName !== 'bearer' && schemeName !== 'dpop') throw new VerifierError('invalid_token', 'unsupported authorization scheme', { credentialsMissing: true })
      const scheme: AuthScheme = schemeName === 'dpop' ? 'DPoP' : 'Bearer'
      const token = rest.length === 1 ? rest[0]! : ''
      if (!TOKEN68.test(token)) throw new VerifierError('invalid_request', 'malformed Authorization header', { scheme })
      if (scheme === 'DPoP' && dpop === 'off') throw invalidToken('the DPoP scheme is not accepted here', scheme)
      if (scheme === 'Bearer' && dpop === 'required') throw invalidToken('this resource requires DPoP-bound tokens', scheme)
      const proof = scheme === 'DPoP' ? { headers: values(request.dpop), method: request.method.toUpperCase(), url: url.href } : undefined
      return check(token, scheme, proof)
    },

    verifyAccessToken(token) {
      if (typeof token !== 'string' || token === '') return Promise.reject(invalidToken('no access token', 'Bearer'))
      return check(token, 'Bearer', undefined)
    },

    challenge(error) {
      return buildWwwAuthenticate(error, { resourceMetadataUrl, dpop, dpopAlgorithms, scopes: requiredScopes })
    },

    errorResponse(error) {
      const err = error instanceof VerifierError ? error : invalidToken('token could not be verified')
      return Response.json(err.toJSON(), { status: err.status, headers: { 'WWW-Authenticate': verifier.challenge(err), 'Cache-Control': 'no-store' } })
    },

    metadata(extra = {}) {
      return buildProtectedResourceMetadata({
        issuer,
        resource,
        scopesSupported: extra.scopesSupported ?? requiredScopes,
        dpop,
        dpopAlgorithms,
        ...(extra.resourceName ? { resourceName: extra.resourceName } : {}),
        ...(extra.resourceDocumentation ? { resourceDocumentation: extra.resourceDocumentation } : {}),
      })
    },

    authorize(auth, call) {
      if (!pdp) return Promise.reject(new TypeError('"authorization.credentials" is required (or revocation credentials to reuse) to ask the PDP'))
      if (typeof auth?.token !== 'string' || typeof auth.extra?.jti !== 'string') return Promise.resolve({ allowed: false, reason: 'no_token' })
      return pdp.authorize(auth, call)
    },

    ready(timeoutMs) {
      return feed ? feed.ready(timeoutMs) : Promise.resolve()
    },

    revocationStatus() {
      return feed ? { mode: 'feed', feed: feed.status() } : { mode: revocation.mode }
    },

    async close() {
      await feed?.close()
    },
  }
  return verifier
}

/** Whether a verified token carries every one of `scopes` (for per-tool checks inside a handler). */
export function hasScopes(auth: Pick<TaskAuthInfo, 'scopes'> | undefined, scopes: readonly string[]): boolean {
  return auth !== undefined && scopes.every((s) => auth.scopes.includes(s))
}
