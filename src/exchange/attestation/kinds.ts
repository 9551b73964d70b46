import type { JWTPayload, ProtectedHeaderParameters } from 'jose'

/**
 * Per-kind rules for workload attestations, on top of what every actor token gets (signature by
 * the issuer's keys, allowed alg, `aud` = the broker as the sole value, `exp`, bounded lifetime).
 * Each check throws an {@link AttestationError} whose message is the private detail.
 */
export class AttestationError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'AttestationError'
  }
}

/**
 * How a workload proved itself. `oauth_client`: a public OAuth client (an MCP client) known by its
 * Client ID Metadata Document, whose user consented in the browser (docs/any-mcp-client.md).
 */
export type AttestationKind = 'spiffe' | 'oidc' | 'kubernetes' | 'github' | 'oauth_client'

/** The issuer an OAuth client workload is registered under (it has no attestation issuer). */
export const OAUTH_CLIENT_ISSUER = 'urn:taskpass:oauth-client'

/** The issuer a workload is registered under: its attestation's, or {@link OAUTH_CLIENT_ISSUER}. */
export function registeredIssuer(workload: { attestation?: { issuer: string } | undefined }): string {
  return workload.attestation?.issuer ?? OAUTH_CLIENT_ISSUER
}

/** JWT-SVID §3: the only algorithms; validators "MUST reject" any other. */
export const JWT_SVID_ALGS: readonly string[] = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512']

/** JWT-SVID §3: "Any header not described here, registered or private, MUST NOT be included." */
const JWT_SVID_HEADER = new Set(['alg', 'kid', 'typ'])

/** RFC 8725 §3.10 / 8725bis: keys never come from the token; unknown extensions (crit) are refused. */
const FORBIDDEN_HEADER = ['jku', 'x5u', 'jwk', 'x5c', 'crit']

/** A public, kind-specific name for the description (`actor_token is not a valid …`). */
export const KIND_NAMES: Record<AttestationKind, string> = {
  spiffe: 'JWT-SVID',
  oidc: 'workload token',
  kubernetes: 'Kubernetes service-account token',
  github: 'GitHub Actions token',
  oauth_client: 'OAuth client',
}

/**
 * Header rules, checked before any signature work. `declaredTyp`: the issuer declares its own
 * `typ` values (checked by the caller), which replace the kind's default typ rule below.
 */
export function checkHeader(kind: AttestationKind, header: ProtectedHeaderParameters, declaredTyp = false): void {
  if (kind === 'spiffe') {
    const extra = Object.keys(header).filter((k) => !JWT_SVID_HEADER.has(k))
    if (extra.length > 0) throw new AttestationError(`JWT-SVID header parameter ${extra.map((k) => `"${k}"`).join(', ')} not allowed`)
    if (typeof header.alg !== 'string' || !JWT_SVID_ALGS.includes(header.alg)) throw new AttestationError(`JWT-SVID alg "${String(header.alg)}" not allowed`)
    // JWT-SVID §2.3: typ, if set, is JWT or JOSE.
    if (header.typ !== undefined && header.typ !== 'JWT' && header.typ !== 'JOSE') throw new AttestationError(`JWT-SVID typ "${String(header.typ)}" not allowed`)
    return
  }
  const forbidden = FORBIDDEN_HEADER.filter((k) => Object.hasOwn(header, k))
  if (forbidden.length > 0) throw new AttestationError(`header parameter ${forbidden.map((k) => `"${k}"`).join(', ')} not allowed`)
  // RFC 8725 §3.11/§3.12: an explicitly typed JWT of another kind (at+jwt, dpop+jwt, …) is not an attestation.
  if (!declaredTyp && header.typ !== undefined && !/^(JWT|JOSE)$/i.test(String(header.typ))) throw new AttestationError(`typ "${String(header.typ)}" not allowed`)
}

/** Kubernetes object names: namespaces are DNS labels (RFC 1123), service accounts and pods DNS subdomains. */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

function objectAt(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
}

/**
 * Kubernetes projected service-account token: `kubernetes.io` carries the namespace, the service
 * account and (for a projected volume token) the pod it is bound to; `sub` must be
 * `system:serviceaccount:<namespace>:<name>` and agree with them.
 */
