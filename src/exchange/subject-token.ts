import { jwtVerify, type CompactJWSHeaderParameters, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { TtlCache } from '@taskpass/verifier/cache'
import type { Clock } from '../clock.js'
import type { SubjectIssuerConfig } from '../config.js'
import { invalidRequest, type OAuthError } from '../errors.js'
import { describeJoseError, keyResolver, normalizeTyp, peekJwt } from '../lib/jwt.js'
import type { RemoteJwksOptions } from '../lib/remote-jwks.js'

/** RFC 8693 §3 token types we accept for a user's session token. */
export const SUBJECT_TOKEN_TYPES = new Set([
  'urn:ietf:params:oauth:token-type:jwt',
  'urn:ietf:params:oauth:token-type:id_token',
  'urn:ietf:params:oauth:token-type:access_token',
])

/** Longest accepted subject (OIDC Core §2 `sub`: at most 255 ASCII characters). */
export const MAX_SUBJECT_LENGTH = 255

/** A verified user session. A user is the pair (`issuer`, `user`); `sub` names that pair in one string. */
export interface Subject {
  issuer: string
  /** The subject at its issuer (the IdP's own `sub`, or the configured `userClaim`). */
  user: string
  /** The user as the broker's tokens name it: unique across subject issuers ({@link brokerSubject}). */
  sub: string
  sid: string | undefined
  exp: number
  /** The claims the issuer's `policyClaims` name, as strings (policy reads them as the User's tags). */
  claims: Record<string, string>
  /** When the user signed in: the token's `auth_time` (OIDC) when it has a sane one, else its `iat`. Policy's `session_age` counts from it. */
  startedAt: number
  /**
   * RFC 8693 §4.4 `may_act` exactly as the token carried it (any JSON value), or `undefined` when
   * the claim is absent. Interpreted — and refused when malformed — by `checkMayAct`.
   */
  mayAct: unknown
}

export interface SubjectTokenVerifier {
  /** Verifies a user's session token. Every failure is `invalid_request` (RFC 8693 §2.2.2). */
  verify(token: string): Promise<Subject>
  /**
   * {@link verify} but for the session's revocation, which the caller checks itself before it
   * relies on the subject for anything, refusing with {@link revokedSession}: the token exchange
   * naming a task reads the session's state with the task, in one statement.
   */
  verifyExceptSession(token: string): Promise<Subject>
}

/** The refusal of a subject token whose session was revoked at the broker (RFC 8693 §2.2.2 `invalid_request`). */
export function revokedSession(sid: string): OAuthError {
  return invalidRequest('subject_token session has been revoked', `session ${sid} revoked`)
}

/** The named claims of a verified session token that policy may read: scalars as strings, bounded; anything else left out. */
export function policyClaims(payload: Record<string, unknown>, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of names) {
    const v = payload[name]
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
      const text = String(v)
      if (text.length <= 1024) out[name] = text
    }
  }
  return out
}

/**
 * The user's `sub` in tokens the broker issues: `<subjectPrefix><subject>`. RFC 7519 §4.1.2: a
 * `sub` "MUST either be scoped to be locally unique in the context of the issuer" — the issuer is
 * the broker, which trusts several IdPs, so the prefix (required, distinct and ending in the only
 * `:` when there are several) keeps "alice" of one IdP apart from "alice" of another.
 */
export function brokerSubject(issuers: readonly Pick<SubjectIssuerConfig, 'issuer' | 'subjectPrefix'>[], issuer: string, user: string): string {
  const prefix = issuers.find((i) => i.issuer === issuer)?.subjectPrefix ?? ''
  return prefix + user
}

/**
 * The inverse of {@link brokerSubject}: which (issuer, subject) a broker `sub` names, or
 * `undefined` when it names no configured issuer's user. Prefixes end in their only `:`, so the
 * first `:` decides; an issuer without a prefix (the only one) owns every other `sub`.
 */
