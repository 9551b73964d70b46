import { Hono } from 'hono'
import { z } from 'zod'
import type { Deps } from '../broker.js'
import type { DpopProof } from '../dpop/proof.js'
import { invalidRequest, invalidToken } from '../errors.js'
import { userCaller, workloadCaller } from '../http/callers.js'
import { parseJson } from '../http/form.js'
import { noStore } from '../http/middleware.js'
import { remoteAddress } from '../http/rate-limit.js'
import { TOOL_NAME } from '../tasks/tool-call.js'
import { auditTaskOpenDenied, endTask, getTaskFor, openTask, viewTask, type Caller } from '../tasks/lifecycle.js'

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
})

/** The first problem in a zod error, naming the field. */
function describe(error: z.ZodError): string {
  const issue = error.issues[0]!
  return `"${issue.path.join('.') || 'body'}": ${issue.message}`
}

async function eitherCaller(deps: Deps, c: Parameters<typeof userCaller>[1]): Promise<Caller> {
  const caller = (await workloadCaller(deps, c)) ?? (await userCaller(deps, c))
  if (!caller) throw invalidToken('a user session (Authorization: Bearer) or a workload attestation (Actor-Token) is required')
  return caller
}

/** /tasks — open, read, list, complete, revoke. */
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
        auditTaskOpenDenied(deps, e, undefined, workload.actor)
        throw e
      }
      const parsed = openTaskBody.safeParse(await parseJson(c))
      if (!parsed.success) throw invalidRequest(describe(parsed.error))
      // RFC 9449: a proof here binds the task to its key (checked after both callers are
      // authenticated, so only they can spend room in the replay cache). A refusal is audited.
      let proof: DpopProof | undefined
      try {
        proof = await deps.dpop.verify(c.req.header('dpop'), 'POST', `${deps.config.issuer}/tasks`)
      } catch (e) {
        auditTaskOpenDenied(deps, e, user.subject, workload.actor)
        throw e
      }
      const task = openTask(deps, user.subject, workload.actor, parsed.data, proof?.jkt, { callerAddress: remoteAddress(c) })
      return c.json(task, 201, { Location: `/tasks/${task.task_id}`, ...(proof ? deps.dpop.successHeaders() : {}) })
    })
    .get('/tasks', async (c) => {
      const user = await userCaller(deps, c)
      if (user?.kind !== 'user') throw invalidToken('listing tasks needs the user session (Authorization: Bearer)')
      const now = deps.clock.now()
      return c.json({ tasks: deps.stores.tasks.listByUser(user.subject.issuer, user.subject.user, 100).map((t) => viewTask(t, now)) })
    })
    .get('/tasks/:id', async (c) => {
      const row = getTaskFor(deps, c.req.param('id'), await eitherCaller(deps, c))
      return c.json(viewTask(row, deps.clock.now()))
    })
    .post('/tasks/:id/complete', async (c) => {
      const workload = await workloadCaller(deps, c)
      if (!workload) throw invalidToken('completing a task needs the workload attestation (Actor-Token)')
      return c.json(endTask(deps, c.req.param('id'), 'completed', workload))
    })
    .post('/tasks/:id/revoke', async (c) => {
      return c.json(endTask(deps, c.req.param('id'), 'revoked', await eitherCaller(deps, c)))
    })
}
