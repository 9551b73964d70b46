import type { Config } from '../config.js'
import { oauthClientWorkload } from '../authorize/request.js'
import { OAuthError } from '../errors.js'
import type { OpenTaskRef } from '../store/stores.js'
import { endTask, type TaskDeps } from '../tasks/lifecycle.js'

type RetirementDeps = TaskDeps & { config: Pick<Config, 'tasks' | 'resources' | 'subjectIssuers' | 'workloads' | 'workloadIssuers' | 'authorization'> }

/**
 * Why an open task no longer has a place in the catalog, or undefined when it has: its workload
 * was removed or switched off, its OAuth client no longer matches that workload, the issuer that
 * attests its workload was removed or switched off, its user's issuer was, or one of its
 * resources was. A task the catalog no longer admits could not get another token
 * anyway; ending it also revokes the tokens it holds (feed events included).
 */
function retirementOf(config: RetirementDeps['config'], task: OpenTaskRef): string | undefined {
  const workload = config.workloads.find((w) => w.id === task.workloadId)
  if (!workload) return `workload ${task.workloadId} removed from the configuration`
  if (!workload.enabled) return `workload ${task.workloadId} disabled`
  // A task the user consented to for an OAuth client: the client must still be one of its workload's.
  if (task.clientId !== null && oauthClientWorkload(config, task.clientId)?.id !== workload.id) return `client ${task.clientId} no longer one of workload ${workload.id}'s`
  const attestedBy = workload.attestation?.issuer
  if (attestedBy !== undefined && !config.workloadIssuers.some((wi) => (wi.kind === 'spiffe' ? `spiffe://${wi.trustDomain}` : wi.issuer) === attestedBy)) return `workload issuer ${attestedBy} removed or disabled`
  if (!config.subjectIssuers.some((si) => si.issuer === task.subjectIssuer)) return `subject issuer ${task.subjectIssuer} removed or disabled`
  const missing = (JSON.parse(task.resources) as { resource: string }[]).find((r) => !config.resources.some((known) => known.uri === r.resource))
  if (missing) return `resource ${missing.resource} removed or disabled`
  return undefined
}

/**
 * Ends (revokes) every open task the catalog in force no longer admits ({@link retirementOf}),
 * each audited as ended by `by` with the reason. Run after every catalog change, and by the
 * server at start for what the file changed while it was down. Returns the tasks it ended.
 */
export function revokeTasksOutsideCatalog(deps: RetirementDeps, by: string): string[] {
  const revoked: string[] = []
  for (const task of deps.stores.tasks.openRefs()) {
    const why = retirementOf(deps.config, task)
    if (why === undefined) continue
    try {
      endTask(deps, task.id, 'revoked', { kind: 'admin', id: `${by} (${why})` })
      revoked.push(task.id)
    } catch (e) {
      // A sub-task ended already, with its parent earlier in this loop.
      if (!(e instanceof OAuthError && e.code === 'task_not_active')) throw e
    }
  }
  return revoked
}
