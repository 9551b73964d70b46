import type { NewRevocationEvent, Stores, TokenRow } from '../store/stores.js'

/**
 * The feed event for one revoked token, shown to its resource only. It names the user as every
 * event does — by the task's (subject issuer, subject) — so a verifier never has to guess which
 * IdP's "alice" it was.
 */
export async function tokenRevokedEvent(stores: Pick<Stores, 'tasks'>, token: TokenRow, at: number): Promise<NewRevocationEvent> {
  const task = await stores.tasks.get(token.taskId)
  return {
    at,
    kind: 'token_revoked',
    taskId: token.taskId,
    jti: token.jti,
    sid: task?.sid ?? null,
    sub: task?.userSub ?? null,
    subjectIssuer: task?.subjectIssuer ?? null,
    relevantUntil: token.exp,
    audiences: [token.aud],
  }
}
