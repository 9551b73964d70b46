import type { SubjectId } from '@taskpass/verifier'
import type { Clock } from '../clock.js'
import type { Config, ResourceConfig } from '../config.js'
import { invalidDpopProof, invalidRequest, invalidScope, invalidTarget, notFound, OAuthError, taskNotActive, unauthorizedClient } from '../errors.js'
import type { Actor } from '../exchange/actor-token.js'
import { checkMayAct } from '../exchange/may-act.js'
import { brokerSubject, type Subject } from '../exchange/subject-token.js'
import { uuidv7 } from '../ids.js'
import { allowedScopes, auditedDecision, type Decision, type Policy, type Principal, type TaskFacts, type TaskResource } from '../policy/decide.js'
import type { Stores, TaskRow, TxStores } from '../store/stores.js'
import { checkAdmitted, checkAdmittedInWrite, type AdmissionDeps } from '../catalog/admission.js'
import { holdSession } from './sessions.js'

export type { TaskResource }

/** What the tasks module needs: a narrow slice of the broker's dependencies. */
export interface TaskDeps {
  config: Pick<Config, 'tasks' | 'resources' | 'subjectIssuers' | 'workloads' | 'workloadIssuers' | 'authorization'>
  stores: Stores
  clock: Clock
  policy: Policy
  /** Requests waiting on a task's approval (`GET /tasks/{id}?wait=`): woken when the task ends too. */
  approvals?: { notify(taskId: string): void }
}

/** What opening a task needs beside: the catalog in force and the stored revision it reflects (re-checked in the task's write). */
export type OpeningDeps = TaskDeps & Pick<AdmissionDeps, 'catalog'>

export type Caller =
  | { kind: 'user'; subject: Subject }
  | { kind: 'workload'; actor: Actor }
  | { kind: 'admin'; id: string }
  /** The broker itself, ending a task on evidence of an attack (e.g. an authorization code presented twice). */
  | { kind: 'broker'; why: string }

export type TaskState = TaskRow['status'] | 'expired'

/** A task as the API shows it. Expiry is derived from time, never stored. */
export interface TaskView {
  task_id: string
  status: TaskState
  purpose: string
  resources: TaskResource[]
  /** The owner's subject at their issuer; with `sub_id.iss`, the user (RFC 9493 `iss_sub`). */
  user: string
  sub_id: SubjectId
  workload: string
  /** The OAuth client the user consented to, for a task opened in the browser. */
  client_id?: string
  sid?: string
  /** RFC 7638 thumbprint of the DPoP key the task is bound to, when it was opened with a proof. */
  dpop_jkt?: string
  created_at: number
  expires_at: number
  /** When the task opened `pending_approval`: until when a decision is accepted. */
  approval_expires_at?: number
  /** The task's bound on tokens, and how many it has minted. */
  max_tokens?: number
  tokens_minted: number
  /** A sub-task's parent, and how many delegations it is from the task the user opened (0: that task). */
  parent_task_id?: string
  depth: number
  ended_at?: number
  end_reason?: string
}

/**
 * The task's state at `now`. `expired` is derived, never stored: an open task past `expiresAt`,
 * or a pending one whose approval request lapsed (`approvalExpiresAt`) — that one can never be
 * approved, so it is as over as an expired task.
 */
export function taskState(row: TaskRow, now: number): TaskState {
  if ((row.status === 'active' || row.status === 'pending_approval') && row.expiresAt <= now) return 'expired'
  if (row.status === 'pending_approval' && row.approvalExpiresAt !== null && row.approvalExpiresAt <= now) return 'expired'
  return row.status
}

export function taskResources(row: TaskRow): TaskResource[] {
  return JSON.parse(row.resources) as TaskResource[]
}

export function viewTask(row: TaskRow, now: number): TaskView {
  return {
    task_id: row.id,
    status: taskState(row, now),
    purpose: row.purpose,
    resources: taskResources(row),
    user: row.userSub,
    sub_id: { format: 'iss_sub', iss: row.subjectIssuer, sub: row.userSub },
    workload: row.workloadId,
    ...(row.clientId !== null ? { client_id: row.clientId } : {}),
    ...(row.sid ? { sid: row.sid } : {}),
    ...(row.dpopJkt ? { dpop_jkt: row.dpopJkt } : {}),
    created_at: row.createdAt,
    expires_at: row.expiresAt,
    ...(row.approvalExpiresAt !== null ? { approval_expires_at: row.approvalExpiresAt } : {}),
    ...(row.maxTokens !== null ? { max_tokens: row.maxTokens } : {}),
    tokens_minted: row.tokensMinted,
    ...(row.parentTaskId !== null ? { parent_task_id: row.parentTaskId } : {}),
    depth: row.depth,
    ...(row.endedAt ? { ended_at: row.endedAt } : {}),
    ...(row.endReason ? { end_reason: row.endReason } : {}),
  }
}

