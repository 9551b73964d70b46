import { OAuthError } from '../errors.js'
import { endTask, type TaskDeps } from '../tasks/lifecycle.js'
import { retirementOf, type AdmissionConfig } from './admission.js'

type RetirementDeps = TaskDeps & { config: AdmissionConfig & TaskDeps['config'] }

/**
 * Ends (revokes) every open task the catalog in force no longer admits ({@link retirementOf}),
 * each audited as ended by `by` with the reason. Run after every catalog change, and by the
 * server at start for what the file changed while it was down. Returns the tasks it ended, the
 * sub-tasks ended with their parents included.
 */
export async function revokeTasksOutsideCatalog(deps: RetirementDeps, by: string): Promise<string[]> {
  const revoked: string[] = []
  for (const task of await deps.stores.tasks.openRefs()) {
    const why = retirementOf(deps.config, task)
    if (why === undefined) continue
    try {
      const ended = await endTask(deps, task.id, 'revoked', { kind: 'admin', id: `${by} (${why})` })
      // Its sub-tasks end with it: the change ended them too.
      revoked.push(task.id, ...(ended.subtasks_revoked ?? []))
    } catch (e) {
      // A sub-task ended already, with its parent earlier in this loop.
      if (!(e instanceof OAuthError && e.code === 'task_not_active')) throw e
    }
  }
  return revoked
}
