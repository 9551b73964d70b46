import type { ResourceConfig, WorkloadConfig } from '../config.js'

/**
 * The one place access decisions are made: `decide(principal, action, resource, context)`.
 * Today it evaluates the grants of the configuration; Cedar policies (DESIGN.md "Policy")
 * plug in behind this same signature. Pure: no I/O, no clock reads (time is in `context`).
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

/** The shipped default: a workload may use the resources and scopes its configuration grants, nothing more. */
export function createConfigPolicy(): Policy {
  return {
    decide(_principal, action, resource, { workload, scopes }) {
      if (!workload.enabled) return { allow: false, code: 'unauthorized_client', reason: `workload ${workload.id} is disabled` }
      const grant = workload.grants.find((g) => g.resource === resource.uri)
      if (!grant) return { allow: false, code: 'invalid_target', reason: `workload ${workload.id} has no grant for ${resource.uri}` }
      const beyond = scopes.filter((s) => !grant.scopes.includes(s) || !resource.scopes.includes(s))
      if (beyond.length > 0) return { allow: false, code: 'invalid_scope', reason: `scope beyond the workload's grant: ${beyond.join(' ')}` }
      const ttls = [resource.maxTtl, workload.maxTtl].filter((t): t is number => t !== undefined)
      return {
        allow: true,
        reason: `grant ${workload.id} → ${resource.uri}`,
        constraints: {
          maxTtl: ttls.length ? Math.min(...ttls) : undefined,
          // RFC 9449 §5.2 (`dpop_bound_access_tokens`) per workload, and the same per resource.
          dpopRequired: resource.requireDpop || workload.requireDpop,
          approvalRequired: action === 'task.open' && resource.requireApproval,
        },
      }
    },
  }
}

/** Scopes a workload may ever hold on a resource: its grant ∩ the resource's known scopes. */
export function allowedScopes(workload: WorkloadConfig, resource: ResourceConfig): string[] {
  const grant = workload.grants.find((g) => g.resource === resource.uri)
  return grant ? grant.scopes.filter((s) => resource.scopes.includes(s)) : []
}
