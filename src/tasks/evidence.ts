import { CompactSign } from 'jose'
import { notFound } from '../errors.js'
import type { KeySet } from '../keys/keyset.js'
import { viewAuditEvent, type AuditEventView } from '../store/audit-view.js'
import type { Stores } from '../store/stores.js'
import { viewTask, type TaskDeps, type TaskView } from './lifecycle.js'

/**
 * A task's whole story as evidence (docs/audit-evidence.md): JSON Lines — the task,
 * every audit row about it (with its place in the hash chain), every token minted for it, every
 * revocation event — and, as the last line, a detached JWS (RFC 7515 Appendix F) by the broker's
 * signing key over all the lines before it. Anyone holding the broker's JWKS checks it offline
 * with jose: put the base64url of those lines between the JWS's two dots and `compactVerify` it.
 */

/** The JWS `typ` of an evidence signature. */
export const EVIDENCE_TYP = 'taskpass-evidence+jsonl'

export interface EvidenceDeps {
  stores: Stores
  keys: Pick<KeySet, 'current'>
  clock: TaskDeps['clock']
}

export async function taskEvidence(deps: EvidenceDeps, id: string): Promise<string> {
  const task = await deps.stores.tasks.get(id)
  if (!task) throw notFound('task not found')
  const now = deps.clock.now()
  const lines: Record<string, unknown>[] = [
    { type: 'task', exported_at: now, ...viewTask(task, now) },
    ...(await deps.stores.audit.ofTask(id)).map((e) => ({ type: 'audit', ...viewAuditEvent(e), prev_hash: e.prevHash, hash: e.hash })),
    ...(await deps.stores.tokens.ofTask(id)).map((t) => ({ type: 'token', jti: t.jti, aud: t.aud, scope: t.scope, workload_id: t.workloadId, iat: t.iat, exp: t.exp, status: t.status, revoked_at: t.revokedAt, cnf_jkt: t.cnfJkt, kid: t.kid })),
    ...(await deps.stores.revocations.ofTask(id)).map((r) => ({ type: 'revocation', id: r.id, at: r.at, kind: r.kind, jti: r.jti })),
  ]
  // Retention may have removed the task's oldest rows: the evidence says so instead of looking complete.
  const retained = await deps.stores.audit.retained()
  if (retained && (retained.since === undefined || task.createdAt < retained.since)) lines.push({ type: 'retention', audit_anchor: retained.anchor, audit_kept_since: retained.since ?? null, note: 'audit rows older than retention.audit were pruned; this story may be missing its oldest rows' })
  const body = lines.map((l) => JSON.stringify(l) + '\n').join('')
  const { kid, alg, privateKey } = await deps.keys.current()
  const jws = await new CompactSign(new TextEncoder().encode(body)).setProtectedHeader({ alg, kid, typ: EVIDENCE_TYP }).sign(privateKey)
  const [header, , signature] = jws.split('.')
  return body + JSON.stringify({ type: 'signature', jws: `${header}..${signature}` }) + '\n'
}

/** One moment of a task's story, for people: an audit row, a token minted, a feed event. */
export interface TimelineEntry {
  at: number
  what: string
  /** `allow` or `deny` for a decision (an audit row); absent otherwise. */
  outcome?: string | undefined
  detail: string
}

/** What {@link evidenceTimeline} reads out of the evidence besides the moments. */
export interface EvidenceStory {
  task: TaskView
  /** Oldest first (newest last); moments at the same second keep the evidence's order. */
  timeline: TimelineEntry[]
  /** The retention note, when the oldest rows were pruned. */
  retention?: string | undefined
}

/**
 * A task's evidence ({@link taskEvidence}) as a story for people: the task, then every audit row
 * (opening, decisions, refusals, ending), token minted and feed event, in time order.
 */
export function evidenceTimeline(evidence: string): EvidenceStory {
  const lines = evidence.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown> & { type: string })
  const task = lines.find((l) => l.type === 'task') as unknown as TaskView
  const timeline: TimelineEntry[] = []
  let retention: string | undefined
  for (const l of lines) {
    if (l.type === 'audit') {
      const a = l as unknown as AuditEventView
      timeline.push({ at: a.at, what: a.action, outcome: a.decision, detail: a.error ? `${a.reason} (${a.error})` : a.reason })
    } else if (l.type === 'token') {
      const t = l as unknown as { iat: number; exp: number; aud: string; scope: string; jti: string; status: string }
      timeline.push({ at: t.iat, what: 'token minted', detail: `for ${t.aud}, scope "${t.scope}", until ${new Date(t.exp * 1000).toISOString()}; ${t.status} (jti ${t.jti})` })
    } else if (l.type === 'revocation') {
      const r = l as unknown as { at: number; kind: string; jti: string | null }
      timeline.push({ at: r.at, what: `feed: ${r.kind}`, detail: r.jti ? `token ${r.jti}` : 'told to the resources holding its tokens' })
    } else if (l.type === 'retention') {
      retention = String(l.note)
    }
  }
  // Array.prototype.sort is stable: same-second moments stay in the evidence's order.
  timeline.sort((x, y) => x.at - y.at)
  return { task, timeline, ...(retention ? { retention } : {}) }
}
