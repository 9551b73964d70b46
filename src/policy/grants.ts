import type { ResourceConfig } from '../config.js'
import { allowedScopes, delegationRefused, type Decision, type Policy } from './decide.js'
import { delegationPolicyId, grantPolicyId } from './generate.js'

/**
 * The generated default policy set, decided natively. When a deployment adds no policies of its
 * own, the set is exactly the permits generated from the grants (src/policy/generate.ts); this
 * evaluator gives the same decisions and constraints — test/policy.test.ts proves it case by case
 * against Cedar on the generated set — without a Cedar call per decision, which costs a few
 * hundred microseconds (entity marshalling) on the exchange's hot path. The generated set is still
 * built, validated against the schema and preparsed at start, so what is evaluated is checked.
 * `version` is the generated set's version id.
 */
export function createGrantPolicy(version: string): Policy {
  return {
    version,
    decide(_principal, action, resource: ResourceConfig, { workload, scopes, tool, delegate }): Decision {
      const deny = (code: 'invalid_target' | 'invalid_scope' | 'unauthorized_client', reason: string): Decision => ({ allow: false, code, reason, version, policies: [] })
      if (!workload.enabled) return deny('unauthorized_client', `workload ${workload.id} is disabled`)
      if (action === 'task.delegate') {
        if (delegate === undefined || !workload.delegateTo.includes(delegate.id)) return deny('unauthorized_client', delegationRefused(workload.id, delegate?.id, resource.uri))
        const id = delegationPolicyId(workload.id)
        return { allow: true, reason: `permitted by policy ${id}`, version, policies: [id], constraints: { maxTtl: undefined, dpopRequired: false, approvalRequired: false } }
      }
      const grant = workload.grants.find((g) => g.resource === resource.uri)
      const granted = grant ? allowedScopes(workload, resource) : []
      const beyond = scopes.filter((s) => !granted.includes(s))
      if (action === 'tool.call' && (!grant || beyond.length > 0)) return deny('invalid_target', `no policy permits ${workload.id} to call ${tool} on ${resource.uri}`)
      if (!grant) return deny('invalid_target', `workload ${workload.id} has no grant for ${resource.uri}`)
      if (beyond.length > 0) return deny('invalid_scope', `scope beyond the workload's grant: ${beyond.join(' ')}`)
      const ttls = [resource.maxTtl, workload.maxTtl].filter((t): t is number => t !== undefined)
      const id = grantPolicyId(workload.id, resource.uri)
      return {
        allow: true,
        reason: `permitted by policy ${id}`,
        version,
        policies: [id],
        constraints: {
          maxTtl: ttls.length ? Math.min(...ttls) : undefined,
          dpopRequired: resource.requireDpop || workload.requireDpop,
          approvalRequired: action === 'task.open' && resource.requireApproval,
        },
      }
    },
  }
}
