import type { Clock } from '../clock.js'
import type { Config } from '../config.js'
import { invalidRequest, OAuthError } from '../errors.js'
import { registeredIssuer, type Attestation, type AttestationKind } from '../exchange/attestation/kinds.js'
import type { Actor } from '../exchange/actor-token.js'
import { brokerSubject, type Subject } from '../exchange/subject-token.js'
import { decideExchange } from '../exchange/token-exchange.js'
import type { Constraints, Decision, Policy, TaskResource } from '../policy/decide.js'
import { attestationKinds } from '../policy/engine.js'
import type { Stores, TaskRow } from '../store/stores.js'
import { findResource, planTask, taskResources, taskState } from './lifecycle.js'
import { decideToolCall } from './tool-call.js'

/**
 * The dry run (`POST /admin/policy/evaluate`, `npm run cli -- policy evaluate`): what would the
 * broker answer to this open_task, exchange or call_tool — permit or forbid, the error, the
 * constraints, the lifetime, the deciding policies — asked through the same functions the real
 * requests use (`planTask`, `decideExchange`, `decideToolCall`), against the set in force or a
 * candidate set, writing nothing. Unless `session_exp` / `attestation_exp` say otherwise, the
 * session and the attestation are assumed to outlive whatever would be minted.
 */
export interface DryRunRequest {
  action: 'open_task' | 'exchange' | 'call_tool'
  user: { issuer: string; subject: string; session?: string | undefined; claims?: Record<string, string> | undefined }
  workload: string
  attestation?: Partial<Omit<Attestation, 'subject'>> & { subject: string }
  resource?: string | undefined
  scopes?: string[] | undefined
  tool?: string | undefined
  ttl?: number | undefined
  dpop_bound: boolean
  /** A task's intent (as `POST /tasks` takes it) and its state; or `task_id`, an existing task. */
  task?: { purpose: string; resources: TaskResource[]; ttl?: number | undefined; age?: number | undefined; tokens_minted?: number | undefined; max_tokens?: number | undefined; approved?: boolean | undefined } | undefined
  task_id?: string | undefined
  session_age?: number | undefined
  /** When the session token and the attestation expire, epoch seconds (default: far away; a token never outlives either). */
  session_exp?: number | undefined
  attestation_exp?: number | undefined
  caller_address?: string | undefined
  /** The moment to decide at, epoch seconds; default now. */
  at?: number | undefined
}

export interface DryRunAnswer {
  decision: 'permit' | 'forbid'
  /** The error a client would get (a forbid); at an open_task, `pending_approval` is still a permit. */
  error?: string
  reason: string
  policies: string[]
  policy_version: string
  constraints?: { max_ttl?: number; dpop_required: boolean; approval_required: boolean }
  /** open_task: the task's lifetime and the status it would open in; exchange: the token's lifetime and scopes. */
  ttl?: number
  task_status?: string
  scope?: string
}

export interface DryRunDeps {
  config: Pick<Config, 'issuer' | 'tokens' | 'tasks' | 'resources' | 'subjectIssuers' | 'workloads' | 'workloadIssuers' | 'authorization'>
  stores: Stores
  clock: Clock
}

const FAR = 10 * 365 * 86_400

function constraintsView(c: Constraints): NonNullable<DryRunAnswer['constraints']> {
  return { ...(c.maxTtl !== undefined ? { max_ttl: c.maxTtl } : {}), dpop_required: c.dpopRequired, approval_required: c.approvalRequired }
}

function answerOf(d: Decision, extra: Partial<DryRunAnswer> = {}): DryRunAnswer {
  return d.allow
    ? { decision: 'permit', reason: d.reason, policies: d.policies, policy_version: d.version, constraints: constraintsView(d.constraints), ...extra }
    : { decision: 'forbid', error: d.code, reason: d.reason, policies: d.policies, policy_version: d.version }
}

/** A refusal the real request would give, as a forbid (with the deciding policies when policy decided it). */
function refusalOf(e: OAuthError, version: string): DryRunAnswer {
  return { decision: 'forbid', error: e.code, reason: e.detail, policies: e.decidedBy?.policies ? e.decidedBy.policies.split(' ') : [], policy_version: e.decidedBy?.policyVersion ?? version }
}

