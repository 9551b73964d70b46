import { randomBytes } from 'node:crypto'
import { Hono, type Context } from 'hono'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import { z } from 'zod'
import type { Deps } from '../broker.js'
import type { AdminRole } from '../config.js'
import { OAuthError } from '../errors.js'
import { checkRole, configuredAdminKey, identifyAdminKey, type AdminIdentity } from '../http/admin-auth.js'
import { noStore } from '../http/middleware.js'
import { checkCsrf, csrfToken, pageResponse } from '../http/pages.js'
import { remoteAddress } from '../http/rate-limit.js'
import { signingRows } from '../keys/keyset.js'
import { ConsolePage, ConsoleSignInPage } from '../pages/console.js'
import { ErrorPage } from '../pages/error.js'
import { approveTask, denyTask } from '../tasks/approvals.js'
import { endTask, viewTask } from '../tasks/lifecycle.js'
import { CONSOLE_PATH, taskStatusFilter, type TaskStatusFilter } from './admin.js'

/**
 * /admin/console — the admin API as pages, for a person with an admin key: sign in with the key
 * (checked as the API checks it), then list tasks and approve, deny or revoke them, and see the
 * signing keys and the audit chain. The sign-in is a sealed cookie (1 hour, `SameSite=Strict`);
 * every action form carries a CSRF token bound to that sign-in; roles are enforced as by the API.
 */

/** How long a console sign-in lasts, in seconds. */
export const CONSOLE_TTL = 3600

const STATUSES = ['active', 'pending_approval', 'completed', 'revoked', 'denied', 'expired'] as const satisfies readonly TaskStatusFilter[]
const statusQuery = z.enum(STATUSES).optional()

/** Longest admin key accepted at the sign-in (the API's Bearer header is bounded by the header limit). */
const MAX_KEY_LENGTH = 512

interface ConsoleSession {
  admin: string
  role: AdminRole
  /** The key signed in with ({@link AdminIdentity.keyTag}): another key given the same name later signs nobody in. */
  key: string
  /** A random id of this sign-in: what the CSRF tokens are bound to. */
  sid: string
}

const NOTICES: Record<string, string> = {
  approved: 'The task was approved.',
  denied: 'The task was denied.',
  revoked: 'The task was revoked: its tokens no longer work.',
  'signed-in': 'Signed in.',
}

function refusal(status: number, message: string): OAuthError {
  return new OAuthError('invalid_request', status, message)
}

