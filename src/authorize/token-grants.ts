/**
 * The public client's grants at /token: `authorization_code` (RFC 6749 §4.1.3 with PKCE, RFC 7636
 * §4.6) and `refresh_token` (§6). Both mint the usual task token of the task the user's consent
 * opened, through the same decision, audit and write as every grant (`mintTaskToken`).
 *
 * Refresh tokens are the one refinement of "no refresh tokens": one is task-bound — it dies with
 * its task (ended, expired, revoked, its session revoked), is rotated at every use (OAuth 2.1
 * §4.3.1: public clients' refresh tokens MUST rotate), a used one presented again revokes the task
 * (§4.14.2 detection), and it is DPoP-bound when the client used DPoP. So it never outlives the
 * user's consent: it only spares the client a browser round trip per access token.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { Config } from '../config.js'
import { invalidClient, invalidGrant, invalidRequest, invalidScope, invalidTarget } from '../errors.js'
import type { FormParams } from '../http/form.js'
import { randomSecret } from '../ids.js'
import type { TaskRow, TxStores } from '../store/stores.js'
import { endTask, taskState, type TaskDeps } from '../tasks/lifecycle.js'
import { taskSubject } from '../tasks/subtasks.js'
import { auditedGrant, loadUsableTask, mintTaskToken, type AuditContext, type ExchangeDeps, type ExchangeResponse, type GrantRequest, type TaskTokenRequest } from '../exchange/token-exchange.js'
import { clientActor, secretHash } from './consent.js'
import { canonicalResource, oauthClientWorkload } from './request.js'

export const AUTHORIZATION_CODE_GRANT = 'authorization_code'
export const REFRESH_TOKEN_GRANT = 'refresh_token'

/** The token response of a public client's grant (RFC 6749 §5.1), naming its task. */
export interface ClientTokenResponse {
  access_token: string
  token_type: 'Bearer' | 'DPoP'
  expires_in: number
  scope: string
  refresh_token?: string
  task_id: string
  authorization_details?: ExchangeResponse['authorization_details']
}

export type ClientGrantDeps = Omit<ExchangeDeps, 'subjectTokens' | 'actorTokens' | 'clients'> & { config: ExchangeDeps['config'] & Pick<Config, 'authorization'>; approvals?: TaskDeps['approvals'] }

const REFRESH_PREFIX = 'tpr_'
/** RFC 7636 §4.1: 43–128 unreserved characters. */
const VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/

function one(form: FormParams, name: string): string | undefined {
  return form.get(name)?.[0]
}

/** The public client names itself (RFC 6749 §3.2.1: "MUST" for unauthenticated clients); never with a secret. */
function publicClientId(form: FormParams, authorization: string | undefined): string {
  if (authorization !== undefined || form.has('client_secret') || form.has('client_assertion')) throw invalidClient('a public client authenticates with its grant (PKCE, DPoP), not a secret or assertion', null)
  const clientId = one(form, 'client_id')
  if (!clientId) throw invalidRequest('"client_id" is required')
  return clientId
}

/**
 * RFC 8707 §2.2: a `resource` at the token request must be the one the grant is for — compared as
 * /authorize compares it (scheme and host case-insensitively), so the spelling the client used
 * there is good here too.
 */
function checkResource(form: FormParams, granted: string): void {
  const resources = form.get('resource') ?? []
  if (resources.length > 1) throw invalidTarget('exactly one resource may be requested')
  if (resources.length === 1 && canonicalResource(resources[0]!) !== canonicalResource(granted)) throw invalidTarget('resource is not the one the grant is for', `requested ${resources[0]!.slice(0, 256)}, granted ${granted}`)
}

/** Ends a task on evidence that one of its grants leaked (a code or refresh token presented twice). */
async function revokeOnReplay(deps: ClientGrantDeps, task: TaskRow | undefined, why: string): Promise<void> {
  if (!task) return
  try {
    await endTask(deps, task.id, 'revoked', { kind: 'broker', why })
  } catch {
    // Already ended: nothing more to take away.
  }
}

/**
 * RFC 9449 §5 / §10: a DPoP header is verified when present; a grant bound to a key (`dpop_jkt` at
 * /authorize, or a refresh token first used with DPoP) needs a proof by that key. Checked before
 * anything is spent, so a request without the key burns nothing.
 */
async function grantProof(deps: ClientGrantDeps, grant: { dpopJkt: string | null }, request: GrantRequest): Promise<{ jkt: string } | undefined> {
  const proof = await deps.dpop.verify(request.dpop, 'POST', `${deps.config.issuer}/token`)
  if (grant.dpopJkt !== null && proof?.jkt !== grant.dpopJkt) throw invalidGrant('grant is bound to another key', proof ? `grant bound to ${grant.dpopJkt}, proof by ${proof.jkt}` : `grant bound to ${grant.dpopJkt} and no DPoP proof`)
  return proof
}

