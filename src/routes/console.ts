import { randomBytes } from 'node:crypto'
import { Hono, type Context } from 'hono'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import type { Deps } from '../broker.js'
import type { AdminRole, Config } from '../config.js'
import { OAuthError, temporarilyUnavailable } from '../errors.js'
import { checkRole, configuredAdminKey, identifyAdminKey, type AdminIdentity } from '../http/admin-auth.js'
import { noStore } from '../http/middleware.js'
import { checkCsrf, csrfToken, pageResponse } from '../http/pages.js'
import { remoteAddress } from '../http/rate-limit.js'
import { signingRows } from '../keys/keyset.js'
import { rotateSigningKeys } from '../keys/rotate.js'
import { ConsoleLivePage, ConsolePage, ConsoleResourcesPage, ConsoleSignInPage, ConsoleTaskPage, ConsoleWorkloadsPage, taskPage, type ConsoleFrameProps, type LiveTaskRow } from '../pages/console.js'
import { relativeTime, untilText } from '../pages/format.js'
import { ErrorPage } from '../pages/error.js'
import type { TaskRow } from '../store/stores.js'
import { approveTask, denyTask } from '../tasks/approvals.js'
import { evidenceTimeline, taskEvidence } from '../tasks/evidence.js'
import { endTask, revokeTasksOfWorkload, viewTask, type TaskView } from '../tasks/lifecycle.js'
import { revokeSession } from '../tasks/sessions.js'
import { CONSOLE_PATH, listTasks, parseTaskListQuery, SESSION_REVOCATION, TASK_QUERY_RULES, WORKLOAD_REVOCATION, WORKLOAD_REVOCATION_RULES, type TaskStatusFilter } from './admin.js'

/**
 * /admin/console — the admin API as pages, for a person with an admin key: sign in with the key
 * (checked as the API checks it), then list and filter tasks, open a task's page (its facts and
 * timeline), approve, deny or revoke tasks, revoke a session or a workload's open tasks, rotate
 * the signing keys, see the audit chain, the workloads and the resources, and follow tasks live
 * (Server-Sent Events). The sign-in is a sealed cookie (1 hour, `SameSite=Strict`); every action
 * form carries a CSRF token bound to that sign-in; roles are enforced as by the API.
 */

/** How long a console sign-in lasts, in seconds. */
export const CONSOLE_TTL = 3600

const STATUSES = ['active', 'pending_approval', 'completed', 'revoked', 'denied', 'expired'] as const satisfies readonly TaskStatusFilter[]
/** The task page's filters: query parameters as the admin API's `GET /admin/tasks` takes them. */
const FILTERS = ['status', 'user', 'workload', 'resource'] as const

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
  'session-revoked': 'The session was revoked: its open tasks and their tokens no longer work.',
  'workload-revoked': 'The workload\'s open tasks were revoked: their tokens no longer work.',
  'keys-rotated': 'The signing keys were rotated: the next key signs now.',
  'signed-in': 'Signed in.',
}

/** Live streams (`/admin/console/events`) one broker process holds at once; one more is 503. */
export const LIVE_STREAM_LIMIT = 32

/** Milliseconds between the comments that keep an idle live stream open through proxies. */
export const LIVE_HEARTBEAT_MS = 15_000

/** A live stream whose reader falls this many bytes behind is closed: a reader that stops reading costs us no more. */
const LIVE_MAX_BEHIND = 256 * 1024

/** How long an EventSource waits before reconnecting (the stream's `retry:`), in milliseconds. */
const LIVE_RETRY_MS = 5000

export interface ConsoleOptions {
  /** Default {@link LIVE_STREAM_LIMIT}. */
  liveStreams?: number | undefined
  /** Default {@link LIVE_HEARTBEAT_MS}. */
  heartbeatMs?: number | undefined
}

/** How a workload proves who it is, in words: its attestation's issuer, or the OAuth clients it stands for. */
function attestsAs(w: Config['workloads'][number]): string {
  if (w.attestation) return `attestation by ${w.attestation.issuer}`
  const rule = w.oauthClient!.clientId
  const one = (p: string | { glob: string }) => (typeof p === 'string' ? p : `glob ${p.glob}`)
  return `OAuth client ${Array.isArray(rule) ? rule.map(one).join(', ') : one(rule)}`
}

function refusal(status: number, message: string): OAuthError {
  return new OAuthError('invalid_request', status, message)
}

