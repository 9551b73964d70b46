import type { ResourceConfig, WorkloadConfig } from '../config.js'

/**
 * The one place access decisions are made: `decide(principal, action, resource, context)`.
 * The broker's implementation is Cedar ({@link createCedarPolicy} in `cedar.ts`, docs/policy.md):
 * the configuration's grants are a generated default policy set, a deployment may add its own.
 * Pure: no I/O, no clock reads (time is in `context`).
 */
export type PolicyAction = 'task.open' | 'token.exchange'

export interface Principal {
  user: string
  issuer: string
  sid: string | undefined
}

export interface PolicyContext {
  workload: WorkloadConfig
  scopes: string[]
  dpopBound: boolean
  now: number
  /** The lifetime the caller asked for, seconds; absent when it asked none. */
  ttl?: number | undefined
  /** The attestation the workload proved itself with, when known. */
  attestation?: { issuer: string; subject: string } | undefined
}

export interface Constraints {
  /** Longest token lifetime this decision allows, seconds. */
  maxTtl: number | undefined
  /** Tokens (and tasks) under this decision must be DPoP-bound: the resource or the workload says so. */
  dpopRequired: boolean
  approvalRequired: boolean
}

export type Decision =
  | { allow: true; reason: string; constraints: Constraints }
  | { allow: false; reason: string; code: 'invalid_target' | 'invalid_scope' | 'unauthorized_client' }

export interface Policy {
  decide(principal: Principal, action: PolicyAction, resource: ResourceConfig, context: PolicyContext): Decision
}

/** Scopes a workload may ever hold on a resource: its grant ∩ the resource's known scopes. */
export function allowedScopes(workload: WorkloadConfig, resource: ResourceConfig): string[] {
  const grant = workload.grants.find((g) => g.resource === resource.uri)
  return grant ? grant.scopes.filter((s) => resource.scopes.includes(s)) : []
}
