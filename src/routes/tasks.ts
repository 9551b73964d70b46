import { Hono, type Context } from 'hono'
import { z } from 'zod'
import type { DpopProof } from '@taskpass/verifier/dpop'
import type { Deps } from '../broker.js'
import { invalidRequest, invalidToken } from '../errors.js'
import { userCaller, workloadCaller } from '../http/callers.js'
import { parseJson, describeZodError } from '../http/form.js'
import { noStore } from '../http/middleware.js'
import { remoteAddress } from '../http/rate-limit.js'
import { TOOL_NAME } from '../tokens/authorization-details.js'
import { approveTask, auditDecisionRefused, denyTask, type ApprovalDecision } from '../tasks/approvals.js'
import { auditDelegationDenied, openSubtask } from '../tasks/subtasks.js'
import { auditTaskOpenDenied, endTask, getTaskFor, openTask, taskState, viewTask, type Caller } from '../tasks/lifecycle.js'

const openTaskBody = z.strictObject({
  purpose: z.string().min(1).max(500),
  resources: z
    .array(
      z.strictObject({
        resource: z.string().min(1).max(2048),
        scopes: z.array(z.string().min(1).max(128)).max(64).default([]),
        // MCP tool names: 1–128 of A–Z a–z 0–9 _ - . (exact names; the task may call only these there).
        tools: z.array(z.string().regex(TOOL_NAME, 'must be an MCP tool name (1–128 of A–Z a–z 0–9 _ - .)')).max(64).optional(),
      }),
    )
    .min(1)
    .max(16),
  ttl: z.number().int().positive().optional(),
  /** At most this many tokens (exchanges) for the task. */
  max_tokens: z.number().int().positive().max(1_000_000).optional(),
})

/** A sub-task: the workload it is for, and a task body within the parent's. */
const subtaskBody = openTaskBody.extend({ workload: z.string().min(1).max(256) })

/** Longest `GET /tasks/{id}?wait=`, seconds: long enough to spare polling, short enough for proxies' idle timeouts. */
export const MAX_WAIT = 60

/** `?wait=<1..60>`: absent → undefined; anything else (not an integer, out of range, repeated) is refused. */
function parseWait(c: Context): number | undefined {
  const values = c.req.queries('wait')
  if (values === undefined) return undefined
  const text = values[0]!
  if (values.length !== 1 || !/^[0-9]{1,2}$/.test(text) || Number(text) < 1 || Number(text) > MAX_WAIT) throw invalidRequest(`"wait" must be an integer from 1 to ${MAX_WAIT} (seconds)`)
  return Number(text)
}

const decisionBody = z.strictObject({ reason: z.string().optional() })

/**
 * The optional JSON body of a decision, `{"reason": "..."}`; no body at all is `{}`. The reason's
 * length and characters are checked by the decision itself.
 */
export async function parseDecisionBody(c: Context): Promise<{ reason?: string | undefined }> {
  if (c.req.header('content-type') === undefined && (await c.req.text()) === '') return {}
  const parsed = decisionBody.safeParse(await parseJson(c))
  if (!parsed.success) throw invalidRequest(`body must be {"reason": <text>}: ${describeZodError(parsed.error)}`)
  return parsed.data
}

async function eitherCaller(deps: Deps, c: Context): Promise<Caller> {
  const caller = (await workloadCaller(deps, c)) ?? (await userCaller(deps, c))
  if (!caller) throw invalidToken('a user session (Authorization: Bearer) or a workload attestation (Actor-Token) is required')
  return caller
}

