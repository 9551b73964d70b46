import { createHash } from 'node:crypto'
import type { Clock } from '../clock.js'
import { ConfigError } from '../config.js'
import { conflict, InvalidPolicy, notFound } from '../errors.js'
import type { Logger } from '../logger.js'
import { AUDIT_FIELD_LIMITS, type Stores, type TxStores } from '../store/stores.js'
import { adminEntries, adminTextProblems, appended, disabledBlock, splice, type AdminEntry } from './admin-text.js'
import { parsePolicyText, type PolicySet } from './cedar.js'
import type { PolicyEngine } from './engine.js'

/**
 * Changing the policy set at run time (docs/policy.md "Loading policies", "One policy at a time"):
 * the admin policies are replaced whole or one policy at a time through the admin API (or the
 * CLI), the policy file re-read on request. Each change is validated whole first — a refused set
 * changes nothing and the running set stays in force — then stored (admin policies), audited with
 * the versions before and after (and a single policy's change with the policy before and after),
 * and in force for the next decision. What another process stored is taken up by
 * {@link refreshPolicies}.
 */

export interface PolicyDeps {
  policy: PolicyEngine
  stores: Stores
  clock: Clock
}

/** One policy as the admin API shows it: in force, or an admin policy switched off (`disabled`). */
export interface PolicyView {
  id: string
  effect: 'permit' | 'forbid'
  source: string
  resource?: string
  annotations: Record<string, string>
  text: string
  /** An admin policy kept but not in force (docs/policy.md "One policy at a time"). */
  disabled: boolean
}

/** The set in force as the admin API shows it. */
export interface PolicySetView {
  version: string
  /** Every policy in force, then the disabled admin policies. */
  policies: PolicyView[]
  /** The admin policies' Cedar text ("" when none), as loaded (disabled ones in their comment blocks). */
  admin_policies: string
  admin_loaded_at?: number
  admin_loaded_by?: string
}

function viewOf(p: { id: string; effect: 'permit' | 'forbid'; resource: string | undefined; annotations: Record<string, string>; text: string }, source: string, disabled: boolean): PolicyView {
  return { id: p.id, effect: p.effect, source, ...(p.resource !== undefined ? { resource: p.resource } : {}), annotations: p.annotations, text: p.text, disabled }
}

/** The disabled policies of the admin text in force (none when it no longer parses alone). */
function disabledViews(adminText: string): PolicyView[] {
  try {
    return adminEntries(adminText).flatMap((e) => (e.disabled ? [viewOf(e.policy, 'admin', true)] : []))
  } catch (e) {
    if (e instanceof ConfigError) return []
    throw e
  }
}

function policyViews(policy: PolicyEngine): PolicyView[] {
  const set = policy.set
  return [...[...set.policies.values()].map((p) => viewOf(p, set.sourceOf.get(p.id) ?? '(generated)', false)), ...disabledViews(policy.adminText)]
}

export async function viewPolicySet(deps: PolicyDeps): Promise<PolicySetView> {
  const policy = deps.policy
  const latest = await deps.stores.policySets.latest()
  return {
    version: policy.set.version,
    policies: policyViews(policy),
    admin_policies: policy.adminText,
    ...(latest ? { admin_loaded_at: latest.loadedAt, admin_loaded_by: latest.loadedBy } : {}),
  }
}

/** One policy in force, or a disabled admin policy; 404 `not_found` otherwise. */
export function getPolicy(deps: Pick<PolicyDeps, 'policy'>, id: string): PolicyView {
  const found = policyViews(deps.policy).find((p) => p.id === id)
  if (!found) throw notFound(`no policy ${id}`)
  return found
}

/** A {@link ConfigError} from validating a set, as the API's 400 `invalid_policy`. */
export function asInvalidPolicy<T>(fn: () => T): T {
  try {
    return fn()
  } catch (e) {
    if (e instanceof ConfigError) throw new InvalidPolicy(e.issues)
    throw e
  }
}

