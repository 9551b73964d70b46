import type { Clock } from '../clock.js'
import type { Config, ResourceConfig } from '../config.js'
import { OAuthError } from '../errors.js'
import type { Attestation } from '../exchange/attestation/kinds.js'
import { auditedDecision, type Policy } from '../policy/decide.js'
import type { AuditRow, Stores, TaskRow, TokenRow } from '../store/stores.js'
import { taskPrincipal, taskState } from '../tasks/lifecycle.js'
import { checkDelegationChain } from '../tasks/subtasks.js'
import { decideToolCall } from '../tasks/tool-call.js'
import { TOOL_NAME, toolsOf } from '../tokens/authorization-details.js'
import type { OwnTokenVerifier } from '../tokens/own-token.js'
import type { EvaluationRequest, EvaluationsRequest } from './request.js'

/**
 * taskpass as an OpenID AuthZEN Authorization API 1.0 Policy Decision Point for MCP tool calls
 * (docs/authzen.md). An MCP server — the PEP, authenticated with its resource credential — asks
 * before each `tools/call` whether the task token it received may call that tool now. The answer
 * is the task's state and declared intent, then the Cedar policy's `call_tool` decision
 * (`deps.policy.decide(owner, 'tool.call', …)`); every answer is audited.
 *
 * Owns: the mapping from AuthZEN to the policy (subject `task_token`, action `tools/call`,
 * resource `tool`), the batch semantics ("Evaluations semantics") and the audit rows. Imports the policy, the
 * task lifecycle's read helpers, the token verifier and the stores; never hono.
 */

/** What the PDP needs: a narrow slice of the broker's dependencies. */
export interface AuthzenDeps {
  config: Pick<Config, 'workloads' | 'tasks' | 'resources'>
  clock: Clock
  stores: Stores
  ownTokens: OwnTokenVerifier
  policy: Policy
}

/** The subject type of a task token (the access token the MCP server received, as `id`). */
export const TASK_TOKEN_SUBJECT = 'task_token'
/** The resource type of an MCP tool (`id` is the tool name), as in the COAZ-MCP binding. */
export const TOOL_RESOURCE = 'tool'
/** `tools/call` is the COAZ-MCP binding's action name; `call_tool` is the Cedar action's. */
export const TOOL_CALL_ACTIONS: ReadonlySet<string> = new Set(['tools/call', 'call_tool'])

/**
 * Why a decision came out as it did: the PEP's `context.reason`. Policy ids are not sent
 * (they are for admins, on the audit row).
 */
export type DecisionReason =
  | 'permitted'
  | 'unsupported_subject_type'
  | 'token_invalid'
  | 'token_expired'
  | 'token_revoked'
  | 'not_this_resource'
  | 'unsupported_action'
  | 'unsupported_resource_type'
  | 'invalid_tool_name'
  | 'task_not_active'
  | 'tool_not_in_task'
  | 'policy_denied'

/** The Access Evaluation response (a Decision), with our reason in `context`; a per-item error of a batch also carries `context.error`. */
export interface AuthzenDecision {
  decision: boolean
  context: { reason: DecisionReason; error?: { status: number; message: string } }
}

/** One evaluated item: the answer, the audit row to write, and whether it asked about another resource's token. */
interface Evaluated {
  answer: AuthzenDecision
  audit: AuditRow
  foreign: boolean
}

/** A single Access Evaluation about another resource's token: 403 (docs/authzen.md "Who may ask"). */
export const notThisResource = () => new OAuthError('unauthorized_client', 403, 'this resource may ask only about tokens issued for it')

function deny(reason: Exclude<DecisionReason, 'permitted'>): AuthzenDecision {
  return { decision: false, context: { reason } }
}

