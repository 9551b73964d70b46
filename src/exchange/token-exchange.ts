import type { Clock } from '../clock.js'
import type { Config, ResourceConfig } from '../config.js'
import type { DpopChecker } from '../dpop/checker.js'
import { invalidClient, invalidDpopProof, invalidGrant, invalidRequest, invalidScope, invalidTarget, OAuthError, temporarilyUnavailable, unstorableValue } from '../errors.js'
import { isUnstorableText } from '../store/db.js'
import type { FormParams } from '../http/form.js'
import type { Metrics } from '../http/metrics.js'
import type { Logger } from '../logger.js'
import { rateLimited, type Limiter } from '../http/rate-limit.js'
import { uuidv7 } from '../ids.js'
import type { KeySet } from '../keys/keyset.js'
import { allowedScopes, auditedDecision, type Decision, type Policy } from '../policy/decide.js'
import type { Stores, TaskRow, TxStores } from '../store/stores.js'
import { decided, findResource, planTask, policyRefusal, recordOpenedTask, taskFacts, taskResources, taskState } from '../tasks/lifecycle.js'
import { checkAdmittedInWrite, type AdmissionDeps } from '../catalog/admission.js'
import { checkDelegationChain, delegationAct, TASK_SUBJECT_TYPE, taskSubject } from '../tasks/subtasks.js'
import { invalidAuthorizationDetails, mcpToolsDetail, parseAuthorizationDetails, type McpToolsDetail } from '../tokens/authorization-details.js'
import { holdSession } from '../tasks/sessions.js'
import { signTaskToken, type TaskTokenClaims } from '../tokens/issue.js'
import type { Attestation } from './attestation/kinds.js'
import { ACTOR_TOKEN_TYPE, attestedSpiffeId, type Actor, type ActorTokenVerifier } from './actor-token.js'
import { checkMayAct } from './may-act.js'
import { revokedSession, SUBJECT_TOKEN_TYPES, type Subject, type SubjectTokenVerifier } from './subject-token.js'

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'

export interface ExchangeDeps {
  config: Pick<Config, 'issuer' | 'tokens' | 'tasks' | 'resources' | 'subjectIssuers' | 'workloads' | 'workloadIssuers' | 'authorization'>
  clock: Clock
  keys: KeySet
  stores: Stores
  policy: Policy
  /** The catalog in force and the stored revision it reflects (re-checked in the token's write). */
  catalog: AdmissionDeps['catalog']
  subjectTokens: SubjectTokenVerifier
  actorTokens: ActorTokenVerifier
  /** Client authentication (RFC 7523 `private_key_jwt`) once the actor token has named the workload. */
  clients: { authenticateExchange(form: FormParams, workload: Actor['workload']): Promise<unknown> }
  /** DPoP (RFC 9449) proof checks with the broker's replay cache and nonces. */
  dpop: Pick<DpopChecker, 'verify'>
  /** Per-workload token bucket (DESIGN "Bad input": rate limits per workload), when configured. */
  workloadLimiter: Limiter | undefined
  metrics: Pick<Metrics, 'unauthenticatedRefusals' | 'exchangeDecisions'>
  logger: Logger
}

/** What the token endpoint passes a grant besides the form: the request headers it may need. */
export interface GrantRequest {
  /** The `DPoP` header as received (several fields arrive comma-joined and are refused), if any. */
  dpop?: string | undefined
  /** The caller's network address (the TCP peer), for policy. */
  callerAddress?: string | undefined
  /** The `Authorization` header, if any (workloads never use HTTP authentication: refused where it matters). */
  authorization?: string | undefined
  /** Told the workload's id once it is authenticated (the access log's caller id). */
  identified?: ((workloadId: string) => void) | undefined
}

/** RFC 8693 §2.2.1 success response, plus the task it belongs to. */
export interface ExchangeResponse {
  access_token: string
  issued_token_type: typeof ACCESS_TOKEN_TYPE
  /** RFC 9449 §5: `DPoP` when the token is bound to the proof's key (`cnf.jkt`), else `Bearer`. */
  token_type: 'Bearer' | 'DPoP'
  expires_in: number
  scope: string
  task_id: string
  /** RFC 9396 §7.1: the authorization details granted, when the token names its tools. */
  authorization_details?: McpToolsDetail[]
}

