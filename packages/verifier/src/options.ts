import type { Clock } from './clock.js'
import type { FeedEvent } from './revocation-feed.js'

/** How revoked tokens and ended tasks are learned of. */
export type RevocationOptions =
  | {
      /** The broker's revocation feed (`GET /revocations`): SSE with polling fallback. The default choice. */
      mode: 'feed'
      feedUrl: string
      /** The resource's credential at the broker (the one it uses for introspection). */
      credentials: { clientId: string; clientSecret: string }
      /** Reject every token (fail closed) once the feed has been silent this long. Default 30. */
      staleAfterSeconds?: number
      /** Poll period while the stream is down. Default 1000. */
      pollIntervalMs?: number
      onEvent?: (event: FeedEvent, receivedAtMs: number) => void
    }
  | {
      /** RFC 7662 introspection on each request: authoritative, one broker round trip per call. */
      mode: 'introspection'
      introspectionUrl: string
      credentials: { clientId: string; clientSecret: string }
      /** How long an `active` answer may be reused. Default 0, at most 5000. */
      cacheMs?: number
    }
  | {
      /** No revocation check: a token stays valid until `exp` even after its task ended. */
      mode: 'none'
    }

/**
 * Tool-call authorization through the broker's AuthZEN PDP (docs/authzen.md): what
 * `verifier.authorize` and the adapters' `authorizeToolCalls` option use.
 */
export interface ToolAuthorizationOptions {
  /** The PDP's Access Evaluation endpoint. Default: `<issuer>/access/v1/evaluation`. */
  evaluationUrl?: string
  /** The resource's credential at the broker. Default: the revocation option's `credentials`. */
  credentials?: { clientId: string; clientSecret: string }
  /** How long a decision is reused for the same token and tool, ms. Default 2000, at most 5000; 0: ask every time. */
  cacheMs?: number
  /** Decisions kept (least recently used dropped first). Default 10000. */
  cacheMaxEntries?: number
  /** How long to wait for the PDP before denying, ms. Default 3000. */
  timeoutMs?: number
}

export interface TaskTokenVerifierOptions {
  /** The broker's issuer identifier, exactly as in its metadata and the tokens' `iss`. */
  issuer: string
  /** This server's resource URI (RFC 8707), exactly as registered at the broker: the tokens' `aud`. */
  resource: string
  /** Default: `<issuer>/.well-known/jwks.json`. */
  jwksUri?: string
  /** Scopes every request must carry (403 `insufficient_scope` otherwise). */
  requiredScopes?: readonly string[]
  /**
   * `required`: only DPoP-bound tokens with a valid proof. `allowed`: Bearer for unbound tokens,
   * DPoP for bound ones. `off`: Bearer only; bound tokens are refused (RFC 9449 §7.2).
   */
  dpop: 'required' | 'allowed' | 'off'
  revocation: RevocationOptions
  /** Tool-call authorization through the broker's PDP; defaults apply when absent (see {@link ToolAuthorizationOptions}). */
  authorization?: ToolAuthorizationOptions
  /** Defaults to the system clock. Tests pass a fixed one. */
  clock?: Clock
  /** Tolerance for `exp`, `nbf`, `iat`. Default 30, at most {@link MAX_LEEWAY_SECONDS} (standards.md Appendix C). */
  leewaySeconds?: number
  /**
   * Accept only users of these subject issuers (the `iss` of the token's RFC 9493 `sub_id`);
   * every other token is `invalid_token`. Default: users of any issuer the broker trusts.
   */
  subjectIssuers?: readonly string[]
  /** Access-token signature algorithms accepted. Default ES256 and EdDSA (what the broker signs with). */
  algorithms?: readonly string[]
  /** DPoP proof algorithms accepted. Default: the asymmetric set of `DPOP_ALGORITHMS` (`@taskpass/verifier/dpop`). */
  dpopAlgorithms?: readonly string[]
  /** Accepted age (and future skew) of a DPoP proof's `iat`, seconds. Default 60. */
  dpopProofWindowSeconds?: number
  /** Longest token accepted, characters. Default 8192. */
  maxTokenLength?: number
  /** Verified tokens kept in memory (each until its `exp`). Default 10000. */
  cacheMaxEntries?: number
  /**
   * DPoP proof `jti`s remembered for replay detection. Default 100000. One proof key may hold at
   * most a tenth of them, so no client can crowd out the others (RFC 9449 §11.1).
   */
  dpopReplayCacheMaxEntries?: number
  /** Used for every call to the broker (JWKS, feed, introspection). Default: global fetch. */
  fetch?: typeof fetch
  /** Reporting hook for transport problems (feed, introspection, JWKS). Never alters a decision. */
  onError?: (error: Error) => void
}

/**
 * The longest `leewaySeconds` a verifier may use. The broker keeps every revocation event at least
 * this long past its `until`, so no verifier accepts, inside its leeway, a token whose revocation
 * was already pruned.
 */
export const MAX_LEEWAY_SECONDS = 60

const SIGNING_ALGORITHMS = new Set(['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'])

/** A misuse of the options: the message quotes the option (oauth4webapi style). */
function bad(field: string, what: string): TypeError {
  return new TypeError(`"${field}" ${what}`)
}

function checkUrl(field: string, value: unknown, opts: { noFragment?: boolean } = {}): URL {
  if (typeof value !== 'string' || value === '') throw bad(field, 'must be an absolute URL string')
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw bad(field, 'must be an absolute URL string')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw bad(field, 'must be an http(s) URL')
  if (opts.noFragment && value.includes('#')) throw bad(field, 'must not contain a fragment (RFC 8707 §2)')
  return url
}

