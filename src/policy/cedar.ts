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
  type CedarValueJson,
  type DetailedError,
  type EntityJson,
} from '@cedar-policy/cedar-wasm/nodejs'
import { ConfigError } from '../config.js'
import { registeredIssuer, type Attestation, type AttestationKind } from '../exchange/attestation/kinds.js'
import { allowedScopes, delegationRefused, type Constraints, type Decision, type DenyCode, type Policy, type PolicyAction, type PolicyContext, type Principal } from './decide.js'
import { GRANT_ID_PREFIX, type LoadedPolicy } from './generate.js'
import { TOOL_NAME } from '../tokens/authorization-details.js'

/**
 * taskpass as a Cedar policy decision point (docs/policy.md): a policy set is parsed, validated
 * against the shipped schema and preparsed once, when it is loaded; each decision evaluates only
 * the policies of the requested resource (plus the few that name no resource), so its cost does
 * not grow with the policies of other resources.
 */

/** The shipped Cedar schema (`taskpass.cedarschema`), the one every policy is validated against. */
export const CEDAR_SCHEMA = readFileSync(new URL('./taskpass.cedarschema', import.meta.url), 'utf8')

const SCHEMA_NAME = 'taskpass'
const ACTIONS: Record<PolicyAction, string> = { 'task.open': 'open_task', 'token.exchange': 'exchange', 'tool.call': 'call_tool', 'task.delegate': 'delegate' }
const DENY_CODES: readonly DenyCode[] = ['invalid_target', 'invalid_scope', 'unauthorized_client']

/** Annotations the broker reads (docs/policy.md "Constraints"); any other annotation is left alone. */
const ANNOTATION_RULES: Record<string, { test: (v: string) => boolean; expected: string }> = {
  max_ttl: { test: (v) => /^[1-9][0-9]{0,8}$/.test(v), expected: 'a positive whole number of seconds' },
  dpop_required: { test: (v) => v === 'true' || v === 'false', expected: '"true" or "false"' },
  approval_required: { test: (v) => v === 'true' || v === 'false', expected: '"true" or "false"' },
  constraint_only: { test: (v) => v === 'true' || v === 'false', expected: '"true" or "false"' },
  error: { test: (v) => (DENY_CODES as readonly string[]).includes(v), expected: DENY_CODES.join(', ') },
  id: { test: (v) => /^[\x21-\x7e]{1,200}$/.test(v), expected: '1–200 printable characters, no spaces' },
}

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

/** An annotation name as a typo of one of ours would spell it: `constraintOnly`, `Max_TTL` → `constraintonly`, `maxttl`. */
const loosely = (name: string) => name.toLowerCase().replace(/_/g, '')
const LOOSE_NAMES = new Map(Object.keys(ANNOTATION_RULES).map((k) => [loosely(k), k]))

/** Checks the annotations the broker reads; returns the problems, each naming the policy. */
function annotationProblems(p: LoadedPolicy): string[] {
  return Object.entries(p.annotations).flatMap(([k, v]) => {
    const rule = ANNOTATION_RULES[k]
    // Other annotations are ignored — so a misspelt one of ours would silently drop its constraint
    // (a misspelt @constraint_only turns the permit into a grant): refused instead.
    const meant = rule ? undefined : LOOSE_NAMES.get(loosely(k))
    if (meant !== undefined) return [`policy ${p.id}: @${k} is not an annotation taskpass reads; did you mean @${meant}?`]
    if (!rule || rule.test(v)) return []
    return [`policy ${p.id}: @${k}(${JSON.stringify(v)}) must be ${rule.expected}`]
  })
}

/** Where a policy of a source starts, so a validation error can name its line and column. */
interface Located {
  policy: LoadedPolicy
  source: string
  text: string
  start: number
}

type ScopeJson = { op: string; entity?: { type?: string; id?: string }; in?: { entity?: { type?: string; id?: string } } }