interface ExchangeRequest {
  subjectToken: string
  /** The subject is a sub-task (`urn:taskpass:params:oauth:token-type:task`): `subjectToken` is its id. */
  subjectIsTask: boolean
  actorToken: string
  resource: string
  scopes: string[] | undefined
  taskId: string | undefined
  clientId: string | undefined
  ttl: number | undefined
  /** RFC 9396: the `authorization_details` parameter as sent (parsed once the resource is known). */
  authorizationDetails: string | undefined
}

/** Parameters that may legitimately repeat on the wire (RFC 8693 §2.1); we still accept only one target. */
export const MULTI_VALUED = new Set(['resource', 'audience'])

/** RFC 8693 §2.1 request parameters, checked in order; a missing or bad one is `invalid_request`. */
export function parseExchangeRequest(form: FormParams): ExchangeRequest {
  const one = (name: string) => form.get(name)?.[0]
  const required = (name: string) => {
    const v = one(name)
    if (v === undefined || v === '') throw invalidRequest(`"${name}" is required`)
    return v
  }
  const subjectToken = required('subject_token')
  const subjectTokenType = required('subject_token_type')
  if (!SUBJECT_TOKEN_TYPES.has(subjectTokenType) && subjectTokenType !== TASK_SUBJECT_TYPE) throw invalidRequest('"subject_token_type" is not supported')
  // taskpass has no impersonation path: the acting workload must always prove itself.
  const actorToken = required('actor_token')
  const actorTokenType = required('actor_token_type')
  if (actorTokenType !== ACTOR_TOKEN_TYPE) throw invalidRequest('"actor_token_type" must be urn:ietf:params:oauth:token-type:jwt')
  const requested = one('requested_token_type')
  if (requested !== undefined && requested !== ACCESS_TOKEN_TYPE) throw invalidRequest('"requested_token_type" must be urn:ietf:params:oauth:token-type:access_token')

  // RFC 8707 §2 / DESIGN: exactly one target per token.
  const resources = form.get('resource') ?? []
  const audiences = form.get('audience') ?? []
  if (resources.length > 1 || audiences.length > 1) throw invalidTarget('exactly one resource may be requested')
  const resource = resources[0] ?? audiences[0]
  if (resource === undefined || resource === '') throw invalidTarget('"resource" is required')
  if (resources[0] !== undefined && audiences[0] !== undefined && resources[0] !== audiences[0]) throw invalidTarget('"audience" and "resource" name different targets')
  if (resource.includes('#')) throw invalidTarget('"resource" must not contain a fragment')

  const scope = one('scope')
  const ttlText = one('ttl')
  let ttl: number | undefined
  if (ttlText !== undefined) {
    if (!/^[1-9][0-9]{0,8}$/.test(ttlText)) throw invalidRequest('"ttl" must be a positive integer number of seconds')
    ttl = Number(ttlText)
  }
  return {
    subjectToken,
    subjectIsTask: subjectTokenType === TASK_SUBJECT_TYPE,
    actorToken,
    resource,
    scopes: scope === undefined || scope.trim() === '' ? undefined : [...new Set(scope.split(' ').filter(Boolean))],
    taskId: one('task_id') || undefined,
    clientId: one('client_id') || undefined,
    ttl,
    authorizationDetails: one('authorization_details'),
  }
}

/**
 * The workload a grant authenticated: an attested {@link Actor}, or a workload authenticated by
 * its registered key (`private_key_jwt`), which has no attestation and no expiry of its own.
 */
export type ActingWorkload = Pick<Actor, 'workload' | 'act'> & { attestation: Attestation | undefined; exp: number | undefined }

/** What the audit row knows about a request so far, filled in as checks pass. */
export interface AuditContext {
  /** Set once the caller (the workload) is authenticated: only then is a refusal audited. */
  authenticated?: boolean
  userSub?: string
  workloadId?: string
  taskId?: string
  resource?: string
}

/**
 * The token-exchange grant (RFC 8693): swaps a user's session plus a workload attestation for a
 * task-scoped, audience-bound, minutes-long RFC 9068 access token. Every decision about an
 * authenticated caller, allow or deny, is written to the audit log with its reason; a request
 * refused before its caller is known is only counted (metrics), so unauthenticated traffic never
 * grows the database.
 */
