/**
 * Short-lived state the browser carries for us, sealed (encrypted and authenticated, jose JWE
 * `dir` + A256GCM) under a key derived from the KEK per purpose: the authorization request between
 * /authorize and the consent, the sign-in, the upstream IdP's login state, the approval wait. No
 * unauthenticated request ever writes a row: what a visitor starts lives only in what they hold.
 */
import { hkdfSync } from 'node:crypto'
import { EncryptJWT, jwtDecrypt, type JWTPayload } from 'jose'
import type { Clock } from '../clock.js'

/** What a sealed value is for: each has its own key, and one never opens as another. */
export type SealPurpose = 'authorize-request' | 'login' | 'oidc-state' | 'approval-wait' | 'client-registration' | 'console'

export interface Sealer {
  /** Seals `payload`, valid for `ttl` seconds from now (or until `exp`, when the payload has one). */
  seal(purpose: SealPurpose, payload: JWTPayload, ttl: number): Promise<string>
  /**
   * The payload of a sealed value of this purpose that has not expired; `undefined` for anything
   * else. `expired: true` opens one whose time has passed too (still only ours, untampered): what a
   * lapsed request was, so its client can be told (RFC 6749 §4.1.2.1).
   */
  open<T>(purpose: SealPurpose, sealed: string | undefined, opts?: { expired?: boolean }): Promise<T | undefined>
  /** A key derived for `purpose` (e.g. the CSRF key), 32 bytes. */
  key(purpose: string): Uint8Array
}

/** Longest sealed value accepted: bounds the work an oversized cookie or field can cost us. */
const MAX_SEALED_LENGTH = 8192

export function createSealer(kek: Uint8Array, clock: Clock): Sealer {
  const keys = new Map<string, Uint8Array>()
  const key = (purpose: string) => {
    let k = keys.get(purpose)
    if (!k) {
      k = new Uint8Array(hkdfSync('sha256', kek, new Uint8Array(0), `taskpass/browser/${purpose}/v1`, 32))
      keys.set(purpose, k)
    }
    return k
  }
  return {
    key,
    async seal(purpose, payload, ttl) {
      const now = clock.now()
      return new EncryptJWT(payload)
        .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' })
        .setAudience(purpose)
        .setIssuedAt(now)
        .setExpirationTime(payload.exp ?? now + ttl)
        .encrypt(key(purpose))
    },
    async open<T>(purpose: SealPurpose, sealed: string | undefined, opts: { expired?: boolean } = {}) {
      if (sealed === undefined || sealed === '' || sealed.length > MAX_SEALED_LENGTH) return undefined
      try {
        // An expired one is read as of the epoch: every time claim then passes, the seal still must.
        const at = opts.expired ? new Date(0) : new Date(clock.nowMs())
        const { payload } = await jwtDecrypt(sealed, key(purpose), { audience: purpose, currentDate: at, keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] })
        return payload as T
      } catch {
        return undefined
      }
    },
  }
}