export function parseBrokerSubject(issuers: readonly Pick<SubjectIssuerConfig, 'issuer' | 'subjectPrefix'>[], sub: string): { issuer: string; user: string } | undefined {
  const colon = sub.indexOf(':')
  const prefixed = colon >= 0 ? issuers.find((i) => i.subjectPrefix === sub.slice(0, colon + 1)) : undefined
  if (prefixed) return { issuer: prefixed.issuer, user: sub.slice(colon + 1) }
  const plain = issuers.find((i) => i.subjectPrefix === undefined)
  return plain ? { issuer: plain.issuer, user: sub } : undefined
}

interface TrustedSubjectIssuer {
  config: SubjectIssuerConfig
  getKey: JWTVerifyGetKey
  audience: string
  typ: Set<string>
}

/** A cached verification remembers the header it was checked with, to re-check its key on every hit. */
interface CachedSubject {
  subject: Subject
  issuer: TrustedSubjectIssuer
  header: CompactJWSHeaderParameters
}

/**
 * The key resolver of every subject issuer, by its `iss`: built once and shared by the session-token
 * verifier and the ID-JAG verifier, so an IdP's remote key set is fetched and cached once.
 */
export function subjectIssuerKeys(issuers: readonly SubjectIssuerConfig[], opts: { clock: Clock; remoteJwks: RemoteJwksOptions }): Map<string, JWTVerifyGetKey> {
  return new Map(issuers.map((c) => [c.issuer, keyResolver(c, { clock: opts.clock, remote: opts.remoteJwks })]))
}