export async function exchangeToken(deps: ExchangeDeps, form: FormParams, request: GrantRequest = {}): Promise<ExchangeResponse> {
  return auditedGrant(deps, (audit) => exchange(deps, form, request, audit))
}

/**
 * Runs a grant at the token endpoint: a refusal of an authenticated caller (once the grant has set
 * `audit.authenticated`) is written to the audit log with its reason; one refused before is only
 * counted and logged, so unauthenticated traffic never grows the database.
 */
export async function auditedGrant<T>(deps: Pick<ExchangeDeps, 'stores' | 'clock' | 'metrics' | 'logger'>, grant: (audit: AuditContext) => Promise<T>): Promise<T> {
  const audit: AuditContext = {}
  try {
    const granted = await grant(audit)
    deps.metrics.exchangeDecisions.inc({ outcome: 'allow', error: '' })
    return granted
  } catch (caught) {
    // A value the database could not store is the request's fault: refused and audited as such.
    const e = isUnstorableText(caught) ? unstorableValue() : caught
    const error = e instanceof OAuthError ? e.code : 'server_error'
    const { authenticated, ...known } = audit
    deps.metrics.exchangeDecisions.inc({ outcome: authenticated ? 'deny' : 'unauthenticated', error })
    if (authenticated) {
      const reason = e instanceof OAuthError ? e.detail : 'internal error'
      await deps.stores.audit.insert({ at: deps.clock.now(), action: 'token.exchange', decision: 'deny', reason, error, ...known, ...(e instanceof OAuthError ? e.decidedBy : undefined) })
    } else {
      // Not a decision about a known principal: counted, and its reason logged in bounded form
      // (invalid_client is logged by the error handler already), never stored.
      deps.metrics.unauthenticatedRefusals.inc({ endpoint: 'token', error })
      if (e instanceof OAuthError && e.code !== 'invalid_client') deps.logger.info('token request refused before authentication', { error, detail: e.detail.slice(0, 512) })
    }
    throw e
  }
}

async function exchange(deps: ExchangeDeps, form: FormParams, request: GrantRequest, audit: AuditContext): Promise<ExchangeResponse> {
  const req = parseExchangeRequest(form)

  // The caller is the workload: its attestation is verified before anything about the user, so an
  // unauthenticated sender never learns whether a session token is valid, revoked or forged.
  const actor = await deps.actorTokens.verify(req.actorToken)
  const wait = deps.workloadLimiter?.take(actor.workload.id) ?? 0
  if (wait > 0) throw rateLimited(wait)
  // The workload is the client: a client_id naming anyone else is refused. OAuth libraries send
  // the client_id they were configured with: the workload id, or in SPIFFE-native deployments
  // the attested SPIFFE ID.
  if (req.clientId !== undefined && req.clientId !== actor.workload.id && req.clientId !== attestedSpiffeId(actor)) {
    throw invalidClient(`client_id ${req.clientId.slice(0, 256)} is not the acting workload ${actor.workload.id}`, null)
  }
  await deps.clients.authenticateExchange(form, actor.workload)
  audit.authenticated = true
  audit.workloadId = actor.workload.id
  request.identified?.(actor.workload.id)
  audit.resource = req.resource
  audit.taskId = req.taskId

  // A task named by id is read with the session's revocation, in one statement (and decided on below).
  const named = req.subjectIsTask ? undefined : req.taskId
  let subject: Subject
  let namedTask: TaskRow | undefined
  if (req.subjectIsTask) subject = await subtaskSubject(deps, req, actor)
  else if (named === undefined) subject = await deps.subjectTokens.verify(req.subjectToken)
  else {
    subject = await deps.subjectTokens.verifyExceptSession(req.subjectToken)
    namedTask = await readNamedTask(deps, named, subject)
  }
  audit.userSub = subject.sub
  const now = deps.clock.now()
  // The clock skew lets a just-expired session verify, but it has no lifetime left to lend a token:
  // that is an invalid subject token (RFC 8693 §2.2.2 invalid_request), not an unusable task.
  // (A sub-task's lifetime is its own: its expiry is the task's state, decided below.)
  if (!req.subjectIsTask && subject.exp <= now) throw invalidRequest('subject_token is expired', `subject_token expired ${now - subject.exp}s ago (within clock skew)`)
  checkMayAct(subject, actor)

  // RFC 9449 §5: a DPoP header on a token request is verified (htm POST, htu the token endpoint)
  // whether or not binding is required. Checked once the caller is authenticated, so only known
  // workloads can spend room in the replay cache; whether a proof is *required* is decided below.
  const proof = await deps.dpop.verify(request.dpop, 'POST', `${deps.config.issuer}/token`)

  const resource = findResource(deps.config, req.resource)
  if (!resource) throw invalidTarget('resource is not registered', `unknown resource ${req.resource}`)
  const tools = req.authorizationDetails === undefined ? undefined : parseAuthorizationDetails(req.authorizationDetails, resource.uri)

  const asked: TaskTokenRequest = { subject, actor, resource, scopes: req.scopes, ttl: req.ttl, tools, dpopJkt: proof?.jkt, request, now }
  if (named !== undefined) return mintTaskToken(deps, asked, checkUsableTask(namedTask, named, subject, actor, now, proof?.jkt), false)
  if (req.subjectIsTask) return mintTaskToken(deps, asked, await loadUsableTask(deps, req.subjectToken, subject, actor, now, proof?.jkt), false)
  return mintTaskToken(deps, asked, await openImplicitTask(deps, asked, audit, { purpose: 'implicit (token exchange)' }), true)
}

