import type { Config, WorkloadConfig } from '../config.js'
import { invalidDpopProof, invalidRequest, invalidScope, invalidTarget, OAuthError, taskNotActive, unauthorizedClient } from '../errors.js'
import type { Actor } from '../exchange/actor-token.js'
import type { Subject } from '../exchange/subject-token.js'
import { allowedScopes, type Decision } from '../policy/decide.js'
import type { TaskRow, TxStores } from '../store/stores.js'
import { invalidAuthorizationDetails } from '../tokens/authorization-details.js'
import {
  findResource,
  getTaskFor,
  ownerSub,
  planTask,
  policyRefusal,
  recordOpenedTask,
  taskFacts,
  taskPrincipal,
  taskResources,
  taskState,
  viewTask,
  type RequestFacts,
  type OpeningDeps,
  type TaskDeps,
  type TaskResource,
  type TaskView,
} from './lifecycle.js'

/**
 * Sub-tasks: the workload of an active task hands part of it to another registered workload
 * (docs/subtasks.md). The child's resources, scopes, tools, lifetime and token bound are subsets
 * of what the parent holds *now*; the policy decides the delegation itself (`delegate`, asked for
 * the parent's workload) and the child's opening (`open_task`, for the child's workload). No
 * credential changes hands: the child proves itself with its own attestation when it exchanges,
 * naming the sub-task as its subject (`urn:taskpass:params:oauth:token-type:task`).
 */

/** RFC 8693 §3 token type of a sub-task named as the subject of a token exchange: the subject_token is the sub-task's id. */
export const TASK_SUBJECT_TYPE = 'urn:taskpass:params:oauth:token-type:task'

/** Open sub-tasks one task may have at once, and all the tasks below one a user opened: delegation must not become unbounded row growth. */
export const MAX_OPEN_SUBTASKS = 100
export const MAX_OPEN_SUBTASKS_PER_TREE = 1000

export type SubtaskDeps = OpeningDeps & { config: TaskDeps['config'] & Pick<Config, 'workloads'> }
/** What checking a sub-task's chain reads: no writes. */
export type ChainDeps = Pick<TaskDeps, 'stores' | 'clock' | 'policy'> & { config: Pick<Config, 'tasks' | 'resources' | 'workloads'> }

export interface SubtaskRequest {
  /** The workload the sub-task is for. */
  workload: string
  purpose: string
  resources: TaskResource[]
  ttl?: number | undefined
  max_tokens?: number | undefined
}

/** The task a user opened at the top of a sub-task's chain (the task itself when it is one). */
export async function rootOf(deps: Pick<TaskDeps, 'stores'>, row: TaskRow): Promise<TaskRow | undefined> {
  return row.rootTaskId === null ? row : await deps.stores.tasks.get(row.rootTaskId)
}

/**
 * The user of a sub-task, as a subject: a sub-task has no session token of its own, only the
 * session its root task recorded — when it started (policy's `session_age`) and until when the
 * freshest session token the root's workload presented is valid (the sub-task's tokens never
 * outlive it).
 */
export async function taskSubject(deps: Pick<TaskDeps, 'config' | 'stores'>, row: TaskRow): Promise<Subject> {
  const root = await rootOf(deps, row)
  return {
    issuer: row.subjectIssuer,
    user: row.userSub,
    sub: ownerSub(deps, row),
    sid: row.sid ?? undefined,
    // A root gone (pruned) or recorded before sessions were: no session time to lend.
    exp: root?.sessionExpiresAt ?? row.createdAt,
    claims: row.userClaims ? (JSON.parse(row.userClaims) as Record<string, string>) : {},
    startedAt: root?.sessionStartedAt ?? root?.createdAt ?? row.createdAt,
    mayAct: undefined,
  }
}

/**
 * What a sub-task may declare on one resource: the parent's declared scopes there that its
 * workload still holds (a narrowed grant narrows every sub-task from then on), and its tools.
 */
function parentCeiling(deps: Pick<ChainDeps, 'config'>, parent: TaskRow, uri: string): { scopes: string[]; tools: string[] | undefined } | undefined {
  const declared = taskResources(parent).find((r) => r.resource === uri)
  const resource = findResource(deps.config, uri)
  const workload = deps.config.workloads.find((w) => w.id === parent.workloadId)
  if (!declared || !resource || !workload?.enabled) return undefined
  const held = allowedScopes(workload, resource)
  return { scopes: declared.scopes.filter((s) => held.includes(s)), tools: declared.tools }
}

