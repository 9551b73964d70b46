/**
 * Key compromise: `revokeKey` takes a signing key out of service at once. It owns the
 * `signing_keys` transition to `revoked` and what must happen in the same durable transaction
 * (the key's tokens revoked, the feed told, the audit row); it uses the keyset's queue helpers
 * and the stores, nothing above them.
 */
import { tokenRevokedEvent } from '../revocations/events.js'
import { keyAlreadyRevoked, notFound } from '../errors.js'
import type { Stores } from '../store/stores.js'
import { generateKey, promoteNext, promotionWarning, replaceNext, insertStandby, signingRows, type KeyState, type KeyStoreOptions, type PromotionWarning } from './keyset.js'

export interface KeyRevocationDeps {
  keyStore: KeyStoreOptions
  stores: Pick<Stores, 'durably'>
  /** Every registered resource URI: any of them may hold a token signed by the key. */
  audiences: readonly string[]
}

/** The answer of {@link revokeKey}. */
export type KeyRevocation = {
  kid: string
  /** The state the key was in: `current`, `next`, `standby` or `retired`. */
  was: Exclude<KeyState, 'revoked'>
  /** Unexpired tokens revoked: those the key signed, plus those issued before tokens recorded their key. */
  tokens_revoked: number
  current: string
  next: string
  standby: string
} & Partial<PromotionWarning>

/**
 * Revokes a compromised signing key, in one durable transaction:
 * - the key leaves the JWKS and never signs or verifies again (state `revoked`);
 * - every unexpired active token it signed is revoked — and every one whose key was not recorded
 *   (issued before tokens carried `kid`), since it may have been this key; those get their own
 *   `token_revoked` events, as they may be signed by a key verifiers still trust;
 * - one `key_revoked` feed event for every registered resource, relevant until the last of the
 *   key's tokens expires and at least `tokens.maxTtl + clockSkew` from now (a forged token
 *   can carry any `exp` the verifier's ceiling allows, and may have been minted up to now);
 * - an audit row.
 * Revoking the current key promotes the next one (with a {@link PromotionWarning} when verifiers
 * may not have seen it yet) and pre-publishes a new standby; revoking the next or standby key
 * replaces it in the queue; revoking a retired key only unpublishes it.
 * An unknown kid is `not_found` (404), a revoked one `key_already_revoked` (409); neither changes anything.
 */
export async function revokeKey(deps: KeyRevocationDeps, kid: string, by: string): Promise<KeyRevocation> {
  const o = deps.keyStore
  const fresh = await generateKey(o.alg, o.kek) // before the transaction, which holds the write lock; unused for a retired key
  const now = o.clock.now()
  return deps.stores.durably(async (tx) => {
    const row = (await tx.signingKeys.all()).find((r) => r.kid === kid)
    if (!row) throw notFound('no signing key with this kid')
    if (row.state === 'revoked') throw keyAlreadyRevoked('this signing key is already revoked')
    const rows = await signingRows(tx)
    let warning: PromotionWarning | undefined
    await tx.signingKeys.update(kid, { state: 'revoked', publishUntil: now, ...(row.state === 'retired' ? {} : { retiredAt: now }) })
    switch (row.state) {
      case 'current':
        await promoteNext(o, tx, rows, fresh, now)
        warning = promotionWarning(rows.next.kid, rows.next.createdAt, now)
        break
      case 'next':
        await replaceNext(o, tx, rows, fresh)
        break
      case 'standby':
        await insertStandby(o, tx, fresh)
        break
      case 'retired':
        break
    }

    const signed = await tx.tokens.revokeByKid(kid, now)
    const unattributed = await tx.tokens.revokeWithoutKid(now)
    for (const t of unattributed) {
      await tx.revocations.insert(await tokenRevokedEvent(tx, t, now))
    }
    const relevantUntil = Math.max(signed.lastExp ?? 0, now + o.retiredPublishSeconds)
    await tx.revocations.insert({ at: now, kind: 'key_revoked', kid, relevantUntil, audiences: deps.audiences })

    const after = await signingRows(tx)
    const tokensRevoked = signed.revoked + unattributed.length
    await tx.audit.insert({
      at: now,
      action: 'keys.revoke',
      decision: 'allow',
      reason:
        `${row.state} key ${kid} revoked by ${by}; ${signed.revoked} token(s) it signed and ${unattributed.length} without a recorded key revoked; ` +
        `current ${after.current.kid}${warning ? ` (${warning.warning})` : ''}`,
    })
    return { kid, was: row.state, tokens_revoked: tokensRevoked, current: after.current.kid, next: after.next.kid, standby: after.standby.kid, ...warning }
  })
}
