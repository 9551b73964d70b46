/**
 * The JWT bearer authorization grant (RFC 7523 §2.1) redeeming an enterprise IdP's ID-JAG
 * (draft-ietf-oauth-identity-assertion-authz-grant; MCP Enterprise-Managed Authorization). The
 * ID-JAG plays the user's session; the workload still authenticates as the client; the result is an
 * ordinary task token, through the same implicit-task path, policy, audit, DPoP and revocation as
 * the token-exchange grant (`mintTaskToken`). Owns nothing else: verification is `id-jag.ts`.
 */
import { invalidGrant, invalidRequest, invalidScope, invalidTarget } from '../errors.js'
import type { FormParams } from '../http/form.js'
import { rateLimited } from '../http/rate-limit.js'
import { derivedUuid } from '../ids.js'
import { allowedScopes } from '../policy/decide.js'
import type { TaskRow } from '../store/stores.js'
import { findResource } from '../tasks/lifecycle.js'
import { parseAuthorizationDetails } from '../tokens/authorization-details.js'
import type { IdJag, IdJagVerifier } from './id-jag.js'
import { auditedGrant, loadUsableTask, mintTaskToken, openImplicitTask, type ActingWorkload, type AuditContext, type ExchangeDeps, type ExchangeResponse, type GrantRequest, type TaskTokenRequest } from './token-exchange.js'

/** RFC 7523 §2.1. */
export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
/** ID-JAG draft §7: the value of `authorization_grant_profiles_supported` that says "ID-JAGs are redeemed here". */
export const ID_JAG_GRANT_PROFILE = 'urn:ietf:params:oauth:grant-profile:id-jag'

export interface JwtBearerDeps extends Omit<ExchangeDeps, 'clients' | 'subjectTokens' | 'actorTokens'> {
  idJags: IdJagVerifier
  clients: { authenticateWorkload(form: FormParams, authorization: string | undefined): Promise<{ method: string; actor: ActingWorkload }> }
}

interface JwtBearerRequest {
  assertion: string
  resource: string | undefined
  scopes: string[] | undefined
  ttl: number | undefined
  authorizationDetails: string | undefined
}

/** RFC 7523 §2.1 parameters (plus RFC 8707 `resource`, `scope`, `ttl`, RFC 9396 `authorization_details`); a bad one is `invalid_request`. */
function parseJwtBearerRequest(form: FormParams): JwtBearerRequest {
  const one = (name: string) => form.get(name)?.[0]
  const assertion = one('assertion')
  if (assertion === undefined || assertion === '') throw invalidRequest('"assertion" is required')
  // The ID-JAG names its task (one per ID-JAG): a client cannot attach it to another.
  if (form.has('task_id')) throw invalidRequest('"task_id" is not a parameter of the jwt-bearer grant: the ID-JAG names its task')
  if (form.has('subject_token') || form.has('actor_token')) throw invalidRequest('"subject_token" and "actor_token" belong to the token-exchange grant')
  const resources = form.get('resource') ?? []
  if (resources.length > 1) throw invalidTarget('exactly one resource may be requested')
  if (form.has('audience')) throw invalidRequest('"audience" is not a parameter of the jwt-bearer grant: use "resource"')
  const resource = resources[0]
  if (resource === '') throw invalidTarget('"resource" must not be empty')
  const scope = one('scope')
  const ttlText = one('ttl')
  if (ttlText !== undefined && !/^[1-9][0-9]{0,8}$/.test(ttlText)) throw invalidRequest('"ttl" must be a positive integer number of seconds')
  return {
    assertion,
    resource,
    scopes: scope === undefined || scope.trim() === '' ? undefined : [...new Set(scope.split(' ').filter(Boolean))],
    ttl: ttlText === undefined ? undefined : Number(ttlText),
    authorizationDetails: one('authorization_details'),
  }
}

/**
 * The id of an ID-JAG's task: a UUIDv8 (RFC 9562 §5.8) from SHA-256 of its issuer and `jti`, so every
 * presentation of one ID-JAG finds the same task — durably, on every instance — and can never
 * collide with a UUIDv7 task id.
 */
export function idJagTaskId(issuer: string, jti: string): string {
  return derivedUuid('id-jag', issuer, jti)
}

/**
 * `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an ID-JAG as `assertion`: the
 * workload authenticates (`private_key_jwt` or its attestation), the ID-JAG is verified and must name
 * this workload as `client_id`, the resource and scopes stay inside what it grants, and a task token
 * is minted for the ID-JAG's task (opened implicitly on first redemption). Refusals after the
 * client authenticated are audited; before, only counted.
 */
export async function redeemJwtBearer(deps: JwtBearerDeps, form: FormParams, request: GrantRequest = {}): Promise<ExchangeResponse> {
  return auditedGrant(deps, (audit) => redeem(deps, form, request, audit))
}

