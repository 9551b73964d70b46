import { jwtVerify, type JWTPayload } from 'jose'
import { TtlCache } from '@taskpass/verifier/cache'
import type { Clock } from '../clock.js'
import type { KeySet } from '../keys/keyset.js'
import { peekJwt } from '../lib/jwt.js'
import { ACCESS_TOKEN_TYP } from './issue.js'

/**
 * Verifies a token this broker issued (signature with a key we publish, `iss`, `typ`), for
 * introspection and revocation. Expiry is *not* checked here: callers decide what an expired
 * token means. Each distinct token is verified once and cached until its `exp`; a cached answer is
 * given only while its signing key is still one we publish, so a revoked key's tokens stop
 * verifying at once, cache included.
 */
export interface OwnTokenVerifier {
  verify(token: string): Promise<(JWTPayload & { jti: string; exp: number }) | undefined>
}

export function createOwnTokenVerifier(opts: { keys: KeySet; issuer: string; clock: Clock }): OwnTokenVerifier {
  const cache = new TtlCache<{ kid: string; payload: JWTPayload & { jti: string; exp: number } }>(50_000)
  return {
    async verify(token) {
      const now = opts.clock.now()
      const hit = cache.get(token, now)
      if (hit) return (await opts.keys.publicKey(hit.kid)) ? hit.payload : undefined
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
        const verified = payload as JWTPayload & { jti: string; exp: number }
        if (verified.exp > now) cache.set(token, { kid, payload: verified }, verified.exp)
        return verified
      } catch {
        return undefined
      }
    },
  }
}