export function findResource(config: Pick<Config, 'resources'>, uri: string): ResourceConfig | undefined {
  return config.resources.find((r) => r.uri === uri)
}

export interface TaskRequest {
  purpose: string
  resources: TaskResource[]
  ttl?: number | undefined
  /** At most this many tokens for the task (`max_tokens`). */
  max_tokens?: number | undefined
  /**
   * The task's id when the grant derives it (an ID-JAG's task: `idJagTaskId`); otherwise a new
   * UUIDv7. Never taken from a request body (the body schemas are strict).
   */
  id?: string | undefined
  /** The OAuth client a consent opens the task for (its metadata document URL); never from a request body. */
  clientId?: string | undefined
}

/** The least of the task's own `max_tokens` and its resources' `maxTokensPerTask`; null when none is set. */
function tokenBound(own: number | undefined, perResource: (number | undefined)[]): number | null {
  const bounds = [own, ...perResource].filter((n): n is number => n !== undefined)
  return bounds.length > 0 ? Math.min(...bounds) : null
}

/** The task as policy sees it (`context.task`). `resources`: its declared resources when the caller has parsed them already. */
export function taskFacts(row: TaskRow, resources: TaskResource[] = taskResources(row)): TaskFacts {
  return {
    id: row.id,
    purpose: row.purpose,
    resources,
    createdAt: row.createdAt,
    expiresAt: row.expiresAt,
    tokensMinted: row.tokensMinted,
    approved: row.approvalExpiresAt !== null && row.status === 'active',
    depth: row.depth,
    ...(row.parentTaskId !== null ? { parentId: row.parentTaskId } : {}),
  }
}

/** The task owner as policy sees them at a tool call (no session token there): the claims kept from the opening session. */
export function taskPrincipal(row: TaskRow): Principal {
  return { user: row.userSub, issuer: row.subjectIssuer, sid: row.sid ?? undefined, ...(row.userClaims ? { claims: JSON.parse(row.userClaims) as Record<string, string> } : {}) }
}

/** Where a request came from, for policy: the TCP peer's address, when known. */
export interface RequestFacts {
  callerAddress?: string | undefined
}

/**
 * Decides whether a task may be opened and builds its row, without writing anything:
 * the policy runs for every resource, and the outcome is `active` or `pending_approval`.
 * `dpopJkt` is the thumbprint of the verified DPoP proof that came with the request: the task is
 * bound to that key, and every token of it must be too.
 */
