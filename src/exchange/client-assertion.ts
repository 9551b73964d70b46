import { createHash } from 'node:crypto'
import { jwtVerify, type JWK, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import type { ReplayCache } from '@taskpass/verifier/cache'
import type { Clock } from '../clock.js'
import type { WorkloadConfig } from '../config.js'
import { invalidClient, type OAuthError } from '../errors.js'
import { keyResolver, peekJwt } from '../lib/jwt.js'
import type { RemoteJwksOptions } from '../lib/remote-jwks.js'

/** RFC 7523 §2.2 (OIDC Core §9 `private_key_jwt`). */
export const JWT_BEARER_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'

/** draft-ietf-oauth-rfc7523bis: client authentication JWTs "SHOULD be explicitly typed". */
export const CLIENT_AUTH_JWT_TYPE = 'client-authentication+jwt'

/** Keys never come from the assertion itself (RFC 8725 §3.10); no critical extensions are understood. */
const FORBIDDEN_HEADER = ['jku', 'x5u', 'jwk', 'x5c', 'crit']
const MAX_JTI_LENGTH = 256

export interface ClientAssertionVerifier {
  /**
   * Verifies a `private_key_jwt` client assertion and returns the workload it authenticates.
   * `expectedClientId`: the client the request is otherwise known to be (the `client_id`
   * parameter, or the workload the actor token maps to). Every failure is `invalid_client`
   * (400, no challenge) whose public text says nothing; the reason is in `detail`.
   */
  verify(assertion: string, expectedClientId?: string): Promise<WorkloadConfig>
  /** The algorithms accepted (metadata `*_auth_signing_alg_values_supported`). */
  readonly algorithms: readonly string[]
}

/** A registered client key: public, for signatures, with its one algorithm (RFC 8725bis §3.1). */
const clientKey = (k: JWK): JWK | undefined => (typeof k.alg === 'string' && (k.use === undefined || k.use === 'sig') && !('d' in k) ? k : undefined)

/** Where the assertion typ is acceptable: absent, `JWT` or `client-authentication+jwt` (RFC 7515 §4.1.9: case-insensitive, `application/` optional). */
function isAcceptedType(typ: unknown): boolean {
  if (typ === undefined) return true
  if (typeof typ !== 'string') return false
  const t = typ.toLowerCase().replace(/^application\//, '')
  return t === 'jwt' || t === CLIENT_AUTH_JWT_TYPE
}

export function createClientAssertionVerifier(opts: {
  workloads: WorkloadConfig[]
  /** The broker's issuer identifier: the one acceptable `aud`. */
  issuer: string
  clock: Clock
  clockSkew: number
  maxLifetime: number
  algorithms: readonly string[]
  replay: ReplayCache
  remoteJwks: RemoteJwksOptions
}): ClientAssertionVerifier {
  const keys = new Map<string, JWTVerifyGetKey>()
  for (const w of opts.workloads) {
    if (w.jwks || w.jwksFile || w.jwksUri) keys.set(w.id, keyResolver(w, { clock: opts.clock, remote: opts.remoteJwks, select: clientKey }))
  }
  const byId = new Map(opts.workloads.map((w) => [w.id, w]))
  const refuse = (detail: string): OAuthError => invalidClient(`private_key_jwt: ${detail}`, null)

  return {
    algorithms: opts.algorithms,
    async verify(assertion, expectedClientId) {
      const now = opts.clock.now()
      const peeked = peekJwt(assertion)
      if (!peeked) throw refuse('client assertion is not a well-formed JWT')
      const { header, payload: claimed } = peeked
      // 7523bis: accept the explicit type, and untyped assertions; refuse other explicit types
      // (an access token or DPoP proof replayed as a client assertion: RFC 8725 §3.11).
      if (!isAcceptedType(header.typ)) throw refuse(`typ "${String(header.typ)}" is not a client assertion type`)
      const forbidden = FORBIDDEN_HEADER.filter((k) => Object.hasOwn(header, k))
      if (forbidden.length > 0) throw refuse(`header parameter ${forbidden.join(', ')} not allowed`)

      // OIDC Core §9 / RFC 7523 §3: iss = sub = client_id.
      const { iss, sub } = claimed
      if (typeof iss !== 'string' || typeof sub !== 'string') throw refuse('iss and sub are required')
      if (iss !== sub) throw refuse(`iss ${iss} differs from sub ${sub}`)
      if (expectedClientId !== undefined && iss !== expectedClientId) throw refuse(`assertion for ${iss}, request for ${expectedClientId}`)
      const workload = byId.get(iss)
      if (!workload) throw refuse(`unknown client ${iss}`)
      const getKey = keys.get(iss)
      if (!getKey) throw refuse(`workload ${iss} has no registered keys`)
      if (!workload.enabled) throw refuse(`workload ${iss} is disabled`)

      let payload: JWTPayload
      try {
        ;({ payload } = await jwtVerify(assertion, getKey, {
          issuer: iss,
          subject: iss,
          algorithms: [...opts.algorithms],
          currentDate: new Date(now * 1000),
          clockTolerance: opts.clockSkew,
          requiredClaims: ['exp', 'jti', 'aud'],
        }))
      } catch (e) {
        throw refuse(`${iss}: ${(e as Error).message}`)
      }
      // 7523bis: "MUST reject any JWT that does not contain its issuer identifier as its sole
      // audience value" — the token endpoint URL is refused. A one-element array is the same value.
      const aud = payload.aud
      const soleIssuer = aud === opts.issuer || (Array.isArray(aud) && aud.length === 1 && aud[0] === opts.issuer)
      if (!soleIssuer) throw refuse(`${iss}: aud ${JSON.stringify(aud)} is not the issuer as its sole value`)
      const exp = payload.exp!
      if (exp > now + opts.maxLifetime + opts.clockSkew) throw refuse(`${iss}: exp ${exp - now}s ahead exceeds ${opts.maxLifetime}s`)
      if (typeof payload.iat === 'number' && payload.iat > now + opts.clockSkew) throw refuse(`${iss}: iat in the future`)
      const jti = payload.jti
      if (typeof jti !== 'string' || jti === '' || jti.length > MAX_JTI_LENGTH) throw refuse(`${iss}: jti missing or longer than ${MAX_JTI_LENGTH}`)
      // Single use, remembered for as long as the assertion could be accepted.
      const replayKey = createHash('sha256').update(`${iss}\0${jti}`).digest('base64url')
      const seen = await opts.replay.use(replayKey, exp + opts.clockSkew, now)
      if (seen === 'replayed') throw refuse(`${iss}: jti ${jti} replayed`)
      if (seen === 'full') throw refuse(`${iss}: replay cache full, assertion refused`)
      return workload
    },
  }
}
