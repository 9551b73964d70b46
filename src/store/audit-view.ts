import type { AuditEventRow } from './stores.js'

/** An audit row as the admin API and the CLI show it: the same snake_case fields everywhere. */
export interface AuditEventView {
  id: number
  at: number
  action: string
  decision: string
  reason: string
  error: string | null
  user_sub: string | null
  workload_id: string | null
  task_id: string | null
  jti: string | null
  resource: string | null
  policy_version: string | null
  policies: string | null
  /** JSON details (a catalog change's `{before, after}`), when the row has them. */
  detail?: unknown
}

export function viewAuditEvent(e: AuditEventRow): AuditEventView {
  return {
    id: e.id, at: e.at, action: e.action, decision: e.decision, reason: e.reason, error: e.error ?? null,
    user_sub: e.userSub ?? null, workload_id: e.workloadId ?? null, task_id: e.taskId ?? null, jti: e.jti ?? null, resource: e.resource ?? null,
    policy_version: e.policyVersion ?? null, policies: e.policies ?? null,
    ...(e.detail ? { detail: parsedDetail(e.detail) } : {}),
  }
}

/** A row's detail as JSON, or as its text when it is not (never an error: the log must stay readable). */
function parsedDetail(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return text
  }
}
