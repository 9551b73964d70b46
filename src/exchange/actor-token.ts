import { jwtVerify, type JWK, type JWTPayload, type JWTVerifyGetKey, type ProtectedHeaderParameters } from 'jose'
import { TtlCache } from '@taskpass/verifier/cache'
import type { Clock } from '../clock.js'
import type { WorkloadConfig, WorkloadIssuerConfig } from '../config.js'
import { invalidRequest, OAuthError, unauthorizedClient } from '../errors.js'
import { describeJoseError, keyResolver, normalizeTyp, peekJwt } from '../lib/jwt.js'
import type { RemoteJwksOptions } from '../lib/remote-jwks.js'
import { compileAttestationRules } from './attestation/claim-rules.js'
import { AttestationError, checkGithubClaims, checkHeader, checkKubernetesClaims, hasSoleAudience, KIND_NAMES, attestationOf, type Attestation, type AttestationKind } from './attestation/kinds.js'
import { looksLikeSpiffeId, parseSpiffeId } from './attestation/spiffe-id.js'

export const ACTOR_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt'

/** A verified workload: the registered workload an attestation maps to. */
export interface Actor {
  workload: WorkloadConfig
  /** What the attestation proved: its kind, issuer (`spiffe://<trust domain>` or an OIDC `iss`), subject and platform facts. */
  attestation: Attestation
  exp: number
  /** RFC 8693 §4.1: a prior actor chain carried by the actor token itself. */
  act: Record<string, unknown> | undefined
}

/** The attested SPIFFE ID of a workload that proved itself with a JWT-SVID, else undefined. */
export function attestedSpiffeId(actor: Actor): string | undefined {
  return actor.attestation.kind === 'spiffe' ? actor.attestation.subject : undefined
}

export interface ActorTokenVerifier {
  /**
   * Verifies a workload attestation (SPIFFE JWT-SVID, Kubernetes service-account token, GitHub
   * Actions OIDC token or another platform OIDC token) and maps it to a registered workload.
   * Bad tokens are `invalid_request`; a disabled workload is `unauthorized_client`.
   */
  verify(token: string): Promise<Actor>
}

/** One trusted workload issuer, with the workloads that name it. */
interface TrustAnchor {
  /** What `workloads[].attestation.issuer` names: `spiffe://<td>` or the `iss`. */
  key: string
  kind: AttestationKind
  algorithms: string[]
  audience: string
  /** The `iss` the token must carry (JWT-SVIDs are selected by their `sub` trust domain instead). */
  issuerClaim: string | undefined
  maxLifetime: number
  /** Accepted header `typ` values (normalised), when the issuer declares them. */
  typ: Set<string> | undefined
  getKey: JWTVerifyGetKey
  checkClaims: (payload: JWTPayload) => void
  workloads: { workload: WorkloadConfig; matches: (payload: JWTPayload) => boolean }[]
}

/** SPIFFE bundle (§4): only entries with `use: jwt-svid` and a `kid` verify JWT-SVIDs; jose knows them as `sig`. */
const jwtSvidKeys = (k: JWK): JWK | undefined => (k.use === 'jwt-svid' && typeof k.kid === 'string' ? { ...k, use: 'sig' } : undefined)

