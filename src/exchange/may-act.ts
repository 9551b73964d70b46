import { invalidRequest } from '../errors.js'
import { attestedSpiffeId, type Actor } from './actor-token.js'
import type { Subject } from './subject-token.js'

/** The `may_act` members taskpass understands; any other member could be a restriction we would ignore. */
const MAY_ACT_MEMBERS = new Set(['sub', 'client_id', 'iss'])

/**
 * RFC 8693 §4.4: when the subject token carries `may_act`, the acting workload must match it.
 * It fails closed: `may_act` must be a JSON object naming the actor by `sub` (the workload id or
 * its attested subject — a SPIFFE ID, or any subject when `iss` names its issuer) and/or
 * `client_id` (the workload id), optionally with
 * `iss` (the attestation issuer); every member present must match. Anything else — `{}`, a string,
 * an array, `null`, an unknown member, a non-string value — refuses the exchange and the task
 * opening alike, since we cannot tell what it permits.
 */
export function checkMayAct(subject: Subject, actor: Actor): void {
  const mayAct = subject.mayAct
  if (mayAct === undefined) return
  const refuse = (detail: string) => invalidRequest('the acting workload is not permitted by the subject token\'s may_act', detail)
  if (typeof mayAct !== 'object' || mayAct === null || Array.isArray(mayAct)) throw refuse(`may_act is not a JSON object: ${JSON.stringify(mayAct).slice(0, 200)}`)
  const members = Object.entries(mayAct as Record<string, unknown>)
  const unknown = members.filter(([k]) => !MAY_ACT_MEMBERS.has(k)).map(([k]) => k)
  if (unknown.length > 0) throw refuse(`may_act has members taskpass does not understand: ${unknown.join(', ').slice(0, 200)}`)
  if (members.some(([, v]) => typeof v !== 'string' || v === '')) throw refuse('may_act members must be non-empty strings')
  const { sub, client_id: clientId, iss } = mayAct as { sub?: string; client_id?: string; iss?: string }
  if (sub === undefined && clientId === undefined) throw refuse('may_act names no actor (neither sub nor client_id)')
  // An attested subject is only unique within its issuer (two clusters can both have a
  // `system:serviceaccount:ns:agent`): it names the actor only when `iss` pins the issuer, or when
  // it is a SPIFFE ID, which carries its trust domain.
  const subjectIsUnique = iss !== undefined || attestedSpiffeId(actor) !== undefined
  const subOk = sub === undefined || sub === actor.workload.id || (subjectIsUnique && sub === actor.attestation.subject)
  const clientOk = clientId === undefined || clientId === actor.workload.id
  const issOk = iss === undefined || iss === actor.attestation.issuer
  if (!subOk || !clientOk || !issOk) throw refuse(`may_act ${JSON.stringify(mayAct).slice(0, 200)} vs ${actor.workload.id}`)
}