export function planTask(deps: TaskDeps, subject: Subject, actor: Pick<Actor, 'workload'> & Partial<Pick<Actor, 'attestation'>>, req: TaskRequest, dpopJkt?: string, request: RequestFacts = {}, parent?: TaskRow): { row: TaskRow; reason: string; decidedBy: ReturnType<typeof auditedDecision> } {
  const now = deps.clock.now()
  if (req.resources.length === 0) throw invalidTarget('a task needs at least one resource')
  const seen = new Set<string>()
  const declared = req.resources.map(({ resource: uri, scopes, tools }) => {
    if (seen.has(uri)) throw invalidRequest(`resource ${uri} is listed twice`)
    seen.add(uri)
    const resource = findResource(deps.config, uri)
    if (!resource) throw invalidTarget('resource is not registered', `unknown resource ${uri}`)
    const wanted = scopes.length > 0 ? [...new Set(scopes)] : allowedScopes(actor.workload, resource)
    return { resource, declared: { resource: uri, scopes: wanted, ...(tools !== undefined ? { tools: [...new Set(tools)] } : {}) } as TaskResource }
  })
  const ttl = Math.min(req.ttl ?? deps.config.tasks.defaultTtl, deps.config.tasks.maxTtl)
  const id = req.id ?? uuidv7(deps.clock)
  // The policy sees the task being opened: its purpose and its whole declared intent.
  const task: TaskFacts = { id, purpose: req.purpose, resources: declared.map((d) => d.declared), createdAt: now, expiresAt: now + ttl, tokensMinted: 0, approved: false, depth: parent ? parent.depth + 1 : 0, parentId: parent?.id }
  let approvalRequired = false
  const reasons: string[] = []
  const policies = new Set<string>()
  for (const { resource, declared: d } of declared) {
    const decision = deps.policy.decide({ user: subject.user, issuer: subject.issuer, sid: subject.sid, claims: subject.claims }, 'task.open', resource, {
      workload: actor.workload,
      scopes: d.scopes,
      dpopBound: dpopJkt !== undefined,
      now,
      ttl: req.ttl,
      attestation: actor.attestation,
      task,
      // A sub-task is opened by its parent's workload: no session token is part of the request.
      sessionStartedAt: parent ? undefined : subject.startedAt,
      callerAddress: request.callerAddress,
    })
    if (!decision.allow) throw policyRefusal(decision)
    for (const p of decision.policies) policies.add(p)
    if (d.scopes.length === 0) throw decided(invalidScope('no scope would be granted', `no allowed scopes for ${d.resource}`), decision)
    // A task for a resource or workload that requires DPoP is opened bound to a key, or not at all.
    // A sub-task is opened by another workload than its own, which has no key to show yet: its
    // exchanges are refused without a proof all the same (the exchange decides DPoP again).
    if (decision.constraints.dpopRequired && dpopJkt === undefined && !parent) throw decided(invalidDpopProof('a DPoP proof is required', `DPoP is required for ${actor.workload.id} on ${d.resource}`), decision)
    approvalRequired ||= decision.constraints.approvalRequired
    reasons.push(decision.reason)
  }
  const row: TaskRow = {
    id,
    userSub: subject.user,
    subjectIssuer: subject.issuer,
    sid: subject.sid ?? null,
    workloadId: actor.workload.id,
    purpose: req.purpose,
    resources: JSON.stringify(task.resources),
    status: approvalRequired ? 'pending_approval' : 'active',
    dpopJkt: dpopJkt ?? null,
    createdAt: now,
    expiresAt: now + ttl,
    endedAt: null,
    endReason: null,
    tokensMinted: 0,
    // A human has approvalTtl to decide, never beyond the task's own life.
    approvalExpiresAt: approvalRequired ? Math.min(now + deps.config.tasks.approvalTtl, now + ttl) : null,
    userClaims: Object.keys(subject.claims).length > 0 ? JSON.stringify(subject.claims) : null,
    maxTokens: tokenBound(req.max_tokens, declared.map((d) => d.resource.maxTokensPerTask)),
    parentTaskId: parent?.id ?? null,
    depth: parent ? parent.depth + 1 : 0,
    rootTaskId: parent ? (parent.rootTaskId ?? parent.id) : null,
    // The session is recorded where the user opened the task; its sub-tasks read it from there.
    sessionStartedAt: parent ? null : subject.startedAt,
    sessionExpiresAt: parent ? null : subject.exp,
    clientId: req.clientId ?? null,
  }
  // The workload and the user were verified before this (awaited) request was planned: the catalog
  // may have switched one of them off since, and its sweep of open tasks has run already.
  checkAdmitted(deps.config, row)
  const decidedBy = { policyVersion: deps.policy.version, policies: policies.size > 0 ? [...policies].sort().join(' ') : null }
  return { row, reason: reasons.join('; ') + (approvalRequired ? '; approval required' : ''), decidedBy }
}

/** Marks an error as following from a policy decision: its audit row names the set version and policies. */
export function decided<E extends OAuthError>(e: E, decision: Decision): E {
  e.decidedBy = auditedDecision(decision)
  return e
}

/** The client's error for a policy deny, carrying the decision for the audit row. */
export function policyRefusal(decision: Extract<Decision, { allow: false }>): OAuthError {
  return decided(new OAuthError(decision.code, 400, decisionDescription(decision.code), decision.reason), decision)
}

export function decisionDescription(code: 'invalid_target' | 'invalid_scope' | 'unauthorized_client'): string {
  switch (code) {
    case 'invalid_target':
      return 'resource is not permitted for this workload'
    case 'invalid_scope':
      return 'requested scope exceeds what is permitted'
    case 'unauthorized_client':
      return 'workload is not allowed this grant'
  }
}

/**
 * Opens a task (POST /tasks): plan, then one durable write of the task and its audit row.
 * A refusal is audited too (every decision, allow or deny), and writes nothing else.
 */
export async function openTask(deps: OpeningDeps, subject: Subject, actor: Actor, req: TaskRequest, dpopJkt?: string, request: RequestFacts = {}): Promise<TaskView> {
  let planned: ReturnType<typeof planTask>
  try {
    // Within the clock skew a just-expired session still verifies; it cannot open anything.
    if (subject.exp <= deps.clock.now()) throw invalidRequest('subject_token is expired', 'subject_token expired (within clock skew)')
    checkMayAct(subject, actor)
    planned = planTask(deps, subject, actor, req, dpopJkt, request)
  } catch (e) {
    await auditTaskOpenDenied(deps, e, subject, actor)
    throw e
  }
  const { row } = planned
  await recordOpenedTask(deps, planned, subject)
  return viewTask(row, deps.clock.now())
}

