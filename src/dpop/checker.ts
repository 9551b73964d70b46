import type { ReplayCache } from '@taskpass/verifier/cache'
import { createProofKeyCache, DpopError, verifyDpopProof, type DpopProof } from '@taskpass/verifier/dpop'
import type { Clock } from '../clock.js'
import { invalidDpopProof, useDpopNonce } from '../errors.js'
import type { NonceSource } from './nonce.js'

/**
 * DPoP (RFC 9449) as the broker — an authorization server — applies it at POST /token and
 * POST /tasks: §4.3 proof checks through {@link verifyDpopProof}, one replay cache for the whole
 * broker, optional server nonces (§8), and the AS wire form of failures (§5: 400
 * `invalid_dpop_proof`; §8: 400 `use_dpop_nonce` with a `DPoP-Nonce` header).
 */
export interface DpopChecker {
  /**
   * Checks the request's `DPoP` header (as the request carries it: several header fields arrive
   * joined with commas, which the proof check refuses) against `htm` and `htu`. Resolves to
   * `undefined` when the request has no `DPoP` header — whether one is *required* is the
   * caller's decision — and throws an {@link OAuthError} when the proof fails.
   */
  verify(header: string | undefined, htm: string, htu: string): Promise<DpopProof | undefined>
  /** Headers for a successful response to a request that carried a proof: a fresh `DPoP-Nonce` when nonces are on. */
  successHeaders(): Record<string, string>
  /** Proof algorithms accepted, for `dpop_signing_alg_values_supported`. */
  readonly algorithms: readonly string[]
}

export interface DpopCheckerOptions {
  clock: Clock
  /** Accepted age and future skew of a proof's `iat`, seconds (the broker's `clockSkew`). */
  iatWindow: number
  algorithms: readonly string[]
  replay: ReplayCache
  /** Present when nonces are required. */
  nonces?: NonceSource | undefined
}

export function createDpopChecker(opts: DpopCheckerOptions): DpopChecker {
  const { clock, iatWindow, replay, nonces } = opts
  if (!Number.isInteger(iatWindow) || iatWindow < 0) throw new TypeError('DPoP iatWindow must be a non-negative integer (seconds)')
  if (opts.algorithms.length === 0) throw new TypeError('DPoP algorithms must not be empty')
  const algorithms = [...opts.algorithms]
  const nonce = nonces ? (value: string | undefined) => nonces.isValid(value) : undefined
  const keys = createProofKeyCache()

  return {
    algorithms,
    async verify(header, htm, htu) {
      if (header === undefined) return undefined
      try {
        return await verifyDpopProof(header, { htm, htu, now: clock.now(), iatWindow, replay, algorithms, keys, ...(nonce ? { nonce } : {}) })
      } catch (e) {
        if (!(e instanceof DpopError)) throw e
        // §8: "use_dpop_nonce" carries the nonce to use — exactly one DPoP-Nonce header.
        if (e.code === 'use_dpop_nonce' && nonces) throw useDpopNonce(nonces.current(), e.message)
        throw invalidDpopProof(e.message)
      }
    },
    successHeaders(): Record<string, string> {
      return nonces ? { 'DPoP-Nonce': nonces.current() } : {}
    },
  }
}
