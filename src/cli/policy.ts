import { readFileSync } from 'node:fs'
import type { Deps } from '../broker.js'
import type { Config } from '../config.js'
import { InvalidPolicy } from '../errors.js'
import { asInvalidPolicy, compileAdmin, deletePolicy, getPolicy, loadAdminPolicies, putPolicy, setPolicyEnabled, viewPolicySet } from '../policy/manage.js'
import { openStores } from '../store/open.js'
import { dryRun, type DryRunRequest } from '../tasks/dry-run.js'

export const POLICY_USAGE = `  policy show                print the policy set in force (version, every policy with its source)
  policy validate <file>     check a Cedar file as the admin policies, with the file's and the generated ones
  policy load <file>         replace the admin policies with a Cedar file (a running broker on the same
                             database puts it in force within a second)
  policy clear               remove the admin policies (works even when they no longer validate)
  policy get <id>            print one policy in force, or a disabled admin policy (GET /admin/policies/{id})
  policy put <id> <file|->   create or replace one admin policy: one Cedar policy, its @id the given id
                             or none ("-" reads stdin)
  policy disable <id>        take an admin policy out of force, keeping it (listed with disabled: true)
  policy enable <id>         put a disabled admin policy back in force
  policy delete <id>         delete an admin policy
  policy evaluate <json|->   dry run: what would happen to an open_task, exchange or call_tool
                             (the body of POST /admin/policy/evaluate; "-" reads stdin); writes nothing
`

const print = (v: unknown) => process.stdout.write(JSON.stringify(v, null, 2) + '\n')
const read = (path: string) => readFileSync(path === '-' ? 0 : path, 'utf8')

/** `policy clear` without a broker: the stored admin policies may be what keeps it from starting. */
export async function clearAdminPoliciesOffline(config: Pick<Config, 'database'>, now: number): Promise<void> {
  const { database, stores } = await openStores(config.database)
  try {
    await stores.durably(async (tx) => {
      await tx.locks.policies()
      await tx.policySets.insert({ version: '(cleared)', text: '', loadedAt: now, loadedBy: 'admin:cli' })
      await tx.audit.insert({ at: now, action: 'policy.load', decision: 'allow', reason: 'admin policies cleared by admin:cli (offline)' })
    })
  } finally {
    await database.close()
  }
  print({ admin_policies: '', cleared: 'offline' })
}

/** `policy …` commands; returns the exit status (2: the policy set was refused). */
export async function policyCommand(deps: Deps, sub: string | undefined, arg: string | undefined, arg2?: string): Promise<number> {
  try {
    switch (sub) {
      case 'show':
        print(await viewPolicySet(deps))
        return 0
      case 'validate': {
        if (!arg) return 64
        const set = compileAdmin(deps.policy, read(arg))
        print({ valid: true, version: set.version, policies: set.policies.size })
        return 0
      }
      case 'load':
        if (!arg) return 64
        print(await loadAdminPolicies(deps, read(arg), 'admin:cli'))
        return 0
      case 'clear':
        print(await loadAdminPolicies(deps, '', 'admin:cli'))
        return 0
      case 'get':
        if (!arg) return 64
        print(getPolicy(deps, arg))
        return 0
      case 'put':
        if (!arg || !arg2) return 64
        print(await putPolicy(deps, arg, read(arg2), 'admin:cli'))
        return 0
      case 'disable':
      case 'enable':
        if (!arg) return 64
        print(await setPolicyEnabled(deps, arg, sub === 'enable', 'admin:cli'))
        return 0
      case 'delete':
        if (!arg) return 64
        print(await deletePolicy(deps, arg, 'admin:cli'))
        return 0
      case 'evaluate': {
        if (!arg) return 64
        const body = JSON.parse(read(arg)) as DryRunRequest & { policies?: string }
        const { policies, ...request } = body
        const policy = policies === undefined ? deps.policy : deps.policy.candidate(asInvalidPolicy(() => deps.policy.compileWith({ adminText: policies })))
        print({ ...(await dryRun(deps, policy, { ...request, dpop_bound: request.dpop_bound ?? false })), candidate: policies !== undefined })
        return 0
      }
      default:
        return 64
    }
  } catch (e) {
    // The HTTP API's error body (PUT /admin/policies answers 400 invalid_policy with problems).
    if (e instanceof InvalidPolicy) {
      process.stderr.write(JSON.stringify({ error: 'invalid_policy', error_description: 'policy set refused; nothing changed', problems: e.problems }) + '\n')
      return 2
    }
    throw e
  }
}
