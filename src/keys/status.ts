/**
 * The signing keys' status as an operator reads it (`GET /admin/keys`, `keys status`): each key's
 * kid, algorithm, state, times and whether the JWKS publishes it — built from the key rows alone,
 * field by field, so that no private material (the encrypted private half) can reach the answer.
 */
import type { Stores } from '../store/stores.js'
import { isPublished, type KeyState } from './keyset.js'

/** One signing key, as the admin API and the CLI show it. */
export interface SigningKeyView {
  kid: string
  alg: string
  /** `current` signs; `next` and `standby` are pre-published; `retired` stopped signing; `revoked` was compromised. */
  state: KeyState
  created_at: number
  /** When it started signing; null for a key that never did. */
  activated_at: number | null
  /** When it stopped signing (retired or revoked); null while it still may sign. */
  retired_at: number | null
  /** A retired key stays in the JWKS until then; a revoked key's is the time of its revocation. */
  publish_until: number | null
  /** Whether the JWKS publishes it now. */
  published: boolean
}

/** The answer of `GET /admin/keys`. */
export interface SigningKeyStatus {
  keys: SigningKeyView[]
}

// As the JWKS orders them: the signing queue, then retired and revoked keys, newest first.
const RANK: Record<KeyState, number> = { current: 0, next: 1, standby: 2, retired: 3, revoked: 4 }

/** Every signing key on record at `now`, current first. */
export async function signingKeyStatus(stores: Pick<Stores, 'signingKeys'>, now: number): Promise<SigningKeyStatus> {
  const rows = await stores.signingKeys.all()
  const keys = [...rows]
    .sort((a, b) => RANK[a.state] - RANK[b.state] || (b.retiredAt ?? 0) - (a.retiredAt ?? 0) || b.createdAt - a.createdAt)
    .map((r): SigningKeyView => ({
      kid: r.kid,
      alg: r.alg,
      state: r.state,
      created_at: r.createdAt,
      activated_at: r.activatedAt,
      retired_at: r.retiredAt,
      publish_until: r.publishUntil,
      published: isPublished(r, now),
    }))
  return { keys }
}
