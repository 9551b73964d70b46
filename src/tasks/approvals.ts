/**
 * Human approval of a task. A task the policy opened `pending_approval` is approved or denied —
 * once, before its approval request lapses — by its own user or by an admin; never by its
 * workload. Every decision and every refused attempt by an authenticated caller is audited, and
 * each decision wakes the requests waiting on the task (`GET /tasks/{id}?wait=`).
 *
 * Owns the decision rules and the in-process waiters. May import the store, the task lifecycle
 * and errors; never hono.
 */
import { OAuthError, invalidRequest, taskNotActive } from '../errors.js'
import { callerName, getTaskFor, ownerSub, taskState, viewTask, type Caller, type TaskDeps, type TaskView } from './lifecycle.js'
import type { TaskRow } from '../store/stores.js'

export type ApprovalDecision = 'approve' | 'deny'

/** What deciding needs: the task dependencies and the waiters a decision wakes. */
export type ApprovalDeps = TaskDeps & { approvals: Pick<ApprovalWaiters, 'notify'> }

/** Longest reason accepted with a decision, in characters (Unicode code points). */
export const REASON_MAX = 500

/**
 * Approves a `pending_approval` task: it becomes `active` and its workload may exchange tokens
 * for it. `reason` is optional. The task's user (from another session than the one the task is
 * bound to) or an admin decides; see {@link checkDecider}.
 */
export function approveTask(deps: ApprovalDeps, id: string, caller: Caller, reason?: string): Promise<TaskView> {
  return decideTask(deps, 'approve', id, caller, reason)
}

/**
 * Denies a `pending_approval` task: it ends `denied` (final: no token is ever minted for it),
 * `endReason` `denied by <who>: <reason>`. `reason` is required.
 */
export function denyTask(deps: ApprovalDeps, id: string, caller: Caller, reason: string | undefined): Promise<TaskView> {
  return decideTask(deps, 'deny', id, caller, reason)
}

async function decideTask(deps: ApprovalDeps, how: ApprovalDecision, id: string, caller: Caller, reason: string | undefined): Promise<TaskView> {
  try {
    // Anyone who may not see the task learns nothing: not found, whatever it is (getTaskFor).
    const row = await getTaskFor(deps, id, caller)
    checkDecider(row, caller, how)
    checkReason(reason, how === 'deny')
    const now = deps.clock.now()
    const state = taskState(row, now)
    if (state !== 'pending_approval') throw taskNotActive(`task is ${state}`)
    const text = `${how === 'approve' ? 'approved' : 'denied'} by ${callerName(caller)}${reason === undefined ? '' : `: ${reason}`}`
    const won = await deps.stores.durably(async (tx) => {
      // Conditional on the task still awaiting approval at `now`: of two racing decisions one wins.
      const changed = how === 'approve' ? await tx.tasks.approve(id, now) : await tx.tasks.deny(id, now, text)
      if (!changed) return false
      await tx.audit.insert({ at: now, action: `task.${how}`, decision: 'allow', reason: text, userSub: ownerSub(deps, row), workloadId: row.workloadId, taskId: id })
      return true
    })
    // Another decision committed between the read above and the write.
    if (!won) throw taskNotActive(`task is ${taskState((await deps.stores.tasks.get(id)) ?? row, now)}`)
    // After the commit: a woken waiter reads the decided task.
    deps.approvals.notify(id)
    return viewTask((await deps.stores.tasks.get(id))!, now)
  } catch (e) {
    await auditDecisionRefused(deps, how, id, caller, e)
    throw e
  }
}

/** A caller who may see the task but may not decide it: 403, not 404 — the task's existence is no secret to them. */
const mayNotDecide = (description: string, detail: string) => new OAuthError('unauthorized_client', 403, description, detail)

/**
 * Who may decide. The workload never: approving its own task would make the approval
 * meaningless. A user approves only from a session other than the one the task is bound to,
 * because the agent holds that session's token (it presented it to open the task and presents it
 * at every exchange): a decision made with it could be the agent's. A task bound to no session
 * gives no way to tell the user's token from the agent's copy, so only an admin approves it.
 * Denying is open to the user's every session: it only ends the task, which the holder of that
 * session could do anyway (`POST /tasks/{id}/revoke`).
 */
