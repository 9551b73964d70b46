import type { ResourceConfig, WorkloadConfig } from '../config.js'
import type { Attestation } from '../exchange/attestation/kinds.js'

/**
 * The one place access decisions are made: `decide(principal, action, resource, context)`.
 * The broker's implementation is Cedar ({@link createCedarPolicy} in `cedar.ts`, docs/policy.md):
 * the configuration's grants are a generated default policy set, a deployment may add its own.
 * Pure: no I/O, no clock reads (time is in `context`).
 */
export type PolicyAction = 'task.open' | 'token.exchange' | 'tool.call' | 'task.delegate'

/** The user a workload acts for. */
export interface Principal {
  user: string
  issuer: string
  sid: string | undefined
  /** Session claims the subject issuer maps into policy (`policyClaims`): the User entity's tags. */
  claims?: Record<string, string> | undefined
}

/** One resource of a task's declared intent. `tools`: the MCP tools it will call there (absent: any the policy allows). */
export interface TaskResource {
  resource: string
  scopes: string[]
  tools?: string[]
}

/** A task as policy sees it: its declared intent and its state at the moment of the decision. */
export interface TaskFacts {
  id: string
  purpose: string
  resources: TaskResource[]
  createdAt: number
  expiresAt: number
  tokensMinted: number
  /** Whether the task went through (and passed) a human approval. */
  approved: boolean
  /** Delegations from the task the user opened: 0 for it, 1 for a sub-task of it, … */
  depth?: number | undefined
  /** A sub-task's parent task. */
  parentId?: string | undefined
}

export interface PolicyContext {
  workload: WorkloadConfig
  /** At `task.open`/`token.exchange`: the scopes asked for; at `tool.call`: the token's scopes. */
  scopes: string[]
  dpopBound: boolean
  now: number
  /** The lifetime the caller asked for, seconds; absent when it asked none. */
  ttl?: number | undefined
  /** The attestation the workload proved itself with, when known. */
  attestation?: Attestation | undefined
  /** The task: at `task.open`, the one being opened (age 0, nothing minted). */
  task: TaskFacts
  /** When the user's session started (`auth_time`, else the session token's `iat`), when a session token is part of the request. */
  sessionStartedAt?: number | undefined
  /** The network address of the caller (the TCP peer), when the request came over the network. */
  callerAddress?: string | undefined
  /** At `tool.call`: the tool's name. */
  tool?: string | undefined
  /** At `task.delegate`: the workload the sub-task is for (`workload` is the delegating one, `task` the parent). */
  delegate?: WorkloadConfig | undefined
}

export interface Constraints {
  /** Longest token lifetime this decision allows, seconds. */
  maxTtl: number | undefined
  /** Tokens (and tasks) under this decision must be DPoP-bound: the resource or the workload says so. */
  dpopRequired: boolean
  approvalRequired: boolean
}

export type DenyCode = 'invalid_target' | 'invalid_scope' | 'unauthorized_client'

/** Every decision names the policy set version that made it and the policies that determined it (empty for a default deny). */
interface Decided {
  reason: string
  version: string
  policies: string[]
}

export type Decision = (Decided & { allow: true; constraints: Constraints }) | (Decided & { allow: false; code: DenyCode })

export interface Policy {
  /** The version id of the policy set in force (what audit rows record). */
  readonly version: string
  /**
   * Whether a decision about `resource` may depend on how many tokens the task has minted
   * (`context.task.tokens_minted`): then an exchange is decided again on the count its write finds.
   * Absent: never.
   */
  readsTaskCount?(resource: string): boolean
  decide(principal: Principal, action: PolicyAction, resource: ResourceConfig, context: PolicyContext): Decision
}

/** Scopes a workload may ever hold on a resource: its grant ∩ the resource's known scopes. */
export function allowedScopes(workload: WorkloadConfig, resource: ResourceConfig): string[] {
  const grant = workload.grants.find((g) => g.resource === resource.uri)
  return grant ? grant.scopes.filter((s) => resource.scopes.includes(s)) : []
}

/** Why a delegation was refused when no policy permits it (the same words from either evaluator). */
export function delegationRefused(workload: string, delegate: string | undefined, resource: string): string {
  return `no policy permits ${workload} to delegate ${resource} to ${delegate ?? '(no workload)'}`
}

/** The audit fields of a decision: the set version and the deciding policies. */
export function auditedDecision(d: Pick<Decided, 'version' | 'policies'>): { policyVersion: string; policies: string | null } {
  return { policyVersion: d.version, policies: d.policies.length > 0 ? d.policies.join(' ') : null }
}
