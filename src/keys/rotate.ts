/**
 * A rotation of the signing keys asked for by someone (the admin API, the console): the keyset's
 * {@link rotateKeys}, the broker's key set reloaded so the new current key signs at once, and the
 * audit row naming who asked. Both callers go through here, so they cannot drift apart.
 */
import { OAuthError } from '../errors.js'
import type { Stores } from '../store/stores.js'
import type { Clock } from '../clock.js'
import { RotationTooEarly, rotateKeys, type KeyRotation, type KeySet, type KeyStoreOptions } from './keyset.js'

export interface RotationDeps {
  keyStore: KeyStoreOptions
  keys: Pick<KeySet, 'reload'>
  stores: Pick<Stores, 'audit'>
  clock: Clock
}

/**
 * Rotates the signing keys for `by` (`admin:<key id>`): `next` becomes `current` (RFC 7517 keys
 * stay published, DESIGN "Keys"). Too early — the next key published for less than the JWKS
 * max-age — and not `force`d: 409 `rotation_too_early` with `Retry-After`, nothing changed.
 */
export async function rotateSigningKeys(deps: RotationDeps, opts: { force: boolean }, by: string): Promise<KeyRotation> {
  let result: KeyRotation
  try {
    result = await rotateKeys(deps.keyStore, { force: opts.force })
  } catch (e) {
    if (e instanceof RotationTooEarly) throw new OAuthError('rotation_too_early', 409, e.message, e.message, { 'Retry-After': String(e.waitSeconds) })
    throw e
  }
  await deps.keys.reload()
  const forced = opts.force ? ' (forced)' : ''
  const warned = result.warning ? `; ${result.warning}` : ''
  await deps.stores.audit.insert({ at: deps.clock.now(), action: 'keys.rotate', decision: 'allow', reason: `rotated by ${by}${forced}: ${result.retired} → ${result.current}${warned}` })
  return result
}