async function audit(deps: Pick<PolicyDeps, 'clock'> & { stores: Pick<TxStores, 'audit'> }, before: string, set: PolicySet, what: string, by: string): Promise<void> {
  const at = deps.clock.now()
  await deps.stores.audit.insert({ at, action: 'policy.load', decision: 'allow', reason: `${what} by ${by}: ${before} → ${set.version} (${set.policies.size} policies)`, policyVersion: set.version })
}

/**
 * Replaces the admin policies with `text` (Cedar; "" clears them). Validated with the file's and
 * the generated policies; refused with 400 `invalid_policy` naming every problem, nothing changed.
 */
export async function loadAdminPolicies(deps: PolicyDeps, text: string, by: string): Promise<PolicySetView> {
  const set = compileAdmin(deps.policy, text)
  const before = deps.policy.version
  // Stored and audited in one durable write before it is in force: a restart keeps what was answered.
  await deps.stores.durably(async (tx) => {
    await tx.locks.policies()
    await tx.policySets.insert({ version: set.version, text, loadedAt: deps.clock.now(), loadedBy: by })
    await audit({ ...deps, stores: tx }, before, set, text.trim() === '' ? 'admin policies cleared' : 'admin policies loaded', by)
  })
  deps.policy.install(set, { adminText: text })
  return viewPolicySet(deps)
}

/**
 * Re-reads the policy file and the stored admin policies (another process — the CLI — may have
 * changed them) and puts the resulting set in force; refused with 400 `invalid_policy`, nothing changed.
 */
export async function reloadPolicies(deps: PolicyDeps, by: string): Promise<PolicySetView> {
  const before = deps.policy.version
  const adminText = (await deps.stores.policySets.latest())?.text ?? ''
  const set = asInvalidPolicy(() => deps.policy.reload({ adminText }))
  if (set.version !== before) await audit(deps, before, set, 'policies reloaded', by)
  return viewPolicySet(deps)
}

/**
 * The set `adminText` makes with the file's and the generated policies, its disabled blocks
 * checked too; refused with 400 `invalid_policy` naming every problem.
 */
export function compileAdmin(policy: PolicyEngine, adminText: string): PolicySet {
  const set = asInvalidPolicy(() => policy.compileWith({ adminText }))
  const problems = adminTextProblems(adminText, new Set(set.policies.keys()))
  if (problems.length > 0) throw new InvalidPolicy(problems)
  return set
}

export type PolicyAction = 'create' | 'replace' | 'disable' | 'enable' | 'delete'

/** What a change of one admin policy answers: the policy after it (absent once deleted) and the version now in force. */
export interface PolicyChangeView {
  id: string
  action: PolicyAction
  version: string
  policy?: PolicyView
}

const PAST: Record<PolicyAction, string> = { create: 'created', replace: 'replaced', disable: 'disabled', enable: 'enabled', delete: 'deleted' }

/** A policy of the set in force that is not the admin's, as the refusal names it. */
function notAdmin(policy: PolicyEngine, id: string): string | undefined {
  const source = policy.set.policies.has(id) ? policy.set.sourceOf.get(id) : undefined
  if (source === undefined || source === 'admin') return undefined
  return source === '(generated)' ? `policy ${id} is generated from the configuration's grants: change the grants` : `policy ${id} is the policy file's (${source}): change it there`
}

/** The admin policy `id` of a stored text: refused when it is the file's or generated, or has no @id of its own. */
function entryOf(policy: PolicyEngine, entries: readonly AdminEntry[], id: string): AdminEntry | undefined {
  const other = notAdmin(policy, id)
  if (other !== undefined) throw conflict(other)
  const entry = entries.find((e) => e.id === id)
  // Its id is its position: changed alone, the policies after it would take other ids.
  if (entry && !entry.named) throw conflict(`policy ${id} has no @id of its own (its id is its position in the admin policies): give it one in the whole text (PUT /admin/policies) first`)
  return entry
}

