import type { ResourceConfig } from '../config.js'
import { allowedScopes, type Decision, type Policy } from './decide.js'
import { grantPolicyId } from './generate.js'

/**
 * The generated default policy set, decided natively. When a deployment adds no policies of its
 * own, the set is exactly the permits generated from the grants (src/policy/generate.ts); this
 * evaluator gives the same decisions and constraints — test/policy.test.ts proves it case by case
 * against Cedar on the generated set — without a Cedar call per decision, which costs a few
 * hundred microseconds (entity marshalling) on the exchange's hot path. The generated set is still
 * built, validated against the schema and preparsed at start, so what is evaluated is checked.
 */
export function createGrantPolicy(): Policy {
  return {
    decide(_principal, action, resource: ResourceConfig, { workload, scopes }): Decision {
      if (!workload.enabled) return { allow: false, code: 'unauthorized_client', reason: `workload ${workload.id} is disabled` }
      const grant = workload.grants.find((g) => g.resource === resource.uri)
      if (!grant) return { allow: false, code: 'invalid_target', reason: `workload ${workload.id} has no grant for ${resource.uri}` }
      const granted = allowedScopes(workload, resource)
      const beyond = scopes.filter((s) => !granted.includes(s))
      if (beyond.length > 0) return { allow: false, code: 'invalid_scope', reason: `scope beyond the workload's grant: ${beyond.join(' ')}` }
      const ttls = [resource.maxTtl, workload.maxTtl].filter((t): t is number => t !== undefined)
      return {
        allow: true,
        reason: `permitted by policy ${grantPolicyId(workload.id, resource.uri)}`,
        constraints: {
          maxTtl: ttls.length ? Math.min(...ttls) : undefined,
          dpopRequired: resource.requireDpop || workload.requireDpop,
          approvalRequired: action === 'task.open' && resource.requireApproval,
        },
      }
    },
  }
}