/** Answers a dry run with `policy` (the set in force or a candidate). Bad requests are 400 `invalid_request`. */
export async function dryRun(deps: DryRunDeps, policy: Policy, req: DryRunRequest): Promise<DryRunAnswer> {
  const now = req.at ?? deps.clock.now()
  const workload = deps.config.workloads.find((w) => w.id === req.workload)
  if (!workload) throw badRequest(`"workload": no workload ${req.workload.slice(0, 200)} is registered`)
  const issuer = deps.config.subjectIssuers.find((i) => i.issuer === req.user.issuer)
  if (!issuer) throw badRequest(`"user.issuer": ${req.user.issuer.slice(0, 200)} is not a subject issuer`)
  const subject: Subject = {
    issuer: issuer.issuer,
    user: req.user.subject,
    sub: brokerSubject(deps.config.subjectIssuers, issuer.issuer, req.user.subject),
    sid: req.user.session,
    claims: req.user.claims ?? {},
    exp: req.session_exp ?? now + FAR,
    startedAt: now - (req.session_age ?? 0),
    mayAct: undefined,
  }
  const kind: AttestationKind = req.attestation?.kind ?? attestationKinds(deps.config)(registeredIssuer(workload))
  const actor: Actor = {
    workload,
    attestation: { kind, issuer: req.attestation?.issuer ?? registeredIssuer(workload), ...req.attestation, subject: req.attestation?.subject ?? workload.attestation?.subject ?? '' } as Attestation,
    exp: req.attestation_exp ?? now + FAR,
    act: undefined,
  }
  const dpopJkt = req.dpop_bound ? 'dry-run' : undefined
  const planDeps = { config: deps.config, stores: deps.stores, clock: { now: () => now, nowMs: () => now * 1000 }, policy }
  const intent = (resource: string): TaskResource[] => [{ resource, scopes: req.scopes ?? [], ...(req.tool !== undefined ? { tools: [req.tool] } : {}) }]

  try {
    // As the real open_task and exchange do: a session with no lifetime left opens and mints
    // nothing (RFC 8693 §2.2.2 invalid_request). A tool call presents no session token.
    if (req.action !== 'call_tool' && subject.exp <= now) throw invalidRequest('subject_token is expired', `subject_token expired ${now - subject.exp}s before the moment asked`)
    if (req.action === 'open_task') {
      const resources = req.task?.resources ?? (req.resource !== undefined ? intent(req.resource) : undefined)
      if (!resources) throw badRequest('an open_task dry run needs "task" or "resource"')
      const { row, decidedBy, reason } = planTask(planDeps, subject, actor, { purpose: req.task?.purpose ?? 'dry run', resources, ttl: req.task?.ttl ?? req.ttl, max_tokens: req.task?.max_tokens }, dpopJkt, { callerAddress: req.caller_address })
      return {
        decision: 'permit',
        reason,
        policies: decidedBy.policies ? decidedBy.policies.split(' ') : [],
        policy_version: decidedBy.policyVersion,
        ttl: row.expiresAt - now,
        task_status: row.status,
      }
    }

    if (req.resource === undefined) throw badRequest(`an ${req.action} dry run needs "resource"`)
    const resource = findResource(deps.config, req.resource)
    if (!resource) throw new OAuthError('invalid_target', 400, 'resource is not registered', `unknown resource ${req.resource}`)
    const task = await taskFor(deps, planDeps, req, subject, actor, now, dpopJkt)
    if (req.action === 'exchange') {
      const { decision, scopes, ttl } = decideExchange({ config: deps.config, policy }, { subject, actor, task, resource, scopes: req.scopes, ttl: req.ttl, dpopJkt, callerAddress: req.caller_address, now })
      return answerOf(decision, { ttl, scope: scopes.join(' ') })
    }
    if (req.tool === undefined) throw badRequest('a call_tool dry run needs "tool"')
    const declared = taskResources(task)
    const scopes = req.scopes ?? declared.find((r) => r.resource === resource.uri)?.scopes ?? []
    return answerOf(decideToolCall(policy, { principal: { user: subject.user, issuer: subject.issuer, sid: subject.sid, claims: subject.claims }, workload, attestation: actor.attestation, task, resource, tool: req.tool, scopes, dpopBound: req.dpop_bound, now }))
  } catch (e) {
    // A bad dry-run request is the admin's 400; any other refusal is the answer.
    if (e instanceof OAuthError && !requestProblems.has(e)) return refusalOf(e, policy.version)
    throw e
  }
}

/** Problems of the dry-run request itself (not refusals the real request would get). */
const requestProblems = new WeakSet<OAuthError>()
function badRequest(description: string): OAuthError {
  const e = invalidRequest(description)
  requestProblems.add(e)
  return e
}

/** The task the exchange or tool call runs under: an existing one (read, never changed), the intent given, or the implicit task of an exchange. */
async function taskFor(deps: DryRunDeps, planDeps: Parameters<typeof planTask>[0], req: DryRunRequest, subject: Subject, actor: Actor, now: number, dpopJkt: string | undefined): Promise<TaskRow> {
  if (req.task_id !== undefined) {
    const row = await deps.stores.tasks.get(req.task_id)
    if (!row) throw badRequest(`"task_id": no task ${req.task_id.slice(0, 64)}`)
    const state = taskState(row, now)
    if (state !== 'active') throw new OAuthError('invalid_grant', 400, 'task is not active', `task ${row.id} is ${state}`)
    return row
  }
  const intent = req.task ?? { purpose: req.action === 'exchange' ? 'implicit (token exchange)' : 'dry run', resources: [{ resource: req.resource!, scopes: req.scopes ?? [] }] }
  // A given task's state: its age, what it has minted, whether it was approved. It opened `age`
  // seconds ago: its opening is decided at that moment (a rule on opening hours judges when it
  // opened, not when it mints), and its lifetime counts from then.
  const age = req.task?.age ?? 0
  const opened = now - age
  const openDeps = { ...planDeps, clock: { now: () => opened, nowMs: () => opened * 1000 } }
  const { row } = planTask(openDeps, subject, actor, { purpose: intent.purpose, resources: intent.resources, ttl: req.task?.ttl, max_tokens: req.task?.max_tokens }, dpopJkt, { callerAddress: req.caller_address })
  const approved = req.task?.approved ?? false
  if (row.status === 'pending_approval' && !approved) throw new OAuthError('invalid_grant', 400, 'task awaits approval', `task would be pending_approval`)
  return { ...row, tokensMinted: req.task?.tokens_minted ?? 0, status: 'active', approvalExpiresAt: approved ? now : null }
}
