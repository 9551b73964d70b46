import type { Config } from '../config.js'
import { OAuthError, temporarilyUnavailable } from '../errors.js'
import { endTask, type TaskDeps } from './lifecycle.js'

type RetirementDeps = TaskDeps & { config: Pick<Config, 'tasks' | 'resources' | 'subjectIssuers' | 'workloads' | 'workloadIssuers'> }

/**
 * Why an open task no longer has a place in the catalog, or undefined when it has: its workload
 * was removed or switched off, the issuer that attests its workload was, its user's issuer was,
 * or one of its resources was. A task the catalog no longer admits could not get another token
 * anyway; ending it also revokes the tokens it holds (feed events included).
 */
export function retirementOf(config: RetirementDeps['config'], task: { workloadId: string; subjectIssuer: string; resources: string }): string | undefined {
  const workload = config.workloads.find((w) => w.id === task.workloadId)
  if (!workload) return `workload ${task.workloadId} removed from the configuration`
  if (!workload.enabled) return `workload ${task.workloadId} disabled`
  const attestedBy = workload.attestation?.issuer
  if (attestedBy !== undefined && !config.workloadIssuers.some((wi) => (wi.kind === 'spiffe' ? `spiffe://${wi.trustDomain}` : wi.issuer) === attestedBy)) return `workload issuer ${attestedBy} removed or disabled`
  if (!config.subjectIssuers.some((si) => si.issuer === task.subjectIssuer)) return `subject issuer ${task.subjectIssuer} removed or disabled`
  const missing = (JSON.parse(task.resources) as { resource: string }[]).find((r) => !config.resources.some((known) => known.uri === r.resource))
  if (missing) return `resource ${missing.resource} removed or disabled`
  return undefined
}

/**
 * Refuses to record `task` — or a token of it — when the catalog in force no longer admits it
 * ({@link retirementOf}): the request was verified (its workload, user, issuer) under a catalog
 * that changed before its write, and the sweep that ended such tasks ran before this one existed.
 * 503 `temporarily_unavailable`: asked again, the request is decided by the catalog in force.
 */
export function checkAdmitted(config: RetirementDeps['config'], task: { id: string; workloadId: string; subjectIssuer: string; resources: string }): void {
  const why = retirementOf(config, task)
  if (why !== undefined) throw temporarilyUnavailable(1, `the catalog changed during the request: task ${task.id}: ${why}`)
}

/**
 * Ends (revokes) every open task the catalog in force no longer admits ({@link retirementOf}),
 * each audited as ended by `by` with the reason. Run after every catalog change, and by the
 * server at start for what the file changed while it was down. Returns the tasks it ended, the
 * sub-tasks ended with their parents included.
 */
export function revokeTasksOutsideCatalog(deps: RetirementDeps, by: string): string[] {
  const revoked: string[] = []
  for (const task of deps.stores.tasks.openRefs()) {
    const why = retirementOf(deps.config, task)
    if (why === undefined) continue
    try {
      const ended = endTask(deps, task.id, 'revoked', { kind: 'admin', id: `${by} (${why})` })
      // Its sub-tasks end with it: the change ended them too.
      revoked.push(task.id, ...(ended.subtasks_revoked ?? []))
    } catch (e) {
      // A sub-task ended already, with its parent earlier in this loop.
      if (!(e instanceof OAuthError && e.code === 'task_not_active')) throw e
    }
  }
  return revoked
}
