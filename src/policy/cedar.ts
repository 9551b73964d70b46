import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import {
  policySetTextToParts,
  policyToJson,
  preparsePolicySet,
  preparseSchema,
  statefulIsAuthorized,
  validate,
  type DetailedError,
  type EntityJson,
} from '@cedar-policy/cedar-wasm/nodejs'
import { ConfigError, type Config } from '../config.js'
import { allowedScopes, type Constraints, type Decision, type Policy, type PolicyAction } from './decide.js'
import { generateGrantPolicies, type LoadedPolicy } from './generate.js'
import { createGrantPolicy } from './grants.js'

/**
 * taskpass as a Cedar policy decision point (docs/policy.md): the policy set is parsed, validated
 * against the shipped schema and preparsed once, when the broker starts; each decision evaluates
 * only the policies of the requested resource (plus the few that name no resource), so its cost
 * does not grow with the policies of other resources.
 */

/** The shipped Cedar schema (`taskpass.cedarschema`), the one every policy is validated against. */
export const CEDAR_SCHEMA = readFileSync(new URL('./taskpass.cedarschema', import.meta.url), 'utf8')

const SCHEMA_NAME = 'taskpass'
const ACTIONS: Record<PolicyAction, string> = { 'task.open': 'open_task', 'token.exchange': 'exchange' }
type DenyCode = Extract<Decision, { allow: false }>['code']
const DENY_CODES: readonly DenyCode[] = ['invalid_target', 'invalid_scope', 'unauthorized_client']

/** Annotations the broker reads (docs/policy.md "Constraints"); any other annotation is left alone. */
const ANNOTATION_RULES: Record<string, { test: (v: string) => boolean; expected: string }> = {
  max_ttl: { test: (v) => /^[1-9][0-9]{0,8}$/.test(v), expected: 'a positive whole number of seconds' },
  dpop_required: { test: (v) => v === 'true' || v === 'false', expected: '"true" or "false"' },
  approval_required: { test: (v) => v === 'true' || v === 'false', expected: '"true" or "false"' },
  error: { test: (v) => (DENY_CODES as readonly string[]).includes(v), expected: DENY_CODES.join(', ') },
  id: { test: (v) => /^[\x21-\x7e]{1,200}$/.test(v), expected: '1–200 printable characters, no spaces' },
}

// The wasm instance keeps preparsed sets until the process ends (there is no delete), so a
// bucket's id is the hash of its content: brokers with the same policies share the same slot.
const preparsed = new Set<string>()
let schemaReady = false

function ensureSchema(): void {
  if (schemaReady) return
  const r = preparseSchema(SCHEMA_NAME, CEDAR_SCHEMA)
  if (r.type !== 'success') throw new Error(`the shipped Cedar schema does not parse: ${r.errors.map((e) => e.message).join('; ')}`)
  schemaReady = true
}

/** `line:column` (1-based) of a UTF-8 byte offset into `text`: Cedar's source locations count bytes. */
function position(text: string, byteOffset: number): string {
  const before = Buffer.from(text, 'utf8').subarray(0, byteOffset).toString('utf8')
  const lines = before.split('\n')
  return `${lines.length}:${lines[lines.length - 1]!.length + 1}`
}

function describe(e: DetailedError): string {
  return e.help ? `${e.message} (${e.help})` : e.message
}

/** Checks the annotations the broker reads; returns the problems, each naming the policy. */
function annotationProblems(p: LoadedPolicy): string[] {
  return Object.entries(p.annotations).flatMap(([k, v]) => {
    const rule = ANNOTATION_RULES[k]
    if (!rule || rule.test(v)) return []
    return [`policy ${p.id}: @${k}(${JSON.stringify(v)}) must be ${rule.expected}`]
  })
}

/** Where a policy of a file starts, so a validation error can name its line and column. */
interface Located {
  policy: LoadedPolicy
  source: string
  text: string
  start: number
}

/**
 * Parses a Cedar policy file into policies with ids: a policy's `@id("…")` annotation, else
 * `<file name>#<n>` (its position in the file, from 1). Throws {@link ConfigError} with the line
 * and column of a syntax error, a bad annotation or a duplicate id.
 */
export function parsePolicyFile(text: string, source: string): Located[] {
  const name = basename(source)
  const parts = policySetTextToParts(text)
  if (parts.type !== 'success') {
    throw new ConfigError(parts.errors.map((e) => `policies.file: ${source}:${e.sourceLocations?.[0] ? position(text, e.sourceLocations[0].start) : '?'}: ${describe(e)}`))
  }
  if (parts.policy_templates.length > 0) throw new ConfigError([`policies.file: ${source}: templates are not supported; write static policies`])
  const issues: string[] = []
  const out: Located[] = []
  let cursor = 0
  parts.policies.forEach((policyText, i) => {
    // The parts are the file's own text, in order: find each to report positions in the file.
    const at = text.indexOf(policyText, cursor)
    const start = at >= 0 ? at : cursor
    cursor = at >= 0 ? at + policyText.length : cursor
    const json = policyToJson(policyText)
    if (json.type !== 'success') {
      issues.push(...json.errors.map((e) => `policies.file: ${source}: policy ${i + 1}: ${describe(e)}`))
      return
    }
    const annotations = (json.json.annotations ?? {}) as Record<string, string>
    const scope = json.json.resource
    const resource = (scope.op === '==' || scope.op === 'in') && 'entity' in scope && 'type' in scope.entity && scope.entity.type === 'Taskpass::Resource' ? scope.entity.id : undefined
    const policy: LoadedPolicy = { id: annotations.id ?? `${name}#${i + 1}`, text: policyText, effect: json.json.effect, resource, annotations }
    out.push({ policy, source, text, start })
  })
  if (issues.length > 0) throw new ConfigError(issues)
  return out
}