/** /tasks — open, read (and wait for a decision), list, complete, revoke, approve, deny. */
export function taskRoutes(deps: Deps) {
  return new Hono()
    .use('/tasks', noStore())
    .use('/tasks/*', noStore())
    .post('/tasks', async (c) => {
      // The workload is the caller: it is authenticated before the user's session is looked at,
      // so a sender without a valid attestation learns nothing about a session token.
      const needBoth = 'opening a task needs the user session (Authorization: Bearer) and the workload attestation (Actor-Token)'
      const workload = await workloadCaller(deps, c)
      if (workload?.kind !== 'workload') throw invalidToken(needBoth)
      // From here the caller is known: a refusal of the user's session is a decision, and audited.
      let user: Awaited<ReturnType<typeof userCaller>>
      try {
        user = await userCaller(deps, c)
        if (user?.kind !== 'user') throw invalidToken(needBoth)
      } catch (e) {
        await auditTaskOpenDenied(deps, e, undefined, workload.actor)
        throw e
      }
      const parsed = openTaskBody.safeParse(await parseJson(c))
      if (!parsed.success) throw invalidRequest(describeZodError(parsed.error))
      // RFC 9449: a proof here binds the task to its key (checked after both callers are
      // authenticated, so only they can spend room in the replay cache). A refusal is audited.
      let proof: DpopProof | undefined
      try {
        proof = await deps.dpop.verify(c.req.header('dpop'), 'POST', `${deps.config.issuer}/tasks`)
      } catch (e) {
        await auditTaskOpenDenied(deps, e, user.subject, workload.actor)
        throw e
      }
      const task = await openTask(deps, user.subject, workload.actor, parsed.data, proof?.jkt, { callerAddress: remoteAddress(c) })
      return c.json(task, 201, { Location: `/tasks/${task.task_id}`, ...(proof ? deps.dpop.successHeaders() : {}) })
    })
    .get('/tasks', async (c) => {
      const user = await userCaller(deps, c)
      if (user?.kind !== 'user') throw invalidToken('listing tasks needs the user session (Authorization: Bearer)')
      const now = deps.clock.now()
      return c.json({ tasks: (await deps.stores.tasks.listByUser(user.subject.issuer, user.subject.user, 100)).map((t) => viewTask(t, now)) })
    })
    .get('/tasks/:id', async (c) => {
      const wait = parseWait(c)
      const id = c.req.param('id')
      let row = await getTaskFor(deps, id, await eitherCaller(deps, c), true)
      const now = deps.clock.now()
      if (wait !== undefined && taskState(row, now) === 'pending_approval') {
        // A decision committed between the read above and the wait's registration is found by
        // the wait itself, which reads the task again once registered.
        const until = Math.min(now + wait, row.approvalExpiresAt ?? row.expiresAt, row.expiresAt)
        const outcome = await deps.approvals.wait(id, (until - now) * 1000, c.req.raw.signal)
        // Closed: the database is gone; the task is answered as it was read (still pending).
        if (outcome !== 'closed') row = (await deps.stores.tasks.get(id)) ?? row
      }
      return c.json(viewTask(row, deps.clock.now()))
    })
    .post('/tasks/:id/complete', async (c) => {
      const workload = await workloadCaller(deps, c)
      if (!workload) throw invalidToken('completing a task needs the workload attestation (Actor-Token)')
      return c.json(await endTask(deps, c.req.param('id'), 'completed', workload))
    })
    .post('/tasks/:id/revoke', async (c) => {
      return c.json(await endTask(deps, c.req.param('id'), 'revoked', await eitherCaller(deps, c)))
    })
    .post('/tasks/:id/subtasks', async (c) => {
      // The parent's workload delegates: its attestation is the only credential in the request.
      const workload = await workloadCaller(deps, c)
      if (workload?.kind !== 'workload') throw invalidToken('opening a sub-task needs the workload attestation of the task (Actor-Token)')
      const id = c.req.param('id')
      const parsed = subtaskBody.safeParse(await parseJson(c))
      if (!parsed.success) throw invalidRequest(describeZodError(parsed.error))
      // A proof (when sent) is checked once the caller is known; a DPoP-bound task needs one by its key.
      let proof: DpopProof | undefined
      try {
        proof = await deps.dpop.verify(c.req.header('dpop'), 'POST', `${deps.config.issuer}/tasks/${id}/subtasks`)
      } catch (e) {
        await auditDelegationDenied(deps, e, id, workload.actor)
        throw e
      }
      const task = await openSubtask(deps, id, workload.actor, parsed.data, proof?.jkt, { callerAddress: remoteAddress(c) })
      return c.json(task, 201, { Location: `/tasks/${task.task_id}`, ...(proof ? deps.dpop.successHeaders() : {}) })
    })
    .post('/tasks/:id/approve', (c) => decide(deps, c, 'approve'))
    .post('/tasks/:id/deny', (c) => decide(deps, c, 'deny'))
}

/**
 * `POST /tasks/{id}/approve|deny`: the task's user decides, with a session token. A workload
 * (`Actor-Token`) is identified as such, to be refused: it never decides its own task.
 */
async function decide(deps: Deps, c: Context, how: ApprovalDecision) {
  return decideAs(deps, c, how, await eitherCaller(deps, c))
}

/** A decision on task `:id` by `caller` (the user, a workload to be refused, or an admin): the optional JSON body `{"reason": "..."}` (required to deny); a bad body is audited as a refusal. */
export async function decideAs(deps: Deps, c: Context, how: ApprovalDecision, caller: Caller) {
  const id = c.req.param('id')!
  let body: { reason?: string | undefined }
  try {
    body = await parseDecisionBody(c)
  } catch (e) {
    await auditDecisionRefused(deps, how, id, caller, e)
    throw e
  }
  return c.json(await (how === 'approve' ? approveTask(deps, id, caller, body.reason) : denyTask(deps, id, caller, body.reason)))
}