function storedEntries(adminText: string): AdminEntry[] {
  return asInvalidPolicy(() => adminEntries(adminText))
}

/**
 * One policy's text for `PUT /admin/policies/{id}`: exactly one Cedar policy, whose `@id` is the
 * path's or absent (then the path's is given to it). Comments around it are not kept.
 */
function onePolicy(id: string, given: string): string {
  const parsed = asInvalidPolicy(() => parsePolicyText(given, 'admin', 'policy'))
  if (parsed.length !== 1) throw new InvalidPolicy([`policy ${id}: the text must be exactly one Cedar policy (found ${parsed.length})`])
  const policy = parsed[0]!.policy
  const named = policy.annotations.id
  if (named === undefined) return `@id(${JSON.stringify(id)})\n${policy.text}`
  if (named !== id) throw new InvalidPolicy([`policy ${id}: its @id(${JSON.stringify(named)}) is not the path's ${id}`])
  return policy.text
}

/**
 * Creates or replaces the admin policy `id` (`PUT /admin/policies/{id}`). A disabled policy
 * replaced stays disabled; its text is validated as if it were in force, so enabling it later
 * needs nothing more. The file's and the generated policies are 409 `conflict`.
 */
export function putPolicy(deps: PolicyDeps, id: string, given: string, by: string): Promise<PolicyChangeView> {
  const text = onePolicy(id, given)
  return changePolicy(deps, id, by, (stored, entry) => {
    if (!entry) return { action: 'create', next: appended(stored, text) }
    if (!entry.disabled) return { action: 'replace', next: splice(stored, entry.start, entry.end, text) }
    // Validated in force first: the block itself is a comment to Cedar.
    compileAdmin(deps.policy, splice(stored, entry.start, entry.end, text))
    return { action: 'replace', next: splice(stored, entry.start, entry.end, disabledBlock(id, text)) }
  })
}

/** Deletes the admin policy `id`, in force or disabled; 404 `not_found` when there is none. */
export function deletePolicy(deps: PolicyDeps, id: string, by: string): Promise<PolicyChangeView> {
  return changePolicy(deps, id, by, (stored, entry) => {
    if (!entry) throw notFound(`no admin policy ${id}`)
    return { action: 'delete', next: splice(stored, entry.start, entry.end, '') }
  })
}

/**
 * Takes the admin policy `id` out of force (kept, listed with `disabled: true`) or puts it back.
 * Already so: nothing is written.
 */
export function setPolicyEnabled(deps: PolicyDeps, id: string, enabled: boolean, by: string): Promise<PolicyChangeView> {
  return changePolicy(deps, id, by, (stored, entry) => {
    if (!entry) throw notFound(`no admin policy ${id}`)
    if (entry.disabled !== enabled) return { action: enabled ? 'enable' : 'disable' }
    return enabled ? { action: 'enable', next: splice(stored, entry.start, entry.end, entry.text) } : { action: 'disable', next: splice(stored, entry.start, entry.end, disabledBlock(id, entry.text)) }
  })
}

/**
 * One change of one admin policy, all or nothing: inside one durable transaction the newest
 * stored admin text is read (another process may have stored one this one has not taken up), the
 * change applied to it, the whole set validated, then the text stored and the audit row appended
 * with the policy before and after in its `detail`. Only after the commit is the set in force.
 */
