import { CompactSign } from 'jose'
import { notFound } from '../errors.js'
import type { KeySet } from '../keys/keyset.js'
import { viewAuditEvent } from '../store/audit-view.js'
import type { Stores } from '../store/stores.js'
import { viewTask, type TaskDeps } from './lifecycle.js'

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
  const task = deps.stores.tasks.get(id)
  if (!task) throw notFound('task not found')
  const now = deps.clock.now()
  const lines: Record<string, unknown>[] = [
    { type: 'task', exported_at: now, ...viewTask(task, now) },
    ...deps.stores.audit.ofTask(id).map((e) => ({ type: 'audit', ...viewAuditEvent(e), prev_hash: e.prevHash, hash: e.hash })),
    ...deps.stores.tokens.ofTask(id).map((t) => ({ type: 'token', jti: t.jti, aud: t.aud, scope: t.scope, workload_id: t.workloadId, iat: t.iat, exp: t.exp, status: t.status, revoked_at: t.revokedAt, cnf_jkt: t.cnfJkt, kid: t.kid })),
    ...deps.stores.revocations.ofTask(id).map((r) => ({ type: 'revocation', id: r.id, at: r.at, kind: r.kind, jti: r.jti })),
  ]
  // Retention may have removed the task's oldest rows: the evidence says so instead of looking complete.
  const retained = deps.stores.audit.retained()
  if (retained && (retained.since === undefined || task.createdAt < retained.since)) lines.push({ type: 'retention', audit_anchor: retained.anchor, audit_kept_since: retained.since ?? null, note: 'audit rows older than retention.audit were pruned; this story may be missing its oldest rows' })
  const body = lines.map((l) => JSON.stringify(l) + '\n').join('')
  const { kid, alg, privateKey } = deps.keys.current()
  const jws = await new CompactSign(new TextEncoder().encode(body)).setProtectedHeader({ alg, kid, typ: EVIDENCE_TYP }).sign(privateKey)
  const [header, , signature] = jws.split('.')
  return body + JSON.stringify({ type: 'signature', jws: `${header}..${signature}` }) + '\n'
}
