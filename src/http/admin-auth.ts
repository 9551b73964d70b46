import { createHash } from 'node:crypto'
import type { MiddlewareHandler } from 'hono'
import { TtlCache } from '@taskpass/verifier/cache'
import type { Deps } from '../broker.js'
import { ADMIN_ROLES, type AdminRole } from '../config.js'
import { invalidToken, OAuthError } from '../errors.js'
import { remoteAddress } from './rate-limit.js'

/** What an admin-authenticated route finds in its context: which configured key was used, and its role. */
export type AdminEnv = { Variables: { adminId: string; adminRole: AdminRole } }

/** Who an admin key belongs to: the configured key's id (`key<n>` or its name) and its role. */
export interface AdminIdentity {
  id: string
  role: AdminRole
  /**
   * Which key it was, among every key ever given this id: a digest of the configured hash (salted,
   * so a new key of the same name has another). What outlives the request (the console's
   * sign-in) is bound to it, not to the name alone.
   */
  keyTag?: string
}

type IdentifyDeps = Pick<Deps, 'config' | 'hasher' | 'authThrottle' | 'metrics'>

interface KeyCheck {
  configured: { id: string; role: AdminRole; hash: string; keyTag: string }[]
  known: TtlCache<Required<AdminIdentity>>
  observe: (hit: boolean) => void
}

// One cache per configuration: the admin API and the console share what verified once.
const checks = new WeakMap<Deps['config'], KeyCheck>()

function keyCheck(deps: IdentifyDeps): KeyCheck {
  let check = checks.get(deps.config)
  if (!check) {
    // Full admins first (`key<n>`, as before roles), then the named keys with their roles.
    const configured = [
      ...deps.config.admin.apiKeyHashes.map((hash, i) => ({ id: `key${i}`, role: 'admin' as AdminRole, hash })),
      ...deps.config.admin.keys.map((k) => ({ id: k.name, role: k.role, hash: k.hash })),
    ].map((k) => ({ ...k, keyTag: createHash('sha256').update(k.hash).digest('base64url') }))
    check = { configured, known: new TtlCache<Required<AdminIdentity>>(64), observe: deps.metrics.cacheObserver('admin_keys') }
    checks.set(deps.config, check)
  }
  return check
}

/**
 * Which configured admin key `key` is, or `undefined`: checked against the argon2id hashes of the
 * config. A key that verified once is remembered by its SHA-256, so argon2 does not run per
 * request; any other key costs argon2 runs, so it goes through the {@link AuthThrottle} (failure
 * budget per client IP `ip`, cap on concurrent verifications). There is no client id to budget:
 * a shared budget for all admin keys would let anyone lock the admins out.
 */
export async function identifyAdminKey(deps: IdentifyDeps, key: string, ip: string | undefined): Promise<Required<AdminIdentity> | undefined> {
  const check = keyCheck(deps)
  const { configured, known, observe } = check
  const digest = createHash('sha256').update(key).digest('base64url')
  const hit = known.get(digest, 0)
  observe(hit !== undefined)
  if (hit !== undefined) return hit
  // One throttled verification per configured hash: every argon2 run spends budget, so a wrong
  // key costs the broker no more runs than the budget allows, however many admin keys exist.
  for (const k of configured) {
    if (await deps.authThrottle.verify({ ip }, () => deps.hasher.verify(k.hash, key))) {
      const who = { id: k.id, role: k.role, keyTag: k.keyTag }
      known.set(digest, who, Number.MAX_SAFE_INTEGER)
      if (keyCheck(deps) === check) return who
      // The catalog changed while argon2 ran (the key switched off, deleted or given another
      // role): the key counts as it is now — the same key (its tag), with its role now, or none.
      const now = configuredAdminKey(deps, k.id)
      return now?.keyTag === k.keyTag ? { ...who, role: now.role } : undefined
    }
  }
  return undefined
}

/**
 * The configured admin key `id` now — its role and {@link AdminIdentity.keyTag} — or `undefined`
 * when no such key is configured (removed, switched off, or never there).
 */
export function configuredAdminKey(deps: Pick<Deps, 'config' | 'hasher' | 'authThrottle' | 'metrics'>, id: string): { role: AdminRole; keyTag: string } | undefined {
  const k = keyCheck(deps).configured.find((c) => c.id === id)
  return k && { role: k.role, keyTag: k.keyTag }
}

/**
 * Admin API key check: `Authorization: Bearer <key>` (RFC 6750 §2.1), identified by
 * {@link identifyAdminKey}.
 */
export function adminAuth(deps: IdentifyDeps): MiddlewareHandler<AdminEnv> {
  return async function adminAuth(c, next) {
    const m = /^Bearer (\S+)$/i.exec(c.req.header('authorization') ?? '')
    if (!m) throw invalidToken('admin API key required')
    const who = await identifyAdminKey(deps, m[1]!, remoteAddress(c))
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
    await checkRole(deps, { id: c.get('adminId'), role: c.get('adminRole') }, least, `${c.req.method} ${c.req.routePath}`)
    await next()
  }
}

/**
 * Refuses `who` when its role is below `least` — 403 `insufficient_scope` (RFC 6750 §3.1), audited
 * as `admin.refuse` naming `what` was tried. {@link requireRole} and the console both use it.
 */
export async function checkRole(deps: Pick<Deps, 'stores' | 'clock'>, who: AdminIdentity, least: AdminRole, what: string): Promise<void> {
  if (ADMIN_ROLES.indexOf(who.role) >= ADMIN_ROLES.indexOf(least)) return
  await deps.stores.audit.insert({ at: deps.clock.now(), action: 'admin.refuse', decision: 'deny', reason: `admin:${who.id} (${who.role}) may not ${what}: it needs ${least}`, error: 'insufficient_scope' })
  throw new OAuthError('insufficient_scope', 403, `this admin key's role (${who.role}) may not do this: it needs ${least}`, undefined, { 'WWW-Authenticate': `Bearer error="insufficient_scope", error_description="needs the ${least} role"` })
}