async function redeem(deps: JwtBearerDeps, form: FormParams, request: GrantRequest, audit: AuditContext): Promise<ExchangeResponse> {
  const req = parseJwtBearerRequest(form)
  // RFC 7521 §4.2 / ID-JAG §4.3: the client authenticates before the grant is looked at.
  const { actor } = await deps.clients.authenticateWorkload(form, request.authorization)
  const wait = deps.workloadLimiter?.take(actor.workload.id) ?? 0
  if (wait > 0) throw rateLimited(wait)
  audit.authenticated = true
  audit.workloadId = actor.workload.id
  request.identified?.(actor.workload.id)
  audit.resource = req.resource

  const jag = await deps.idJags.verify(req.assertion)
  const { subject } = jag
  audit.userSub = subject.sub
  // ID-JAG §4.3: "the client_id claim MUST match the authenticated client".
  if (jag.clientId !== actor.workload.id) throw invalidGrant('assertion was issued to another client', `ID-JAG client_id ${jag.clientId.slice(0, 256)} is not the authenticated workload ${actor.workload.id}`)
  // Fail closed on what we would not enforce: an IdP's RAR grant could be narrower than the task's tools.
  if (jag.authorizationDetails) throw invalidGrant('assertion authorization_details are not supported', 'ID-JAG carries authorization_details')

  const uri = pickResource(jag, req.resource)
  audit.resource = uri
  const resource = findResource(deps.config, uri)
  if (!resource) throw invalidTarget('resource is not registered', `unknown resource ${uri}`)
  const tools = req.authorizationDetails === undefined ? undefined : parseAuthorizationDetails(req.authorizationDetails, resource.uri)
  const now = deps.clock.now()

  // RFC 9449 §5, and ID-JAG §5 for a sender-constrained ID-JAG: the proof shown here must be by the
  // key the client proved at the IdP. A proof without `cnf` binds the token all the same.
  const proof = await deps.dpop.verify(request.dpop, 'POST', `${deps.config.issuer}/token`)
  if (jag.cnfJkt !== undefined && proof?.jkt !== jag.cnfJkt) throw invalidGrant('assertion is bound to another key', proof ? `ID-JAG cnf.jkt ${jag.cnfJkt}, proof by ${proof.jkt}` : `ID-JAG cnf.jkt ${jag.cnfJkt} and no DPoP proof`)

  const scopes = grantedScopes(jag, req.scopes, actor, resource)
  const asked: TaskTokenRequest = { subject, actor, resource, scopes, ttl: req.ttl, tools, dpopJkt: proof?.jkt, request, now, auditNote: `; ID-JAG ${subject.issuer.slice(0, 256)} jti ${jag.jti}` }

  // ID-JAG §4.3: `jti` is not single use — a client may present its ID-JAG again until `exp` for a
  // new token (it stands in for a refresh token). Each presentation continues the one task the
  // first opened, so once that task ends (completed, revoked, its session revoked) the ID-JAG is
  // spent, and a jti redeemed once is never another client's or another user's.
  const taskId = idJagTaskId(subject.issuer, jag.jti)
  audit.taskId = taskId
  const existing = await deps.stores.tasks.get(taskId)
  if (existing) return mintTaskToken(deps, asked, await continuedTask(deps, existing, asked, jag), false)
  // The task lives as long as the ID-JAG: after that only a new ID-JAG (a new task) mints.
  return mintTaskToken(deps, asked, await openImplicitTask(deps, asked, audit, { purpose: `implicit (ID-JAG from ${subject.issuer.slice(0, 200)})`, id: taskId, ttl: subject.exp - now }), true)
}

/** The task a presented-again ID-JAG continues: the same client and user, and still usable. */
async function continuedTask(deps: JwtBearerDeps, task: TaskRow, q: TaskTokenRequest, jag: IdJag): Promise<TaskRow> {
  const replayed = (detail: string) => invalidGrant('assertion was already redeemed by another client or user', `ID-JAG jti ${jag.jti}: ${detail}`)
  if (task.workloadId !== q.actor.workload.id) throw replayed(`task ${task.id} belongs to workload ${task.workloadId}`)
  if (task.subjectIssuer !== q.subject.issuer || task.userSub !== q.subject.user) throw replayed(`task ${task.id} belongs to another user`)
  return loadUsableTask(deps, task.id, q.subject, q.actor, q.now, q.dpopJkt)
}

/**
 * The resource asked for: the request's `resource`, which must be one the ID-JAG names, or the
 * ID-JAG's only resource. Anything else is `invalid_target` (RFC 8707 §2).
 */
function pickResource(jag: IdJag, requested: string | undefined): string {
  if (requested !== undefined) {
    if (!jag.resources.includes(requested)) throw invalidTarget('resource is not granted by the assertion', `requested ${requested.slice(0, 256)}, ID-JAG grants ${jag.resources.join(' ').slice(0, 512)}`)
    return requested
  }
  if (jag.resources.length > 1) throw invalidTarget('the assertion grants several resources: send "resource"', `ID-JAG grants ${jag.resources.join(' ').slice(0, 512)}`)
  return jag.resources[0]!
}

/**
 * The scopes to ask policy for. Requested: each must be inside the ID-JAG's `scope` (when it has
 * one), else `invalid_scope`; policy then decides, and refuses what it does not permit. Not
 * requested: what the ID-JAG grants that this workload may hold on the resource — the draft lets
 * the grant be a subset, and the response says what was granted — or, with no `scope` in the
 * ID-JAG, undefined (the workload's grant, as for any implicit task).
 */
function grantedScopes(jag: IdJag, requested: string[] | undefined, actor: ActingWorkload, resource: Parameters<typeof allowedScopes>[1]): string[] | undefined {
  if (requested !== undefined) {
    const beyond = jag.scopes === undefined ? [] : requested.filter((s) => !jag.scopes!.includes(s))
    if (beyond.length > 0) throw invalidScope('requested scope exceeds the assertion', `beyond the ID-JAG: ${beyond.join(' ').slice(0, 512)}`)
    return requested
  }
  if (jag.scopes === undefined) return undefined
  const allowed = allowedScopes(actor.workload, resource)
  const scopes = jag.scopes.filter((s) => allowed.includes(s))
  if (scopes.length === 0) throw invalidScope('no scope would be granted', `the ID-JAG grants ${jag.scopes.join(' ').slice(0, 512)}, none of which ${actor.workload.id} may hold on ${resource.uri}`)
  return scopes
}