/** The resource URI a policy's resource scope names: a Resource, a Tool of one, or `is Tool in` one. */
function scopedResource(scope: ScopeJson): string | undefined {
  const entity = scope.op === '==' || scope.op === 'in' ? scope.entity : scope.op === 'is' ? scope.in?.entity : undefined
  if (!entity || typeof entity.id !== 'string') return undefined
  if (entity.type === 'Taskpass::Resource') return entity.id
  if (entity.type === 'Taskpass::Tool' && scope.op === '==') {
    const hash = entity.id.lastIndexOf('#')
    return hash > 0 ? entity.id.slice(0, hash) : undefined
  }
  return undefined
}

/**
 * A Tool the resource scope names must be `<resource URI>#<tool name>`: no request is ever about
 * a Tool named otherwise (`Taskpass::Tool::"delete_note"`), so a forbid naming one would forbid nothing.
 */
function badToolScope(scope: ScopeJson): string | undefined {
  const entity = scope.op === '==' || scope.op === 'in' ? scope.entity : scope.op === 'is' ? scope.in?.entity : undefined
  if (entity?.type !== 'Taskpass::Tool' || typeof entity.id !== 'string') return undefined
  const hash = entity.id.lastIndexOf('#')
  if (hash > 0 && TOOL_NAME.test(entity.id.slice(hash + 1))) return undefined
  return `Taskpass::Tool::${JSON.stringify(entity.id)} names no tool: a Tool's id is "<resource URI>#<tool name>"`
}

/**
 * Parses Cedar policy text into policies with ids: a policy's `@id("…")` annotation, else
 * `<source name>#<n>` (its position in the text, from 1). Throws {@link ConfigError} with the line
 * and column of a syntax error, a bad annotation or a duplicate id. `label` prefixes messages
 * (`policies.file`, `policies`).
 */