/** The delegation decision for one resource of a sub-task: may `from` (acting on `parent`) hand it to `to`? */
function decideDelegation(deps: Pick<ChainDeps, 'config' | 'policy' | 'clock'>, parent: TaskRow, from: Pick<Actor, 'workload'> & Partial<Pick<Actor, 'attestation'>>, to: WorkloadConfig, uri: string, scopes: string[], request: RequestFacts): Extract<Decision, { allow: true }> {
  const resource = findResource(deps.config, uri)!
  const decision = deps.policy.decide(taskPrincipal(parent), 'task.delegate', resource, {
    workload: from.workload,
    delegate: to,
    scopes,
    dpopBound: false,
    now: deps.clock.now(),
    attestation: from.attestation,
    task: taskFacts(parent),
    callerAddress: request.callerAddress,
  })
  if (!decision.allow) throw policyRefusal(decision)
  return decision
}


/**
 * Opens a sub-task of `parentId` (POST /tasks/{id}/subtasks) for `req.workload`, called by the
 * parent's workload. Everything is checked before anything is written; the task and its audit
 * row are one durable write. A refusal by an authenticated caller is audited (`task.delegate`).
 * `dpopJkt`: the thumbprint of the proof that came with the request (a DPoP-bound parent is
 * its key holder's alone).
 */
export async function openSubtask(deps: SubtaskDeps, parentId: string, actor: Actor, req: SubtaskRequest, dpopJkt: string | undefined, request: RequestFacts = {}): Promise<TaskView> {
  // Only the parent's own workload sees it at all: anyone else is answered 404, as for GET.
  const parent = await getTaskFor(deps, parentId, { kind: 'workload', actor })
  try {
    const now = deps.clock.now()
    if (parent.dpopJkt !== null && parent.dpopJkt !== dpopJkt) throw invalidDpopProof('the task is DPoP-bound: a proof by its key is required', `task ${parent.id} is bound to ${parent.dpopJkt}, the request's proof is by ${dpopJkt ?? '(none)'}`)
    const state = taskState(parent, now)
    if (state !== 'active') throw taskNotActive(`task is ${state}`)
    const subject = await taskSubject(deps, parent)
    if (subject.exp <= now) throw invalidRequest('the user\'s session for this task has no time left', `the session token last seen for task ${parent.rootTaskId ?? parent.id} expired at ${subject.exp}`)
    const maxDepth = deps.config.tasks.maxDepth
    if (parent.depth + 1 > maxDepth) throw invalidRequest(`sub-tasks may be at most ${maxDepth} delegation(s) deep`, `task ${parent.id} is at depth ${parent.depth}`)
    const child = deps.config.workloads.find((w) => w.id === req.workload)
    if (!child) throw invalidRequest('"workload" is not a registered workload', `unknown workload ${req.workload.slice(0, 128)}`)
    if (child.id === actor.workload.id) throw invalidRequest('a sub-task is for another workload')
    if (!child.enabled) throw unauthorizedClient('the workload is disabled', `workload ${child.id} is disabled`)
    await checkOpenSubtasks(deps.stores, parent)

    // Never wider than the parent (RFC 8693 §2.1 spirit; standards.md "never widen"): resources, scopes, tools.
    const seen = new Set<string>()
    const resources: TaskResource[] = req.resources.map(({ resource: uri, scopes, tools }) => {
      if (seen.has(uri)) throw invalidRequest(`resource ${uri} is listed twice`)
      seen.add(uri)
      const ceiling = parentCeiling(deps, parent, uri)
      if (!ceiling) throw invalidTarget('resource is outside the task', `task ${parent.id} does not cover ${uri}`)
      const resource = findResource(deps.config, uri)!
      const wanted = scopes.length > 0 ? [...new Set(scopes)] : ceiling.scopes.filter((s) => allowedScopes(child, resource).includes(s))
      // Nothing left to hand on: refused here, or planTask would fall back to the delegate's whole grant.
      if (wanted.length === 0) throw invalidScope('no scope would be granted', `no scope of task ${parent.id} on ${uri} is in ${child.id}'s grant`)
      const beyond = wanted.filter((s) => !ceiling.scopes.includes(s))
      if (beyond.length > 0) throw invalidScope('requested scope exceeds the task', `beyond task ${parent.id}: ${beyond.join(' ')}`)
      const beyondTools = ceiling.tools === undefined ? [] : (tools ?? []).filter((t) => !ceiling.tools!.includes(t))
      if (beyondTools.length > 0) throw invalidAuthorizationDetails('requested tools exceed the task', `beyond task ${parent.id}: ${beyondTools.join(' ')}`)
      // No tools named: the parent's list, never "any tool".
      const granted = tools !== undefined ? [...new Set(tools)] : ceiling.tools
      return { resource: uri, scopes: wanted, ...(granted !== undefined ? { tools: granted } : {}) }
    })
    const remaining = parent.expiresAt - now
    if (req.ttl !== undefined && req.ttl > remaining) throw invalidRequest('"ttl" exceeds what the task has left', `ttl ${req.ttl}s, task ${parent.id} has ${remaining}s`)
    const tokensLeft = parent.maxTokens !== null ? parent.maxTokens - parent.tokensMinted : undefined
    if (req.max_tokens !== undefined && tokensLeft !== undefined && req.max_tokens > tokensLeft) throw invalidRequest('"max_tokens" exceeds what the task has left', `max_tokens ${req.max_tokens}, task ${parent.id} has ${tokensLeft} left`)

    const delegations = resources.map((r) => decideDelegation(deps, parent, actor, child, r.resource, r.scopes, request))
    const planned = planTask(
      deps,
      subject,
      { workload: child },
      { purpose: req.purpose, resources, ttl: Math.min(req.ttl ?? deps.config.tasks.defaultTtl, remaining), max_tokens: req.max_tokens ?? (tokensLeft !== undefined ? Math.max(tokensLeft, 0) : undefined) },
      undefined,
      request,
      parent,
    )
    const policies = new Set([...(planned.decidedBy.policies?.split(' ') ?? []), ...delegations.flatMap((d) => d.policies)])
    const opened = { ...planned, decidedBy: { policyVersion: planned.decidedBy.policyVersion, policies: policies.size > 0 ? [...policies].sort().join(' ') : null } }
    await recordOpenedTask(deps, opened, subject, `; sub-task of ${parent.id}, delegated by ${actor.workload.id} to ${child.id}`, (tx) => checkRoomBelow(tx, parent, req.max_tokens, now))
    return viewTask(planned.row, now)
  } catch (e) {
    await auditDelegationDenied(deps, e, parent.id, actor)
    throw e
  }
}

