import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors, type JWK, type JWTPayload, type JWTVerifyGetKey, type ProtectedHeaderParameters } from 'jose'
import { readFileSync } from 'node:fs'

/** A compact JWS: three base64url segments, nothing else (RFC 8725bis §3.4 format confusion). */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/
export const MAX_TOKEN_LENGTH = 8192

/** Reads header and payload without verifying, or `undefined` when it is not a compact JWS. */
export function peekJwt(token: string): { header: ProtectedHeaderParameters; payload: JWTPayload } | undefined {
  if (token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) return undefined
  try {
    return { header: decodeProtectedHeader(token), payload: decodeJwt(token) }
  } catch {
    return undefined
  }
}

export interface KeySource {
  jwks?: { keys: Record<string, unknown>[] } | undefined
  jwksFile?: string | undefined
  jwksUri?: string | undefined
}

/**
 * The key resolver for a trusted issuer: a local JWK Set (inline or from a file, read once) or a
 * remote one (timeout, cache, cooldown: jose's createRemoteJWKSet). `select` maps each key to the
 * key to use, or drops it (e.g. SPIFFE bundle entries not marked `use: jwt-svid`).
 */
export function keyResolver(src: KeySource, select: (k: JWK) => JWK | undefined = (k) => k): JWTVerifyGetKey {
  if (src.jwksUri) {
    return createRemoteJWKSet(new URL(src.jwksUri), { timeoutDuration: 3000, cooldownDuration: 30_000, cacheMaxAge: 600_000 })
  }
  const set = src.jwks ?? (JSON.parse(readFileSync(src.jwksFile!, 'utf8')) as { keys: JWK[] })
  return createLocalJWKSet({ keys: (set.keys as JWK[]).map(select).filter((k): k is JWK => k !== undefined) })
}

/** A short, public reason for a jose verification failure (the full message goes to the private detail). */
export function describeJoseError(e: unknown): string {
  if (e instanceof errors.JWTExpired) return 'is expired'
  if (e instanceof errors.JWTClaimValidationFailed) {
    if (e.claim === 'nbf') return 'is not yet valid'
    if (e.claim === 'aud') return 'is not intended for this broker'
    if (e.claim === 'iss') return 'has an unexpected issuer'
    return `has an invalid "${e.claim}" claim`
  }
  if (e instanceof errors.JOSEAlgNotAllowed) return 'uses a disallowed algorithm'
  if (e instanceof errors.JWKSNoMatchingKey) return 'is signed with an unknown key'
  if (e instanceof errors.JWSSignatureVerificationFailed) return 'has an invalid signature'
  if (e instanceof errors.JWKSTimeout || (e instanceof errors.JOSEError && e.code === 'ERR_JOSE_GENERIC')) return 'cannot be verified: issuer keys unavailable'
  return 'is invalid'
}