export function consoleRoutes(deps: Deps) {
  const { config, sealer } = deps
  const secure = config.issuer.startsWith('https:')
  const cookieName = secure ? '__Host-taskpass-console' : 'taskpass-console'
  const cookieOptions = { path: '/', httpOnly: true, sameSite: 'Strict' as const, secure }
  const csrfKey = sealer.key('console-csrf')
  const csrfFor = (s: ConsoleSession) => csrfToken(csrfKey, `${s.admin}/${s.sid}`)

  /** The signed-in admin, while the very key they signed in with is still configured with the role they signed in with. */
  async function session(c: Context): Promise<ConsoleSession | undefined> {
    const s = await sealer.open<ConsoleSession>('console', getCookie(c, cookieName))
    if (!s || typeof s.admin !== 'string' || typeof s.sid !== 'string') return undefined
    // A key removed from the config (or given another role) no longer signs anyone in — nor does
    // its name once another key has it (deleted and created again, through the catalog or the file).
    const now = configuredAdminKey(deps, s.admin)
    if (now === undefined || now.role !== s.role || now.keyTag !== s.key) return undefined
    return s
  }

  function signInPage(c: Context, error?: string, status = 200) {
    return pageResponse(c, ConsoleSignInPage({ action: `${CONSOLE_PATH}/login`, error }), { status })
  }

  function answerError(c: Context, e: unknown) {
    if (e instanceof OAuthError) {
      // A throttled sign-in says when to try again, as the API's answer does.
      const retry = e.headers?.['Retry-After']
      if (retry !== undefined) c.header('Retry-After', retry)
      const title = e.status === 403 ? 'Not allowed' : e.status === 404 ? 'No such task' : 'This cannot be done'
      return pageResponse(c, ErrorPage({ status: e.status, title, message: e.description }), { status: e.status })
    }
    throw e
  }

  async function form(c: Context): Promise<URLSearchParams> {
    if (c.req.header('content-type')?.split(';')[0]?.trim().toLowerCase() !== 'application/x-www-form-urlencoded') throw refusal(400, 'unexpected form encoding')
    return new URLSearchParams(await c.req.text())
  }

  /** The signed-in admin of an action form: signed in, and the form's CSRF token theirs. */
  async function actor(c: Context, f: URLSearchParams): Promise<ConsoleSession | Response> {
    const s = await session(c)
    if (!s) return signInPage(c, 'Your sign-in has expired: sign in again.', 401)
    if (!checkCsrf(csrfKey, `${s.admin}/${s.sid}`, f.get('csrf') ?? undefined)) throw refusal(403, 'the form has expired or did not come from this console: go back and try again')
    return s
  }

  /** A task action: signed in, CSRF, the operator role (as the API), then the domain function. */
  function taskAction(what: 'approve' | 'deny' | 'revoke', done: string) {
    return async (c: Context) => {
      try {
        const f = await form(c)
        const s = await actor(c, f)
        if (s instanceof Response) return s
        const who: AdminIdentity = { id: s.admin, role: s.role }
        checkRole(deps, who, 'operator', `POST /admin/tasks/:id/${what} (console)`)
        const id = c.req.param('id')!
        const caller = { kind: 'admin' as const, id: s.admin }
        const reason = f.get('reason') || undefined
        if (what === 'approve') approveTask(deps, id, caller, reason)
        else if (what === 'deny') denyTask(deps, id, caller, reason)
        else endTask(deps, id, 'revoked', caller)
        return c.redirect(`${CONSOLE_PATH}?notice=${done}`, 303)
      } catch (e) {
        return answerError(c, e)
      }
    }
  }

  function keyStates(): { kid: string; state: string }[] {
    const rows = signingRows(deps.keyStore)
    const queue = [rows.current, rows.next, rows.standby].map((r) => ({ kid: r.kid, state: r.state }))
    // What else the JWKS still publishes: retired keys within their publish window.
    const retired = deps.keys.jwks().keys.filter((k) => k.kid !== undefined && !queue.some((q) => q.kid === k.kid)).map((k) => ({ kid: k.kid!, state: 'retired (still published)' }))
    return [...queue, ...retired]
  }

  return new Hono()
    .get(CONSOLE_PATH, noStore(), async (c) => {
      try {
        const s = await session(c)
        if (!s) return signInPage(c)
        const parsed = statusQuery.safeParse(c.req.query('status') || undefined)
        if (!parsed.success) throw refusal(400, `"status" must be one of ${STATUSES.join(', ')}`)
        const now = deps.clock.now()
        const tasks = deps.stores.tasks.list({ ...taskStatusFilter(parsed.data, now), limit: 100 }).map((row) => {
          const v = viewTask(row, now)
          return { taskId: v.task_id, user: v.user, workload: v.workload, client: v.client_id, purpose: v.purpose, resources: v.resources, status: v.status, expiresAt: v.expires_at }
        })
        const chain = deps.stores.audit.verify()
        const notice = NOTICES[c.req.query('notice') ?? '']
        return pageResponse(c, ConsolePage({
          admin: { id: s.admin, role: s.role },
          csrf: csrfFor(s),
          mayAct: s.role !== 'auditor',
          taskAction: `${CONSOLE_PATH}/tasks`,
          signOutAction: `${CONSOLE_PATH}/logout`,
          status: parsed.data ?? '',
          statuses: STATUSES,
          tasks,
          keys: keyStates(),
          audit: { ok: chain.ok, rows: chain.rows, head: chain.head, firstBad: chain.first_bad },
          now,
          notice,
        }))
      } catch (e) {
        return answerError(c, e)
      }
    })
    .post(`${CONSOLE_PATH}/login`, noStore(), async (c) => {
      try {
        // No CSRF token here: there is no session yet to bind one to, and a forged sign-in would
        // need an admin key — which is all the forger would gain.
        const f = await form(c)
        const key = f.get('key') ?? ''
        const who = key.length > 0 && key.length <= MAX_KEY_LENGTH ? await identifyAdminKey(deps, key, remoteAddress(c)) : undefined
        if (!who) return signInPage(c, 'This key is not an admin key here.', 401)
        const sealed = await sealer.seal('console', { admin: who.id, role: who.role, key: who.keyTag, sid: randomBytes(16).toString('base64url') } satisfies ConsoleSession, CONSOLE_TTL)
        setCookie(c, cookieName, sealed, { ...cookieOptions, maxAge: CONSOLE_TTL })
        deps.stores.audit.insert({ at: deps.clock.now(), action: 'admin.console.sign_in', decision: 'allow', reason: `admin:${who.id} (${who.role}) signed in to the console` })
        return c.redirect(`${CONSOLE_PATH}?notice=signed-in`, 303)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .post(`${CONSOLE_PATH}/logout`, noStore(), async (c) => {
      try {
        const f = await form(c)
        const s = await actor(c, f)
        if (s instanceof Response) return s
        deleteCookie(c, cookieName, cookieOptions)
        return c.redirect(CONSOLE_PATH, 303)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .post(`${CONSOLE_PATH}/tasks/:id/approve`, noStore(), taskAction('approve', 'approved'))
    .post(`${CONSOLE_PATH}/tasks/:id/deny`, noStore(), taskAction('deny', 'denied'))
    .post(`${CONSOLE_PATH}/tasks/:id/revoke`, noStore(), taskAction('revoke', 'revoked'))
}