/** What minting a task token needs: the slice of {@link ExchangeDeps} every grant shares. */
export type MintDeps = Pick<ExchangeDeps, 'config' | 'clock' | 'keys' | 'stores' | 'policy' | 'catalog'>

/** What a grant has established about a token request once its caller and user are known. */
export interface TaskTokenRequest {
  subject: Subject
  actor: ActingWorkload
  resource: ResourceConfig
  /** The scopes asked for; undefined: the task's, within the workload's grant. */
  scopes: string[] | undefined
  ttl: number | undefined
  /** The tools asked for (RFC 9396 `authorization_details`); undefined: the task's declared tools. */
  tools: string[] | undefined
  /** The verified DPoP proof's key thumbprint (RFC 9449 §6.1), when the request carried one. */
  dpopJkt: string | undefined
  request: GrantRequest
  now: number
  /** Appended to the allow row's reason (e.g. which ID-JAG the token came from). */
  auditNote?: string | undefined
  /**
   * The OAuth client, when the grant is a public client's (authorization code, refresh token): its
   * metadata document URL is the token's `client_id` and `act.sub` (the workload is the policy's class of it).
   */
  clientId?: string | undefined
  /**
   * Runs inside the token's write transaction, before the token row: a grant spends its one-use
   * credential there (an authorization code, a refresh token, with its successor), so the spend
   * and the token commit together or not at all. Throwing refuses the token and writes nothing.
   */
  spend?: ((tx: TxStores) => Promise<void>) | undefined
}

/**
 * Plans the task a token request opens implicitly (the requested resource, scopes and tools; the
 * same policy as `POST /tasks`), without writing it: the write comes with the token's. A task that
 * needs approval is recorded pending (its opening is a decision, audited) and the request refused
 * `invalid_grant`. `id`/`ttl`: a grant that derives the task's id or bounds its life (ID-JAG).
 */
export async function openImplicitTask(deps: MintDeps, q: TaskTokenRequest, audit: AuditContext, opts: { purpose: string; id?: string; ttl?: number }): Promise<TaskRow> {
  // An implicit task opened with a proof is bound to its key, like one opened at POST /tasks.
  const planned = planTask(deps, q.subject, q.actor, { purpose: opts.purpose, resources: [{ resource: q.resource.uri, scopes: q.scopes ?? [], ...(q.tools ? { tools: q.tools } : {}) }], ttl: opts.ttl, id: opts.id }, q.dpopJkt, q.request)
  const task = planned.row
  audit.taskId = task.id
  if (task.status !== 'active') {
    // The task is opened (pending), as at POST /tasks: its opening is a decision, audited with it.
    await recordOpenedTask(deps, planned, q.subject, '; implicit task')
    const e = invalidGrant(`task ${task.id} awaits approval`, 'implicit task requires approval')
    e.decidedBy = planned.decidedBy
    throw e
  }
  return task
}