/** The bounds on open sub-tasks: below the parent ({@link MAX_OPEN_SUBTASKS}) and in its whole tree ({@link MAX_OPEN_SUBTASKS_PER_TREE}). */
async function checkOpenSubtasks(stores: Pick<TxStores, 'tasks'>, parent: TaskRow): Promise<void> {
  if ((await stores.tasks.listOpenChildren(parent.id)).length >= MAX_OPEN_SUBTASKS) throw invalidRequest(`a task may have at most ${MAX_OPEN_SUBTASKS} open sub-tasks`)
  if (await stores.tasks.countOpenInTree(parent.rootTaskId ?? parent.id) >= MAX_OPEN_SUBTASKS_PER_TREE) throw invalidRequest(`a task and its sub-tasks may have at most ${MAX_OPEN_SUBTASKS_PER_TREE} open sub-tasks in all`)
}

/**
 * Inside the sub-task's write, what the checks before it read is read again as committed, and
 * held: the tree's lock, taken by every opening below its root, makes two openings count the
 * open sub-tasks one after the other (on PostgreSQL both would count before either wrote); the
 * parent's row, held, makes an end of the parent wait for this write (and then end the sub-task
 * with it), or be read here if it came first.
 */
async function checkRoomBelow(tx: TxStores, read: TaskRow, maxTokens: number | undefined, now: number): Promise<void> {
  await tx.locks.tree(read.rootTaskId ?? read.id)
  const parent = await tx.tasks.hold(read.id)
  const state = parent ? taskState(parent, now) : 'revoked'
  if (!parent || state !== 'active') throw taskNotActive(`task is ${state}`)
  await checkOpenSubtasks(tx, parent)
  const tokensLeft = parent.maxTokens !== null ? parent.maxTokens - parent.tokensMinted : undefined
  if (maxTokens !== undefined && tokensLeft !== undefined && maxTokens > tokensLeft) throw invalidRequest('"max_tokens" exceeds what the task has left', `max_tokens ${maxTokens}, task ${parent.id} has ${tokensLeft} left`)
}