export function checkKubernetesClaims(payload: JWTPayload, opts: { requireBoundPod: boolean }): void {
  const k8s = objectAt(payload['kubernetes.io'])
  if (!k8s) throw new AttestationError('no "kubernetes.io" claim')
  const ns = k8s.namespace
  if (typeof ns !== 'string' || !DNS_LABEL.test(ns)) throw new AttestationError('"kubernetes.io".namespace is missing or not a namespace name')
  const sa = objectAt(k8s.serviceaccount)
  if (!sa || typeof sa.name !== 'string' || !DNS_SUBDOMAIN.test(sa.name)) throw new AttestationError('"kubernetes.io".serviceaccount.name is missing or invalid')
  if (typeof sa.uid !== 'string' || sa.uid === '') throw new AttestationError('"kubernetes.io".serviceaccount.uid is missing')
  const pod = objectAt(k8s.pod)
  if (pod !== undefined && (typeof pod.name !== 'string' || !DNS_SUBDOMAIN.test(pod.name) || typeof pod.uid !== 'string' || pod.uid === '')) {
    throw new AttestationError('"kubernetes.io".pod is malformed')
  }
  if (!pod && opts.requireBoundPod) throw new AttestationError('not bound to a pod (not a projected volume token)')
  const expected = `system:serviceaccount:${ns}:${sa.name}`
  if (payload.sub !== expected) throw new AttestationError(`sub ${String(payload.sub)} does not match ${expected}`)
}

/** Claims every GitHub Actions OIDC token carries; ids are decimal strings. */
const GITHUB_REQUIRED = ['repository', 'repository_owner'] as const
const GITHUB_IDS = ['repository_id', 'repository_owner_id'] as const

/** GitHub Actions OIDC token: the repository and its owner, by name and by immutable id, are present. */
export function checkGithubClaims(payload: JWTPayload): void {
  for (const name of GITHUB_REQUIRED) {
    if (typeof payload[name] !== 'string' || payload[name] === '') throw new AttestationError(`no "${name}" claim`)
  }
  for (const name of GITHUB_IDS) {
    if (typeof payload[name] !== 'string' || !/^[0-9]{1,20}$/.test(payload[name] as string)) throw new AttestationError(`"${name}" is missing or not a numeric id`)
  }
}

/**
 * `aud` names the expected audience as its sole value (a one-element array counts). JWT-SVID §7.2:
 * a token for several audiences lets each of them replay it to the others.
 */
export function hasSoleAudience(payload: JWTPayload, audience: string): boolean {
  const aud = payload.aud
  return aud === audience || (Array.isArray(aud) && aud.length === 1 && aud[0] === audience)
}

/**
 * What an attestation proved, as policy sees it (the Cedar `Workload` entity, docs/policy.md):
 * the issuer and subject every kind has, and the platform facts of the kinds that carry them.
 * Only claims the kind's checks above have validated are read.
 */
export interface Attestation {
  kind: AttestationKind
  /** `spiffe://<trust domain>` or the token's `iss`. */
  issuer: string
  /** The attested subject: the SPIFFE ID, `system:serviceaccount:<ns>:<name>`, the OIDC `sub`. */
  subject: string
  kubernetes?: { namespace: string; serviceAccount: string; pod?: string }
  github?: { repository: string; repositoryOwner: string; ref?: string; environment?: string; workflowRef?: string; event?: string }
}

/** The {@link Attestation} of a verified token of `kind` from the trust anchor `issuer`. */
export function attestationOf(kind: AttestationKind, issuer: string, payload: JWTPayload): Attestation {
  const out: Attestation = { kind, issuer, subject: payload.sub! }
  const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined)
  if (kind === 'kubernetes') {
    const k8s = objectAt(payload['kubernetes.io'])!
    const pod = str(objectAt(k8s.pod)?.name)
    out.kubernetes = { namespace: k8s.namespace as string, serviceAccount: objectAt(k8s.serviceaccount)!.name as string, ...(pod ? { pod } : {}) }
  } else if (kind === 'github') {
    const [repository, repositoryOwner] = [str(payload.repository), str(payload.repository_owner)]
    if (repository && repositoryOwner) {
      const optional = { ref: str(payload.ref), environment: str(payload.environment), workflowRef: str(payload.job_workflow_ref), event: str(payload.event_name) }
      out.github = { repository, repositoryOwner, ...Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)) }
    }
  }
  return out
}
