import type { Clock } from '../clock.js'
import { ConfigError } from '../config.js'
import { InvalidPolicy } from '../errors.js'
import type { Stores, TxStores } from '../store/stores.js'
import type { PolicySet } from './cedar.js'
import type { PolicyEngine } from './engine.js'

/**
 * Changing the policy set at run time (docs/policy.md "Loading policies"): the admin policies are
 * replaced through the admin API (or the CLI), the policy file re-read on request. Each change is
 * validated whole first — a refused set changes nothing and the running set stays in force — then
 * stored (admin policies), audited with the versions before and after, and in force for the next
 * decision.
 */

export interface PolicyDeps {
  policy: PolicyEngine
  stores: Stores
  clock: Clock
}

/** The set in force as the admin API shows it. */
export interface PolicySetView {
  version: string
  policies: { id: string; effect: 'permit' | 'forbid'; source: string; resource?: string; annotations: Record<string, string>; text: string }[]
  /** The admin policies' Cedar text ("" when none), as loaded. */
  admin_policies: string
  admin_loaded_at?: number
  admin_loaded_by?: string
}

export async function viewPolicySet(deps: PolicyDeps): Promise<PolicySetView> {
  const set = deps.policy.set
  const latest = await deps.stores.policySets.latest()
  return {
    version: set.version,
    policies: [...set.policies.values()].map((p) => ({
      id: p.id,
      effect: p.effect,
      source: set.sourceOf.get(p.id) ?? '(generated)',
      ...(p.resource !== undefined ? { resource: p.resource } : {}),
      annotations: p.annotations,
      text: p.text,
    })),
    admin_policies: deps.policy.adminText,
    ...(latest ? { admin_loaded_at: latest.loadedAt, admin_loaded_by: latest.loadedBy } : {}),
  }
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
  const set = asInvalidPolicy(() => deps.policy.compileWith({ adminText: text }))
  const before = deps.policy.version
  // Stored and audited in one durable write before it is in force: a restart keeps what was answered.
  await deps.stores.durably(async (tx) => {
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
