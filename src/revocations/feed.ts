import type { FeedPosition, RevocationEvent } from '@taskpass/verifier'
import type { RevocationEventRow, Stores } from '../store/stores.js'

/**
 * A stored event in the feed's wire shape. The shape (`RevocationEvent`, `SubjectId`,
 * `FeedPosition`) belongs to the verifier kit, which reads the feed; the broker writes to it.
 */
export function toRevocationEvent(row: RevocationEventRow): RevocationEvent {
  return {
    id: String(row.id),
    type: row.kind,
    at: row.at,
    until: row.relevantUntil,
    ...(row.taskId ? { task_id: row.taskId } : {}),
    ...(row.jti ? { jti: row.jti } : {}),
    ...(row.sid ? { sid: row.sid } : {}),
    ...(row.sub && row.subjectIssuer ? { sub_id: { format: 'iss_sub', iss: row.subjectIssuer, sub: row.sub } as const } : {}),
    ...(row.kid ? { kid: row.kid } : {}),
  }
}

/** A cursor is the decimal id of the last event seen; `0` (or nothing) means from the start. */
export function parseCursor(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return 0
  return /^[0-9]{1,15}$/.test(value) ? Number(value) : undefined
}

/** The events after `after` that concern the resource `audience`: a resource sees only its own. */
export async function readEvents(stores: Pick<Stores, 'revocations'>, after: number, limit: number, audience: string): Promise<RevocationEvent[]> {
  return (await stores.revocations.list(after, limit, audience)).map(toRevocationEvent)
}

/** The feed's epoch and head; read after the events it accompanies, so the head covers them. */
export async function feedPosition(stores: Pick<Stores, 'revocations'>): Promise<FeedPosition> {
  return { epoch: await stores.revocations.epoch(), head: String(await stores.revocations.head()) }
}