/**
 * One durable write of a planned task and the audit row of its opening (`note`: e.g. `; implicit task`).
 * A task bound to a session is written only while that session is not revoked (see holdSession);
 * `check` runs in the same transaction before the write (a sub-task's limits), and throwing writes nothing.
 */
export async function recordOpenedTask(deps: Pick<OpeningDeps, 'stores' | 'approvals' | 'config' | 'catalog'>, planned: ReturnType<typeof planTask>, subject: Subject, note = '', check?: (tx: TxStores) => Promise<void>): Promise<void> {
  const { row, reason, decidedBy } = planned
  const binding = row.dpopJkt ? `; DPoP-bound to ${row.dpopJkt}` : ''
  await deps.stores.durably(async (tx) => {
    // The catalog's lock first, the session's next (a revocation takes it, then ends tasks): never a cycle.
    await checkAdmittedInWrite(tx, deps, row)
    if (row.sid !== null) await holdSession(tx, row.subjectIssuer, row.sid, 'the task\'s opening')
    await check?.(tx)
    await tx.tasks.insert(row)
    await tx.audit.insert({ at: row.createdAt, action: 'task.open', decision: 'allow', reason: `${row.status}: ${reason}${binding}${note}`, userSub: subject.sub, workloadId: row.workloadId, taskId: row.id, ...decidedBy })
  })
  // After the commit: whoever follows task changes (the console's live list) hears of it.
  deps.approvals?.notify(row.id)
}

/** Writes the audit row of a refused task opening by an authenticated workload (an {@link OAuthError}; anything else is not a decision); `subject` when the session verified. */
export async function auditTaskOpenDenied(deps: Pick<TaskDeps, 'stores' | 'clock'>, e: unknown, subject: Subject | undefined, actor: Actor): Promise<void> {
  if (!(e instanceof OAuthError)) return
  await deps.stores.audit.insert({ at: deps.clock.now(), action: 'task.open', decision: 'deny', reason: e.detail, error: e.code, userSub: subject?.sub ?? null, workloadId: actor.workload.id, ...e.decidedBy })
}

/** Whether the caller owns (user), runs (workload) or administers the task. */
export function canSee(row: TaskRow, caller: Caller): boolean {
  switch (caller.kind) {
    case 'admin':
    case 'broker':
      return true
    case 'workload':
      return row.workloadId === caller.actor.workload.id
    case 'user':
      return row.subjectIssuer === caller.subject.issuer && row.userSub === caller.subject.user
  }
}

/**
 * Loads a task the caller may see; anything else is indistinguishable from a missing task.
 * `delegators`: the workload of any task above a sub-task may see it too (to read or revoke what
 * it delegated; never to complete it or delegate from it).
 */
export async function getTaskFor(deps: Pick<TaskDeps, 'stores'>, id: string, caller: Caller, delegators = false): Promise<TaskRow> {
  const row = await deps.stores.tasks.get(id)
  if (!row || !(canSee(row, caller) || (delegators && (await delegatedBy(deps, row, caller))))) throw notFound('task not found')
  return row
}

/** Whether the caller is the workload of a task above this one (the chain is at most `tasks.maxDepth` ≤ 10 long). */
async function delegatedBy(deps: Pick<TaskDeps, 'stores'>, row: TaskRow, caller: Caller): Promise<boolean> {
  if (caller.kind !== 'workload') return false
  let above = row.parentTaskId
  for (let hops = 0; above !== null && hops < 10; hops++) {
    const parent = await deps.stores.tasks.get(above)
    if (!parent) return false
    if (parent.workloadId === caller.actor.workload.id) return true
    above = parent.parentTaskId
  }
  return false
}

/** How audit rows and end reasons name a caller: `user:<sub>`, `workload:<id>`, `admin:<id>`, `broker (<why>)`. */
export function callerName(caller: Caller): string {
  switch (caller.kind) {
    case 'admin':
      return `admin:${caller.id}`
    case 'broker':
      return `broker (${caller.why})`
    case 'workload':
      return `workload:${caller.actor.workload.id}`
    case 'user':
      return `user:${caller.subject.sub}`
  }
}

/** The task owner's `sub` as the broker's tokens and audit rows name it. */
export function ownerSub(deps: Pick<TaskDeps, 'config'>, row: TaskRow): string {
  return brokerSubject(deps.config.subjectIssuers, row.subjectIssuer, row.userSub)
}

