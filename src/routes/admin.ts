import { Hono, type Context } from 'hono'
import type { Deps } from '../broker.js'
import { invalidRequest } from '../errors.js'
import { parseBrokerSubject } from '../exchange/subject-token.js'
import { adminAuth, requireRole, type AdminEnv } from '../http/admin-auth.js'
import { noStore } from '../http/middleware.js'
import { rotateSigningKeys } from '../keys/rotate.js'
import { revokeKey } from '../keys/revoke.js'
import type { ApprovalDecision } from '../tasks/approvals.js'
import { viewAuditEvent } from '../store/audit-view.js'
import { taskEvidence } from '../tasks/evidence.js'
import type { TaskRow } from '../store/stores.js'
import { endTask, revokeTasksOfWorkload, viewTask } from '../tasks/lifecycle.js'
import { signingKeyStatus } from '../keys/status.js'
import { decideAs } from './tasks.js'
import { policyRoutes } from './policies.js'
import { catalogRoutes } from './catalog.js'
import { revokeSession } from '../tasks/sessions.js'
import { parseJson } from '../http/form.js'
import { z } from 'zod'

const adminTaskQuery = z.strictObject({
  status: z.enum(['active', 'pending_approval', 'completed', 'revoked', 'denied', 'expired']).optional(),
  workload: z.string().min(1).max(2048).optional(),
  user: z.string().min(1).max(1024).optional(),
  resource: z.string().min(1).max(2048).optional(),
  limit: z.string().regex(/^[0-9]{1,3}$/).transform(Number).pipe(z.number().int().min(1).max(500)).default(100),
})

/** What revoking a session names: the subject issuer and the session id (`POST /admin/sessions/revoke`, the console's form). */
export const SESSION_REVOCATION = z.strictObject({ issuer: z.string().min(1).max(2048), sid: z.string().min(1).max(1024) })

/**
 * What revoking a workload's open tasks names: the workload id (`POST /admin/tasks/revoke`, the
 * console's form, the CLI's `tasks revoke --workload`).
 */
export const WORKLOAD_REVOCATION = z.strictObject({ workload: z.string().min(1).max(2048) })

/** How a bad workload revocation is explained (the API, the console and the CLI say the same). */
export const WORKLOAD_REVOCATION_RULES = '"workload" (1 to 2048 characters) is required'

/** What a task listing's query says, checked: the admin API's and the console's filters. */
export type TaskListQuery = z.infer<typeof adminTaskQuery>

/** The filters of a task listing, and how a bad one is explained (both listings say the same). */
export const TASK_QUERY_RULES = '"status" must be a task status; "workload" and "resource" 1 to 2048 characters, "user" 1 to 1024; "limit" an integer from 1 to 500'

/** Checks a listing's query parameters (only those named by the schema); undefined when one is bad. */
export function parseTaskListQuery(query: Record<string, string>): TaskListQuery | undefined {
  const parsed = adminTaskQuery.safeParse(query)
  return parsed.success ? parsed.data : undefined
}

/**
 * The tasks a listing shows, newest first: by status, workload, user (as tokens name it: `sub`,
 * with its issuer's prefix when there are several IdPs) and declared resource.
 */
export async function listTasks(deps: Pick<Deps, 'stores' | 'config'>, q: TaskListQuery, now: number): Promise<TaskRow[]> {
  const owner = q.user === undefined ? undefined : parseBrokerSubject(deps.config.subjectIssuers, q.user)
  // A user no subject issuer could have named has no tasks.
  if (q.user !== undefined && !owner) return []
  return await deps.stores.tasks.list({ ...taskStatusFilter(q.status, now), workloadId: q.workload, user: owner && { issuer: owner.issuer, sub: owner.user }, resource: q.resource, limit: q.limit })
}

/** A task status the admin listings filter by (`expired` included, though it is derived). */
export type TaskStatusFilter = NonNullable<z.infer<typeof adminTaskQuery>['status']>

/** The store filter of a listing by `status` at `now`. */
export function taskStatusFilter(status: TaskStatusFilter | undefined, now: number) {
  // `expired` is derived from time, not stored: an open task whose time has passed.
  const open = ['active', 'pending_approval'] as const
  return status === undefined ? {}
    : status === 'expired' ? { statuses: [...open], expiry: { now, expired: true } }
    : status === 'active' || status === 'pending_approval' ? { statuses: [status], expiry: { now, expired: false } }
    : { statuses: [status] }
}