/** A validated, preparsed policy set: per resource URI, the preparsed id of its bucket. */
export interface PolicySet {
  policies: ReadonlyMap<string, LoadedPolicy>
  buckets: ReadonlyMap<string, string>
}

/**
 * Builds the broker's policy set: the policies generated from the grants (unless
 * `policies.replaceDefaults`) plus those of `policies.file`, validated against the schema
 * (strict mode), then preparsed in one bucket per registered resource. Throws
 * {@link ConfigError} naming every bad policy; nothing of a refused set is used.
 */
export function loadPolicySet(config: Pick<Config, 'workloads' | 'resources' | 'policies'>, readFile: (path: string) => string = (p) => readFileSync(p, 'utf8')): PolicySet {
  ensureSchema()
  const located: Located[] = []
  if (!config.policies.replaceDefaults) for (const policy of generateGrantPolicies(config)) located.push({ policy, source: '(generated)', text: policy.text, start: 0 })
  if (config.policies.file !== undefined) {
    let text: string
    try {
      text = readFile(config.policies.file)
    } catch (e) {
      throw new ConfigError([`policies.file: cannot read ${config.policies.file}: ${(e as Error).message}`])
    }
    for (const l of parsePolicyFile(text, config.policies.file)) located.push(l)
  }

  const issues: string[] = []
  const byId = new Map<string, Located>()
  for (const l of located) {
    if (byId.has(l.policy.id)) issues.push(`policy ${l.policy.id} (${l.source}): duplicate policy id`)
    else byId.set(l.policy.id, l)
    issues.push(...annotationProblems(l.policy))
  }
  const resources = new Set(config.resources.map((r) => r.uri))
  for (const l of located) {
    if (l.policy.resource !== undefined && !resources.has(l.policy.resource)) issues.push(`policy ${l.policy.id} (${l.source}): unknown resource ${l.policy.resource}`)
  }
  if (issues.length > 0) throw new ConfigError(issues)

  const staticPolicies = Object.fromEntries([...byId].map(([id, l]) => [id, l.policy.text]))
  const checked = validate({ schema: CEDAR_SCHEMA, policies: { staticPolicies }, validationSettings: { mode: 'strict' } })
  if (checked.type !== 'success') throw new ConfigError(checked.errors.map((e) => `policies: ${describe(e)}`))
  const problems = [...checked.validationErrors, ...checked.validationWarnings]
  if (problems.length > 0) {
    throw new ConfigError(
      problems.map(({ policyId, error }) => {
        const l = byId.get(policyId)
        const loc = l && error.sourceLocations?.[0] ? `${l.source}:${position(l.text, Buffer.byteLength(l.text.slice(0, l.start)) + error.sourceLocations[0].start)}: ` : ''
        return `policy ${policyId}: ${loc}${describe(error)}`
      }),
    )
  }

  // One bucket per resource: the policies naming it, plus those naming no resource.
  const policies = new Map([...byId].map(([id, l]) => [id, l.policy]))
  const unscoped: LoadedPolicy[] = []
  const named = new Map<string, LoadedPolicy[]>()
  for (const p of policies.values()) {
    if (p.resource === undefined) unscoped.push(p)
    else if (named.has(p.resource)) named.get(p.resource)!.push(p)
    else named.set(p.resource, [p])
  }
  const buckets = new Map<string, string>()
  for (const uri of resources) {
    const members = (named.get(uri) ?? []).concat(unscoped)
    const set = Object.fromEntries(members.map((p) => [p.id, p.text]))
    const id = `taskpass:${createHash('sha256').update(JSON.stringify(set)).digest('base64url')}`
    if (!preparsed.has(id)) {
      const r = preparsePolicySet(id, { staticPolicies: set })
      if (r.type !== 'success') throw new ConfigError(r.errors.map((e) => `policies (${uri}): ${describe(e)}`))
      preparsed.add(id)
    }
    buckets.set(uri, id)
  }
  return { policies, buckets }
}

const uid = (type: string, id: string) => ({ type: `Taskpass::${type}`, id })

/**
 * The broker's {@link Policy}: Cedar over the loaded set. A disabled workload is refused before
 * any policy runs. A deny names its reason: the deciding `forbid` policies (their `@error`, or
 * `invalid_target`); with no forbid, `invalid_scope` when the same request without scopes would be
 * permitted (the scopes are beyond what policy grants), else `invalid_target`. A permit's
 * constraints come from the annotations of every permit that matched, the strictest winning.
 */
