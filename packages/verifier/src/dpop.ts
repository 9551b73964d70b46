import { createHash } from 'node:crypto'
import { calculateJwkThumbprint, decodeProtectedHeader, EmbeddedJWK, jwtVerify, type CryptoKey, type JWK, type ProtectedHeaderParameters } from 'jose'
import { TtlCache } from './ttl-cache.js'
import type { ReplayCache } from './replay-cache.js'

/**
 * `@taskpass/verifier/dpop` — RFC 9449 (DPoP) proof verification, shared by the verifier kit
 * (resource servers) and the broker (token endpoint, /tasks), which imports it from here. Pure apart from the replay cache it is handed; time is a
 * parameter. Callers map {@link DpopError} to their own wire form (400 at the AS, a 401
 * `WWW-Authenticate: DPoP` challenge at an RS).
 */

export type DpopErrorCode = 'invalid_dpop_proof' | 'use_dpop_nonce'

export class DpopError extends Error {
  readonly code: DpopErrorCode
  constructor(code: DpopErrorCode, message: string) {
    super(message)
    this.name = 'DpopError'
    this.code = code
  }
}

/** Asymmetric algorithms accepted for proofs (§4.3: "not none", "not a MAC"). */
export const DPOP_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'RS256', 'PS256'] as const

export interface DpopProof {
  /** RFC 7638 SHA-256 thumbprint of the proof key: the `cnf.jkt` it binds to. */
  jkt: string
  jwk: JWK
  jti: string
  iat: number
}

/**
 * Proof `jti`s are remembered for their acceptance window, so a proof is accepted once (§11.1):
 * the same bounded cache as client-assertion `jti`s, which refuses ('full') rather than forget a
 * live entry. Re-exported so verifiers need only this module.
 */
export { createReplayCache, type ReplayCache } from './replay-cache.js'

