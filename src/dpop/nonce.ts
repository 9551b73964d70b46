import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'
import type { Clock } from '../clock.js'

/**
 * Stateless DPoP server nonces (RFC 9449 §8). A nonce is HMAC-SHA-256(key, window index),
 * truncated to 128 bits and base64url-encoded (22 characters, inside `1*NQCHAR`); the window
 * index is `floor(now / window)`. A nonce is accepted during the window it was issued in and
 * the next one, so it lives between one and two windows; nothing is stored, and every broker
 * instance holding the same key-encryption key issues and accepts the same nonces.
 */
export interface NonceSource {
  /** The nonce of the current window, to send in `DPoP-Nonce`. */
  current(): string
  /** Whether `value` is the nonce of the current or the previous window (constant-time compare). */
  isValid(value: string | undefined): boolean
}

const NONCE_BYTES = 16

/**
 * The nonce MAC key: HKDF-SHA-256 of the key-encryption key with its own `info`, so it is
 * independent of every other use of the KEK and the same on every instance and after a restart.
 */
export function deriveNonceKey(kek: Uint8Array): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', kek, new Uint8Array(0), 'taskpass/dpop-nonce/v1', 32))
}

export function createNonceSource(opts: { key: Uint8Array; clock: Clock; window: number }): NonceSource {
  const { key, clock, window } = opts
  if (key.byteLength < 32) throw new TypeError('DPoP nonce key must be at least 32 bytes')
  if (!Number.isInteger(window) || window <= 0) throw new TypeError('DPoP nonce window must be a positive integer (seconds)')

  // The two live values are recomputed only when the window moves.
  let memo: { index: number; current: string; previous: string } | undefined
  const compute = (index: number) => {
    const counter = Buffer.alloc(8)
    counter.writeBigUInt64BE(BigInt(index))
    return createHmac('sha256', key).update(counter).digest().subarray(0, NONCE_BYTES).toString('base64url')
  }
  const live = () => {
    const index = Math.floor(clock.now() / window)
    if (memo?.index !== index) memo = { index, current: compute(index), previous: compute(index - 1) }
    return memo
  }
  const same = (a: string, b: string) => {
    const x = Buffer.from(a)
    const y = Buffer.from(b)
    return x.length === y.length && timingSafeEqual(x, y)
  }
  return {
    current: () => live().current,
    isValid(value) {
      if (value === undefined) return false
      const { current, previous } = live()
      // Both compared, always: the time taken does not say which window matched.
      const isCurrent = same(value, current)
      const isPrevious = same(value, previous)
      return isCurrent || isPrevious
    },
  }
}