function checkCredentials(field: string, value: unknown): void {
  const c = value as { clientId?: unknown; clientSecret?: unknown } | undefined
  if (typeof c !== 'object' || c === null || typeof c.clientId !== 'string' || c.clientId === '' || typeof c.clientSecret !== 'string' || c.clientSecret === '') {
    throw bad(field, 'must be {clientId, clientSecret} (non-empty strings)')
  }
}

function checkInt(field: string, value: unknown, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) throw bad(field, `must be an integer from ${min} to ${max}`)
}

/** Validates the options once, naming the first bad one. */
export function checkOptions(o: TaskTokenVerifierOptions): void {
  if (typeof o !== 'object' || o === null) throw new TypeError('options must be an object')
  checkUrl('issuer', o.issuer)
  checkUrl('resource', o.resource, { noFragment: true })
  if (o.jwksUri !== undefined) checkUrl('jwksUri', o.jwksUri)
  if (o.requiredScopes !== undefined && (!Array.isArray(o.requiredScopes) || !o.requiredScopes.every((s) => typeof s === 'string' && /^[\x21\x23-\x5B\x5D-\x7E]+$/.test(s)))) {
    throw bad('requiredScopes', 'must be an array of scope tokens (RFC 6749 §3.3)')
  }
  if (o.dpop !== 'required' && o.dpop !== 'allowed' && o.dpop !== 'off') throw bad('dpop', "must be 'required', 'allowed' or 'off'")
  const r = o.revocation as RevocationOptions | undefined
  if (typeof r !== 'object' || r === null) throw bad('revocation', "must be {mode: 'feed' | 'introspection' | 'none', …}")
  switch (r.mode) {
    case 'feed':
      checkUrl('revocation.feedUrl', r.feedUrl)
      checkCredentials('revocation.credentials', r.credentials)
      if (r.staleAfterSeconds !== undefined) checkInt('revocation.staleAfterSeconds', r.staleAfterSeconds, 1, 3600)
      if (r.pollIntervalMs !== undefined) checkInt('revocation.pollIntervalMs', r.pollIntervalMs, 50, 60_000)
      break
    case 'introspection':
      checkUrl('revocation.introspectionUrl', r.introspectionUrl)
      checkCredentials('revocation.credentials', r.credentials)
      if (r.cacheMs !== undefined) checkInt('revocation.cacheMs', r.cacheMs, 0, 5000)
      break
    case 'none':
      break
    default:
      throw bad('revocation.mode', "must be 'feed', 'introspection' or 'none'")
  }
  const a = o.authorization as ToolAuthorizationOptions | undefined
  if (a !== undefined) {
    if (typeof a !== 'object' || a === null) throw bad('authorization', 'must be an object')
    if (a.evaluationUrl !== undefined) checkUrl('authorization.evaluationUrl', a.evaluationUrl)
    if (a.credentials !== undefined) checkCredentials('authorization.credentials', a.credentials)
    if (a.cacheMs !== undefined) checkInt('authorization.cacheMs', a.cacheMs, 0, 5000)
    if (a.cacheMaxEntries !== undefined) checkInt('authorization.cacheMaxEntries', a.cacheMaxEntries, 1, 1_000_000)
    if (a.timeoutMs !== undefined) checkInt('authorization.timeoutMs', a.timeoutMs, 100, 30_000)
  }
  if (o.clock !== undefined && (typeof o.clock.now !== 'function' || typeof o.clock.nowMs !== 'function')) throw bad('clock', 'must have now() (epoch s) and nowMs() (epoch ms)')
  if (o.leewaySeconds !== undefined) checkInt('leewaySeconds', o.leewaySeconds, 0, MAX_LEEWAY_SECONDS)
  if (o.subjectIssuers !== undefined && (!Array.isArray(o.subjectIssuers) || o.subjectIssuers.length === 0 || !o.subjectIssuers.every((i) => typeof i === 'string' && i !== ''))) {
    throw bad('subjectIssuers', 'must be a non-empty array of issuer identifiers (non-empty strings)')
  }
  if (o.algorithms !== undefined && (!Array.isArray(o.algorithms) || o.algorithms.length === 0 || !o.algorithms.every((a) => SIGNING_ALGORITHMS.has(a)))) {
    throw bad('algorithms', `must be a non-empty subset of ${[...SIGNING_ALGORITHMS].join(', ')} (never none or HMAC)`)
  }
  if (o.dpopAlgorithms !== undefined && (!Array.isArray(o.dpopAlgorithms) || o.dpopAlgorithms.length === 0 || !o.dpopAlgorithms.every((a) => SIGNING_ALGORITHMS.has(a)))) {
    throw bad('dpopAlgorithms', 'must be a non-empty list of asymmetric algorithms')
  }
  if (o.dpopProofWindowSeconds !== undefined) checkInt('dpopProofWindowSeconds', o.dpopProofWindowSeconds, 1, 600)
  if (o.maxTokenLength !== undefined) checkInt('maxTokenLength', o.maxTokenLength, 256, 65_536)
  if (o.cacheMaxEntries !== undefined) checkInt('cacheMaxEntries', o.cacheMaxEntries, 1, 10_000_000)
  if (o.dpopReplayCacheMaxEntries !== undefined) checkInt('dpopReplayCacheMaxEntries', o.dpopReplayCacheMaxEntries, 10, 10_000_000)
}