export function createActorTokenVerifier(opts: {
  issuers: WorkloadIssuerConfig[]
  workloads: WorkloadConfig[]
  brokerIssuer: string
  clock: Clock
  clockSkew: number
  maxLifetime: number
  remoteJwks: RemoteJwksOptions
  cacheSize?: number
  /** Told whether each lookup of the verified-attestation cache hit (metrics). */
  observeCache?: (hit: boolean) => void
}): ActorTokenVerifier {
  // OAuth client workloads have no attestation: they are never an actor token's workload.
  const compiled = opts.workloads.flatMap((w) => (w.attestation ? [{ workload: w, issuer: w.attestation.issuer, matches: compileAttestationRules(w.attestation) }] : []))
  const spiffeAnchors = new Map<string, TrustAnchor>()
  const issuerAnchors = new Map<string, TrustAnchor>()
  for (const c of opts.issuers) {
    const key = c.kind === 'spiffe' ? `spiffe://${c.trustDomain}` : c.issuer
    const keys =
      c.kind === 'spiffe'
        ? keyResolver(c, { clock: opts.clock, remote: opts.remoteJwks, select: jwtSvidKeys, honourRefreshHint: true })
        : keyResolver(c.kind === 'github' && !c.jwks && !c.jwksFile && !c.jwksUri ? { jwksUri: `${c.issuer}/.well-known/jwks` } : c, { clock: opts.clock, remote: opts.remoteJwks })
    const anchor: TrustAnchor = {
      key,
      kind: c.kind,
      algorithms: c.algorithms,
      audience: c.audience ?? opts.brokerIssuer,
      issuerClaim: c.kind === 'spiffe' ? undefined : c.issuer,
      maxLifetime: c.maxTokenLifetime ?? opts.maxLifetime,
      typ: c.typ ? new Set(c.typ.map(normalizeTyp)) : undefined,
      getKey: keys,
      checkClaims:
        c.kind === 'kubernetes'
          ? (p) => checkKubernetesClaims(p, { requireBoundPod: c.requireBoundPod })
          : c.kind === 'github'
            ? checkGithubClaims
            : () => {},
      workloads: compiled.filter((w) => w.issuer === key),
    }
    ;(c.kind === 'spiffe' ? spiffeAnchors : issuerAnchors).set(key, anchor)
  }
  const cache = new TtlCache<Actor>(opts.cacheSize ?? 50_000)

  /**
   * Which trust anchor may vouch for this token. A configured `iss` wins; otherwise a `sub` that
   * is a SPIFFE ID selects its trust domain's bundle (JWT-SVIDs need not carry `iss`). Keys are
   * only ever the anchor's own: never a URL or key found in the token.
   */
  function selectAnchor(payload: JWTPayload): TrustAnchor {
    const iss = typeof payload.iss === 'string' ? payload.iss : undefined
    const byIssuer = iss !== undefined ? issuerAnchors.get(iss) : undefined
    if (byIssuer) return byIssuer
    if (looksLikeSpiffeId(payload.sub)) {
      const id = parseSpiffeId(payload.sub)
      if (!id.ok) throw invalidRequest('actor_token subject is not a valid SPIFFE ID', `actor_token: invalid SPIFFE ID: ${id.reason}`)
      const anchor = spiffeAnchors.get(`spiffe://${id.trustDomain}`)
      if (!anchor) throw invalidRequest('actor_token issuer is not trusted', `untrusted workload issuer spiffe://${id.trustDomain}`)
      return anchor
    }
    throw invalidRequest('actor_token issuer is not trusted', `untrusted workload issuer ${String(iss)}`)
  }

  function kindCheck(anchor: TrustAnchor, fn: () => void): void {
    try {
      fn()
    } catch (e) {
      if (e instanceof AttestationError) throw invalidRequest(`actor_token is not a valid ${KIND_NAMES[anchor.kind]}`, `actor_token: ${e.message}`)
      throw e
    }
  }

  function mapToWorkload(anchor: TrustAnchor, payload: JWTPayload): WorkloadConfig {
    const matched = anchor.workloads.filter((w) => w.matches(payload))
    if (matched.length === 0) throw invalidRequest('actor_token maps to no registered workload', `no workload for ${anchor.key} ${String(payload.sub)}`)
    // Overlapping rules are a configuration mistake: refuse rather than pick one silently.
    if (matched.length > 1) throw invalidRequest('actor_token maps to no registered workload', `ambiguous: ${anchor.key} ${String(payload.sub)} matches ${matched.map((w) => w.workload.id).join(', ')}`)
    return matched[0]!.workload
  }

  /**
   * The actor token authenticates the caller. Until it does, every failure has one public
   * description (the reason stays in the private detail): an unauthenticated sender can neither
   * probe which workloads are registered nor learn anything else from the answer.
   */
  async function verify(token: string): Promise<Actor> {
    try {
      return await verifyAttestation(token)
    } catch (e) {
      if (e instanceof OAuthError && e.code === 'invalid_request') throw invalidRequest('actor_token is invalid', e.detail)
      throw e
    }
  }

  return { verify }

  async function verifyAttestation(token: string): Promise<Actor> {
    const now = opts.clock.now()
    // An expired attestation authenticates nothing: cached entries end at `exp`, not `exp + skew`.
    const hit = cache.get(token, now)
    opts.observeCache?.(hit !== undefined)
    if (hit) return ensureEnabled(hit)

    const peeked = peekJwt(token)
    if (!peeked) throw invalidRequest('actor_token is not a well-formed JWT')
    const anchor = selectAnchor(peeked.payload)
    kindCheck(anchor, () => checkHeader(anchor.kind, peeked.header as ProtectedHeaderParameters, anchor.typ !== undefined))
    const typ = peeked.header.typ
    if (anchor.typ && (typeof typ !== 'string' || !anchor.typ.has(normalizeTyp(typ)))) throw invalidRequest('actor_token is not an attestation of this issuer', `actor_token typ ${JSON.stringify(typ)?.slice(0, 80)} not accepted for ${anchor.key}`)

    let payload: JWTPayload
    try {
      ;({ payload } = await jwtVerify(token, anchor.getKey, {
        ...(anchor.issuerClaim ? { issuer: anchor.issuerClaim } : {}),
        audience: anchor.audience,
        algorithms: anchor.algorithms,
        currentDate: new Date(now * 1000),
        clockTolerance: opts.clockSkew,
        requiredClaims: ['exp', 'sub', 'aud'],
      }))
    } catch (e) {
      throw invalidRequest(`actor_token ${describeJoseError(e)}`, `actor_token: ${(e as Error).message}`)
    }
    if (!hasSoleAudience(payload, anchor.audience)) throw invalidRequest('actor_token must name this broker as its only audience', 'actor_token: "aud" has more than one value')
    kindCheck(anchor, () => anchor.checkClaims(payload))
    const exp = payload.exp!
    // The clock skew tolerates a verifier clock behind the issuer's for nbf/iat; it does not
    // extend the attestation's life: a token minted from it may not outlive it either.
    if (exp <= now) throw invalidRequest('actor_token is expired', `actor_token expired ${now - exp}s ago (within clock skew)`)
    const start = typeof payload.iat === 'number' ? payload.iat : now
    if (start > now + opts.clockSkew) throw invalidRequest('actor_token is not yet valid', 'iat in the future')
    if (exp - start > anchor.maxLifetime) throw invalidRequest('actor_token lifetime is too long', `lifetime ${exp - start}s > ${anchor.maxLifetime}s`)

    const workload = mapToWorkload(anchor, payload)
    const act = payload.act
    const actor: Actor = {
      workload,
      attestation: attestationOf(anchor.kind, anchor.key, payload),
      exp,
      act: act && typeof act === 'object' && !Array.isArray(act) ? (act as Record<string, unknown>) : undefined,
    }
    cache.set(token, actor, exp)
    return ensureEnabled(actor)
  }
}

function ensureEnabled(actor: Actor): Actor {
  if (!actor.workload.enabled) throw unauthorizedClient('workload is disabled', `workload ${actor.workload.id} disabled`)
  return actor
}
