import { oauthClientWorkload } from '../authorize/request.js'
import { ConfigError, type Config } from '../config.js'
import { temporarilyUnavailable } from '../errors.js'
import type { OpenTaskRef, TxStores } from '../store/stores.js'
import { effectiveConfig } from './effective.js'
import { KINDS } from './kinds.js'

/** What the admission rule reads of the catalog in force. */
export type AdmissionConfig = Pick<Config, 'resources' | 'subjectIssuers' | 'workloads' | 'workloadIssuers' | 'authorization'>

/**
 * Why a task no longer has a place in the catalog, or undefined when it has: its workload was
 * removed or switched off, its OAuth client no longer matches that workload, the issuer that
 * attests its workload was removed or switched off, its user's issuer was, or one of its
 * resources was. A task the catalog no longer admits could not get another token anyway; ending
 * it also revokes the tokens it holds (feed events included).
 */
export function retirementOf(config: AdmissionConfig, task: OpenTaskRef): string | undefined {
  const workload = config.workloads.find((w) => w.id === task.workloadId)
  if (!workload) return `workload ${task.workloadId} removed from the configuration`
  if (!workload.enabled) return `workload ${task.workloadId} disabled`
  // A task the user consented to for an OAuth client: the client must still be one of its workload's.
  if (task.clientId !== null && oauthClientWorkload(config, task.clientId)?.id !== workload.id) return `client ${task.clientId} no longer one of workload ${workload.id}'s`
  const attestedBy = workload.attestation?.issuer
  if (attestedBy !== undefined && !config.workloadIssuers.some((wi) => KINDS['workload-issuers'].keyOf(wi) === attestedBy)) return `workload issuer ${attestedBy} removed or disabled`
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
export function checkAdmitted(config: AdmissionConfig, task: OpenTaskRef): void {
  const why = retirementOf(config, task)
  if (why !== undefined) throw temporarilyUnavailable(1, `the catalog changed during the request: task ${task.id}: ${why}`)
}

/** What {@link checkAdmittedInWrite} reads of the broker: the catalog in force, and the stored revision it reflects. */
export interface AdmissionDeps {
  config: AdmissionConfig
  catalog: { readonly base: Config; readonly revision: number }
}

/**
 * {@link checkAdmitted} inside the write recording `task` or a token of it, first in it: against
 * the catalog as committed. The catalog's lock (shared) orders the write with every change: a
 * change committed before is read here (its revision), one under way waits for this write to
 * commit and its sweep then ends what it admits no more. The catalog in force reflects the stored
 * revision: it decides. Another instance's change not taken up here yet (within a second): the
 * stored catalog decides.
 */
export async function checkAdmittedInWrite(tx: Pick<TxStores, 'locks' | 'catalog'>, deps: AdmissionDeps, task: OpenTaskRef): Promise<void> {
  await tx.locks.catalog('admit')
  if ((await tx.catalog.revision()) === deps.catalog.revision) return checkAdmitted(deps.config, task)
  let stored: Config
  try {
    stored = effectiveConfig(deps.catalog.base, await tx.catalog.all())
  } catch (e) {
    if (e instanceof ConfigError) throw temporarilyUnavailable(1, `the stored catalog does not validate: task ${task.id} is not recorded`)
    throw e
  }
  checkAdmitted(stored, task)
}
