import { SESSION_REVOCATION_RETENTION } from '../config.js'
import { invalidRequest } from '../errors.js'
import type { TxStores } from '../store/stores.js'
import { ownerSub, type TaskDeps } from './lifecycle.js'

/**
 * Inside a write that opens a task bound to a session, or mints a token for one: the session is
 * not revoked, and no revocation of it commits before this write does. Both take the session's
 * lock first, so on PostgreSQL (instances writing at once) a revocation either committed before
 * (and is read here: refused) or waits for this write to commit (and then ends what it wrote).
 */
export async function holdSession(tx: Pick<TxStores, 'locks' | 'sessions'>, subjectIssuer: string, sid: string, what: string): Promise<void> {
  await tx.locks.session(subjectIssuer, sid)
  if (await tx.sessions.isRevoked(subjectIssuer, sid)) throw invalidRequest('subject_token session has been revoked', `session ${sid} revoked during ${what}`)
}

/**
 * Ends a user's session at the broker (an admin, or the IdP telling us): its subject tokens are
 * refused from now on, and every open task bound to it is revoked with all its tokens — in one
 * durable transaction, with a `session_revoked` event and one `task_revoked` event per task.
 */
export async function revokeSession(deps: TaskDeps, subjectIssuer: string, sid: string, by: string): Promise<{ tasks_revoked: string[]; tokens_revoked: number} > {
  const now = deps.clock.now()
  const result = await deps.stores.durably(async (tx) => {
    // Held to commit: a write opening a task of this session waits, then refuses (see holdSession);
    // one that took the lock first has committed, and its task is in the list below.
    await tx.locks.session(subjectIssuer, sid)
    await tx.sessions.revoke(subjectIssuer, sid, now, now + SESSION_REVOCATION_RETENTION)
    const tasks = await tx.tasks.listOpenBySession(subjectIssuer, sid)
    let tokens = 0
    let relevantUntil = now
    const audiences = new Set<string>()
    for (const task of tasks) {
      await tx.tasks.end(task.id, 'revoked', now, `session revoked by ${by}`)
      tokens += await tx.tokens.revokeByTask(task.id, now)
      const until = Math.max(now, await tx.tokens.maxExpOfTask(task.id) ?? now)
      relevantUntil = Math.max(relevantUntil, until)
      // Only resources holding a token of the task hear of it (and so of the user and session).
      const taskAudiences = await tx.tokens.audiencesOfTask(task.id)
      for (const a of taskAudiences) audiences.add(a)
      await tx.revocations.insert({ at: now, kind: 'task_revoked', taskId: task.id, sid, sub: task.userSub, subjectIssuer, relevantUntil: until, audiences: taskAudiences })
    }
    await tx.revocations.insert({ at: now, kind: 'session_revoked', sid, sub: tasks[0]?.userSub ?? null, subjectIssuer, relevantUntil, audiences: [...audiences] })
    await tx.audit.insert({ at: now, action: 'session.revoke', decision: 'allow', reason: `session ${sid} of ${subjectIssuer} revoked by ${by}; ${tasks.length} task(s), ${tokens} token(s)`, userSub: tasks[0] ? ownerSub(deps, tasks[0]) : null })
    return { tasks_revoked: tasks.map((t) => t.id), tokens_revoked: tokens }
  })
  // After the commit: requests waiting for the approval of one of these tasks learn it ended.
  for (const id of result.tasks_revoked) deps.approvals?.notify(id)
  return result
}