export function createSubjectTokenVerifier(opts: {
  issuers: SubjectIssuerConfig[]
  brokerIssuer: string
  clock: Clock
  clockSkew: number
  /** How remote `jwksUri` key sets are fetched (timeout, size cap, cache, cooldown). */
  remoteJwks: RemoteJwksOptions
  /** Whether a session was revoked at the broker; asked on every call of `verify`, cached or not. */
  isSessionRevoked: (issuer: string, sid: string) => Promise<boolean>
  cacheSize?: number
  /** Told whether each lookup of the verified-session cache hit (metrics). */
  observeCache?: (hit: boolean) => void
  /** The issuers' key resolvers ({@link subjectIssuerKeys}), when shared; built here otherwise. */
  keys?: Map<string, JWTVerifyGetKey>
}): SubjectTokenVerifier {
  const keys = opts.keys ?? subjectIssuerKeys(opts.issuers, opts)
  const trusted = new Map<string, TrustedSubjectIssuer>(
    opts.issuers.map((c) => [c.issuer, { config: c, getKey: keys.get(c.issuer)!, audience: c.audience ?? opts.brokerIssuer, typ: new Set(c.typ.map(normalizeTyp)) }]),
  )
  const cache = new TtlCache<CachedSubject>(opts.cacheSize ?? 50_000)

  return {
    verify: async (token) => ensureSessionLive(await verifyToken(token)),
    verifyExceptSession: verifyToken,
  }

  async function verifyToken(token: string): Promise<Subject> {
    const now = opts.clock.now()
    const hit = cache.get(token, now - opts.clockSkew)
    opts.observeCache?.(hit !== undefined)
    if (hit) {
      await ensureKeyStillPublished(token, hit)
      return hit.subject
    }

    const peeked = peekJwt(token)
    if (!peeked) throw invalidRequest('subject_token is not a well-formed JWT')
    const iss = peeked.payload.iss
    const issuer = typeof iss === 'string' ? trusted.get(iss) : undefined
    if (!issuer) throw invalidRequest('subject_token issuer is not trusted', `untrusted subject issuer ${String(iss).slice(0, 256)}`)
    // RFC 8725 §3.11: only the token types this issuer declared (a logout token, a SET, an
    // attestation of the same IdP must not pass as a session).
    const typ = peeked.header.typ
    if (typ === undefined ? !issuer.config.allowMissingTyp : typeof typ !== 'string' || !issuer.typ.has(normalizeTyp(typ))) {
      throw invalidRequest('subject_token is not a session token of this issuer', `subject_token typ ${JSON.stringify(typ)?.slice(0, 80)} not accepted for ${issuer.config.issuer}`)
    }

    let payload: JWTPayload
    let header: CompactJWSHeaderParameters
    try {
      ;({ payload, protectedHeader: header } = await jwtVerify(token, issuer.getKey, {
        issuer: issuer.config.issuer,
        audience: issuer.audience,
        algorithms: issuer.config.algorithms,
        currentDate: new Date(now * 1000),
        clockTolerance: opts.clockSkew,
        // `iat` too: a lifetime bound (and the revoked-session memory built on it) needs a start.
        requiredClaims: ['exp', 'iat'],
      }))
    } catch (e) {
      throw invalidRequest(`subject_token ${describeJoseError(e)}`, `subject_token: ${(e as Error).message}`)
    }
    if (typeof payload.iat === 'number' && payload.iat > now + opts.clockSkew) throw invalidRequest('subject_token is not yet valid', 'iat in the future')
    const exp = payload.exp!
    const start = payload.iat!
    if (exp - start > issuer.config.maxTokenLifetime) throw invalidRequest('subject_token lifetime is too long', `lifetime ${exp - start}s > ${issuer.config.maxTokenLifetime}s`)
    const user = payload[issuer.config.userClaim]
    if (typeof user !== 'string' || user === '') throw invalidRequest(`subject_token has no "${issuer.config.userClaim}" claim`)
    // OIDC Core §2: a subject "MUST NOT exceed 255 ASCII characters"; longer ones could not be
    // stored whole (the audit log bounds its fields) and two users could then look alike.
    if (user.length > MAX_SUBJECT_LENGTH) throw invalidRequest(`subject_token "${issuer.config.userClaim}" claim is longer than ${MAX_SUBJECT_LENGTH} characters`)
    // A session claim that is present but not a string would silently unbind the task from
    // the session (and so from session revocation): refuse it instead.
    const sid = payload[issuer.config.sessionClaim]
    if (sid !== undefined && (typeof sid !== 'string' || sid === '')) throw invalidRequest(`subject_token "${issuer.config.sessionClaim}" claim must be a non-empty string`)
    const subject: Subject = {
      issuer: issuer.config.issuer,
      user,
      sub: brokerSubject(opts.issuers, issuer.config.issuer, user),
      sid,
      exp,
      claims: policyClaims(payload, issuer.config.policyClaims),
      startedAt: typeof payload.auth_time === 'number' && Number.isSafeInteger(payload.auth_time) && payload.auth_time <= start ? payload.auth_time : start,
      mayAct: Object.hasOwn(payload, 'may_act') ? payload.may_act : undefined,
    }
    cache.set(token, { subject, issuer, header }, exp)
    return subject
  }

  /**
   * A cached verification is only as good as the key set it was checked against: on every hit the
   * signing key must still be published (for a remote set: in a set no older than its cache age,
   * refetched when it is). A key the IdP removed stops its tokens at once, cached or not.
   */
  async function ensureKeyStillPublished(token: string, hit: CachedSubject): Promise<void> {
    const [h, p, sig] = token.split('.') as [string, string, string]
    try {
      await hit.issuer.getKey(hit.header, { protected: h, payload: p, signature: sig })
    } catch (e) {
      throw invalidRequest(`subject_token ${describeJoseError(e)}`, `subject_token: key no longer published: ${(e as Error).message}`)
    }
  }

  async function ensureSessionLive(subject: Subject): Promise<Subject> {
    if (subject.sid !== undefined && (await opts.isSessionRevoked(subject.issuer, subject.sid))) throw revokedSession(subject.sid)
    return subject
  }
}
