import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, errors, type JWK, type JWTPayload, type JWTVerifyGetKey, type ProtectedHeaderParameters } from 'jose'
import { readFileSync } from 'node:fs'
import type { Clock } from '../clock.js'
import { createRemoteKeySet, KeysUnavailableError, type RemoteJwksOptions } from './remote-jwks.js'

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

/** How {@link keyResolver} reaches remote key sets, and which keys it keeps. */
export interface KeyResolverOptions {
  clock: Clock
  remote: RemoteJwksOptions
  /** Maps each key to the key to use, or drops it (e.g. SPIFFE bundle entries not marked `use: jwt-svid`). */
  select?: (k: JWK) => JWK | undefined
  /** SPIFFE bundle endpoints: refresh per `spiffe_refresh_hint`. */
  honourRefreshHint?: boolean
}

/**
 * The key resolver for a trusted issuer: a local JWK Set (inline or from a file, read once) or a
 * remote one, fetched by {@link createRemoteKeySet} (timeout, size cap, no redirects, cache,
 * cooldown; unavailable keys mean refusal). `select` applies to every source alike.
 */
export function keyResolver(src: KeySource, opts: KeyResolverOptions): JWTVerifyGetKey {
  const select = opts.select ?? ((k: JWK) => k)
  if (src.jwksUri) {
    return createRemoteKeySet(new URL(src.jwksUri), { ...opts.remote, clock: opts.clock, select, honourRefreshHint: opts.honourRefreshHint ?? false })
  }
  const set = src.jwks ?? (JSON.parse(readFileSync(src.jwksFile!, 'utf8')) as { keys: JWK[] })
  return createLocalJWKSet({ keys: (set.keys as JWK[]).map(select).filter((k): k is JWK => k !== undefined) })
}

/** RFC 7515 §4.1.9: `typ` is a media type, case-insensitive, with `application/` omitted when unambiguous. */
export function normalizeTyp(typ: string): string {
  const t = typ.toLowerCase()
  return t.startsWith('application/') ? t.slice('application/'.length) : t
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
  if (e instanceof KeysUnavailableError || e instanceof errors.JWKSTimeout || (e instanceof errors.JOSEError && e.code === 'ERR_JOSE_GENERIC')) return 'cannot be verified: issuer keys unavailable'
  return 'is invalid'
}