function checkDecider(row: TaskRow, caller: Caller, how: ApprovalDecision): void {
  if (caller.kind === 'workload') throw mayNotDecide('a task\'s workload cannot decide its approval', `workload ${caller.actor.workload.id} tried to ${how} its own task`)
  if (caller.kind !== 'user' || how !== 'approve') return
  if (row.sid === null) throw mayNotDecide('this task is bound to no session: only an admin can approve it', 'user approval of a task bound to no session')
  if (caller.subject.sid === row.sid) throw mayNotDecide('approve from another session than the one the task was opened with', `approval presented the task's own session ${row.sid}`)
}

/** A reason is 1–500 characters of text without control characters (it is shown in audit rows and end reasons). */
function checkReason(reason: string | undefined, required: boolean): void {
  if (reason === undefined) {
    if (required) throw invalidRequest('"reason" is required')
    return
  }
  const length = [...reason].length
  if (length < 1 || length > REASON_MAX) throw invalidRequest(`"reason" must be 1 to ${REASON_MAX} characters`)
  if (/\p{Cc}/u.test(reason)) throw invalidRequest('"reason" must not contain control characters')
}

/**
 * Writes the audit row of a refused decision by an authenticated caller (an {@link OAuthError};
 * anything else is not a decision). Routes call it too, for a body refused before
 * {@link approveTask}/{@link denyTask} run.
 */
export async function auditDecisionRefused(deps: Pick<TaskDeps, 'stores' | 'clock'>, how: ApprovalDecision, id: string, caller: Caller, e: unknown): Promise<void> {
  if (!(e instanceof OAuthError)) return
  await deps.stores.audit.insert({
    at: deps.clock.now(),
    action: `task.${how}`,
    decision: 'deny',
    reason: `${callerName(caller)}: ${e.detail}`,
    error: e.code,
    userSub: caller.kind === 'user' ? caller.subject.sub : null,
    workloadId: caller.kind === 'workload' ? caller.actor.workload.id : null,
    taskId: id,
  })
}

/** Who hears of task changes through {@link ApprovalWaiters.subscribe}. */
export interface TaskChangeListener {
  /** May answer through a promise (it reads the task): a rejection is the listener's own, like a throw. */
  changed(taskId: string): void | Promise<void>
  closed(): void
}

/** Why a wait ended. */
export type WaitOutcome = 'decided' | 'timeout' | 'aborted' | 'closed' | 'full'

/** Requests held until a task is decided (`GET /tasks/{id}?wait=`), in this process. */
export interface ApprovalWaiters {
  /**
   * Resolves when the task is decided ({@link notify}), after `ms`, when `signal` aborts (the
   * client went away) or when the waiters are closed; at once (`full`) when the broker-wide or
   * per-task bound is reached, so a flood of waits holds no more than the bound.
   */
  wait(taskId: string, ms: number, signal?: AbortSignal): Promise<WaitOutcome>
  /**
   * Wakes every wait on the task: called after a decision, an ending or an opening committed.
   * Every subscriber hears of it too.
   */
  notify(taskId: string): void
  /**
   * Tells `listener` of every {@link notify} in this process — a task opened, decided or ended —
   * and once that the waiters closed (the database is closing). Returns the unsubscribe. The
   * console's live task list listens here.
   */
  subscribe(listener: TaskChangeListener): () => void
  /** Releases every wait (`closed`) and answers later ones at once: the broker is closing. */
  close(): void
  /** Waits held now. */
  size(): number
}

export const WAITER_LIMITS = { total: 1000, perTask: 8 } as const

/**
 * How waiters notice decisions committed by another process sharing the database (the CLI,
 * another broker instance): while any wait is held, every `intervalMs` one cheap `changed()`
 * check; only when it says so, each waited task is read again.
 */
export interface DecisionWatch {
  intervalMs: number
  /** Whether another connection has committed since the last call. */
  changed(): boolean
  /** Whether the task still awaits a decision. */
  isPending(taskId: string): Promise<boolean>
}

/** How often a held wait looks for another process's decisions (as the revocation feed's head poll). */
export const WATCH_INTERVAL_MS = 250

