import { createHash } from 'node:crypto'
import type { MiddlewareHandler } from 'hono'
import { TtlCache } from '@taskpass/verifier/cache'
import type { Deps } from '../broker.js'
import { invalidToken } from '../errors.js'
import { remoteAddress } from './rate-limit.js'

/** What an admin-authenticated route finds in its context: which configured key was used. */
export type AdminEnv = { Variables: { adminId: string } }

/**
 * Admin API key check: `Authorization: Bearer <key>` (RFC 6750 §2.1) against the argon2id hashes
 * of the config. A key that verified once is remembered by its SHA-256, so argon2 does not run
 * per request; any other key costs argon2 runs, so it goes through the {@link AuthThrottle}
 * (failure budget per client IP, cap on concurrent verifications). There is no client id to
 * budget: a shared budget for all admin keys would let anyone lock the admins out.
 */
export function adminAuth(deps: Pick<Deps, 'config' | 'hasher' | 'authThrottle'>): MiddlewareHandler<AdminEnv> {
  const known = new TtlCache<string>(64)
  return async function adminAuth(c, next) {
    const m = /^Bearer (\S+)$/i.exec(c.req.header('authorization') ?? '')
    if (!m) throw invalidToken('admin API key required')
    const key = m[1]!
    const digest = createHash('sha256').update(key).digest('base64url')
    let id = known.get(digest, 0)
    if (id === undefined) {
      // One throttled verification per configured hash: every argon2 run spends budget, so a wrong
      // key costs the broker no more runs than the budget allows, however many admin keys exist.
      for (const [i, hash] of deps.config.admin.apiKeyHashes.entries()) {
        if (await deps.authThrottle.verify({ ip: remoteAddress(c) }, () => deps.hasher.verify(hash, key))) {
          id = `key${i}`
          known.set(digest, id, Number.MAX_SAFE_INTEGER)
          break
        }
      }
    }
    if (id === undefined) throw invalidToken('admin API key not recognised')
    c.set('adminId', id)
    await next()
  }
}