/**
 * Decides and mints one task token (RFC 9068) for a usable task — or for the implicit task just
 * planned (`implicit`: written with the token) — and writes token, task and audit row in one
 * group-committed transaction that re-checks the task and the policy set. Every grant ends here.
 */
export async function mintTaskToken(deps: MintDeps, q: TaskTokenRequest, task: TaskRow, implicit: boolean): Promise<ExchangeResponse> {
  const { subject, actor, resource, request, now } = q
  const proof = q.dpopJkt !== undefined ? { jkt: q.dpopJkt } : undefined
  const question: ExchangeQuestion = { subject, actor, task, resource, scopes: q.scopes, ttl: q.ttl, dpopJkt: q.dpopJkt, callerAddress: request.callerAddress, now, tools: q.tools }
  const { decision, scopes, ttl, tools: granted } = decideExchange(deps, question)
  const authorizationDetails = granted !== undefined ? [mcpToolsDetail(resource.uri, granted)] : undefined
  // A sub-task: every task above it must still hold what this token would carry, and the policy
  // must still permit each delegation; its tokens name the whole chain (RFC 8693 §4.1).
  const chain = task.parentTaskId !== null ? await checkDelegationChain(deps, task, resource.uri, scopes, granted, request) : undefined
  // A DPoP-bound task above: its sub-tasks' tokens are sender-constrained too (by the delegate's own key).
  if (chain?.some((t) => t.dpopJkt !== null) && proof === undefined) throw invalidDpopProof('a DPoP proof is required', `a task above sub-task ${task.id} is DPoP-bound`)
  // What the audit row names: this decision, or the one taken again at the write (below).
  let deciding = decision

  const jti = uuidv7(deps.clock)
  const claims: TaskTokenClaims = {
    iss: deps.config.issuer,
    sub: subject.sub,
    sub_id: { format: 'iss_sub', iss: subject.issuer, sub: subject.user },
    aud: resource.uri,
    client_id: q.clientId ?? actor.workload.id,
    act: q.clientId !== undefined ? { sub: q.clientId } : chain ? delegationAct(actor.workload.id, chain) : actor.act ? { sub: actor.workload.id, act: actor.act } : { sub: actor.workload.id },
    scope: scopes.join(' '),
    task_id: task.id,
    ...(task.parentTaskId !== null ? { parent_task_id: task.parentTaskId } : {}),
    jti,
    iat: now,
    nbf: now,
    exp: now + ttl,
    // The session the task is bound to (not merely the one presented): revoking that session
    // revokes this task and so this token; an unbound task's tokens carry no sid.
    ...(task.sid ? { sid: task.sid } : {}),
    // RFC 9449 §6.1: the token is bound to the proof's key.
    ...(proof ? { cnf: { jkt: proof.jkt } } : {}),
    ...(authorizationDetails ? { authorization_details: authorizationDetails } : {}),
  }
  // Sign outside the transaction (which holds the write lock); then one write of task (if implicit), token and audit
  // row, group-committed with the other exchanges of this event-loop turn before we answer.
  const { token: accessToken, kid } = await signTaskToken(deps.keys, claims)
  await deps.stores.batched(async (tx) => {
    // The catalog may have switched off the task's workload, user's issuer or resource while we
    // signed (its sweep of open tasks ran before this write, or waits for it): nothing of it is
    // written. First in the write, as the catalog lock is taken before any other.
    await checkAdmittedInWrite(tx, deps, task)
    // The task may have ended (completed, revoked, its session revoked) while we verified and
    // signed: re-check inside the write transaction, which ending a task serialises with, so no
    // token is ever committed active for an ended task.
    if (implicit) {
      if (task.sid !== null) await holdSession(tx, task.subjectIssuer, task.sid, 'the exchange')
      // Another policy set came into force while we signed: the task's opening was decided by the
      // one it replaced, so nothing of it is kept; the client asks again and the new set decides.
      if (deps.policy.version !== deciding.version) throw temporarilyUnavailable(1, `the policy set changed during the exchange (${deciding.version} → ${deps.policy.version})`)
      // A task whose id the grant derives (an ID-JAG's) may have been opened by a concurrent
      // redemption meanwhile: the client asks again, and its request then continues that task.
      if (await tx.tasks.get(task.id)) throw temporarilyUnavailable(1, `task ${task.id} was opened by a concurrent request`)
      await tx.tasks.insert(task)
    } else {
      // A policy that counts the task's tokens decides each exchange on the count the one before
      // it committed: concurrent exchanges of the task take its lock in turn (PostgreSQL; SQLite's
      // one writer already runs them one at a time).
      const countsTokens = deps.policy.readsTaskCount?.(resource.uri) === true
      if (countsTokens) await tx.locks.task(task.id)
      const current = await tx.tasks.get(task.id)
      const state = current ? taskState(current, now) : 'revoked'
      if (state !== 'active') throw invalidGrant(`task is ${state}`, `task ${task.id} became ${state} during the exchange`)
      // The decision read the task before we signed: if another policy set came into force, or
      // another exchange of it committed since and the set counts tokens, it is decided again on
      // what is true now — else concurrent exchanges would all pass a "5 tokens per task" rule.
      // When only the count moved and no policy reads it, the task's own bound is all that can change.
      const counted = current!.tokensMinted !== task.tokensMinted
      if (counted && deps.policy.version === deciding.version && !countsTokens) checkTokenBound(current!)
      else if (counted || deps.policy.version !== deciding.version) {
        const again = decideExchange(deps, { ...question, task: current! })
        // Permitted still, but the token as signed outlives what is allowed now: the client asks again.
        if (again.ttl < ttl) throw decided(temporarilyUnavailable(1, `the policy changed during the exchange: ${again.ttl}s allowed now, ${ttl}s signed`), again.decision)
        deciding = again.decision
      }
      if (chain) {
        // A delegation forbidden while we signed stops this token too.
        if (deps.policy.version !== decision.version) await checkDelegationChain({ ...deps, stores: tx }, current!, resource.uri, scopes, granted, request)
        // A task's bound holds for its whole tree: each task above counts this token, atomically.
        for (const above of chain) {
          const fresh = await tx.tasks.get(above.id)
          // Counted only within the bound, in one statement: another writer may be counting too.
          if (!(await tx.tasks.countToken(above.id))) throw invalidGrant('the task has minted all the tokens it may', `task ${above.id} above has minted ${fresh?.tokensMinted} of ${fresh?.maxTokens} tokens`)
        }
      } else if (subject.exp > (current!.sessionExpiresAt ?? 0)) {
        // A fresher session token: the sub-tasks below this task may live on it.
        await tx.tasks.refreshSession(task.id, subject.startedAt, subject.exp)
      }
    }
    // Likewise the signing key may have been revoked (a compromise) while we signed, by this
    // process or another: such a token is refused everywhere already, and must not be recorded as
    // a live one. Read in this transaction (the key set's memory may not have heard of another
    // process's commit yet), and on PostgreSQL held so a revocation waits for this token's commit.
    if (!(await tx.signingKeys.isUsable(kid))) throw temporarilyUnavailable(1, `signing key ${kid} was revoked during the exchange`)
    await q.spend?.(tx)
    await tx.tokens.insert({ jti, taskId: task.id, sub: claims.sub, workloadId: actor.workload.id, aud: claims.aud, scope: claims.scope, iat: now, exp: claims.exp, status: 'active', revokedAt: null, cnfJkt: proof?.jkt ?? null, kid, attestation: actor.attestation ? JSON.stringify(actor.attestation) : null })
    await tx.audit.insert({ at: now, action: 'token.exchange', decision: 'allow', reason: `${deciding.reason}; ttl ${ttl}s${implicit ? '; implicit task' : ''}${proof ? `; DPoP ${proof.jkt}` : ''}${q.auditNote ?? ''}`, userSub: subject.sub, workloadId: actor.workload.id, taskId: task.id, jti, resource: resource.uri, ...auditedDecision(deciding) })
  })
  return { access_token: accessToken, issued_token_type: ACCESS_TOKEN_TYPE, token_type: proof ? 'DPoP' : 'Bearer', expires_in: ttl, scope: claims.scope, task_id: task.id, ...(authorizationDetails ? { authorization_details: authorizationDetails } : {}) }
}

