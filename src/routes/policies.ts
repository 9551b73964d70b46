import { Hono } from 'hono'
import { z } from 'zod'
import type { Deps } from '../broker.js'
import { invalidRequest } from '../errors.js'
import { requireRole, type AdminEnv } from '../http/admin-auth.js'
import { parseJson, describeZodError } from '../http/form.js'
import { asInvalidPolicy, deletePolicy, getPolicy, loadAdminPolicies, putPolicy, reloadPolicies, setPolicyEnabled, viewPolicySet } from '../policy/manage.js'
import { dryRun } from '../tasks/dry-run.js'
import { TOOL_NAME } from '../tokens/authorization-details.js'

const scope = z.string().min(1).max(128)
const declared = z.strictObject({ resource: z.string().min(1).max(2048), scopes: z.array(scope).max(64).default([]), tools: z.array(z.string().regex(TOOL_NAME)).max(64).optional() })
const seconds = z.number().int().min(0).max(10 * 365 * 86_400)

/** The dry run's body (docs/policy.md "Dry run"). */
const evaluateBody = z
  .strictObject({
    action: z.enum(['open_task', 'exchange', 'call_tool']),
    user: z.strictObject({
      issuer: z.string().min(1).max(2048),
      subject: z.string().min(1).max(255),
      session: z.string().min(1).max(1024).optional(),
      claims: z.record(z.string().min(1).max(128), z.string().max(1024)).optional(),
    }),
    workload: z.string().min(1).max(2048),
    attestation: z
      .strictObject({
        kind: z.enum(['spiffe', 'oidc', 'kubernetes', 'github']).optional(),
        issuer: z.string().min(1).max(2048).optional(),
        subject: z.string().min(1).max(2048),
        kubernetes: z.strictObject({ namespace: z.string().min(1).max(253), serviceAccount: z.string().min(1).max(253), pod: z.string().min(1).max(253).optional() }).optional(),
        github: z
          .strictObject({
            repository: z.string().min(1).max(512),
            repositoryOwner: z.string().min(1).max(256),
            ref: z.string().min(1).max(1024).optional(),
            environment: z.string().min(1).max(256).optional(),
            workflowRef: z.string().min(1).max(2048).optional(),
            event: z.string().min(1).max(128).optional(),
          })
          .optional(),
      })
      .optional(),
    resource: z.string().min(1).max(2048).optional(),
    scopes: z.array(scope).max(64).optional(),
    tool: z.string().regex(TOOL_NAME).optional(),
    ttl: z.number().int().positive().max(10 * 365 * 86_400).optional(),
    dpop_bound: z.boolean().default(false),
    task: z.strictObject({ purpose: z.string().min(1).max(500), resources: z.array(declared).min(1).max(16), ttl: z.number().int().positive().optional(), age: seconds.optional(), tokens_minted: z.number().int().min(0).max(1e9).optional(), max_tokens: z.number().int().positive().max(1_000_000).optional(), approved: z.boolean().optional() }).optional(),
    task_id: z.string().min(1).max(64).optional(),
    session_age: seconds.optional(),
    session_exp: z.number().int().min(0).max(32_503_680_000).optional(),
    attestation_exp: z.number().int().min(0).max(32_503_680_000).optional(),
    caller_address: z.union([z.ipv4(), z.ipv6()]).optional(),
    at: z.number().int().min(0).max(32_503_680_000).optional(),
    /** A candidate set of admin policies (Cedar) to decide with instead of those in force. */
    policies: z.string().optional(),
  })
  .refine((b) => b.task === undefined || b.task_id === undefined, { message: 'give "task" or "task_id", not both', path: ['task'] })


/**
 * /admin/policies — the policy set in force, replacing the admin policies, re-reading the policy
 * file; /admin/policies/{id} — one policy: read any, create, replace, disable, enable or delete an
 * admin one; /admin/policy/evaluate — the dry run. Mounted inside the admin routes (admin key
 * required). An id is one path segment, percent-encoded.
 */
export function policyRoutes(deps: Deps) {
  const by = (id: string) => `admin:${id}`
  // Reading the set and the dry run are an auditor's; loading policies is an admin's.
  const admin = requireRole(deps, 'admin')
  return new Hono<AdminEnv>()
    .get('/admin/policies', async (c) => c.json(await viewPolicySet(deps)))
    .put('/admin/policies', admin, async (c) => {
      const parsed = z.strictObject({ policies: z.string() }).safeParse(await parseJson(c))
      if (!parsed.success) throw invalidRequest('body must be {"policies": <Cedar policy text; "" clears the admin policies>}')
      return c.json(await loadAdminPolicies(deps, parsed.data.policies, by(c.get('adminId'))))
    })
    .post('/admin/policies/reload', admin, async (c) => c.json(await reloadPolicies(deps, by(c.get('adminId')))))
    .get('/admin/policies/:id', (c) => c.json(getPolicy(deps, c.req.param('id'))))
    .put('/admin/policies/:id', admin, async (c) => {
      const parsed = z.strictObject({ policy: z.string() }).safeParse(await parseJson(c))
      if (!parsed.success) throw invalidRequest('body must be {"policy": <one Cedar policy>}')
      const change = await putPolicy(deps, c.req.param('id'), parsed.data.policy, by(c.get('adminId')))
      return c.json(change, change.action === 'create' ? 201 : 200)
    })
    .delete('/admin/policies/:id', admin, async (c) => c.json(await deletePolicy(deps, c.req.param('id'), by(c.get('adminId')))))
    .post('/admin/policies/:id/disable', admin, async (c) => c.json(await setPolicyEnabled(deps, c.req.param('id'), false, by(c.get('adminId')))))
    .post('/admin/policies/:id/enable', admin, async (c) => c.json(await setPolicyEnabled(deps, c.req.param('id'), true, by(c.get('adminId')))))
    .post('/admin/policy/evaluate', async (c) => {
      const parsed = evaluateBody.safeParse(await parseJson(c))
      if (!parsed.success) throw invalidRequest(describeZodError(parsed.error))
      const { policies, ...request } = parsed.data
      const policy = policies === undefined ? deps.policy : deps.policy.candidate(asInvalidPolicy(() => deps.policy.compileWith({ adminText: policies })))
      return c.json({ ...(await dryRun(deps, policy, request)), candidate: policies !== undefined })
    })
}
