import { jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import type { Clock } from '../clock.js'
import type { SubjectIssuerConfig } from '../config.js'
import { invalidRequest } from '../errors.js'
import { describeJoseError, keyResolver, peekJwt } from '../lib/jwt.js'
import type { RemoteJwksOptions } from '../lib/remote-jwks.js'
import { TtlCache } from '../lib/ttl-cache.js'

/** RFC 8693 §3 token types we accept for a user's session token. */
export const SUBJECT_TOKEN_TYPES = new Set([
  'urn:ietf:params:oauth:token-type:jwt',
  'urn:ietf:params:oauth:token-type:id_token',
  'urn:ietf:params:oauth:token-type:access_token',
])

/** A verified user session. */
export interface Subject {
  issuer: string
  user: string
  sid: string | undefined
  exp: number
  /** RFC 8693 §4.4: who may act for this user, when the subject token says so. */
  mayAct: Record<string, unknown> | undefined
}

export interface SubjectTokenVerifier {
  /** Verifies a user's session token. Every failure is `invalid_request` (RFC 8693 §2.2.2). */
  verify(token: string): Promise<Subject>
}

interface TrustedSubjectIssuer {
  config: SubjectIssuerConfig
  getKey: JWTVerifyGetKey
  audience: string
}

export function createSubjectTokenVerifier(opts: {
  issuers: SubjectIssuerConfig[]
  brokerIssuer: string
  clock: Clock
  clockSkew: number
  /** How remote `jwksUri` key sets are fetched (timeout, size cap, cache, cooldown). */
  remoteJwks: RemoteJwksOptions
  /** Whether a session was revoked at the broker; asked on every call, cached or not. */
  isSessionRevoked: (issuer: string, sid: string) => boolean
  cacheSize?: number
}): SubjectTokenVerifier {
  const trusted = new Map<string, TrustedSubjectIssuer>(
    opts.issuers.map((c) => [c.issuer, { config: c, getKey: keyResolver(c, { clock: opts.clock, remote: opts.remoteJwks }), audience: c.audience ?? opts.brokerIssuer }]),
  )
  const cache = new TtlCache<Subject>(opts.cacheSize ?? 50_000)

  return {
    async verify(token) {
      const now = opts.clock.now()
      const hit = cache.get(token, now - opts.clockSkew)
      if (hit) return ensureSessionLive(hit)

      const peeked = peekJwt(token)
      if (!peeked) throw invalidRequest('subject_token is not a well-formed JWT')
      const iss = peeked.payload.iss
      const issuer = typeof iss === 'string' ? trusted.get(iss) : undefined
      if (!issuer) throw invalidRequest('subject_token issuer is not trusted', `untrusted subject issuer ${String(iss)}`)

      let payload: JWTPayload
      try {
        ;({ payload } = await jwtVerify(token, issuer.getKey, {
          issuer: issuer.config.issuer,
          audience: issuer.audience,
          algorithms: issuer.config.algorithms,
          currentDate: new Date(now * 1000),
          clockTolerance: opts.clockSkew,
          requiredClaims: ['exp'],
        }))
      } catch (e) {
        throw invalidRequest(`subject_token ${describeJoseError(e)}`, `subject_token: ${(e as Error).message}`)
      }
      if (typeof payload.iat === 'number' && payload.iat > now + opts.clockSkew) throw invalidRequest('subject_token is not yet valid', 'iat in the future')
      const user = payload[issuer.config.userClaim]
      if (typeof user !== 'string' || user === '') throw invalidRequest(`subject_token has no "${issuer.config.userClaim}" claim`)
      const sid = payload[issuer.config.sessionClaim]
      const mayAct = payload.may_act
      const subject: Subject = {
        issuer: issuer.config.issuer,
        user,
        sid: typeof sid === 'string' ? sid : undefined,
        exp: payload.exp!,
        mayAct: mayAct && typeof mayAct === 'object' && !Array.isArray(mayAct) ? (mayAct as Record<string, unknown>) : undefined,
      }
      cache.set(token, subject, subject.exp)
      return ensureSessionLive(subject)
    },
  }

  function ensureSessionLive(subject: Subject): Subject {
    if (subject.sid !== undefined && opts.isSessionRevoked(subject.issuer, subject.sid)) {
      throw invalidRequest('subject_token session has been revoked', `session ${subject.sid} revoked`)
    }
    return subject
  }
}