export function createCedarPolicy(set: PolicySet): Policy {
  return {
    decide(principal, action, resource, context) {
      const { workload } = context
      if (!workload.enabled) return { allow: false, code: 'unauthorized_client', reason: `workload ${workload.id} is disabled` }
      const bucket = set.buckets.get(resource.uri)
      if (bucket === undefined) return { allow: false, code: 'invalid_target', reason: `workload ${workload.id} has no grant for ${resource.uri}` }
      const user = uid('User', JSON.stringify([principal.issuer, principal.user]))
      const entities: EntityJson[] = [
        {
          uid: uid('Workload', workload.id),
          attrs: { id: workload.id, attestation_issuer: context.attestation?.issuer ?? workload.attestation.issuer, ...(context.attestation ? { attestation_subject: context.attestation.subject } : {}) },
          parents: [],
        },
        { uid: uid('Resource', resource.uri), attrs: { uri: resource.uri, scopes: resource.scopes }, parents: [] },
        { uid: user, attrs: { issuer: principal.issuer, subject: principal.user, ...(principal.sid !== undefined ? { session: principal.sid } : {}) }, parents: [] },
      ]
      const ask = (scopes: string[]) =>
        statefulIsAuthorized({
          principal: uid('Workload', workload.id),
          action: uid('Action', ACTIONS[action]),
          resource: uid('Resource', resource.uri),
          context: { user: { __entity: user }, scopes, dpop_bound: context.dpopBound, now: context.now, time: utcDatetime(context.now), ...(context.ttl !== undefined ? { requested_ttl: context.ttl } : {}) },
          entities,
          preparsedPolicySetId: bucket,
          preparsedSchemaName: SCHEMA_NAME,
          validateRequest: true,
        })

      const answer = ask(context.scopes)
      // Fail closed: a request Cedar cannot evaluate is a deny.
      if (answer.type !== 'success') return { allow: false, code: 'invalid_target', reason: `policy evaluation failed: ${answer.errors.map(describe).join('; ')}` }
      const { decision, diagnostics } = answer.response
      // A forbid that errored is counted as a forbid (Cedar itself would skip it).
      const failedForbid = diagnostics.errors.find((e) => set.policies.get(e.policyId)?.effect === 'forbid')
      if (failedForbid) return { allow: false, code: denyCode([failedForbid.policyId], set), reason: `policy ${failedForbid.policyId} failed to evaluate (counted as a forbid): ${failedForbid.error.message}` }
      const ids = [...diagnostics.reason].sort()
      if (decision === 'allow') return { allow: true, reason: `permitted by policy ${ids.join(', ')}`, constraints: constraintsOf(ids, set, action) }
      if (ids.length > 0) return { allow: false, code: denyCode(ids, set), reason: `forbidden by policy ${ids.join(', ')}` }
      if (context.scopes.length > 0) {
        const unscoped = ask([])
        if (unscoped.type === 'success' && unscoped.response.decision === 'allow') {
          const grant = allowedScopes(workload, resource)
          const beyond = context.scopes.filter((s) => !grant.includes(s))
          return { allow: false, code: 'invalid_scope', reason: beyond.length > 0 ? `scope beyond the workload's grant: ${beyond.join(' ')}` : `scope not permitted by policy: ${context.scopes.join(' ')}` }
        }
      }
      return { allow: false, code: 'invalid_target', reason: `workload ${workload.id} has no grant for ${resource.uri}` }
    },
  }
}

/** A Cedar `datetime` literal (UTC, whole seconds) for epoch seconds; the schema types the plain string. */
function utcDatetime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** The error of a deny: the first deciding forbid's `@error`, else `invalid_target`. */
function denyCode(ids: string[], set: PolicySet): DenyCode {
  for (const id of ids) {
    const code = set.policies.get(id)?.annotations.error
    if (code !== undefined) return code as DenyCode
  }
  return 'invalid_target'
}

/** Constraints of an allow: the strictest of every matching permit's annotations; approval only when a task opens. */
function constraintsOf(ids: string[], set: PolicySet, action: PolicyAction): Constraints {
  const annotations = ids.map((id) => set.policies.get(id)?.annotations ?? {})
  const ttls = annotations.flatMap((a) => (a.max_ttl !== undefined ? [Number(a.max_ttl)] : []))
  return {
    maxTtl: ttls.length > 0 ? Math.min(...ttls) : undefined,
    dpopRequired: annotations.some((a) => a.dpop_required === 'true'),
    approvalRequired: action === 'task.open' && annotations.some((a) => a.approval_required === 'true'),
  }
}

/**
 * Loads (generates, validates, preparses) the set for a configuration and returns the policy over
 * it: what the broker does at start. With no deployment policies the set is only the generated
 * grants, decided natively by {@link createGrantPolicy} (the same decisions, proven by test);
 * with a policy file every decision is Cedar's.
 */
export function createBrokerPolicy(config: Pick<Config, 'workloads' | 'resources' | 'policies'>): Policy {
  const set = loadPolicySet(config)
  return config.policies.file === undefined ? createGrantPolicy() : createCedarPolicy(set)
}
