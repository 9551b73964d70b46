/**
 * Identity Assertion JWT Authorization Grants (ID-JAG, draft-ietf-oauth-identity-assertion-authz-grant):
 * what an enterprise IdP hands a client, after an RFC 8693 exchange at the IdP, for it to redeem
 * here with the `jwt-bearer` grant (RFC 7523 §2.1). Verifying one yields the user session it vouches
 * for (a {@link Subject}) plus what it grants. Keys are the subject issuer's own (`subjectIssuerKeys`);
 * this module never fetches keys for an `iss` the configuration does not name.
 */
import { errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import type { Clock } from '../clock.js'
import type { SubjectIssuerConfig } from '../config.js'
import { invalidGrant } from '../errors.js'
import { describeJoseError, normalizeTyp, peekJwt } from '../lib/jwt.js'
import { brokerSubject, MAX_SUBJECT_LENGTH, policyClaims, type Subject } from './subject-token.js'

/** ID-JAG draft §3.1: the header `typ` "MUST be" `oauth-id-jag+jwt`. */
export const ID_JAG_TYP = 'oauth-id-jag+jwt'

/** Keys never come from the assertion itself (RFC 8725 §3.10); no critical extensions are understood. */
const FORBIDDEN_HEADER = ['jku', 'x5u', 'jwk', 'x5c', 'crit']
const MAX_JTI_LENGTH = 256
const MAX_RESOURCES = 16

/** A verified ID-JAG: the user session it stands for and what the IdP granted with it. */
export interface IdJag {
  /** The user, as a session: issuer, user, `sid` if any, `exp` the ID-JAG's. */
  subject: Subject
  /** The client at this authorization server (ID-JAG §3.1 `client_id`): the acting workload's id. */
  clientId: string
  /** The resources the IdP granted access to (`resource`, a string or an array), in order. */
  resources: string[]
  /** The scopes the IdP granted (`scope`), or undefined when the ID-JAG names none. */
  scopes: string[] | undefined
  jti: string
  /** RFC 7638 thumbprint of the key the client proved at the IdP (`cnf.jkt`, RFC 9449), if any. */
  cnfJkt: string | undefined
  /** Whether the ID-JAG carries `authorization_details` (RFC 9396), which the grant does not read. */
  authorizationDetails: boolean
}

export interface IdJagVerifier {
  /**
   * Verifies an ID-JAG: `typ`, an allowed `alg`, an issuer configured with `idJag`, its signature,
   * `aud` = the broker's issuer as the sole value, `exp`/`iat` within the skew and the issuer's
   * `idJag.maxLifetime`, and the shape of the claims. Every failure is `invalid_grant`
   * (RFC 7521 §5.2), with the reason in the private detail. Whether the `client_id` is the caller's,
   * and what the grant is worth here, the grant decides.
   */
  verify(assertion: string): Promise<IdJag>
  /** Whether any subject issuer redeems ID-JAGs (else the grant is not offered at all). */
  readonly enabled: boolean
}

/** `aud` names `audience` as its sole value; ID-JAG §4.3: "a string or a single-element array". */
function soleAudience(payload: JWTPayload, audience: string): boolean {
  const aud = payload.aud
  return aud === audience || (Array.isArray(aud) && aud.length === 1 && aud[0] === audience)
}

/** `resource` is an absolute URI or an array of them (ID-JAG §3.1; RFC 8707 §2). */
function resourcesOf(value: unknown): string[] | undefined {
  const list = typeof value === 'string' ? [value] : Array.isArray(value) ? value : undefined
  if (!list || list.length === 0 || list.length > MAX_RESOURCES) return undefined
  return list.every((r): r is string => typeof r === 'string' && r !== '' && r.length <= 2048) ? list : undefined
}

export function createIdJagVerifier(opts: {
  /** Every subject issuer (for the broker `sub` prefixes); only those with `idJag` are trusted for ID-JAGs. */
  issuers: SubjectIssuerConfig[]
  keys: Map<string, JWTVerifyGetKey>
  brokerIssuer: string
  clock: Clock
  clockSkew: number
  isSessionRevoked: (issuer: string, sid: string) => Promise<boolean>
}): IdJagVerifier {
  const trusted = new Map(opts.issuers.filter((c) => c.idJag !== undefined).map((c) => [c.issuer, c]))

  return {
    enabled: trusted.size > 0,
    async verify(assertion) {
      const now = opts.clock.now()
      const refuse = (description: string, detail?: string) => invalidGrant(description, detail === undefined ? undefined : `ID-JAG: ${detail}`)
      const peeked = peekJwt(assertion)
      if (!peeked) throw refuse('assertion is not a well-formed JWT', 'not a compact JWS')
      const { header, payload: claimed } = peeked
      // ID-JAG §3.1 and RFC 8725 §3.11: an ID token, an access token or a logout token of the same
      // IdP is not an authorization grant, however well signed.
      const typ = header.typ
      if (typeof typ !== 'string' || normalizeTyp(typ) !== ID_JAG_TYP) throw refuse('assertion is not an ID-JAG', `typ ${JSON.stringify(typ)?.slice(0, 80)} is not ${ID_JAG_TYP}`)
      const forbidden = FORBIDDEN_HEADER.filter((k) => Object.hasOwn(header, k))
      if (forbidden.length > 0) throw refuse('assertion header is not accepted', `header parameter ${forbidden.join(', ')} not allowed`)
      const iss = claimed.iss
      const issuer = typeof iss === 'string' ? trusted.get(iss) : undefined
      if (!issuer) throw refuse('assertion issuer is not trusted', `untrusted issuer ${String(iss).slice(0, 256)}`)
      const idJag = issuer.idJag!

      let payload: JWTPayload
      try {
        ;({ payload } = await jwtVerify(assertion, opts.keys.get(issuer.issuer)!, {
          issuer: issuer.issuer,
          algorithms: issuer.algorithms,
          currentDate: new Date(now * 1000),
          clockTolerance: opts.clockSkew,
          // ID-JAG §3.1: iss, sub, aud, client_id, jti, exp and iat are REQUIRED.
          requiredClaims: ['sub', 'aud', 'client_id', 'jti', 'exp', 'iat'],
        }))
      } catch (e) {
        const expired = e instanceof errors.JWTExpired
        throw refuse(`assertion ${describeJoseError(e)}`, `${expired ? 'expired: ' : ''}${(e as Error).message}`)
      }
      // ID-JAG §4.3: `aud` MUST be the issuer identifier of this authorization server, as a string
      // or a one-element array: an ID-JAG is never good at two authorization servers.
      if (!soleAudience(payload, opts.brokerIssuer)) throw refuse('assertion is not for this authorization server', `aud ${JSON.stringify(payload.aud).slice(0, 256)} is not ${opts.brokerIssuer} as the sole value`)
      const exp = payload.exp!
      const iat = payload.iat!
      if (!Number.isSafeInteger(exp) || !Number.isSafeInteger(iat)) throw refuse('assertion "exp" and "iat" must be integers', 'non-integer NumericDate')
      // RFC 7523 §3: within the clock skew a just-expired assertion still verifies; it has no life left to lend.
      if (exp <= now) throw refuse('assertion is expired', `expired ${now - exp}s ago (within clock skew)`)
      if (iat > now + opts.clockSkew) throw refuse('assertion is not yet valid', 'iat in the future')
      if (exp - iat > idJag.maxLifetime) throw refuse('assertion lifetime is too long', `lifetime ${exp - iat}s > ${idJag.maxLifetime}s`)
      // `sub` is unique per issuer, or per issuer and tenant: only the trusted tenant's users are ours.
      const tenant = payload.tenant
      if (idJag.tenant !== undefined ? tenant !== idJag.tenant : tenant !== undefined) throw refuse('assertion tenant is not trusted', `tenant ${JSON.stringify(tenant)?.slice(0, 256)} is not ${idJag.tenant ?? '(none configured)'}`)

      const user = payload[issuer.userClaim]
      if (typeof user !== 'string' || user === '' || user.length > MAX_SUBJECT_LENGTH) throw refuse(`assertion "${issuer.userClaim}" claim is missing or longer than ${MAX_SUBJECT_LENGTH} characters`)
      const sid = payload[issuer.sessionClaim]
      // A session claim present but not a string would unbind the task from session revocation.
      if (sid !== undefined && (typeof sid !== 'string' || sid === '')) throw refuse(`assertion "${issuer.sessionClaim}" claim must be a non-empty string`)
      const clientId = payload.client_id
      if (typeof clientId !== 'string' || clientId === '' || clientId.length > 256) throw refuse('assertion "client_id" claim must be a non-empty string')
      const jti = payload.jti!
      if (typeof jti !== 'string' || jti === '' || jti.length > MAX_JTI_LENGTH) throw refuse(`assertion "jti" claim must be a string of at most ${MAX_JTI_LENGTH} characters`)
      // ID-JAG §3.1: `resource` is optional in the draft and REQUIRED by the MCP profile
      // (Enterprise-Managed Authorization). taskpass requires it: a token is for one resource the
      // enterprise named, never one the client picks alone.
      const resources = resourcesOf(payload.resource)
      if (!resources) throw refuse('assertion must name its resource', `resource ${JSON.stringify(payload.resource)?.slice(0, 256)} is not one to ${MAX_RESOURCES} URIs`)
      const scope = payload.scope
      if (scope !== undefined && typeof scope !== 'string') throw refuse('assertion "scope" claim must be a string')
      const scopes = scope === undefined ? undefined : [...new Set(scope.split(' ').filter(Boolean))]
      const cnf = payload.cnf as { jkt?: unknown } | undefined
      if (cnf !== undefined && (typeof cnf !== 'object' || cnf === null || typeof cnf.jkt !== 'string' || cnf.jkt === '')) throw refuse('assertion "cnf" claim must carry a "jkt"')
      if (sid !== undefined && (await opts.isSessionRevoked(issuer.issuer, sid))) throw refuse('the session of the assertion has been revoked', `session ${sid} revoked`)

      const subject: Subject = {
        issuer: issuer.issuer,
        user,
        sub: brokerSubject(opts.issuers, issuer.issuer, user),
        sid,
        exp,
        claims: policyClaims(payload, issuer.policyClaims),
        startedAt: typeof payload.auth_time === 'number' && Number.isSafeInteger(payload.auth_time) && payload.auth_time <= iat ? payload.auth_time : iat,
        // The ID-JAG's `client_id` names the one client that may act; `may_act` plays no part here.
        mayAct: undefined,
      }
      return { subject, clientId, resources, scopes, jti, cnfJkt: cnf?.jkt as string | undefined, authorizationDetails: payload.authorization_details !== undefined }
    },
  }
}