export function parsePolicyText(text: string, source: string, label = 'policies.file'): Located[] {
  const name = basename(source)
  const parts = policySetTextToParts(text)
  if (parts.type !== 'success') {
    throw new ConfigError(parts.errors.map((e) => `${label}: ${source}:${e.sourceLocations?.[0] ? position(text, e.sourceLocations[0].start) : '?'}: ${describe(e)}`))
  }
  if (parts.policy_templates.length > 0) throw new ConfigError([`${label}: ${source}: templates are not supported; write static policies`])
  const issues: string[] = []
  const out: Located[] = []
  let cursor = 0
  parts.policies.forEach((policyText, i) => {
    // The parts are the source's own text, in order: find each to report positions in it.
    const at = text.indexOf(policyText, cursor)
    const start = at >= 0 ? at : cursor
    cursor = at >= 0 ? at + policyText.length : cursor
    const json = policyToJson(policyText)
    if (json.type !== 'success') {
      issues.push(...json.errors.map((e) => `${label}: ${source}: policy ${i + 1}: ${describe(e)}`))
      return
    }
    const annotations = (json.json.annotations ?? {}) as Record<string, string>
    const badTool = badToolScope(json.json.resource as ScopeJson)
    if (badTool !== undefined) issues.push(`${label}: ${source}:${position(text, Buffer.byteLength(text.slice(0, start)))}: policy ${annotations.id ?? `${name}#${i + 1}`}: ${badTool}`)
    const policy: LoadedPolicy = { id: annotations.id ?? `${name}#${i + 1}`, text: policyText, effect: json.json.effect, resource: scopedResource(json.json.resource as ScopeJson), annotations }
    out.push({ policy, source, text, start })
  })
  if (issues.length > 0) throw new ConfigError(issues)
  return out
}

/** One source of policies: its text and a name for messages (a file path, `admin`). */
export interface PolicySource {
  name: string
  text: string
  label?: string
}

/** A validated policy set (not yet prepared for evaluation): its policies by id, per resource, and its version. */
export interface PolicySet {
  /** The set's version id: a hash of every policy's id and text, in id order. */
  version: string
  policies: ReadonlyMap<string, LoadedPolicy>
  /** Per registered resource URI, the policies evaluated for it (its own, plus those naming no resource). */
  byResource: ReadonlyMap<string, LoadedPolicy[]>
  /** Where each policy came from: `(generated)`, the file's path, `admin`. */
  sourceOf: ReadonlyMap<string, string>
  /** Whether the set is only the generated grant policies (then decided natively, see `grants.ts`). */
  generatedOnly: boolean
}

/**
 * Validates a policy set: the generated policies plus each source's, against the schema (strict
 * mode), with unique ids, well-formed annotations, and every named resource registered. Throws
 * {@link ConfigError} naming every bad policy; nothing of a refused set is used.
 */
export function compilePolicySet(generated: LoadedPolicy[], sources: PolicySource[], resourceUris: readonly string[]): PolicySet {
  ensureSchema()
  const located: Located[] = generated.map((policy) => ({ policy, source: '(generated)', text: policy.text, start: 0 }))
  for (const s of sources) located.push(...parsePolicyText(s.text, s.name, s.label))

  const issues: string[] = []
  const byId = new Map<string, Located>()
  for (const l of located) {
    // The generated ids are the configuration's: a policy of a file or of the admin's taking one
    // would pass for a grant in audit rows, and stop the broker from starting once that grant is configured.
    if (byId.has(l.policy.id)) issues.push(`policy ${l.policy.id} (${l.source}): duplicate policy id`)
    else if (l.source !== '(generated)' && l.policy.id.startsWith(GRANT_ID_PREFIX)) issues.push(`policy ${l.policy.id} (${l.source}): ids starting with "${GRANT_ID_PREFIX}" are reserved for the generated grant policies`)
    else byId.set(l.policy.id, l)
    issues.push(...annotationProblems(l.policy))
  }
  const resources = new Set(resourceUris)
  for (const l of located) {
    if (l.policy.resource !== undefined && !resources.has(l.policy.resource)) issues.push(`policy ${l.policy.id} (${l.source}): unknown resource ${l.policy.resource}`)
  }
  if (issues.length > 0) throw new ConfigError(issues)

  if (byId.size > 0) {
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
  }

  const policies = new Map([...byId].map(([id, l]) => [id, l.policy]))
  const unscoped: LoadedPolicy[] = []
  const named = new Map<string, LoadedPolicy[]>()
  for (const p of policies.values()) {
    if (p.resource === undefined) unscoped.push(p)
    else if (named.has(p.resource)) named.get(p.resource)!.push(p)
    else named.set(p.resource, [p])
  }
  const byResource = new Map([...resources].map((uri) => [uri, (named.get(uri) ?? []).concat(unscoped)]))
  const hash = createHash('sha256')
  for (const id of [...policies.keys()].sort()) hash.update(JSON.stringify([id, policies.get(id)!.text]))
  const sourceOf = new Map([...byId].map(([id, l]) => [id, l.source]))
  return { version: `ps_${hash.digest('base64url').slice(0, 22)}`, policies, byResource, sourceOf, generatedOnly: sources.length === 0 }
}

/**
 * The wasm instance keeps preparsed sets until the process ends (there is no delete; preparsing
 * an id again replaces it). A prepared set therefore lives in a named slot: one per (slot, resource)
 * pair, reused by every set prepared into that slot, so memory is bounded by the slots in use, not
 * by how many sets were ever loaded.
 */
export interface PreparedSet {
  set: PolicySet
  buckets: ReadonlyMap<string, string>
}

const preparedContent = new Map<string, string>()

/** How many policy sets the wasm instance holds preparsed (it frees none): what every slot in use costs. */
export function preparedSetCount(): number {
  return preparedContent.size
}

/** Prepares `set` for evaluation in `slot` (a name unique to its user, e.g. `engine3:A`). Throws {@link ConfigError} if Cedar refuses. */
export function prepare(set: PolicySet, slot: string): PreparedSet {
  ensureSchema()
  const buckets = new Map<string, string>()
  let i = 0
  for (const [uri, members] of set.byResource) {
    const policies = Object.fromEntries(members.map((p) => [p.id, p.text]))
    const content = createHash('sha256').update(JSON.stringify(policies)).digest('base64url')
    // By position, not URI: resources come and go (the catalog), and a slot holds as many as there are at once.
    const id = `taskpass:${slot}:${i++}`
    if (preparedContent.get(id) !== content) {
      const r = preparsePolicySet(id, { staticPolicies: policies })
      if (r.type !== 'success') throw new ConfigError(r.errors.map((e) => `policies (${uri}): ${describe(e)}`))
      preparedContent.set(id, content)
    }
    buckets.set(uri, id)
  }
  return { set, buckets }
}

const uid = (type: string, id: string) => ({ type: `Taskpass::${type}`, id })

/** `::ffff:a.b.c.d` is the IPv4 peer of a dual-stack socket; a zone (`%eth0`) is not part of the address. */
function normalizeAddress(address: string): string {
  const plain = address.replace(/%.*$/, '')
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(plain)
  return mapped ? mapped[1]! : plain
}

/** The Cedar `Workload` entity's attributes for an attestation (docs/policy.md). */
function workloadAttrs(id: string, attestation: Attestation): Record<string, CedarValueJson> {
  const { kubernetes: k8s, github: gh } = attestation
  return {
    id,
    attestation_kind: attestation.kind,
    attestation_issuer: attestation.issuer,
    attestation_subject: attestation.subject,
    ...(attestation.kind === 'spiffe' ? { spiffe_id: attestation.subject } : {}),
    ...(k8s ? { kubernetes: { namespace: k8s.namespace, service_account: k8s.serviceAccount, ...(k8s.pod ? { pod: k8s.pod } : {}) } } : {}),
    ...(gh
      ? {
          github: {
            repository: gh.repository,
            repository_owner: gh.repositoryOwner,
            ...(gh.ref ? { ref: gh.ref } : {}),
            ...(gh.environment ? { environment: gh.environment } : {}),
            ...(gh.workflowRef ? { workflow_ref: gh.workflowRef } : {}),
            ...(gh.event ? { event: gh.event } : {}),
          },
        }
      : {}),
  }
}

/**
 * The request Cedar is asked: principal, action, resource, context and the entities they name.
 * Always shaped by the schema: test/policy.test.ts validates it against the schema for every
 * action and every optional part, so decisions need not pay for validating it (see {@link createCedarPolicy}).
 */
export function cedarRequest(principal: Principal, action: PolicyAction, resourceUri: string, resourceScopes: string[], ctx: PolicyContext, kindOf: (issuer: string) => AttestationKind) {
  const { workload, task } = ctx
  const user = uid('User', JSON.stringify([principal.issuer, principal.user]))
  const workloadUid = uid('Workload', workload.id)
  const attestation: Attestation = ctx.attestation ?? { kind: kindOf(registeredIssuer(workload)), issuer: registeredIssuer(workload), subject: '' }
  const attrs = workloadAttrs(workload.id, attestation)
  if (ctx.attestation === undefined) delete attrs.attestation_subject
  const here = task.resources.find((r) => r.resource === resourceUri)
  const taskUid = uid('Task', task.id)
  const toolUid = ctx.tool !== undefined ? uid('Tool', `${resourceUri}#${ctx.tool}`) : undefined
  // The delegate proves itself only when it exchanges: here it is its registration.
  const delegate = ctx.delegate
  const delegateUid = delegate !== undefined && delegate.id !== workload.id ? uid('Workload', delegate.id) : undefined
  const delegateAttrs = delegate !== undefined ? workloadAttrs(delegate.id, { kind: kindOf(registeredIssuer(delegate)), issuer: registeredIssuer(delegate), subject: '' }) : undefined
  if (delegateAttrs) delete delegateAttrs.attestation_subject
  const entities: EntityJson[] = [
    { uid: workloadUid, attrs, parents: [] },
    ...(delegateUid ? [{ uid: delegateUid, attrs: delegateAttrs!, parents: [] }] : []),
    { uid: uid('Resource', resourceUri), attrs: { uri: resourceUri, scopes: resourceScopes }, parents: [] },
    { uid: user, attrs: { issuer: principal.issuer, subject: principal.user, ...(principal.sid !== undefined ? { session: principal.sid } : {}) }, parents: [], ...(principal.claims ? { tags: principal.claims } : {}) },
    {
      uid: taskUid,
      attrs: {
        id: task.id,
        purpose: task.purpose,
        resources: task.resources.map((r) => r.resource),
        declared_scopes: task.resources.flatMap((r) => r.scopes.map((s) => `${r.resource} ${s}`)),
        scopes: here?.scopes ?? [],
        tools: here?.tools ?? [],
        has_tool_list: here?.tools !== undefined,
        owner: { __entity: user },
        workload: { __entity: workloadUid },
        created_at: task.createdAt,
        expires_at: task.expiresAt,
        age: Math.max(0, ctx.now - task.createdAt),
        remaining: Math.max(0, task.expiresAt - ctx.now),
        tokens_minted: task.tokensMinted,
        approved: task.approved,
        depth: task.depth ?? 0,
        ...(task.parentId !== undefined ? { parent_id: task.parentId } : {}),
      },
      parents: [],
    },
    ...(toolUid ? [{ uid: toolUid, attrs: { name: ctx.tool!, resource: resourceUri }, parents: [uid('Resource', resourceUri)] }] : []),
  ]
  const context = {
    user: { __entity: user },
    task: { __entity: taskUid },
    scopes: ctx.scopes,
    dpop_bound: ctx.dpopBound,
    now: ctx.now,
    time: { __extn: { fn: 'datetime', arg: utcDatetime(ctx.now) } },
    ...(ctx.ttl !== undefined ? { requested_ttl: ctx.ttl } : {}),
    ...(ctx.sessionStartedAt !== undefined ? { session_age: Math.max(0, ctx.now - ctx.sessionStartedAt) } : {}),
    ...(ctx.callerAddress !== undefined ? { caller_address: { __extn: { fn: 'ip', arg: normalizeAddress(ctx.callerAddress) } } } : {}),
    ...(ctx.tool !== undefined ? { tool: ctx.tool } : {}),
    ...(delegate !== undefined ? { delegate: { __entity: uid('Workload', delegate.id) } } : {}),
  }
  return { principal: workloadUid, action: uid('Action', ACTIONS[action]), resource: toolUid ?? uid('Resource', resourceUri), context, entities }
}

/**
 * A {@link Policy} that asks Cedar over a prepared set. A disabled workload is refused before any
 * policy runs. A deny names its reason: the deciding `forbid` policies (their `@error`, or
 * `invalid_target`); with no forbid, `invalid_scope` when the same request without scopes would be
 * permitted (the scopes are beyond what policy grants), else `invalid_target`. A permit's
 * constraints come from the annotations of every permit that matched, the strictest winning.
 * `kindOf` names the attestation kind of a workload issuer, for requests that carry no attestation.
 */
export function createCedarPolicy(prepared: PreparedSet, kindOf: (issuer: string) => AttestationKind): Policy {
  const { set, buckets } = prepared
  const { version } = set
  const deny = (code: DenyCode, reason: string, policies: string[] = []): Decision => ({ allow: false, code, reason, version, policies })
  // Per resource: Cedar evaluates only that resource's bucket, so a count read by another
  // resource's policy cannot change this one's decision (and must not make its every exchange decided twice).
  const counting = new Set([...set.byResource].filter(([, members]) => members.some(readsCount)).map(([uri]) => uri))
  return {
    version,
    readsTaskCount: (resource) => counting.has(resource),
    decide(principal, action, resource, context) {
      const { workload } = context
      if (!workload.enabled) return deny('unauthorized_client', `workload ${workload.id} is disabled`)
      const bucket = buckets.get(resource.uri)
      if (bucket === undefined) return deny('invalid_target', `workload ${workload.id} has no grant for ${resource.uri}`)
      const ask = (scopes: string[]) => {
        const request = cedarRequest(principal, action, resource.uri, resource.scopes, { ...context, scopes }, kindOf)
        // Not validated against the schema per request (that costs about a third of a decision): the
        // policies were validated at load, the request's shape is proven by test, and Cedar still
        // type-checks as it evaluates — a mismatch is an error, and an erroring forbid denies.
        return statefulIsAuthorized({ ...request, preparsedPolicySetId: bucket })
      }
      // A `@constraint_only` permit adds its constraints to a request something else permits; alone it permits nothing.
      const granting = (ids: readonly string[]) => ids.some((id) => set.policies.get(id)?.annotations.constraint_only !== 'true')

      const answer = ask(context.scopes)
      // Fail closed: a request Cedar cannot evaluate is a deny.
      if (answer.type !== 'success') return deny('invalid_target', `policy evaluation failed: ${answer.errors.map(describe).join('; ')}`)
      const { decision, diagnostics } = answer.response
      // Cedar lists the errors in no fixed order (not even from one call to the next): the first in
      // policy-id order is the one named, so the same request is denied for the same reason each time.
      const errors = [...diagnostics.errors].sort((a, b) => (a.policyId < b.policyId ? -1 : a.policyId > b.policyId ? 1 : 0))
      // A forbid that errored is counted as a forbid (Cedar itself would skip it).
      const failedForbid = errors.find((e) => set.policies.get(e.policyId)?.effect === 'forbid')
      if (failedForbid) return deny(denyCode([failedForbid.policyId], set), `policy ${failedForbid.policyId} failed to evaluate (counted as a forbid): ${failedForbid.error.message}`, [failedForbid.policyId])
      // So is a permit that constrains what it permits: skipped, its constraints (an approval, a
      // shorter lifetime, DPoP) would silently not apply to what another permit allows.
      const failedConstraint = errors.find((e) => constrains(set.policies.get(e.policyId)))
      if (failedConstraint) return deny('invalid_target', `policy ${failedConstraint.policyId} failed to evaluate (it constrains what it permits: counted as a forbid): ${failedConstraint.error.message}`, [failedConstraint.policyId])
      const ids = [...diagnostics.reason].sort()
      if (decision === 'allow' && granting(ids)) return { allow: true, reason: `permitted by policy ${ids.join(', ')}`, constraints: constraintsOf(ids, set, action), version, policies: ids }
      if (decision === 'deny' && ids.length > 0) return deny(denyCode(ids, set), `forbidden by policy ${ids.join(', ')}`, ids)
      if (action === 'task.delegate') return deny('unauthorized_client', delegationRefused(workload.id, context.delegate?.id, resource.uri))
      if (context.scopes.length > 0 && action !== 'tool.call') {
        const unscoped = ask([])
        if (unscoped.type === 'success' && unscoped.response.decision === 'allow' && granting(unscoped.response.diagnostics.reason)) {
          const grant = allowedScopes(workload, resource)
          const beyond = context.scopes.filter((s) => !grant.includes(s))
          return deny('invalid_scope', beyond.length > 0 ? `scope beyond the workload's grant: ${beyond.join(' ')}` : `scope not permitted by policy: ${context.scopes.join(' ')}`)
        }
      }
      if (action === 'tool.call') return deny('invalid_target', `no policy permits ${workload.id} to call ${context.tool} on ${resource.uri}`)
      return deny('invalid_target', `workload ${workload.id} has no grant for ${resource.uri}`)
    },
  }
}

/**
 * Whether a policy may read `context.task.tokens_minted`. By its text: over-matching (a comment
 * naming it) only decides an exchange again when it need not be. An escape (`\u{5f}`) can spell
 * the name in a string index (`context.task["tokens\u{5f}minted"]`): a policy with one counts too.
 */
function readsCount(p: LoadedPolicy): boolean {
  return p.text.includes('tokens_minted') || p.text.includes('\\u')
}

/** Whether a policy is a permit whose annotations constrain what it allows (or that only constrains). */
function constrains(p: LoadedPolicy | undefined): boolean {
  if (p?.effect !== 'permit') return false
  const a = p.annotations
  return a.constraint_only === 'true' || a.max_ttl !== undefined || a.dpop_required === 'true' || a.approval_required === 'true'
}

/** A Cedar `datetime` literal (UTC, whole seconds) for epoch seconds. */
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