/**
 * Ends a task — completed by its workload, revoked by its user, its workload or an admin — and
 * revokes every token of it in the same transaction, committed with synchronous=FULL before
 * the call returns. Every sub-task below it ends in that transaction too (revoked, naming this
 * task), with its tokens. A revocation event is appended for the feed per task ended.
 */
export async function endTask(deps: TaskDeps, id: string, how: 'completed' | 'revoked', caller: Caller): Promise<{ task: TaskView; tokens_revoked: number; subtasks_revoked?: string[]} > {
  // A delegating workload may revoke a sub-task below its task; only the task's own workload completes it.
  const row = await getTaskFor(deps, id, caller, how === 'revoked')
  if (how === 'completed' && caller.kind !== 'workload') throw unauthorizedClient('only the task\'s workload can complete it')
  const now = deps.clock.now()
  const reason = `${how} by ${callerName(caller)}`
  const ended = await deps.stores.durably(async (tx) => {
    const n = await endOne(deps, tx, row, how, now, reason)
    if (n === undefined) return undefined
    return { tokens: n, subtasks: await endDescendants(deps, tx, row.id, now, `parent task ${row.id} ${how}`) }
  })
  if (ended === undefined) throw taskNotActive(`task is already ${row.status}`)
  // After the commit: a request waiting for the approval of one of these tasks learns it ended.
  for (const t of [id, ...ended.subtasks]) deps.approvals?.notify(t)
  return { task: viewTask((await deps.stores.tasks.get(id))!, now), tokens_revoked: ended.tokens, ...(ended.subtasks.length > 0 ? { subtasks_revoked: ended.subtasks } : {}) }
}

/**
 * Inside a transaction: ends one open task, revokes its tokens, appends its feed event and audit
 * row. Undefined when the task was no longer open; else how many tokens it revoked.
 */
async function endOne(deps: TaskDeps, tx: TxStores, row: TaskRow, how: 'completed' | 'revoked', now: number, reason: string): Promise<number | undefined> {
  if (!await tx.tasks.end(row.id, how, now, reason)) return undefined
  const n = await tx.tokens.revokeByTask(row.id, now)
  const relevantUntil = Math.max(now, await tx.tokens.maxExpOfTask(row.id) ?? now)
  // Only the resources that hold a token of this task hear of it (and so learn its user and session).
  await tx.revocations.insert({ at: now, kind: how === 'completed' ? 'task_completed' : 'task_revoked', taskId: row.id, sid: row.sid, sub: row.userSub, subjectIssuer: row.subjectIssuer, relevantUntil, audiences: await tx.tokens.audiencesOfTask(row.id) })
  await tx.audit.insert({ at: now, action: `task.${how === 'completed' ? 'complete' : 'revoke'}`, decision: 'allow', reason: `${reason}; ${n} token(s) revoked`, userSub: ownerSub(deps, row), workloadId: row.workloadId, taskId: row.id })
  return n
}

/**
 * Inside a transaction: revokes every open task below `id` (its sub-tasks, theirs, …), breadth
 * first; returns their ids. Depth is bounded by `tasks.maxDepth`, so is the walk.
 */
export async function endDescendants(deps: TaskDeps, tx: TxStores, id: string, now: number, reason: string): Promise<string[]> {
  const ended: string[] = []
  let level = [id]
  while (level.length > 0) {
    const next: string[] = []
    for (const parent of level) {
      for (const child of await tx.tasks.listOpenChildren(parent)) {
        if ((await endOne(deps, tx, child, 'revoked', now, reason)) !== undefined) ended.push(child.id)
        next.push(child.id)
      }
    }
    level = next
  }
  return ended
}

/**
 * Revokes every open task (active or pending, expired or not) of the workload `workloadId`, each
 * through {@link endTask} by `caller` — durable, with its sub-tasks, tokens, feed event and audit
 * row — in batches of 500 until none is left. Returns the workload's tasks revoked, newest first.
 */
export async function revokeTasksOfWorkload(deps: TaskDeps, workloadId: string, caller: Caller): Promise<string[]> {
  const revoked: string[] = []
  for (;;) {
    const open = await deps.stores.tasks.list({ statuses: ['active', 'pending_approval'], workloadId, limit: 500 })
    if (open.length === 0) break
    for (const t of open) {
      try {
        await endTask(deps, t.id, 'revoked', caller)
        revoked.push(t.id)
      } catch (e) {
        // Ended since the listing (by another process): what was wanted, and it is no longer listed.
        if (!(e instanceof OAuthError && e.code === 'task_not_active')) throw e
      }
    }
  }
  return revoked
}