/** Decides one request. Pure apart from reading the stores and verifying the token (cached). */
async function decide(deps: AuthzenDeps, caller: ResourceConfig, req: EvaluationRequest): Promise<Evaluated> {
  const now = deps.clock.now()
  const base: AuditRow = { at: now, action: 'tool.call', decision: 'deny', reason: '', resource: caller.uri }
  const refuse = (reason: Exclude<DecisionReason, 'permitted'>, detail: string, extra: Partial<AuditRow> = {}): Evaluated => ({
    answer: deny(reason),
    audit: { ...base, ...extra, reason: detail, error: reason },
    foreign: false,
  })

  if (req.subject.type !== TASK_TOKEN_SUBJECT) return refuse('unsupported_subject_type', `subject type ${req.subject.type} is not ${TASK_TOKEN_SUBJECT}`)
  // The token must verify as ours: signature with a key we publish, `iss`, `typ` at+jwt.
  const claims = await deps.ownTokens.verify(req.subject.id)
  if (!claims) return refuse('token_invalid', 'subject is not a task token issued here')
  const who: Partial<AuditRow> = { jti: claims.jti, taskId: typeof claims.task_id === 'string' ? claims.task_id : null, userSub: typeof claims.sub === 'string' ? claims.sub : null, workloadId: typeof claims.client_id === 'string' ? claims.client_id : null }
  // A PEP is bound to its own audience: it may not learn about another resource's tokens.
  if (claims.aud !== caller.uri) {
    return { answer: { decision: false, context: { reason: 'not_this_resource', error: { status: 403, message: 'this resource may ask only about tokens issued for it' } } }, audit: { ...base, ...who, reason: `token is for ${String(claims.aud)}, not ${caller.uri}`, error: 'unauthorized_client' }, foreign: true }
  }
  if (claims.exp <= now) return refuse('token_expired', `token expired at ${claims.exp}`, who)
  const row: TokenRow | undefined = await deps.stores.tokens.get(claims.jti)
  if (!row || row.status !== 'active') return refuse('token_revoked', row ? `token revoked at ${row.revokedAt ?? '?'}` : 'token is not on record', who)
  const task: TaskRow | undefined = await deps.stores.tasks.get(row.taskId)
  if (!task) return refuse('task_not_active', `task ${row.taskId} is not on record`, who)
  const state = taskState(task, now)
  // A completed, revoked, expired or unapproved task is always a deny, whatever the policy says.
  if (state !== 'active') return refuse('task_not_active', `task is ${state}`, who)

  if (!TOOL_CALL_ACTIONS.has(req.action.name)) return refuse('unsupported_action', `action ${req.action.name} is not tools/call`, who)
  if (req.resource.type !== TOOL_RESOURCE) return refuse('unsupported_resource_type', `resource type ${req.resource.type} is not ${TOOL_RESOURCE}`, who)
  const tool = req.resource.id
  if (!TOOL_NAME.test(tool)) return refuse('invalid_tool_name', 'resource id is not an MCP tool name', who)
  const workload = deps.config.workloads.find((w) => w.id === row.workloadId)
  if (!workload) return refuse('policy_denied', `workload ${row.workloadId} is not configured`, who)
  let attestation: Attestation | undefined
  try {
    attestation = row.attestation ? (JSON.parse(row.attestation) as Attestation) : undefined
  } catch {
    // Fail closed: a token whose recorded attestation cannot be read is decided on nothing less.
    return refuse('policy_denied', 'the token\'s recorded attestation is unreadable', who)
  }
  // A sub-task's token is only as good as the chain above it, now: every task above active, every
  // delegating workload still holding the scopes and tools and still permitted the delegation.
  const scopes = row.scope.split(' ').filter(Boolean)
  if (task.parentTaskId !== null) {
    try {
      await checkDelegationChain(deps, task, caller.uri, scopes, [tool], {})
    } catch (e) {
      if (!(e instanceof OAuthError)) throw e
      return refuse(e.code === 'invalid_grant' ? 'task_not_active' : 'policy_denied', e.detail, { ...who, ...e.decidedBy })
    }
  }
  // The task's declared intent first (when it named its tools here, only those), then the policy.
  const decision = decideToolCall(deps.policy, {
    principal: taskPrincipal(task),
    workload,
    attestation,
    task,
    resource: caller,
    tool,
    scopes,
    dpopBound: row.cnfJkt !== null,
    now,
    tokenTools: toolsOf(claims.authorization_details),
  })
  if (!decision.allow && decision.outsideIntent) return refuse('tool_not_in_task', decision.reason, who)
  const audited = { ...base, ...who, ...auditedDecision(decision) }
  if (!decision.allow) return { answer: deny('policy_denied'), audit: { ...audited, reason: `${tool}: ${decision.reason}`, error: decision.code }, foreign: false }
  return { answer: { decision: true, context: { reason: 'permitted' } }, audit: { ...audited, decision: 'allow', reason: `${tool}: ${decision.reason}` }, foreign: false }
}

/**
 * AuthZEN "Access Evaluation API" for one tool call, audited. A question about a token issued for another
 * resource is refused with 403 (and audited as such), not answered.
 * @throws OAuthError `unauthorized_client` (403)
 */
export async function evaluateToolCall(deps: AuthzenDeps, caller: ResourceConfig, req: EvaluationRequest): Promise<AuthzenDecision> {
  const { answer, audit, foreign } = await decide(deps, caller, req)
  await deps.stores.audit.insert(audit)
  if (foreign) throw notThisResource()
  return answer
}

/**
 * AuthZEN "Access Evaluations API": the items in order, one at a time (the policy is synchronous, so
 * running them "in parallel" would gain nothing). `deny_on_first_deny` stops after the first
 * `false` (a per-item error counts as one), `permit_on_first_permit` after the first `true`; the
 * response is then truncated after that item ("Evaluations semantics"). Every item evaluated is audited, in one
 * transaction. Without items the request is one Access Evaluation and gets that response shape.
 */
export async function evaluateToolCalls(deps: AuthzenDeps, caller: ResourceConfig, req: EvaluationsRequest): Promise<AuthzenDecision | { evaluations: AuthzenDecision[] }> {
  if (!req.items) return evaluateToolCall(deps, caller, req.single!)
  const answers: AuthzenDecision[] = []
  const rows: AuditRow[] = []
  for (const item of req.items) {
    const { answer, audit } = await decide(deps, caller, item)
    answers.push(answer)
    rows.push(audit)
    if (req.semantic === 'deny_on_first_deny' && !answer.decision) break
    if (req.semantic === 'permit_on_first_permit' && answer.decision) break
  }
  await deps.stores.transaction(async (tx) => {
    for (const row of rows) await tx.audit.insert(row)
  })
  return { evaluations: answers }
}

/**
 * AuthZEN "Policy Decision Point Metadata". `policy_decision_point` is the broker's issuer exactly (a PEP discards a
 * document whose identifier differs from the one it asked for, the mix-up defence); no search
 * endpoints, no capabilities.
 */
export function authzenConfiguration(issuer: string) {
  return {
    policy_decision_point: issuer,
    access_evaluation_endpoint: `${issuer}/access/v1/evaluation`,
    access_evaluations_endpoint: `${issuer}/access/v1/evaluations`,
  }
}

/**
 * AuthZEN metadata discovery: the metadata lives at the identifier with `/.well-known/authzen-configuration`
 * inserted between the host and the path (`https://h/t` → `https://h/.well-known/authzen-configuration/t`).
 */
export function authzenConfigurationPath(issuer: string): string {
  const path = new URL(issuer).pathname.replace(/\/$/, '')
  return `/.well-known/authzen-configuration${path}`
}