/** The console's paths (src/routes/console.ts): it signs in with a cookie, not the Bearer key. */
export const CONSOLE_PATH = '/admin/console'
const isConsolePath = (path: string) => path === CONSOLE_PATH || path.startsWith(`${CONSOLE_PATH}/`)

/**
 * /admin — list, approve, deny and revoke tasks (one, or a workload's open ones), revoke sessions,
 * read the signing keys' status, rotate and revoke keys, read the audit log. Reading
 * needs any admin key (an auditor's), acting on tasks and sessions an operator's, keys an admin's.
 */
export function adminRoutes(deps: Deps) {
  const operator = requireRole(deps, 'operator')
  const admin = requireRole(deps, 'admin')
  const auth = adminAuth(deps)
  return new Hono<AdminEnv>()
    // The console authenticates its own way (a sealed cookie); every other /admin path needs the key.
    .use('/admin/*', noStore(), (c, next) => (isConsolePath(c.req.path) ? next() : auth(c, next)))
    .get('/admin/tasks', async (c) => {
      const q = parseTaskListQuery(c.req.query())
      if (!q) throw invalidRequest(TASK_QUERY_RULES)
      const now = deps.clock.now()
      return c.json({ tasks: (await listTasks(deps, q, now)).map((r) => viewTask(r, now)) })
    })
    .post('/admin/tasks/revoke', operator, async (c) => {
      const parsed = WORKLOAD_REVOCATION.safeParse(await parseJson(c))
      if (!parsed.success) throw invalidRequest(`body must be {"workload": <workload id>}: ${WORKLOAD_REVOCATION_RULES}`)
      const { workload } = parsed.data
      return c.json({ workload, tasks_revoked: await revokeTasksOfWorkload(deps, workload, { kind: 'admin', id: c.get('adminId') }) })
    })
    .post('/admin/tasks/:id/approve', operator, (c) => adminDecide(deps, c, 'approve'))
    .post('/admin/tasks/:id/deny', operator, (c) => adminDecide(deps, c, 'deny'))
    .post('/admin/tasks/:id/revoke', operator, async (c) => c.json(await endTask(deps, c.req.param('id'), 'revoked', { kind: 'admin', id: c.get('adminId') })))
    .post('/admin/sessions/revoke', operator, async (c) => {
      const parsed = SESSION_REVOCATION.safeParse(await parseJson(c))
      if (!parsed.success) throw invalidRequest('body must be {"issuer": <subject issuer>, "sid": <session id>}')
      return c.json(await revokeSession(deps, parsed.data.issuer, parsed.data.sid, `admin:${c.get('adminId')}`))
    })
    .get('/admin/keys', async (c) => c.json(await signingKeyStatus(deps.stores, deps.clock.now())))
    .post('/admin/keys/rotate', admin, async (c) => {
      const force = c.req.query('force')
      if (force !== undefined && force !== 'true' && force !== 'false') throw invalidRequest('"force" must be true or false')
      const result = await rotateSigningKeys(deps, { force: force === 'true' }, `admin:${c.get('adminId')}`)
      return c.json(result)
    })
    .post('/admin/keys/:kid/revoke', admin, async (c) => {
      const result = await revokeKey({ keyStore: deps.keyStore, stores: deps.stores, audiences: deps.config.resources.map((r) => r.uri) }, c.req.param('kid'), `admin:${c.get('adminId')}`)
      await deps.keys.reload()
      return c.json(result)
    })
    .get('/admin/audit/verify', async (c) => c.json(await deps.stores.audit.verify()))
    .get('/admin/tasks/:id/evidence', async (c) =>
      c.body(await taskEvidence(deps, c.req.param('id')), 200, { 'Content-Type': 'application/x-ndjson; charset=utf-8' }),
    )
    .get('/admin/audit', async (c) => {
      const afterText = c.req.query('after') ?? '0'
      const limitText = c.req.query('limit') ?? '100'
      const after = Number(afterText)
      const limit = Number(limitText)
      if (!/^[0-9]{1,15}$/.test(afterText) || !/^[0-9]{1,4}$/.test(limitText) || limit < 1 || limit > 1000) throw invalidRequest('"after" ≥ 0 and 1 ≤ "limit" ≤ 1000 must be integers')
      return c.json({ events: (await deps.stores.audit.list({ afterId: after, limit })).map(viewAuditEvent) })
    })
    .route('/', policyRoutes(deps))
    .route('/', catalogRoutes(deps))
}

/** An admin approves or denies a task. */
function adminDecide(deps: Deps, c: Context<AdminEnv>, how: ApprovalDecision) {
  return decideAs(deps, c, how, { kind: 'admin', id: c.get('adminId') })
}