export function consoleRoutes(deps: Deps, options: ConsoleOptions = {}) {
  const { config, sealer } = deps
  const liveLimit = options.liveStreams ?? LIVE_STREAM_LIMIT
  const heartbeatMs = options.heartbeatMs ?? LIVE_HEARTBEAT_MS
  /** The open live streams: each entry ends its stream. */
  const live = new Set<() => void>()
  const secure = config.issuer.startsWith('https:')
  const cookieName = secure ? '__Host-taskpass-console' : 'taskpass-console'
  const cookieOptions = { path: '/', httpOnly: true, sameSite: 'Strict' as const, secure }
  const csrfKey = sealer.key('console-csrf')
  const csrfFor = (s: ConsoleSession) => csrfToken(csrfKey, `${s.admin}/${s.sid}`)

  /** The signed-in admin, while the very key they signed in with is still configured with the role they signed in with. */
  async function session(c: Context): Promise<ConsoleSession | undefined> {
    return sessionOf(getCookie(c, cookieName))
  }

  async function sessionOf(cookie: string | undefined): Promise<ConsoleSession | undefined> {
    const s = await sealer.open<ConsoleSession>('console', cookie)
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
      return pageResponse(c, ErrorPage({ status: e.status, title, message: e.description, code: e.code }), { status: e.status })
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
        await checkRole(deps, who, 'operator', `POST /admin/tasks/:id/${what} (console)`)
        const id = c.req.param('id')!
        const caller = { kind: 'admin' as const, id: s.admin }
        const reason = f.get('reason') || undefined
        if (what === 'approve') await approveTask(deps, id, caller, reason)
        else if (what === 'deny') await denyTask(deps, id, caller, reason)
        else await endTask(deps, id, 'revoked', caller)
        // From the task's page, back to it; from the list, to the list.
        const back = f.get('from') === 'task' ? taskPage(`${CONSOLE_PATH}/tasks`, id) : CONSOLE_PATH
        return c.redirect(`${back}?notice=${done}`, 303)
      } catch (e) {
        return answerError(c, e)
      }
    }
  }

  /** An action that is not on one task: signed in, CSRF, the least role, then `run` (which answers). */
  function adminAction(least: AdminRole, what: string, run: (c: Context, f: URLSearchParams, s: ConsoleSession) => Promise<Response> | Response) {
    return async (c: Context) => {
      try {
        const f = await form(c)
        const s = await actor(c, f)
        if (s instanceof Response) return s
        await checkRole(deps, { id: s.admin, role: s.role }, least, `${what} (console)`)
        return await run(c, f, s)
      } catch (e) {
        return answerError(c, e)
      }
    }
  }

  /** A signed-in page: the frame (who, sign-out, notice) for `render`, or the sign-in form. */
  function signedInPage(render: (c: Context, s: ConsoleSession, frame: ConsoleFrameProps) => Promise<Response> | Response) {
    return async (c: Context) => {
      try {
        const s = await session(c)
        if (!s) return signInPage(c)
        return await render(c, s, { admin: { id: s.admin, role: s.role }, csrf: csrfFor(s), signOutAction: `${CONSOLE_PATH}/logout`, notice: NOTICES[c.req.query('notice') ?? ''] })
      } catch (e) {
        return answerError(c, e)
      }
    }
  }

  function liveRow(v: TaskView, now: number): LiveTaskRow {
    return { task_id: v.task_id, href: taskPage(`${CONSOLE_PATH}/tasks`, v.task_id), user: v.user, workload: v.client_id ? `${v.workload} (${v.client_id})` : v.workload, purpose: v.purpose, status: v.status, ends: untilText(v.expires_at, now) }
  }

  /**
   * A live stream (text/event-stream): one `task` event per task opened, decided or ended in this
   * process (the approval waiters' notifications), a heartbeat comment every `heartbeatMs` — at
   * which the sign-in is checked again, so a stream ends with its sign-in — and the end when the
   * database closes. Bounded: `liveLimit` streams at once, and a reader that falls behind is dropped.
   */
  function liveStream(c: Context, cookie: string | undefined): Response {
    const encoder = new TextEncoder()
    let end = () => {}
    const body = new ReadableStream<Uint8Array>(
      {
        start(controller) {
          let ended = false
          const send = (text: string) => {
            if (ended) return
            if ((controller.desiredSize ?? 0) < -LIVE_MAX_BEHIND) return end()
            try {
              controller.enqueue(encoder.encode(text))
            } catch {
              // The stream is gone (the reader errored): nobody to tell.
              end()
            }
          }
          const unsubscribe = deps.approvals.subscribe({
            async changed(taskId) {
              let row: TaskRow | undefined
              try {
                row = await deps.stores.tasks.get(taskId)
              } catch {
                return end() // the database refused the read (busy, closing): the page reconnects
              }
              if (!row) return
              const now = deps.clock.now()
              send(`event: task\ndata: ${JSON.stringify(liveRow(viewTask(row, now), now))}\n\n`)
            },
            closed: () => end(),
          })
          const beat = setInterval(() => {
            sessionOf(cookie).then((s) => (s ? send(': heartbeat\n\n') : end()), () => end())
          }, heartbeatMs)
          beat.unref()
          end = () => {
            if (ended) return
            ended = true
            clearInterval(beat)
            unsubscribe()
            live.delete(end)
            try {
              controller.close()
            } catch {
              // Already closed or errored by the reader going away.
            }
          }
          live.add(end)
          send(`retry: ${LIVE_RETRY_MS}\n: connected\n\n`)
        },
        cancel() {
          // The client went away.
          end()
        },
      },
      new ByteLengthQueuingStrategy({ highWaterMark: 16 * 1024 }),
    )
    return c.body(body, 200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' })
  }

  async function keyStates(): Promise<{ kid: string; state: string }[]> {
    const rows = await signingRows(deps.stores)
    const queue = [rows.current, rows.next, rows.standby].map((r) => ({ kid: r.kid, state: r.state }))
    // What else the JWKS still publishes: retired keys within their publish window.
    const retired = (await deps.keys.jwks()).keys.filter((k) => k.kid !== undefined && !queue.some((q) => q.kid === k.kid)).map((k) => ({ kid: k.kid!, state: 'retired (still published)' }))
    return [...queue, ...retired]
  }

  return new Hono()
    .get(CONSOLE_PATH, noStore(), async (c) => {
      try {
        const s = await session(c)
        if (!s) return signInPage(c)
        // The filter form sends every field, empty ones too: empty means "any".
        const fields = Object.fromEntries(FILTERS.map((k) => [k, c.req.query(k) ?? '']).filter(([, v]) => v !== ''))
        const q = parseTaskListQuery(fields)
        if (!q) throw refusal(400, TASK_QUERY_RULES)
        const now = deps.clock.now()
        const tasks = (await listTasks(deps, q, now)).map((row) => {
          const v = viewTask(row, now)
          return { taskId: v.task_id, user: v.user, workload: v.workload, client: v.client_id, purpose: v.purpose, resources: v.resources, status: v.status, expiresAt: v.expires_at }
        })
        const chain = await deps.stores.audit.verify()
        const notice = NOTICES[c.req.query('notice') ?? '']
        return pageResponse(c, ConsolePage({
          admin: { id: s.admin, role: s.role },
          csrf: csrfFor(s),
          mayAct: s.role !== 'auditor',
          taskAction: `${CONSOLE_PATH}/tasks`,
          signOutAction: `${CONSOLE_PATH}/logout`,
          filter: { status: q.status ?? '', user: q.user ?? '', workload: q.workload ?? '', resource: q.resource ?? '' },
          statuses: STATUSES,
          // Read now, not when the routes were made: the configuration may change while the broker runs.
          workloads: deps.config.workloads.map((w) => w.id),
          resources: deps.config.resources.map((r) => r.uri),
          tasks,
          keys: await keyStates(),
          ...(s.role === 'admin' ? { rotateAction: `${CONSOLE_PATH}/keys/rotate` } : {}),
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
        await deps.stores.audit.insert({ at: deps.clock.now(), action: 'admin.console.sign_in', decision: 'allow', reason: `admin:${who.id} (${who.role}) signed in to the console` })
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
    .get(`${CONSOLE_PATH}/tasks/:id`, noStore(), signedInPage(async (c, s, frame) => {
      // The task's evidence is its whole story (src/tasks/evidence.ts); unknown: 404.
      const { task: v, timeline, retention } = evidenceTimeline(await taskEvidence(deps, c.req.param('id')!))
      const now = deps.clock.now()
      const when = (at: number) => `${new Date(at * 1000).toISOString().slice(0, 19).replace('T', ' ')} UTC`
      const facts: [string, string][] = [
        ['Status', v.status],
        ['Purpose', v.purpose],
        ['User', `${v.user} (at ${v.sub_id.iss})`],
        ['Workload', v.workload],
        ...(v.client_id ? [['Client', v.client_id] as [string, string]] : []),
        ...(v.sid ? [['Session', v.sid] as [string, string]] : []),
        ...(v.dpop_jkt ? [['DPoP key', v.dpop_jkt] as [string, string]] : []),
        ['Opened', when(v.created_at)],
        ['Expires', `${when(v.expires_at)} (${relativeTime(v.expires_at, now)})`],
        ...(v.approval_expires_at !== undefined ? [['Approval until', when(v.approval_expires_at)] as [string, string]] : []),
        ['Tokens minted', v.max_tokens !== undefined ? `${v.tokens_minted} of at most ${v.max_tokens}` : String(v.tokens_minted)],
        ...(v.parent_task_id ? [['Parent task', `${v.parent_task_id} (depth ${v.depth})`] as [string, string]] : []),
        ...(v.ended_at !== undefined ? [['Ended', `${when(v.ended_at)}: ${v.end_reason ?? ''}`] as [string, string]] : []),
      ]
      return pageResponse(c, ConsoleTaskPage({
        ...frame,
        mayAct: s.role !== 'auditor',
        taskAction: `${CONSOLE_PATH}/tasks`,
        task: { taskId: v.task_id, status: v.status, resources: v.resources },
        facts,
        session: v.sid && (v.status === 'active' || v.status === 'pending_approval') ? { issuer: v.sub_id.iss, sid: v.sid } : undefined,
        sessionAction: `${CONSOLE_PATH}/sessions/revoke`,
        timeline,
        retention,
      }))
    }))
    .post(`${CONSOLE_PATH}/sessions/revoke`, noStore(), adminAction('operator', 'POST /admin/sessions/revoke', async (c, f, s) => {
      const parsed = SESSION_REVOCATION.safeParse({ issuer: f.get('issuer') ?? undefined, sid: f.get('sid') ?? undefined })
      if (!parsed.success) throw refusal(400, '"issuer" (1 to 2048 characters) and "sid" (1 to 1024) are required')
      await revokeSession(deps, parsed.data.issuer, parsed.data.sid, `admin:${s.admin}`)
      // Back to the task the form was on, when it names one that exists.
      const task = f.get('task')
      const back = task && await deps.stores.tasks.get(task) ? taskPage(`${CONSOLE_PATH}/tasks`, task) : CONSOLE_PATH
      return c.redirect(`${back}?notice=session-revoked`, 303)
    }))
    .post(`${CONSOLE_PATH}/workloads/revoke`, noStore(), adminAction('operator', 'revoke the open tasks of a workload', async (c, f, s) => {
      // The API's rule and the API's function (`POST /admin/tasks/revoke`).
      const parsed = WORKLOAD_REVOCATION.safeParse({ workload: f.get('workload') ?? undefined })
      if (!parsed.success) throw refusal(400, WORKLOAD_REVOCATION_RULES)
      await revokeTasksOfWorkload(deps, parsed.data.workload, { kind: 'admin', id: s.admin })
      return c.redirect(`${CONSOLE_PATH}/workloads?notice=workload-revoked`, 303)
    }))
    .post(`${CONSOLE_PATH}/keys/rotate`, noStore(), adminAction('admin', 'POST /admin/keys/rotate', async (c, f, s) => {
      // A checkbox: present (`true`) or absent.
      const force = f.get('force')
      if (force !== null && force !== 'true') throw refusal(400, '"force" must be true or absent')
      await rotateSigningKeys(deps, { force: force === 'true' }, `admin:${s.admin}`)
      return c.redirect(`${CONSOLE_PATH}?notice=keys-rotated`, 303)
    }))
    .get(`${CONSOLE_PATH}/workloads`, noStore(), signedInPage((c, s, frame) =>
      pageResponse(c, ConsoleWorkloadsPage({
        ...frame,
        // Read now, never when the routes were made: the configuration may change while the broker runs.
        workloads: deps.config.workloads.map((w) => ({ id: w.id, enabled: w.enabled, attests: attestsAs(w), grants: w.grants, requireDpop: w.requireDpop, delegateTo: w.delegateTo })),
        ...(s.role !== 'auditor' ? { revokeAction: `${CONSOLE_PATH}/workloads/revoke` } : {}),
      })),
    ))
    .get(`${CONSOLE_PATH}/resources`, noStore(), signedInPage((c, _s, frame) =>
      pageResponse(c, ConsoleResourcesPage({
        ...frame,
        resources: deps.config.resources.map((r) => ({ uri: r.uri, scopes: r.scopes, requireApproval: r.requireApproval, requireDpop: r.requireDpop, maxTokensPerTask: r.maxTokensPerTask })),
      })),
    ))
    .get(`${CONSOLE_PATH}/live`, noStore(), signedInPage(async (c, _s, frame) => {
      const now = deps.clock.now()
      const tasks = (await deps.stores.tasks.list({ limit: 100 })).map((row) => liveRow(viewTask(row, now), now))
      return pageResponse(c, ConsoleLivePage({ ...frame, tasks, events: `${CONSOLE_PATH}/events` }), { scripts: true })
    }))
    .get(`${CONSOLE_PATH}/events`, noStore(), async (c) => {
      try {
        const cookie = getCookie(c, cookieName)
        if (!(await sessionOf(cookie))) return signInPage(c, 'Your sign-in has expired: sign in again.', 401)
        if (live.size >= liveLimit) throw temporarilyUnavailable(LIVE_RETRY_MS / 1000, `${live.size} live console streams are open`)
        return liveStream(c, cookie)
      } catch (e) {
        return answerError(c, e)
      }
    })
}