/**
 * The subject of a sub-task's exchange: the sub-task itself (its id as `subject_token`), which
 * only its own workload may name, with `task_id` absent or the same. Its user is the task's owner;
 * a revoked session of theirs ends it as it ends the task the user opened.
 */
async function subtaskSubject(deps: ExchangeDeps, req: ExchangeRequest, actor: Actor): Promise<Subject> {
  const row = await deps.stores.tasks.get(req.subjectToken)
  const refuse = (detail: string) => invalidRequest('subject_token is not a sub-task of this workload', detail)
  if (!row || row.parentTaskId === null) throw refuse(`${req.subjectToken.slice(0, 128)} is not a sub-task`)
  if (row.workloadId !== actor.workload.id) throw refuse(`sub-task ${row.id} belongs to workload ${row.workloadId}`)
  if (req.taskId !== undefined && req.taskId !== row.id) throw refuse(`task_id ${req.taskId.slice(0, 128)} is not the sub-task ${row.id}`)
  if (row.sid !== null && await deps.stores.sessions.isRevoked(row.subjectIssuer, row.sid)) throw invalidRequest('subject_token session has been revoked', `session ${row.sid} of sub-task ${row.id} is revoked`)
  // Policy's session_age and the token's lifetime come from the session the task above recorded.
  return taskSubject(deps, row)
}

