/**
 * The revocation feed's wire types, shared by the broker (which writes the feed) and the kit
 * (which reads it). They live in the kit so that the broker depends on the kit and never the
 * other way round.
 */

/** What ended: one token, a task (completed or revoked), a user's session, or a signing key. */
export type RevocationEventType = 'token_revoked' | 'task_completed' | 'task_revoked' | 'session_revoked' | 'key_revoked'

/**
 * The revocation feed's event, modelled on RFC 8417 Security Event Tokens / CAEP
 * (`session-revoked`) but sent as plain JSON over an authenticated channel: `id` is the
 * monotonic cursor, `type` what ended, `until` when the event stops mattering (the last
 * affected token's expiry), after which it may be pruned. A user is named only by `sub_id`
 * (subject issuer and subject), never by the token's `sub`, which is the broker's own value.
 */
export interface RevocationEvent {
  id: string
  type: RevocationEventType
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
