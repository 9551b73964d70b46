import type { Config, ResourceConfig, WorkloadConfig } from '../config.js'

/**
 * The default policy set: one Cedar `permit` per workload grant, carrying the constraints the
 * configuration implies as annotations (docs/policy.md "The generated defaults").
 */

/** A policy of the loaded set: our id (what audit rows name), its Cedar text, and what the broker reads from it. */
export interface LoadedPolicy {
  id: string
  text: string
  effect: 'permit' | 'forbid'
  /** The resource URI its scope names (`resource ==` or `resource in`); undefined: every resource. */
  resource: string | undefined
  annotations: Record<string, string>
}

/** A Cedar string literal (Cedar escapes: `\\`, `\"`, `\u{…}` for control characters). */
export function cedarString(s: string): string {
  // eslint-disable-next-line no-control-regex
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u{${c.charCodeAt(0).toString(16)}}`)}"`
}

/** The prefix of every generated policy's id; no other policy may use it. */
export const GRANT_ID_PREFIX = 'grant/'

/** The id of the generated policy for one grant. */
export function grantPolicyId(workloadId: string, resourceUri: string): string {
  return `${GRANT_ID_PREFIX}${workloadId}/${resourceUri}`
}

/**
 * The policy for one grant: the workload may open tasks for, exchange tokens to and call the tools
 * of the resource with any subset of the grant's scopes the resource knows. Its annotations carry the
 * configuration's constraints: the shorter of the resource's and the workload's `maxTtl`, DPoP
 * when either requires it, approval when the resource requires it.
 */
export function grantPolicy(workload: WorkloadConfig, resource: ResourceConfig, scopes: string[]): LoadedPolicy {
  const annotations: Record<string, string> = {}
  const ttls = [resource.maxTtl, workload.maxTtl].filter((t): t is number => t !== undefined)
  if (ttls.length > 0) annotations.max_ttl = String(Math.min(...ttls))
  if (resource.requireDpop || workload.requireDpop) annotations.dpop_required = 'true'
  if (resource.requireApproval) annotations.approval_required = 'true'
  const allowed = resource.scopes.filter((s) => scopes.includes(s))
  const text = [
    ...Object.entries(annotations).map(([k, v]) => `@${k}(${cedarString(v)})`),
    `permit (`,
    `  principal == Taskpass::Workload::${cedarString(workload.id)},`,
    `  action in [Taskpass::Action::"open_task", Taskpass::Action::"exchange", Taskpass::Action::"call_tool"],`,
    `  resource in Taskpass::Resource::${cedarString(resource.uri)}`,
    `) when { [${allowed.map(cedarString).join(', ')}].containsAll(context.scopes) };`,
  ].join('\n')
  return { id: grantPolicyId(workload.id, resource.uri), text, effect: 'permit', resource: resource.uri, annotations }
}

/** The id of the generated policy for a workload's `delegateTo` (no resource URI ends in `/delegation` after a workload id: URIs are absolute). */
export function delegationPolicyId(workloadId: string): string {
  return `${GRANT_ID_PREFIX}${workloadId}/delegation`
}

/**
 * The policy for a workload's `delegateTo`: it may open sub-tasks for exactly those workloads, on
 * any resource of its task (a sub-task never reaches beyond its parent; what the delegate itself
 * may hold is decided by its own `open_task`).
 */
export function delegationPolicy(workload: WorkloadConfig): LoadedPolicy {
  const text = [
    `permit (`,
    `  principal == Taskpass::Workload::${cedarString(workload.id)},`,
    `  action == Taskpass::Action::"delegate",`,
    `  resource`,
    `) when { context has delegate && [${workload.delegateTo.map((d) => `Taskpass::Workload::${cedarString(d)}`).join(', ')}].contains(context.delegate) };`,
  ].join('\n')
  return { id: delegationPolicyId(workload.id), text, effect: 'permit', resource: undefined, annotations: {} }
}

/** Every grant of every enabled workload as a policy (a disabled workload is refused before policy runs). */
export function generateGrantPolicies(config: Pick<Config, 'workloads' | 'resources'>): LoadedPolicy[] {
  const resources = new Map(config.resources.map((r) => [r.uri, r]))
  return config.workloads.flatMap((w) =>
    w.enabled
      ? // The first grant for a resource is the workload's grant for it (as allowedScopes reads it).
        w.grants.flatMap((g, i) => {
          const resource = resources.get(g.resource)
          const first = w.grants.findIndex((o) => o.resource === g.resource) === i
          return resource && first ? [grantPolicy(w, resource, g.scopes)] : []
        }).concat(w.delegateTo.length > 0 ? [delegationPolicy(w)] : [])
      : [],
  )
}