/** The task's bound on tokens (`max_tokens`, `maxTokensPerTask`): one more would pass it → `invalid_grant`. */
function checkTokenBound(task: TaskRow): void {
  if (task.maxTokens !== null && task.tokensMinted >= task.maxTokens) throw invalidGrant('the task has minted all the tokens it may', `task ${task.id} has minted ${task.tokensMinted} of ${task.maxTokens} tokens`)
}

/** What an exchange asks of a task: everything the decision depends on, and nothing that writes. */
export interface ExchangeQuestion {
  subject: Subject
  actor: ActingWorkload
  task: TaskRow
  resource: ResourceConfig
  /** The scopes asked for; undefined: the task's, within the workload's grant. */
  scopes: string[] | undefined
  ttl: number | undefined
  dpopJkt: string | undefined
  callerAddress: string | undefined
  now: number
  /** The tools asked for (RFC 9396 `authorization_details`); undefined: the task's declared tools. */
  tools?: string[] | undefined
}

/**
 * Decides one exchange against a usable task, without writing: the resource and scopes must be
 * inside the task's declared intent, the policy must permit it (on every exchange, not only when
 * the task opened), its constraints are applied, and the lifetime is the shortest of what was
 * asked, the broker's limit, the policy's, the task's, the session's and the attestation's.
 * The dry run (`POST /admin/policy/evaluate`) asks the same function.
 */
export function decideExchange(deps: Pick<ExchangeDeps, 'config' | 'policy'>, q: ExchangeQuestion): { decision: Extract<Decision, { allow: true }>; scopes: string[]; ttl: number; tools: string[] | undefined } {
  const { subject, actor, task, resource, now } = q
  const declaredResources = taskResources(task)
  const taskResource = declaredResources.find((r) => r.resource === resource.uri)
  if (!taskResource) throw invalidTarget('resource is outside the task', `task ${task.id} does not cover ${resource.uri}`)
  // Usage bound: checked again on the task's count inside the write transaction, so concurrent
  // exchanges never over-issue.
  checkTokenBound(task)

  // Scope (DESIGN): requested ⊆ task scopes ∩ workload's allowed ∩ resource's known. None requested → the task's.
  const ceiling = taskResource.scopes.filter((s) => allowedScopes(actor.workload, resource).includes(s))
  const scopes = q.scopes ?? ceiling
  const beyondTask = scopes.filter((s) => !taskResource.scopes.includes(s))
  if (beyondTask.length > 0) throw invalidScope('requested scope exceeds the task', `beyond task: ${beyondTask.join(' ')}`)
  if (scopes.length === 0) throw invalidScope('no scope would be granted', 'empty scope')

  // Tools (RFC 9396 §7: a token request may only narrow): requested ⊆ the task's declared tools,
  // when it declared any. None requested → the task's; a task that declared none → any the policy allows.
  const declared = taskResource.tools
  const beyondTools = q.tools?.filter((t) => declared !== undefined && !declared.includes(t)) ?? []
  if (beyondTools.length > 0) throw invalidAuthorizationDetails('requested tools exceed the task', `beyond task: ${beyondTools.join(' ')}`)
  const tools = q.tools ?? declared

  const decision = deps.policy.decide({ user: subject.user, issuer: subject.issuer, sid: subject.sid, claims: subject.claims }, 'token.exchange', resource, {
    workload: actor.workload,
    scopes,
    dpopBound: q.dpopJkt !== undefined,
    now,
    ttl: q.ttl,
    attestation: actor.attestation,
    task: taskFacts(task, declaredResources),
    sessionStartedAt: subject.startedAt,
    callerAddress: q.callerAddress,
  })
  if (!decision.allow) throw policyRefusal(decision)
  // RFC 9449 §5.2 (dpop_bound_access_tokens): such a client's token requests without a DPoP header are rejected.
  if (decision.constraints.dpopRequired && q.dpopJkt === undefined) throw decided(invalidDpopProof('a DPoP proof is required', `DPoP is required for ${actor.workload.id} on ${resource.uri}`), decision)

  const ttl = Math.min(
    q.ttl ?? deps.config.tokens.defaultTtl,
    deps.config.tokens.maxTtl,
    decision.constraints.maxTtl ?? Infinity,
    task.expiresAt - now,
    subject.exp - now,
    // Never outlive the attestation the token was minted from (a registered key has no expiry).
    (actor.exp ?? Infinity) - now,
  )
  if (ttl <= 0) throw decided(invalidGrant('task, session or attestation has no time left'), decision)
  return { decision, scopes, ttl, tools }
}

