import type { ResourceConfig, WorkloadConfig } from '../config.js'
import type { Attestation } from '../exchange/attestation/kinds.js'
import type { Decision, Policy, Principal } from '../policy/decide.js'
import type { TaskRow } from '../store/stores.js'
import { taskFacts, taskResources } from './lifecycle.js'


/** A tool call to decide: who calls which tool of which resource, under which task, with which token's scopes. */
export interface ToolCallQuestion {
  principal: Principal
  workload: WorkloadConfig
  attestation: Attestation | undefined
  task: TaskRow
  resource: ResourceConfig
  tool: string
  /** The scopes of the token the call is made with. */
  scopes: string[]
  dpopBound: boolean
  now: number
  /** The tools the token names (RFC 9396 `mcp_tools`), when it names any: a call outside them is outside the intent too. */
  tokenTools?: string[] | undefined
}

/**
 * Decides a tool call (Cedar action `call_tool`), without writing. The call must be inside the
 * task's declared intent — the resource is one of the task's, and when the task named tools for
 * it, the tool is one of them (exact names) — whatever a policy would allow; then the policy
 * decides. A call outside the intent is a deny with no deciding policy.
 */
export function decideToolCall(policy: Policy, q: ToolCallQuestion): Decision & { outsideIntent?: true } {
  const outside = (reason: string) => ({ allow: false as const, code: 'invalid_target' as const, reason, version: policy.version, policies: [], outsideIntent: true as const })
  const resources = taskResources(q.task)
  const declared = resources.find((r) => r.resource === q.resource.uri)
  if (!declared) return outside(`task ${q.task.id} does not cover ${q.resource.uri}`)
  if (declared.tools !== undefined && !declared.tools.includes(q.tool)) return outside(`tool ${q.tool} is not among the tools task ${q.task.id} declared for ${q.resource.uri}`)
  if (q.tokenTools !== undefined && !q.tokenTools.includes(q.tool)) return outside(`tool ${q.tool} is not among the tools the token names (authorization_details)`)
  return policy.decide(q.principal, 'tool.call', q.resource, {
    workload: q.workload,
    scopes: q.scopes,
    dpopBound: q.dpopBound,
    now: q.now,
    attestation: q.attestation,
    task: taskFacts(q.task, resources),
    tool: q.tool,
  })
}