export interface DpopCheck {
  /** The request's method and URL (query and fragment are ignored, §4.3 step 9). */
  htm: string
  htu: string
  now: number
  /** Accepted age (and future skew) of `iat`, seconds. */
  iatWindow: number
  /** Proof `jti`s, grouped by the proof key's thumbprint (see {@link ReplayCache}'s `maxPerGroup`). */
  replay: ReplayCache
  algorithms?: readonly string[]
  /**
   * At a resource server: the `cnf.jkt` of the access token (RFC 9449 §7.1). A proof by any other
   * key is refused before its signature is checked or its `jti` recorded, so proofs made with a
   * stolen token but without its key cannot fill the replay cache.
   */
  expectedJkt?: string
  /** At a resource server: the access token the proof must be bound to through `ath`. */
  accessToken?: string
  /** Imported proof keys and their thumbprints, so a client's repeated key is imported once. */
  keys?: ProofKeyCache
  /** When the server requires nonces: whether the proof's `nonce` is currently valid. */
  nonce?: (value: string | undefined) => boolean
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

/**
 * A client presents the same DPoP key on every request; importing it and hashing its thumbprint
 * each time costs more than the signature check. Keyed by `alg` and the exact `jwk` JSON.
 */
export interface ProofKeyCache {
  get(id: string, now: number): { key: CryptoKey; jkt: string } | undefined
  set(id: string, value: { key: CryptoKey; jkt: string }, until: number): void
}

export function createProofKeyCache(maxEntries = 10_000): ProofKeyCache {
  return new TtlCache<{ key: CryptoKey; jkt: string }>(maxEntries)
}

const KEY_CACHE_SECONDS = 3600

/** The proof key's thumbprint, and the key imported — unless it is not the expected key, which is never imported. */
async function proofKey(header: ProtectedHeaderParameters, jwk: JWK, check: DpopCheck): Promise<{ key: CryptoKey; jkt: string }> {
  const id = `${header.alg}\0${JSON.stringify(jwk)}`
  const hit = check.keys?.get(id, check.now)
  const jkt = hit?.jkt ?? (await calculateJwkThumbprint(jwk, 'sha256'))
  if (check.expectedJkt !== undefined && jkt !== check.expectedJkt) throw new DpopError('invalid_dpop_proof', 'the DPoP proof key is not the key the token is bound to')
  if (hit) return hit
  // jose's EmbeddedJWK: a public key of the header's alg, `use` sig if present.
  const key = (await EmbeddedJWK(header, { payload: '', signature: '' })) as CryptoKey
  const entry = { key, jkt }
  check.keys?.set(id, entry, check.now + KEY_CACHE_SECONDS)
  return entry
}

/** RFC 3986 §6.2.2/§6.2.3 normalisation via WHATWG URL: scheme/host case, default port, no query/fragment. */
export function normalizeHtu(value: string): string | undefined {
  try {
    const u = new URL(value)
    return `${u.protocol}//${u.host}${u.pathname}`
  } catch {
    return undefined
  }
}

/** base64url(SHA-256(ASCII access token)), the `ath` claim (§4.2). */
export function accessTokenHash(token: string): string {
  return createHash('sha256').update(token, 'ascii').digest('base64url')
}

/**
 * Checks a `DPoP` header per RFC 9449 §4.3: exactly one well-formed JWT, `typ: dpop+jwt`, an
 * asymmetric allow-listed `alg`, a public `jwk` — at a resource, the key the token is bound to
 * (§7.1, `expectedJkt`, checked first) — that verifies the signature, `htm`, `htu`, `iat` within
 * the window, `nonce` when required, `ath` at a resource, and last the `jti` not replayed: only a
 * proof that passed every other check takes room in the replay cache.
 */
export async function verifyDpopProof(header: string | readonly string[] | undefined, check: DpopCheck): Promise<DpopProof> {
  const values = header === undefined ? [] : typeof header === 'string' ? [header] : header
  if (values.length !== 1 || values[0]!.includes(',')) throw new DpopError('invalid_dpop_proof', 'exactly one DPoP header is required')
  const proof = values[0]!.trim()
  let jwk: JWK
  let protectedHeader: ProtectedHeaderParameters
  try {
    protectedHeader = decodeProtectedHeader(proof)
    if (!protectedHeader.jwk || typeof protectedHeader.jwk !== 'object') throw new Error('no jwk')
    jwk = protectedHeader.jwk
  } catch {
    throw new DpopError('invalid_dpop_proof', 'the DPoP proof is not a JWT with a jwk header')
  }
  if (PRIVATE_MEMBERS.some((m) => m in jwk)) throw new DpopError('invalid_dpop_proof', 'the DPoP proof jwk must not contain a private key')
  const algorithms = check.algorithms ?? DPOP_ALGORITHMS
  if (typeof protectedHeader.alg !== 'string' || !algorithms.includes(protectedHeader.alg)) throw new DpopError('invalid_dpop_proof', 'the DPoP proof alg is not allowed')

  let payload
  let jkt: string
  try {
    const { key, jkt: thumbprint } = await proofKey(protectedHeader, jwk, check)
    jkt = thumbprint
    ;({ payload } = await jwtVerify(proof, key, {
      typ: 'dpop+jwt',
      algorithms: [...algorithms],
      currentDate: new Date(check.now * 1000),
    }))
  } catch (e) {
    if (e instanceof DpopError) throw e
    throw new DpopError('invalid_dpop_proof', `the DPoP proof is invalid: ${(e as Error).message}`)
  }
  const { jti, htm, htu, iat, ath, nonce } = payload as Record<string, unknown>
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256) throw new DpopError('invalid_dpop_proof', 'the DPoP proof needs a jti')
  if (htm !== check.htm) throw new DpopError('invalid_dpop_proof', 'the DPoP proof htm does not match the request method')
  const expected = normalizeHtu(check.htu)
  if (typeof htu !== 'string' || expected === undefined || normalizeHtu(htu) !== expected) throw new DpopError('invalid_dpop_proof', 'the DPoP proof htu does not match the request URL')
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw new DpopError('invalid_dpop_proof', 'the DPoP proof needs an iat')
  if (iat < check.now - check.iatWindow || iat > check.now + check.iatWindow) throw new DpopError('invalid_dpop_proof', 'the DPoP proof iat is outside the acceptable window')
  if (check.accessToken !== undefined && ath !== accessTokenHash(check.accessToken)) throw new DpopError('invalid_dpop_proof', 'the DPoP proof ath does not match the access token')
  if (check.nonce && !check.nonce(typeof nonce === 'string' ? nonce : undefined)) throw new DpopError('use_dpop_nonce', 'a fresh DPoP nonce is required')

  // Replay: one acceptance per (key, htu, jti) within the window; hashed to bound memory.
  const replayKey = createHash('sha256').update(`${jkt}\0${expected}\0${jti}`).digest('base64url')
  // Remembered one second past the last second the iat check still accepts it (now = iat + window).
  const seen = await check.replay.use(replayKey, iat + check.iatWindow + 1, check.now, jkt)
  if (seen === 'full') throw new DpopError('invalid_dpop_proof', 'too many DPoP proofs in flight, retry shortly')
  if (seen === 'replayed') throw new DpopError('invalid_dpop_proof', 'the DPoP proof has been used before')
  return { jkt, jwk, jti, iat }
}