/**
 * The task must exist, be active and unexpired, and belong to this user, this workload and — when
 * bound — this session and this DPoP key. Anything else is `invalid_grant`, with one description
 * so that a caller cannot probe other people's tasks.
 */
export async function loadUsableTask(deps: Pick<ExchangeDeps, 'stores'>, id: string, subject: Subject, actor: Pick<ActingWorkload, 'workload'>, now: number, dpopJkt: string | undefined): Promise<TaskRow> {
  return checkUsableTask(await deps.stores.tasks.get(id), id, subject, actor, now, dpopJkt)
}

/**
 * The task named `id` as read (none: undefined), and the session token that named it, verified
 * but for its session: refused as any revoked session is ({@link revokedSession}), before
 * anything else is decided. One statement reads both (`tasks.getWithSession`).
 */
async function readNamedTask(deps: Pick<ExchangeDeps, 'stores'>, id: string, subject: Subject): Promise<TaskRow | undefined> {
  if (subject.sid === undefined) return deps.stores.tasks.get(id)
  const { task, sessionRevoked } = await deps.stores.tasks.getWithSession(id, subject.issuer, subject.sid)
  if (sessionRevoked) throw revokedSession(subject.sid)
  return task
}

/** {@link loadUsableTask} on a row already read. */
function checkUsableTask(task: TaskRow | undefined, id: string, subject: Subject, actor: Pick<ActingWorkload, 'workload'>, now: number, dpopJkt: string | undefined): TaskRow {
  const notUsable = (detail: string) => invalidGrant('task is not active for this caller', detail)
  if (!task) throw notUsable(`task ${id} not found`)
  if (task.workloadId !== actor.workload.id) throw notUsable(`task ${id} belongs to workload ${task.workloadId}`)
  if (task.subjectIssuer !== subject.issuer || task.userSub !== subject.user) throw notUsable(`task ${id} belongs to another user`)
  if (task.sid !== null && task.sid !== subject.sid) throw notUsable(`task ${id} is bound to another session`)
  // A DPoP-bound task belongs to the holder of its key. Without that key (no proof, or a proof by
  // another key) the proof may be fine but the grant is not this caller's: invalid_grant, as
  // node-oidc-provider answers for a dpop_jkt-bound code (RFC 9449 §10) or a DPoP-bound refresh
  // token (§5). Checked before the task's state, so a non-holder learns nothing about the task.
  if (task.dpopJkt !== null && task.dpopJkt !== dpopJkt) throw notUsable(dpopJkt === undefined ? `task ${id} is DPoP-bound and the request has no proof` : `task ${id} is bound to DPoP key ${task.dpopJkt}, the proof is by ${dpopJkt}`)
  const state = taskState(task, now)
  if (state !== 'active') throw invalidGrant(`task is ${state}`, `task ${id} is ${state}`)
  return task
}
