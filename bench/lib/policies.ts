/**
 * The policy files of the `--only policy` part: what a deployment with ~100 MCP servers writes.
 * Almost every policy names one of the *other* registered resources (permits for their teams'
 * workloads, forbids on their dangerous tools, DPoP and network rules); a few name no resource
 * and so land in every resource's bucket (src/policy/cedar.ts `compilePolicySet`). None of them
 * permits or forbids the benchmark's own exchange: the bench resource is decided by its generated
 * grant permit plus the resource-less policies, whatever the size of the file.
 */
import { RESOURCE } from './fixtures.js'

/** The registered resources the policies are written for (the bench resource is not one of them). */
export const OTHER_RESOURCE_COUNT = 100

/** The other resources' URIs and scopes (registered at the broker next to the bench resource). */
export function otherResources(count = OTHER_RESOURCE_COUNT): Array<{ uri: string; scopes: string[] }> {
  return Array.from({ length: count }, (_, i) => {
    const name = `svc${String(i).padStart(3, '0')}`
    return { uri: `https://${name}.bench.example/mcp`, scopes: [`${name}:read`, `${name}:write`] }
  })
}

const str = (s: string) => JSON.stringify(s)
const EXCHANGE = 'Taskpass::Action::"exchange"'
const OPEN_AND_EXCHANGE = '[Taskpass::Action::"open_task", Taskpass::Action::"exchange"]'
const CALL_TOOL = 'Taskpass::Action::"call_tool"'

/**
 * Policies that name no resource: every bucket holds them. Each is written so that it never
 * decides the benchmark's exchange (agent-a, SPIFFE-attested, `notes:read`, no requested lifetime,
 * a task opened seconds ago), but Cedar still evaluates each of them on every request.
 */
const UNSCOPED: Array<(i: number) => string> = [
  (i) => `@id("global/${i}/quarantined-workload")\nforbid (principal == Taskpass::Workload::"quarantined-agent", action in ${OPEN_AND_EXCHANGE}, resource);`,
  (i) => `@id("global/${i}/max-requested-ttl")\n@error("invalid_scope")\nforbid (principal, action == ${EXCHANGE}, resource)\nwhen { context has requested_ttl && context.requested_ttl > 3600 };`,
  (i) => `@id("global/${i}/oidc-needs-subject")\nforbid (principal, action in ${OPEN_AND_EXCHANGE}, resource)\nwhen { principal.attestation_kind == "oidc" && !(principal has attestation_subject) };`,
  (i) => `@id("global/${i}/stale-session")\nforbid (principal, action == ${EXCHANGE}, resource)\nwhen { context has session_age && context.session_age > 172800 };`,
]

/** How many of a file's policies name no resource: a handful, whatever the file's size. */
export function unscopedCount(total: number): number {
  return Math.min(total, UNSCOPED.length)
}

/** The j-th policy written for resource `r` (ten shapes, cycled; ids unique across the file). */
function resourcePolicy(r: { uri: string; scopes: string[] }, j: number): string {
  const res = `Taskpass::Resource::${str(r.uri)}`
  const [read, write] = r.scopes as [string, string]
  const team = `team-${j % 37}`
  const id = (what: string) => `@id(${str(`${r.uri}/${j}/${what}`)})`
  switch (j % 10) {
    case 0:
      return `${id('team-agent-read')}\n@max_ttl("300")\npermit (principal == Taskpass::Workload::${str(`${team}-agent-${j}`)}, action in ${OPEN_AND_EXCHANGE}, resource == ${res})\nwhen { [${str(read)}].containsAll(context.scopes) };`
    case 1:
      return `${id('writes-need-dpop')}\n@error("invalid_scope")\nforbid (principal, action == ${EXCHANGE}, resource == ${res})\nwhen { context.scopes.contains(${str(write)}) && !context.dpop_bound };`
    case 2:
      return `${id('declared-tools')}\npermit (principal == Taskpass::Workload::${str(`${team}-agent-${j}`)}, action == ${CALL_TOOL}, resource in ${res})\nwhen { context has tool && (!context.task.has_tool_list || context.task.tools.contains(context.tool)) };`
    case 3:
      return `${id('no-delete-tool')}\nforbid (principal, action == ${CALL_TOOL}, resource == Taskpass::Tool::${str(`${r.uri}#delete_${j}`)});`
    case 4:
      return `${id('k8s-namespace')}\npermit (principal, action in ${OPEN_AND_EXCHANGE}, resource == ${res})\nwhen { principal has kubernetes && principal.kubernetes.namespace == ${str(`${team}-prod`)} && [${str(read)}].containsAll(context.scopes) };`
    case 5:
      return `${id('business-hours-writes')}\nforbid (principal, action == ${EXCHANGE}, resource == ${res})\nwhen { context.scopes.contains(${str(write)}) }\nunless { context.time.toTime() >= duration("7h") && context.time.toTime() < duration("19h") };`
    case 6:
      return `${id('github-deploys')}\n@max_ttl("600")\npermit (principal, action in ${OPEN_AND_EXCHANGE}, resource == ${res})\nwhen { principal has github && principal.github.repository == ${str(`acme/${team}-deploy`)} && principal.github has environment && principal.github.environment == "production" };`
    case 7:
      return `${id('office-network')}\nforbid (principal, action == ${EXCHANGE}, resource == ${res})\nwhen { context has caller_address && !context.caller_address.isInRange(ip("10.0.0.0/8")) && context.scopes.contains(${str(write)}) };`
    case 8:
      return `${id('task-budget')}\nforbid (principal, action == ${EXCHANGE}, resource == ${res})\nwhen { context.task.tokens_minted > ${1000 + j} && context.task.purpose like "*batch*" };`
    default:
      return `${id('approved-writes')}\n@approval_required("true")\npermit (principal == Taskpass::Workload::${str(`${team}-agent-${j}`)}, action == Taskpass::Action::"open_task", resource == ${res})\nwhen { context.scopes.contains(${str(write)}) };`
  }
}

/**
 * A Cedar file of exactly `total` policies: {@link unscopedCount} that name no resource, the rest
 * spread round-robin over `resources` (none names the bench resource).
 */
export function benchPolicyText(total: number, resources = otherResources()): string {
  if (!Number.isInteger(total) || total < 1) throw new Error(`a policy file holds at least one policy, got ${total}`)
  if (resources.some((r) => r.uri === RESOURCE)) throw new Error('the bench resource must not be among the other resources')
  const out: string[] = []
  const unscoped = unscopedCount(total)
  for (let i = 0; i < unscoped; i++) out.push(UNSCOPED[i]!(i))
  for (let k = 0; k < total - unscoped; k++) out.push(resourcePolicy(resources[k % resources.length]!, Math.floor(k / resources.length)))
  return `// ${total} benchmark policies (bench/lib/policies.ts): ${unscoped} naming no resource, the rest for ${resources.length} other resources.\n\n${out.join('\n\n')}\n`
}
