import { jwtVerify, type JWK, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import type { Clock } from '../clock.js'
import type { WorkloadConfig, WorkloadIssuerConfig } from '../config.js'
import { invalidRequest, unauthorizedClient } from '../errors.js'
import { describeJoseError, keyResolver, peekJwt } from '../lib/jwt.js'
import { TtlCache } from '../lib/ttl-cache.js'

export const ACTOR_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt'

/** A verified workload: the registered workload an attestation maps to. */
export interface Actor {
  workload: WorkloadConfig
  /** The attestation's issuer (`spiffe://<trust domain>` or an OIDC `iss`) and subject. */
  attestationIssuer: string
  attestationSubject: string
  exp: number
  /** RFC 8693 §4.1: a prior actor chain carried by the actor token itself. */
  act: Record<string, unknown> | undefined
}

export interface ActorTokenVerifier {
  /**
   * Verifies a workload attestation (SPIFFE JWT-SVID or a platform OIDC token) and maps it to a
   * registered workload. Bad tokens are `invalid_request`; a disabled workload is `unauthorized_client`.
   */
  verify(token: string): Promise<Actor>
}

interface TrustAnchor {
  key: string
  algorithms: string[]
  getKey: JWTVerifyGetKey
  issuerClaim: string | undefined
}

/** SPIFFE-ID.md: `spiffe://<trust domain>/<path>`, lowercase trust domain, no query/fragment/port/userinfo, clean path. */
const SPIFFE_ID = /^spiffe:\/\/([a-z0-9._-]+)(\/[A-Za-z0-9._-]+)+$/

function spiffeTrustDomain(sub: unknown): string | undefined {
  if (typeof sub !== 'string' || sub.length > 2048) return undefined
  const m = SPIFFE_ID.exec(sub)
  if (!m) return undefined
  if (sub.split('/').slice(3).some((seg) => seg === '.' || seg === '..')) return undefined
  return m[1]
}

export function createActorTokenVerifier(opts: {
  issuers: WorkloadIssuerConfig[]
  workloads: WorkloadConfig[]
  brokerIssuer: string
  clock: Clock
  clockSkew: number
  maxLifetime: number
  cacheSize?: number
}): ActorTokenVerifier {
  const anchors = new Map<string, TrustAnchor>()
  for (const c of opts.issuers) {
    if (c.kind === 'spiffe') {
      // SPIFFE bundle (§6): only entries with use "jwt-svid" may verify JWT-SVIDs; jose knows them as "sig".
      const jwtSvidKeys = (k: JWK) => (k.use === 'jwt-svid' ? { ...k, use: 'sig' } : undefined)
      anchors.set(`spiffe://${c.trustDomain}`, { key: `spiffe://${c.trustDomain}`, algorithms: c.algorithms, getKey: keyResolver(c, jwtSvidKeys), issuerClaim: undefined })
    } else {
      anchors.set(c.issuer, { key: c.issuer, algorithms: c.algorithms, getKey: keyResolver(c), issuerClaim: c.issuer })
    }
  }
  const cache = new TtlCache<Actor>(opts.cacheSize ?? 50_000)

  function mapToWorkload(anchor: string, payload: JWTPayload): WorkloadConfig | undefined {
    return opts.workloads.find(
      (w) =>
        w.attestation.issuer === anchor &&
        w.attestation.subject === payload.sub &&
        Object.entries(w.attestation.claims).every(([k, v]) => String(payload[k]) === v),
    )
  }

  return {
    async verify(token) {
      const now = opts.clock.now()
      const hit = cache.get(token, now - opts.clockSkew)
      if (hit) return ensureEnabled(hit)

      const peeked = peekJwt(token)
      if (!peeked) throw invalidRequest('actor_token is not a well-formed JWT')
      const td = spiffeTrustDomain(peeked.payload.sub)
      const anchorKey = td !== undefined ? `spiffe://${td}` : typeof peeked.payload.iss === 'string' ? peeked.payload.iss : undefined
      const anchor = anchorKey === undefined ? undefined : anchors.get(anchorKey)
      if (!anchor) throw invalidRequest('actor_token issuer is not trusted', `untrusted workload issuer ${String(anchorKey)}`)
      if (td !== undefined && peeked.header.typ !== undefined && peeked.header.typ !== 'JWT' && peeked.header.typ !== 'JOSE') {
        throw invalidRequest('actor_token is not a JWT-SVID', `typ ${String(peeked.header.typ)}`)
      }

      let payload: JWTPayload
      try {
        ;({ payload } = await jwtVerify(token, anchor.getKey, {
          ...(anchor.issuerClaim ? { issuer: anchor.issuerClaim } : {}),
          audience: opts.brokerIssuer,
          algorithms: anchor.algorithms,
          currentDate: new Date(now * 1000),
          clockTolerance: opts.clockSkew,
          requiredClaims: ['exp', 'sub', 'aud'],
        }))
      } catch (e) {
        throw invalidRequest(`actor_token ${describeJoseError(e)}`, `actor_token: ${(e as Error).message}`)
      }
      const exp = payload.exp!
      const start = typeof payload.iat === 'number' ? payload.iat : now
      if (start > now + opts.clockSkew) throw invalidRequest('actor_token is not yet valid', 'iat in the future')
      if (exp - start > opts.maxLifetime) throw invalidRequest('actor_token lifetime is too long', `lifetime ${exp - start}s > ${opts.maxLifetime}s`)

      const workload = mapToWorkload(anchor.key, payload)
      if (!workload) throw invalidRequest('actor_token maps to no registered workload', `no workload for ${anchor.key} ${payload.sub}`)
      const act = payload.act
      const actor: Actor = {
        workload,
        attestationIssuer: anchor.key,
        attestationSubject: payload.sub!,
        exp,
        act: act && typeof act === 'object' && !Array.isArray(act) ? (act as Record<string, unknown>) : undefined,
      }
      cache.set(token, actor, exp)
      return ensureEnabled(actor)
    },
  }
}

function ensureEnabled(actor: Actor): Actor {
  if (!actor.workload.enabled) throw unauthorizedClient('workload is disabled', `workload ${actor.workload.id} disabled`)
  return actor
}