/**
 * A {@link DecisionWatch} over the store's change watch on tasks (SQLite: `PRAGMA data_version`,
 * any commit by another connection; PostgreSQL: the deciding transaction's announcement). This
 * process's own decisions notify the waiters directly.
 */
export function storeDecisionWatch(deps: Pick<TaskDeps, 'stores' | 'clock'>): DecisionWatch {
  const changed = deps.stores.watch('tasks')
  return {
    intervalMs: WATCH_INTERVAL_MS,
    changed,
    async isPending(taskId) {
      const row = await deps.stores.tasks.get(taskId)
      return row !== undefined && taskState(row, deps.clock.now()) === 'pending_approval'
    },
  }
}

/** The in-process waiters; bounded by `limits` (default {@link WAITER_LIMITS}); `watch` adds other processes' decisions. */
export function createApprovalWaiters(limits: { total: number; perTask: number } = WAITER_LIMITS, watch?: DecisionWatch): ApprovalWaiters {
  const byTask = new Map<string, Set<(outcome: WaitOutcome) => void>>()
  const listeners = new Set<TaskChangeListener>()
  let held = 0
  let closed = false
  let poll: NodeJS.Timeout | undefined

  // A change seen whose waits could not all be read (the database busy): the next tick reads them again.
  let unread = false
  async function look() {
    try {
      if (!watch!.changed() && !unread) return
      unread = true
      for (const taskId of [...byTask.keys()]) if (!(await watch!.isPending(taskId))) wake(taskId)
      unread = false
    } catch {
      // The database is closed (shutdown) or momentarily busy: the next tick, or the wait's end, answers.
    }
  }
  function wake(taskId: string) {
    for (const finish of [...(byTask.get(taskId) ?? [])]) finish('decided')
  }
  // The poll runs only while a wait is held: an idle broker does nothing.
  function startWatching() {
    if (!watch || poll) return
    poll = setInterval(() => void look(), watch.intervalMs)
    poll.unref()
  }
  function stopWatchingWhenIdle() {
    if (held === 0 && poll) {
      clearInterval(poll)
      poll = undefined
    }
  }

  return {
    wait(taskId, ms, signal) {
      if (closed) return Promise.resolve('closed')
      if (signal?.aborted) return Promise.resolve('aborted')
      const waiting = byTask.get(taskId)
      if (held >= limits.total || (waiting?.size ?? 0) >= limits.perTask) return Promise.resolve('full')
      return new Promise<WaitOutcome>((resolve) => {
        const set = waiting ?? new Set()
        byTask.set(taskId, set)
        held++
        startWatching()
        // A real timer: the wait is in wall-clock time, whatever the broker's clock says.
        const timer = setTimeout(() => finish('timeout'), Math.max(0, ms))
        const onAbort = () => finish('aborted')
        signal?.addEventListener('abort', onAbort, { once: true })
        function finish(outcome: WaitOutcome) {
          if (!set.delete(finish)) return
          held--
          if (set.size === 0 && byTask.get(taskId) === set) byTask.delete(taskId)
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          stopWatchingWhenIdle()
          resolve(outcome)
        }
        set.add(finish)
        // The caller read the task pending before this registration, and store reads answer a
        // turn later: a decision committed in between notified nobody. Read it once more.
        watch?.isPending(taskId).then(
          (pending) => pending || finish('decided'),
          () => undefined, // the database is closing: the wait's end answers
        )
      })
    },
    notify(taskId) {
      wake(taskId)
      for (const l of [...listeners]) {
        // A listener's failure (a stream gone, its read of the task refused) is its own: the
        // decision has committed regardless, and must not become an unhandled rejection.
        try {
          Promise.resolve(l.changed(taskId)).catch(() => undefined)
        } catch {
          // thrown synchronously: the same
        }
      }
    },
    subscribe(listener) {
      if (closed) {
        listener.closed()
        return () => {}
      }
      listeners.add(listener)
      return () => void listeners.delete(listener)
    },
    close() {
      closed = true
      for (const set of [...byTask.values()]) for (const finish of [...set]) finish('closed')
      for (const l of [...listeners]) {
        listeners.delete(l)
        l.closed()
      }
    },
    size: () => held,
  }
}