/** The audit row of a refused delegation by the authenticated `actor` (an {@link OAuthError}; anything else is not a decision), before the parent was read. */
export async function auditDelegationDenied(deps: Pick<TaskDeps, 'stores' | 'clock' | 'config'>, e: unknown, parentId: string, actor: Actor): Promise<void> {
  if (!(e instanceof OAuthError)) return
  const parent = await deps.stores.tasks.get(parentId)
  const visible = parent !== undefined && parent.workloadId === actor.workload.id
  await deps.stores.audit.insert({ at: deps.clock.now(), action: 'task.delegate', decision: 'deny', reason: e.detail, error: e.code, userSub: visible ? ownerSub(deps, parent) : null, workloadId: actor.workload.id, taskId: visible ? parent.id : null, ...e.decidedBy })
}

/** One link of a delegation chain, the task the user opened last. */
export interface ChainLink {
  task: TaskRow
  workload: string
}

/**
 * At every exchange of a sub-task: each task above it must still be active, its workload still
 * enabled and permitted to delegate to the one below (policy, now), and still hold every scope
 * and tool the token would carry. Returns the tasks above, nearest first. Throws `invalid_grant`
 * (an ancestor ended or expired), `invalid_scope` / `invalid_authorization_details` (an ancestor
 * was narrowed), or the policy's refusal.
 */
export async function checkDelegationChain(deps: Omit<ChainDeps, 'stores'> & { stores: Pick<TxStores, 'tasks'> }, task: TaskRow, uri: string, scopes: string[], tools: string[] | undefined, request: RequestFacts): Promise<TaskRow[]> {
  const chain: TaskRow[] = []
  let below = task
  const now = deps.clock.now()
  while (below.parentTaskId !== null && chain.length <= deps.config.tasks.maxDepth) {
    const above = await deps.stores.tasks.get(below.parentTaskId)
    const state = above ? taskState(above, now) : 'revoked'
    if (!above || state !== 'active') throw new OAuthError('invalid_grant', 400, 'task is not active for this caller', `parent task ${below.parentTaskId} is ${state}`)
    const ceiling = parentCeiling(deps, above, uri)
    if (!ceiling) throw new OAuthError('invalid_grant', 400, 'task is not active for this caller', `parent task ${above.id} no longer covers ${uri}`)
    // The bound is counted again, atomically, where the token is recorded.
    if (above.maxTokens !== null && above.tokensMinted >= above.maxTokens) throw new OAuthError('invalid_grant', 400, 'the task has minted all the tokens it may', `task ${above.id} above has minted ${above.tokensMinted} of ${above.maxTokens} tokens`)
    const beyond = scopes.filter((s) => !ceiling.scopes.includes(s))
    if (beyond.length > 0) throw invalidScope('requested scope exceeds the task', `beyond parent task ${above.id} now: ${beyond.join(' ')}`)
    const beyondTools = ceiling.tools === undefined ? [] : (tools ?? ['(any)']).filter((t) => !ceiling.tools!.includes(t))
    if (beyondTools.length > 0) throw invalidAuthorizationDetails('requested tools exceed the task', `beyond parent task ${above.id} now: ${beyondTools.join(' ')}`)
    const from = deps.config.workloads.find((w) => w.id === above.workloadId)
    const to = deps.config.workloads.find((w) => w.id === below.workloadId)
    if (!from || !to) throw new OAuthError('invalid_grant', 400, 'task is not active for this caller', `workload ${from ? below.workloadId : above.workloadId} is no longer registered`)
    decideDelegation(deps, above, { workload: from }, to, uri, scopes, request)
    chain.push(above)
    below = above
  }
  return chain
}

/** RFC 8693 §4.1 `act` for a token of `workload` on a task whose ancestors are `chain` (nearest first): the current actor outermost. */
export function delegationAct(workload: string, chain: readonly TaskRow[]): Record<string, unknown> {
  let act: Record<string, unknown> | undefined
  for (const t of [...chain].reverse()) act = act ? { sub: t.workloadId, act } : { sub: t.workloadId }
  return act ? { sub: workload, act } : { sub: workload }
}
