import { invalidRequest } from '../errors.js'
import type { Actor } from './actor-token.js'
import type { Subject } from './subject-token.js'

/**
 * RFC 8693 §4.4: when the subject token carries `may_act`, the acting workload must match it —
 * its `sub` naming the workload (by id or attested subject), its `iss`, if present, the
 * attestation issuer. Checked wherever a workload starts acting for the user: opening a task
 * and exchanging a token.
 */
export function checkMayAct(subject: Subject, actor: Actor): void {
  if (!subject.mayAct) return
  const { sub, iss } = subject.mayAct
  const subOk = sub === undefined || sub === actor.workload.id || sub === actor.attestationSubject
  const issOk = iss === undefined || iss === actor.attestationIssuer
  if (!subOk || !issOk) throw invalidRequest('the acting workload is not permitted by the subject token\'s may_act', `may_act ${JSON.stringify(subject.mayAct)} vs ${actor.workload.id}`)
}
