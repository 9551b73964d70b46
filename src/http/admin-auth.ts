import { createHash } from 'node:crypto'
import type { MiddlewareHandler } from 'hono'
import { TtlCache } from '@taskpass/verifier/cache'
import type { Deps } from '../broker.js'
import { ADMIN_ROLES, type AdminRole } from '../config.js'
import { invalidToken, OAuthError } from '../errors.js'
import { remoteAddress } from './rate-limit.js'

/** What an admin-authenticated route finds in its context: which configured key was used, and its role. */
export type AdminEnv = { Variables: { adminId: string; adminRole: AdminRole } }

/**
 * Admin API key check: `Authorization: Bearer <key>` (RFC 6750 §2.1) against the argon2id hashes
 * of the config. A key that verified once is remembered by its SHA-256, so argon2 does not run
 * per request; any other key costs argon2 runs, so it goes through the {@link AuthThrottle}
 * (failure budget per client IP, cap on concurrent verifications). There is no client id to
 * budget: a shared budget for all admin keys would let anyone lock the admins out.
 */
export function adminAuth(deps: Pick<Deps, 'config' | 'hasher' | 'authThrottle' | 'metrics'>): MiddlewareHandler<AdminEnv> {
  const observe = deps.metrics.cacheObserver('admin_keys')
  const known = new TtlCache<{ id: string; role: AdminRole }>(64)
  // Full admins first (`key<n>`, as before roles), then the named keys with their roles.
  const configured = [
    ...deps.config.admin.apiKeyHashes.map((hash, i) => ({ id: `key${i}`, role: 'admin' as AdminRole, hash })),
    ...deps.config.admin.keys.map((k) => ({ id: k.name, role: k.role, hash: k.hash })),
  ]
  return async function adminAuth(c, next) {
    const m = /^Bearer (\S+)$/i.exec(c.req.header('authorization') ?? '')
    if (!m) throw invalidToken('admin API key required')
    const key = m[1]!
    const digest = createHash('sha256').update(key).digest('base64url')
    let who = known.get(digest, 0)
    observe(who !== undefined)
    if (who === undefined) {
      // One throttled verification per configured hash: every argon2 run spends budget, so a wrong
      // key costs the broker no more runs than the budget allows, however many admin keys exist.
      for (const k of configured) {
        if (await deps.authThrottle.verify({ ip: remoteAddress(c) }, () => deps.hasher.verify(k.hash, key))) {
          who = { id: k.id, role: k.role }
          known.set(digest, who, Number.MAX_SAFE_INTEGER)
          break
        }
      }
    }
    if (who === undefined) throw invalidToken('admin API key not recognised')
    c.set('adminId', who.id)
    c.set('adminRole', who.role)
    await next()
  }
}

/**
 * The least role a route needs (after {@link adminAuth}): a key of a lesser role is 403
 * `insufficient_scope` (RFC 6750 §3.1), and the refusal is audited (the caller is known).
 */
export function requireRole(deps: Pick<Deps, 'stores' | 'clock'>, least: AdminRole): MiddlewareHandler<AdminEnv> {
  return async function requireRole(c, next) {
    const role = c.get('adminRole')
    if (ADMIN_ROLES.indexOf(role) < ADMIN_ROLES.indexOf(least)) {
      const what = `${c.req.method} ${c.req.routePath}`
      deps.stores.audit.insert({ at: deps.clock.now(), action: 'admin.refuse', decision: 'deny', reason: `admin:${c.get('adminId')} (${role}) may not ${what}: it needs ${least}`, error: 'insufficient_scope' })
      throw new OAuthError('insufficient_scope', 403, `this admin key's role (${role}) may not do this: it needs ${least}`, undefined, { 'WWW-Authenticate': `Bearer error="insufficient_scope", error_description="needs the ${least} role"` })
    }
    await next()
  }
}
