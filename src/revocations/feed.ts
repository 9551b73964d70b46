import type { RevocationEventRow, Stores } from '../store/stores.js'

/**
 * The revocation feed's event, modelled on RFC 8417 Security Event Tokens / CAEP
 * (`session-revoked`) but sent as plain JSON over an authenticated channel: `id` is the
 * monotonic cursor, `type` what ended, `until` when the event stops mattering (the last
 * affected token's expiry), after which it may be pruned. A user is named only by `sub_id`
 * (subject issuer and subject), never by the token's `sub`, which is the broker's own value.
 */
export interface RevocationEvent {
  id: string
  type: RevocationEventRow['kind']
  at: number
  until: number
  task_id?: string
  jti?: string
  sid?: string
  /** RFC 9493 §3.2.5 `iss_sub`: the user as the pair (subject issuer, subject at that issuer). */
  sub_id?: SubjectId
  /** For `key_revoked`: the broker signing key that must no longer be trusted. */
  kid?: string
}

/** RFC 9493 §3.2.5 Issuer and Subject Identifier: how tokens and events name a user unambiguously. */
export interface SubjectId {
  format: 'iss_sub'
  iss: string
  sub: string
}

/**
 * Where the feed stands, sent with every poll page and in the stream's `ready` event: the
 * database's `epoch` (new with every new database) and its `head` (the last event id ever
 * appended). A verifier whose epoch differs, or whose cursor is beyond the head (an older copy
 * of the database was restored), must start again from cursor 0.
 */
export interface FeedPosition {
  epoch: string
  head: string
}

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
export function readEvents(stores: Pick<Stores, 'revocations'>, after: number, limit: number, audience: string): RevocationEvent[] {
  return stores.revocations.list(after, limit, audience).map(toRevocationEvent)
}

/** The feed's epoch and head; read after the events it accompanies, so the head covers them. */
export function feedPosition(stores: Pick<Stores, 'revocations'>): FeedPosition {
  return { epoch: stores.revocations.epoch(), head: String(stores.revocations.head()) }
}
