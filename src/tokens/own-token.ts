import { jwtVerify, type JWTPayload } from 'jose'
import { TtlCache } from '@taskpass/verifier/cache'
import type { Clock } from '../clock.js'
import type { KeySet } from '../keys/keyset.js'
import { peekJwt } from '../lib/jwt.js'
import { ACCESS_TOKEN_TYP } from './issue.js'

export type OwnTokenClaims = JWTPayload & { jti: string; exp: number }

/**
 * Verifies a token this broker issued (signature with a key we publish, `iss`, `typ`), for
 * introspection and revocation. Expiry is *not* checked here: callers decide what an expired
 * token means. Each distinct token is verified once and cached until its `exp`; a cached answer is
 * given only while its signing key is still one we publish, so a revoked key's tokens stop
 * verifying at once, cache included.
 */
export interface OwnTokenVerifier {
  verify(token: string): Promise<OwnTokenClaims | undefined>
  /**
   * As {@link verify}, with the `kid` that verified it, except that a cached answer does not ask
   * the keyset again: only for a caller that reads the token's row in the same request and
   * requires the row's `kid` to be this `kid`. Revoking a key revokes every unexpired token row it
   * signed in the same transaction (src/keys/revoke.ts), so the row answers for the key — one
   * statement per request instead of two. A row without a `kid` must be checked with {@link verify}.
   */
  verifyRecorded(token: string): Promise<{ kid: string; claims: OwnTokenClaims } | undefined>
}

export function createOwnTokenVerifier(opts: { keys: KeySet; issuer: string; clock: Clock }): OwnTokenVerifier {
  const cache = new TtlCache<{ kid: string; claims: OwnTokenClaims }>(50_000)

  /** The signature check (asymmetric, so once per distinct token): cached until `exp`. */
  async function verifyNew(token: string, now: number): Promise<{ kid: string; claims: OwnTokenClaims } | undefined> {
    const peeked = peekJwt(token)
    const kid = peeked?.header.kid
    const key = kid === undefined ? undefined : await opts.keys.publicKey(kid)
    if (!peeked || kid === undefined || !key || peeked.header.typ !== ACCESS_TOKEN_TYP) return undefined
    try {
      const { payload } = await jwtVerify(token, key, {
        issuer: opts.issuer,
        typ: ACCESS_TOKEN_TYP,
        algorithms: ['ES256', 'EdDSA'],
        currentDate: new Date(((peeked.payload.iat as number | undefined) ?? now) * 1000),
      })
      if (typeof payload.jti !== 'string' || typeof payload.exp !== 'number') return undefined
      const verified = { kid, claims: payload as OwnTokenClaims }
      if (verified.claims.exp > now) cache.set(token, verified, verified.claims.exp)
      return verified
    } catch {
      return undefined
    }
  }

  return {
    async verify(token) {
      const now = opts.clock.now()
      const hit = cache.get(token, now)
      if (hit) return (await opts.keys.publicKey(hit.kid)) ? hit.claims : undefined
      return (await verifyNew(token, now))?.claims
    },
    async verifyRecorded(token) {
      const now = opts.clock.now()
      return cache.get(token, now) ?? verifyNew(token, now)
    },
  }
}