async function changePolicy(
  deps: PolicyDeps,
  id: string,
  by: string,
  edit: (stored: string, entry: AdminEntry | undefined) => { action: PolicyAction; next?: string },
): Promise<PolicyChangeView> {
  const engine = deps.policy
  const other = notAdmin(engine, id)
  if (other !== undefined) throw conflict(other)
  const now = deps.clock.now()
  const done = await deps.stores.durably(async (tx) => {
    // Another instance's change of the stored text waits for this one, then edits what it stored.
    await tx.locks.policies()
    const stored = (await tx.policySets.latest())?.text ?? ''
    const before = storedEntries(stored)
    const entry = entryOf(engine, before, id)
    const view = (e: AdminEntry | undefined) => (e ? viewOf(e.policy, 'admin', e.disabled) : null)
    const change = edit(stored, entry)
    if (change.next === undefined) return { action: change.action, set: undefined, after: view(entry) }
    const set = compileAdmin(engine, change.next)
    const after = storedEntries(change.next).find((e) => e.id === id)
    await tx.policySets.insert({ version: set.version, text: change.next, loadedAt: now, loadedBy: by })
    await tx.audit.insert({
      at: now,
      action: `policy.${change.action}`,
      decision: 'allow',
      reason: `policy ${id} ${PAST[change.action]} by ${by}: ${engine.version} → ${set.version}`,
      policyVersion: set.version,
      detail: auditDetail({ kind: 'policy', key: id, before: view(entry), after: view(after) }),
    })
    return { action: change.action, set, text: change.next, after: view(after) }
  })
  // Already so: nothing written, the policy as it is.
  if (done.set === undefined) return { id, action: done.action, version: deps.policy.version, ...(done.after ? { policy: done.after } : {}) }
  installText(deps, engine, done.set, done.text)
  return { id, action: done.action, version: done.set.version, ...(done.after ? { policy: done.after } : {}) }
}

/**
 * Puts a stored admin text in force. The catalog may have rebuilt the engine meanwhile (its own
 * generated policies): then the set is built again by the engine in force.
 */
function installText(deps: Pick<PolicyDeps, 'policy'>, compiledBy: PolicyEngine, set: PolicySet, adminText: string): void {
  const current = deps.policy
  try {
    current.install(current === compiledBy ? set : current.compileWith({ adminText }), { adminText })
  } catch (e) {
    // Stored already: the refresh takes it up, or logs why it cannot.
    if (!(e instanceof ConfigError)) throw e
  }
}

/**
 * A change's `{kind, key, before, after}` for its audit row, as the catalog's: whole when it fits
 * the row's bound, else its SHA-256 and what it was about (cut, it would no longer be JSON).
 */
function auditDetail(detail: { kind: 'policy'; key: string; before: unknown; after: unknown }): string {
  const text = JSON.stringify(detail)
  if (text.length <= AUDIT_FIELD_LIMITS.detail) return text
  return JSON.stringify({ kind: detail.kind, key: detail.key, truncated: true, sha256: createHash('sha256').update(text).digest('hex') })
}

/** Stored admin texts that did not validate at a broker, so each is logged (and compiled) once. */
const refused = new WeakMap<object, string>()

/**
 * Takes up admin policies another process stored (the CLI, another broker instance on the same
 * database): when the newest stored text is not the one in force, the set it makes is put in
 * force. One that does not validate here (this broker's configuration differs) leaves the running
 * set in force, logged once. Returns whether the set changed. The server runs it every second.
 */
export async function refreshPolicies(deps: Pick<PolicyDeps, 'policy' | 'stores'> & { logger: Logger }): Promise<boolean> {
  const engine = deps.policy
  const seen = engine.adminText
  const text = (await deps.stores.policySets.latest())?.text ?? ''
  if (text === seen || refused.get(deps.stores) === text) return false
  // Changed here while the row was read (a change of this process, a catalog rebuild): the next run looks again.
  if (deps.policy !== engine || engine.adminText !== seen) return false
  try {
    engine.install(engine.compileWith({ adminText: text }), { adminText: text })
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    refused.set(deps.stores, text)
    deps.logger.error('the stored admin policies do not validate: the running set stays in force', { issues: e.issues.slice(0, 10) })
    return false
  }
  refused.delete(deps.stores)
  return true
}