/** A one-use credential found spent inside the token's write: a concurrent presentation of it. */
class SpentConcurrently extends Error {}

/**
 * Mints the task token for a public client's grant and spends the grant in the same write
 * (`spend`: the code or the refresh token marked used, and the next refresh token recorded), so a
 * refusal or a retryable failure leaves the grant as it was, and two presentations racing each
 * other cannot both succeed: the loser is a replay, and the task is revoked.
 */
async function mintForClient(deps: ClientGrantDeps, grant: { taskId: string; clientId: string; resource: string; scope: string; tools: string | null; refresh: boolean; dpopJkt: string | null; note: string }, spend: (tx: TxStores) => Promise<boolean>, proof: { jkt: string } | undefined, request: GrantRequest, audit: AuditContext, why: string, accessScope = grant.scope): Promise<ClientTokenResponse> {
  const now = deps.clock.now()
  const stored = await deps.stores.tasks.get(grant.taskId)
  if (!stored) throw invalidGrant('grant is not valid', `task ${grant.taskId} is gone`)
  const workload = deps.config.workloads.find((w) => w.id === stored.workloadId)
  if (!workload) throw invalidGrant('grant is not valid', `workload ${stored.workloadId} is no longer registered`)
  // The client must still be one of its workload's: taken off the allowlist (or dynamic
  // registration turned off), its codes and refresh tokens die with it, whatever tasks remain.
  if (oauthClientWorkload(deps.config, grant.clientId)?.id !== workload.id) throw invalidGrant('grant is not valid', `client ${grant.clientId.slice(0, 256)} is no longer an OAuth client of workload ${workload.id}`)
  const resource = deps.config.resources.find((r) => r.uri === grant.resource)
  if (!resource) throw invalidTarget('resource is not registered', `unknown resource ${grant.resource}`)
  const subject = await taskSubject(deps, stored)
  const actor = { ...clientActor(workload, grant.clientId), act: undefined, exp: undefined }
  audit.userSub = subject.sub
  const task = await loadUsableTask(deps, stored.id, subject, actor, now, proof?.jkt)
  const refreshToken = grant.refresh ? `${REFRESH_PREFIX}${randomSecret(32)}` : undefined
  const asked: TaskTokenRequest = {
    subject,
    actor,
    resource,
    scopes: accessScope.split(' '),
    ttl: undefined,
    tools: grant.tools !== null ? (JSON.parse(grant.tools) as string[]) : undefined,
    dpopJkt: proof?.jkt,
    request,
    now,
    auditNote: grant.note,
    clientId: grant.clientId,
    spend: async (tx) => {
      if (!(await spend(tx))) throw new SpentConcurrently()
      // DPoP-bound from the first proof on (RFC 9449 §5): a public client's refresh token is the holder's.
      if (refreshToken !== undefined) await tx.refreshTokens.insert({ tokenHash: secretHash(refreshToken), taskId: task.id, clientId: grant.clientId, resource: resource.uri, scope: grant.scope, tools: grant.tools, dpopJkt: grant.dpopJkt ?? proof?.jkt ?? null, createdAt: now, expiresAt: task.expiresAt, usedAt: null })
    },
  }
  let minted: ExchangeResponse
  try {
    minted = await mintTaskToken(deps, asked, task, false)
  } catch (e) {
    if (!(e instanceof SpentConcurrently)) throw e
    await revokeOnReplay(deps, await deps.stores.tasks.get(task.id), why)
    throw invalidGrant('grant is not valid', `presented twice at once (${why}): task ${task.id} is revoked`)
  }
  const { issued_token_type: _t, ...response } = minted
  return { ...response, ...(refreshToken !== undefined ? { refresh_token: refreshToken } : {}) }
}

/**
 * `grant_type=authorization_code`: the code must be ours, unexpired, unused, the client's, for this
 * redirect URI, with the PKCE verifier of its challenge. A code presented again revokes the task
 * it opened (RFC 6749 §4.1.2: "SHOULD revoke … all tokens previously issued based on that code").
 * Every failure is `invalid_grant` (400), so a stock client starts a fresh authorization.
 */
export async function redeemAuthorizationCode(deps: ClientGrantDeps, form: FormParams, request: GrantRequest = {}): Promise<ClientTokenResponse> {
  return auditedGrant(deps, async (audit) => {
    const clientId = publicClientId(form, request.authorization)
    const code = one(form, 'code')
    if (!code) throw invalidRequest('"code" is required')
    const verifier = one(form, 'code_verifier')
    if (!verifier) throw invalidRequest('"code_verifier" is required (PKCE)')
    if (!VERIFIER.test(verifier)) throw invalidGrant('code_verifier is not valid', 'code_verifier is not 43–128 unreserved characters')
    const redirectUri = one(form, 'redirect_uri')
    const row = code.length <= 256 ? await deps.stores.authorizationCodes.get(secretHash(code)) : undefined
    const refuse = (detail: string) => invalidGrant('authorization code is not valid', detail)
    if (!row) throw refuse('unknown code')
    if (row.clientId !== clientId) throw refuse(`code was issued to ${row.clientId}, presented by ${clientId.slice(0, 256)}`)
    const now = deps.clock.now()
    // The replay check comes before anything the replayer could get wrong: a used code seen again
    // means it leaked, whoever holds it now.
    if (row.usedAt !== null) {
      const task = await deps.stores.tasks.get(row.taskId)
      audit.authenticated = true
      audit.workloadId = task?.workloadId
      audit.taskId = row.taskId
      await revokeOnReplay(deps, task, 'authorization code presented twice')
      throw refuse(`code of task ${row.taskId} was used at ${row.usedAt}: presented again, the task is revoked`)
    }
    if (row.expiresAt <= now) throw refuse(`code expired at ${row.expiresAt}`)
    // OAuth 2.1 §4.1.3: the redirect URI, when the request had one (ours always do), must be the same.
    if (redirectUri !== row.redirectUri) throw refuse('redirect_uri is not the one the code was issued for')
    const challenge = createHash('sha256').update(verifier).digest()
    if (!timingSafeEqual(challenge, Buffer.from(row.codeChallenge, 'base64url'))) throw refuse('code_verifier does not match the code_challenge')
    // From here the caller has proven the code is theirs: refusals are audited.
    audit.authenticated = true
    audit.taskId = row.taskId
    audit.resource = row.resource
    audit.workloadId = (await deps.stores.tasks.get(row.taskId))?.workloadId
    checkResource(form, row.resource)
    const proof = await grantProof(deps, row, request)
    return mintForClient(deps, { ...row, note: '; authorization code' }, (tx) => tx.authorizationCodes.use(row.codeHash, now), proof, request, audit, 'authorization code presented twice')
  })
}

/**
 * `grant_type=refresh_token`: the token must be ours, unused, the client's, and its task still
 * usable; it is rotated (the response carries its successor). A used one presented again revokes
 * the task. `scope` may narrow (RFC 6749 §6), never widen.
 */
export async function redeemRefreshToken(deps: ClientGrantDeps, form: FormParams, request: GrantRequest = {}): Promise<ClientTokenResponse> {
  return auditedGrant(deps, async (audit) => {
    const clientId = publicClientId(form, request.authorization)
    const token = one(form, 'refresh_token')
    if (!token) throw invalidRequest('"refresh_token" is required')
    const row = token.length <= 256 ? await deps.stores.refreshTokens.get(secretHash(token)) : undefined
    const refuse = (detail: string) => invalidGrant('refresh token is not valid', detail)
    if (!row) throw refuse('unknown refresh token')
    if (row.clientId !== clientId) throw refuse(`refresh token was issued to ${row.clientId}, presented by ${clientId.slice(0, 256)}`)
    const task = await deps.stores.tasks.get(row.taskId)
    audit.authenticated = true
    audit.taskId = row.taskId
    audit.resource = row.resource
    audit.workloadId = task?.workloadId
    const now = deps.clock.now()
    if (row.usedAt !== null) {
      await revokeOnReplay(deps, task, 'refresh token presented twice')
      throw refuse(`refresh token of task ${row.taskId} was rotated at ${row.usedAt}: presented again, the task is revoked`)
    }
    if (row.expiresAt <= now) throw refuse(`refresh token expired at ${row.expiresAt}`)
    checkResource(form, row.resource)
    const scopeText = one(form, 'scope')
    let scope = row.scope
    if (scopeText !== undefined && scopeText.trim() !== '') {
      const asked = [...new Set(scopeText.split(' ').filter(Boolean))]
      const held = row.scope.split(' ')
      const beyond = asked.filter((s) => !held.includes(s))
      if (beyond.length > 0) throw invalidScope('requested scope exceeds the grant', `beyond the refresh token: ${beyond.join(' ').slice(0, 256)}`)
      scope = asked.join(' ')
    }
    // A task that ended kills its refresh tokens: refused before the rotation spends anything.
    if (!task) throw refuse(`task ${row.taskId} is gone`)
    const state = taskState(task, now)
    if (state !== 'active') throw refuse(`task ${row.taskId} is ${state}`)
    const proof = await grantProof(deps, row, request)
    // The successor keeps the grant's scope: narrowing applies to this access token only (RFC 6749 §6).
    return mintForClient(deps, { ...row, refresh: true, note: '; refresh token' }, (tx) => tx.refreshTokens.use(row.tokenHash, now), proof, request, audit, 'refresh token presented twice', scope)
  })
}
