/**
 * The policy cookbook's cases (docs/policy-cookbook.md) as tables of plain data: the setting the
 * rules in docs/examples/cookbook/ are written for (`cookbookConfig`), and for each rule requests
 * it permits and requests it forbids (`cookbookCases`, `toolCallCases`). No tests here: the
 * cookbook tests (test/cookbook.test.ts) send each row over HTTP, the dry-run tests
 * (test/dry-run-cookbook.test.ts) ask the dry run the same rows.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import type { ConfigInput } from '../src/config.js'
import type { PolicyAction } from '../src/policy/decide.js'
import { grantPolicyId } from '../src/policy/generate.js'
import {
  ADMIN_KEY,
  counts,
  exchangeParams,
  form,
  fromAddress,
  GH_ISSUER,
  githubToken,
  K8S_ISSUER,
  k8sToken,
  platformIssuers,
  platformKeys,
  spiffeId,
  TRUST_DOMAIN,
  type Counts,
  type GithubJob,
  type PlatformKeys,
  type TestBroker,
} from './harness.js'

/** The cookbook's rule files. */
export const COOKBOOK = new URL('../docs/examples/cookbook/', import.meta.url)

// ── the world the cookbook's policies are written for (docs/policy-cookbook.md "The setting") ──

export const NOTES = 'https://notes.example.com/mcp'
export const DEPLOY = 'https://deploy.example.com/mcp'
export const PAYROLL = 'https://payroll.example.com/mcp'

export const DEPLOYER_REPO_ID = '111111111'
export const OTHER_REPO_ID = '222222222'
/** A GitHub Enterprise Server and a second cluster: issuers whose names (repositories, namespaces) may collide with ours. */
export const GHES_ISSUER = 'https://ghes.example.com/_services/token'
export const OTHER_CLUSTER = 'https://container.googleapis.com/v1/projects/sandbox/locations/europe-west1/clusters/sandbox'

/** The test configuration with the cookbook's resources and workloads, and `rule` (a cookbook file name, or an absolute path) as the policy file. */
export function cookbookConfig(platform: PlatformKeys, rule: string): (c: ConfigInput) => ConfigInput {
  const spiffe = (name: string) => ({ issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId(name) })
  const payroll = [{ resource: PAYROLL, scopes: ['payroll:read'] }]
  const deploy = [{ resource: DEPLOY, scopes: ['deploy:read', 'deploy:write'] }]
  return (c) => ({
    ...c,
    workloadIssuers: [
      ...c.workloadIssuers!,
      ...platformIssuers(platform),
      { kind: 'github', issuer: GHES_ISSUER, jwks: { keys: [platform.github.publicJwk as Record<string, unknown>] } },
      { kind: 'kubernetes', issuer: OTHER_CLUSTER, jwks: { keys: [platform.k8s.publicJwk as Record<string, unknown>] } },
    ],
    workloads: [
      { id: 'agent-a', attestation: spiffe('a'), grants: [{ resource: NOTES, scopes: ['notes:read', 'notes:write', 'notes:delete'] }, ...deploy, ...payroll] },
      { id: 'agent-b', attestation: spiffe('b'), grants: [{ resource: NOTES, scopes: ['notes:read'] }] },
      // GitHub workloads are pinned by repository_id (a name can be re-created by someone else);
      // the GHES one has the same id and name as ours, on another server.
      { id: 'deployer', attestation: { issuer: GH_ISSUER, claims: { repository_id: DEPLOYER_REPO_ID } }, grants: deploy },
      { id: 'other-repo', attestation: { issuer: GH_ISSUER, claims: { repository_id: OTHER_REPO_ID } }, grants: deploy },
      { id: 'ghes-deployer', attestation: { issuer: GHES_ISSUER, claims: { repository_id: DEPLOYER_REPO_ID } }, grants: deploy },
      { id: 'payroll-prod', attestation: { issuer: K8S_ISSUER, subject: 'system:serviceaccount:prod:payroll-agent' }, grants: payroll },
      { id: 'payroll-staging', attestation: { issuer: K8S_ISSUER, subject: 'system:serviceaccount:staging:payroll-agent' }, grants: payroll },
      { id: 'sandbox-payroll', attestation: { issuer: OTHER_CLUSTER, subject: 'system:serviceaccount:prod:payroll-agent' }, grants: payroll },
    ],
    resources: [
      { uri: NOTES, scopes: ['notes:read', 'notes:write', 'notes:delete'] },
      { uri: DEPLOY, scopes: ['deploy:read', 'deploy:write'] },
      { uri: PAYROLL, scopes: ['payroll:read'] },
    ],
    policies: { file: rule.startsWith('/') ? rule : new URL(rule, COOKBOOK).pathname },
  })
}

export const grant = (workload: string, resource: string) => grantPolicyId(workload, resource)

// ── the tables ──

/** Who asks: a SPIFFE agent (`a` → agent-a), a GitHub Actions job, a Kubernetes service account. */
export type Actor = { spiffe: string } | { github: GithubJob } | { kubernetes: { namespace: string; serviceAccount: string; issuer?: string } }

export interface CookbookRequest {
  action: Extract<PolicyAction, 'task.open' | 'token.exchange'>
  /** Default: agent-a. */
  actor?: Actor
  resource: string
  scopes: string[]
  /** task.open: the tools the task declares for the resource. */
  tools?: string[]
  /** task.open: the task's purpose (default {@link DEFAULT_PURPOSE}). */
  purpose?: string
  ttl?: number
  /** With a DPoP proof (RFC 9449). */
  dpop?: boolean
  /** The broker's clock, seconds after T0 (08:00 UTC). */
  after?: number
  /** How long ago the user signed in (the session token's `auth_time`), seconds; default: now. */
  signedInAgo?: number
  /** The TCP peer's address; default: none (an in-process request). */
  callerAddress?: string
  /** token.exchange: for a task opened first (POST /tasks) with this purpose, after `minted` tokens of it; without: an implicit task. */
  task?: { purpose: string; minted: number }
}

export interface CookbookExpect {
  status: 200 | 201 | 400
  error?: string
  /** The deciding policies the audit row names (sorted); none for a deny no policy decided. */
  policies: string[]
  /** The audit reason of a deny no forbid decided (else: `forbidden by policy <ids>`). */
  reason?: string
  /** task.open: the status of the opened task. */
  taskStatus?: 'active' | 'pending_approval'
  /** token.exchange: the token's lifetime. */
  expiresIn?: number
}

export interface CookbookCase {
  name: string
  /** The file under docs/examples/cookbook/ the broker loads. */
  rule: string
  request: CookbookRequest
  expect: CookbookExpect
}

/** The purpose of a row's task when it names none. */
export const DEFAULT_PURPOSE = 'tidy the notes'

const exchange = (resource: string, scopes: string[], more: Partial<CookbookRequest> = {}): CookbookRequest => ({ action: 'token.exchange', resource, scopes, ...more })
const open = (resource: string, scopes: string[], more: Partial<CookbookRequest> = {}): CookbookRequest => ({ action: 'task.open', resource, scopes, ...more })
const allowed = (policies: string[], more: Partial<CookbookExpect> = {}): CookbookExpect => ({ status: 200, policies, ...more })
const opened = (policies: string[], taskStatus: 'active' | 'pending_approval' = 'active'): CookbookExpect => ({ status: 201, policies, taskStatus })
const forbidden = (error: string, ...policies: string[]): CookbookExpect => ({ status: 400, error, policies })

export const HOUR = 3600
const job = (repository: string, repositoryId: string, ref: string, environment?: string): Actor => ({ github: { repository, repositoryId, ref, environment } })
const DEPLOYER_MAIN_PROD = job('acme/deployer', DEPLOYER_REPO_ID, 'refs/heads/main', 'prod')
const prodPayroll: Actor = { kubernetes: { namespace: 'prod', serviceAccount: 'payroll-agent' } }
const stagingPayroll: Actor = { kubernetes: { namespace: 'staging', serviceAccount: 'payroll-agent' } }

export const cookbookCases: CookbookCase[] = [
  // 1. business hours
  ...((): CookbookCase[] => {
    const rule = 'business-hours.cedar'
    return [
      { name: 'exchange at 08:00 UTC', rule, request: exchange(NOTES, ['notes:read']), expect: allowed([grant('agent-a', NOTES)]) },
      { name: 'exchange at 18:59:59 UTC', rule, request: exchange(NOTES, ['notes:read'], { after: 11 * HOUR - 1 }), expect: allowed([grant('agent-a', NOTES)]) },
      { name: 'exchange at 19:00 UTC', rule, request: exchange(NOTES, ['notes:read'], { after: 11 * HOUR }), expect: forbidden('invalid_target', 'business-hours') },
      { name: 'exchange at 06:59:59 UTC', rule, request: exchange(NOTES, ['notes:read'], { after: 23 * HOUR - 1 }), expect: forbidden('invalid_target', 'business-hours') },
      { name: 'task opened at 07:00 UTC', rule, request: open(NOTES, ['notes:read'], { after: 23 * HOUR }), expect: opened([grant('agent-a', NOTES)]) },
      { name: 'task opened at 20:00 UTC', rule, request: open(NOTES, ['notes:read'], { after: 12 * HOUR }), expect: forbidden('invalid_target', 'business-hours') },
    ]
  })(),
  // 2. DPoP for write scopes
  ...((): CookbookCase[] => {
    const rule = 'dpop-for-writes.cedar'
    return [
      { name: 'notes:write with a DPoP proof', rule, request: exchange(NOTES, ['notes:write'], { dpop: true }), expect: allowed([grant('agent-a', NOTES)]) },
      { name: 'notes:write as a bearer token', rule, request: exchange(NOTES, ['notes:read', 'notes:write']), expect: forbidden('invalid_scope', 'dpop-for-writes') },
      { name: 'deploy:write as a bearer token', rule, request: exchange(DEPLOY, ['deploy:write']), expect: forbidden('invalid_scope', 'dpop-for-writes') },
      { name: 'notes:read as a bearer token', rule, request: exchange(NOTES, ['notes:read']), expect: allowed([grant('agent-a', NOTES)]) },
    ]
  })(),
  // 3. approval for destructive tools (the task half; the tool-call half is `toolCallCases`)
  ...((): CookbookCase[] => {
    const rule = 'approval-for-destructive-tools.cedar'
    return [
      {
        name: 'a task declaring delete_note opens pending_approval',
        rule,
        request: open(NOTES, ['notes:read', 'notes:delete'], { tools: ['read_note', 'delete_note'] }),
        expect: opened(['destructive-tools-need-approval', grant('agent-a', NOTES)], 'pending_approval'),
      },
      { name: 'a task declaring read_note only opens active', rule, request: open(NOTES, ['notes:read'], { tools: ['read_note'] }), expect: opened([grant('agent-a', NOTES)]) },
    ]
  })(),
  // 4. per-repository GitHub workloads
  ...((): CookbookCase[] => {
    const rule = 'github-deploy-writes.cedar'
    return [
      { name: 'acme/deployer on main in prod: deploy:write', rule, request: exchange(DEPLOY, ['deploy:write'], { actor: DEPLOYER_MAIN_PROD }), expect: allowed([grant('deployer', DEPLOY)]) },
      { name: 'acme/deployer on main in prod: a task for deploy:write', rule, request: open(DEPLOY, ['deploy:write'], { actor: DEPLOYER_MAIN_PROD }), expect: opened([grant('deployer', DEPLOY)]) },
      { name: 'acme/deployer on a feature branch: deploy:read', rule, request: exchange(DEPLOY, ['deploy:read'], { actor: job('acme/deployer', DEPLOYER_REPO_ID, 'refs/heads/feature/x', 'prod') }), expect: allowed([grant('deployer', DEPLOY)]) },
      { name: 'acme/deployer on a feature branch: deploy:write', rule, request: exchange(DEPLOY, ['deploy:write'], { actor: job('acme/deployer', DEPLOYER_REPO_ID, 'refs/heads/feature/x', 'prod') }), expect: forbidden('invalid_scope', 'deploy-writes-from-main') },
      { name: 'acme/deployer on a feature branch: a task for deploy:write', rule, request: open(DEPLOY, ['deploy:write'], { actor: job('acme/deployer', DEPLOYER_REPO_ID, 'refs/heads/feature/x', 'prod') }), expect: forbidden('invalid_scope', 'deploy-writes-from-main') },
      { name: 'acme/deployer on main in staging: deploy:write', rule, request: exchange(DEPLOY, ['deploy:write'], { actor: job('acme/deployer', DEPLOYER_REPO_ID, 'refs/heads/main', 'staging') }), expect: forbidden('invalid_scope', 'deploy-writes-from-main') },
      { name: 'acme/deployer on main without an environment: deploy:write', rule, request: exchange(DEPLOY, ['deploy:write'], { actor: job('acme/deployer', DEPLOYER_REPO_ID, 'refs/heads/main') }), expect: forbidden('invalid_scope', 'deploy-writes-from-main') },
      { name: 'acme/other on main in prod: deploy:write', rule, request: exchange(DEPLOY, ['deploy:write'], { actor: job('acme/other', OTHER_REPO_ID, 'refs/heads/main', 'prod') }), expect: forbidden('invalid_scope', 'deploy-writes-from-main') },
      {
        name: 'acme/deployer of a GitHub Enterprise Server, on main in prod: deploy:write',
        rule,
        request: exchange(DEPLOY, ['deploy:write'], { actor: { github: { repository: 'acme/deployer', repositoryId: DEPLOYER_REPO_ID, ref: 'refs/heads/main', environment: 'prod', issuer: GHES_ISSUER } } }),
        expect: forbidden('invalid_scope', 'deploy-writes-from-main'),
      },
      { name: 'a SPIFFE workload with the grant: deploy:write', rule, request: exchange(DEPLOY, ['deploy:write']), expect: forbidden('invalid_scope', 'deploy-writes-from-main') },
    ]
  })(),
  // 5. per-namespace Kubernetes workloads
  ...((): CookbookCase[] => {
    const rule = 'kubernetes-namespace.cedar'
    return [
      { name: 'a workload of namespace prod: exchange', rule, request: exchange(PAYROLL, ['payroll:read'], { actor: prodPayroll }), expect: allowed([grant('payroll-prod', PAYROLL)]) },
      { name: 'a workload of namespace prod: task', rule, request: open(PAYROLL, ['payroll:read'], { actor: prodPayroll }), expect: opened([grant('payroll-prod', PAYROLL)]) },
      { name: 'a workload of namespace staging: exchange', rule, request: exchange(PAYROLL, ['payroll:read'], { actor: stagingPayroll }), expect: forbidden('invalid_target', 'payroll-from-prod-namespace') },
      { name: 'a workload of namespace staging: task', rule, request: open(PAYROLL, ['payroll:read'], { actor: stagingPayroll }), expect: forbidden('invalid_target', 'payroll-from-prod-namespace') },
      { name: 'a workload of namespace prod of another cluster', rule, request: exchange(PAYROLL, ['payroll:read'], { actor: { kubernetes: { namespace: 'prod', serviceAccount: 'payroll-agent', issuer: OTHER_CLUSTER } } }), expect: forbidden('invalid_target', 'payroll-from-prod-namespace') },
      { name: 'a SPIFFE workload with the grant', rule, request: exchange(PAYROLL, ['payroll:read']), expect: forbidden('invalid_target', 'payroll-from-prod-namespace') },
      { name: 'other resources are not concerned', rule, request: exchange(NOTES, ['notes:read']), expect: allowed([grant('agent-a', NOTES)]) },
    ]
  })(),
  // caller network range
  ...((): CookbookCase[] => {
    const rule = 'caller-network.cedar'
    return [
      { name: 'from 10.20.30.40', rule, request: exchange(NOTES, ['notes:read'], { callerAddress: '10.20.30.40' }), expect: allowed([grant('agent-a', NOTES)]) },
      { name: 'from ::ffff:10.20.30.40 (a dual-stack socket)', rule, request: open(NOTES, ['notes:read'], { callerAddress: '::ffff:10.20.30.40' }), expect: opened([grant('agent-a', NOTES)]) },
      { name: 'from 203.0.113.7', rule, request: exchange(NOTES, ['notes:read'], { callerAddress: '203.0.113.7' }), expect: forbidden('invalid_target', 'private-network-only') },
      { name: 'from 11.0.0.1 (just outside the range)', rule, request: open(NOTES, ['notes:read'], { callerAddress: '11.0.0.1' }), expect: forbidden('invalid_target', 'private-network-only') },
      { name: 'from an unknown address', rule, request: exchange(NOTES, ['notes:read']), expect: forbidden('invalid_target', 'private-network-only') },
    ]
  })(),
  // session age
  ...((): CookbookCase[] => {
    const rule = 'session-age.cedar'
    return [
      { name: 'signed in 7 h ago', rule, request: exchange(NOTES, ['notes:read'], { signedInAgo: 7 * HOUR }), expect: allowed([grant('agent-a', NOTES)]) },
      { name: 'signed in exactly 8 h ago', rule, request: open(NOTES, ['notes:read'], { signedInAgo: 8 * HOUR }), expect: opened([grant('agent-a', NOTES)]) },
      { name: 'signed in 8 h and 1 s ago', rule, request: exchange(NOTES, ['notes:read'], { signedInAgo: 8 * HOUR + 1 }), expect: forbidden('invalid_target', 'sign-in-within-8h') },
      { name: 'signed in 9 h ago: a task', rule, request: open(NOTES, ['notes:read'], { signedInAgo: 9 * HOUR }), expect: forbidden('invalid_target', 'sign-in-within-8h') },
    ]
  })(),
  // tokens per task
  ...((): CookbookCase[] => {
    const rule = 'tokens-per-task.cedar'
    const task = (minted: number) => ({ purpose: 'tidy the notes', minted })
    return [
      { name: 'the 5th token of a task', rule, request: exchange(NOTES, ['notes:read'], { task: task(4) }), expect: allowed([grant('agent-a', NOTES)]) },
      { name: 'the 6th token of a task', rule, request: exchange(NOTES, ['notes:read'], { task: task(5) }), expect: forbidden('invalid_target', 'five-tokens-per-task') },
    ]
  })(),
  // purpose requirement
  ...((): CookbookCase[] => {
    const rule = 'purpose-ticket.cedar'
    return [
      { name: 'a task for a ticket', rule, request: open(NOTES, ['notes:read'], { purpose: 'ticket OPS-1234: tidy the notes' }), expect: opened([grant('agent-a', NOTES)]) },
      { name: 'a token for a task for a ticket', rule, request: exchange(NOTES, ['notes:read'], { task: { purpose: 'ticket OPS-1234', minted: 0 } }), expect: allowed([grant('agent-a', NOTES)]) },
      { name: 'a task that names no ticket', rule, request: open(NOTES, ['notes:read'], { purpose: 'tidy the notes' }), expect: forbidden('invalid_target', 'purpose-names-a-ticket') },
      { name: 'an exchange without a task (its implicit task names no ticket)', rule, request: exchange(NOTES, ['notes:read']), expect: forbidden('invalid_target', 'purpose-names-a-ticket') },
    ]
  })(),
  // max ttl for one workload
  ...((): CookbookCase[] => {
    const rule = 'max-ttl-workload.cedar'
    const agentB: Actor = { spiffe: 'b' }
    return [
      { name: 'agent-b asks 300 s, gets 60 s', rule, request: exchange(NOTES, ['notes:read'], { actor: agentB, ttl: 300 }), expect: allowed(['agent-b-short-tokens', grant('agent-b', NOTES)], { expiresIn: 60 }) },
      { name: 'agent-a asks 300 s, gets 300 s', rule, request: exchange(NOTES, ['notes:read'], { ttl: 300 }), expect: allowed([grant('agent-a', NOTES)], { expiresIn: 300 }) },
      {
        name: 'the permit adds no access: agent-b still cannot write',
        rule,
        request: exchange(NOTES, ['notes:write'], { actor: agentB }),
        expect: { ...forbidden('invalid_scope'), reason: "scope beyond the workload's grant: notes:write" },
      },
    ]
  })(),
]

/** A tool call, as `Policy.decide(…, 'tool.call', …)` is asked it: by `workload`, with a token of `scopes`, for a task in `task` state. */
export interface ToolCallRequest {
  workload: string
  resource: string
  tool: string
  scopes: string[]
  /** The task the token is of: the tools it declared, and whether it went through approval. */
  task: { scopes: string[]; tools?: string[]; approved: boolean }
}

export interface ToolCallExpect {
  allow: boolean
  code?: string
  policies: string[]
}

export interface ToolCallCase {
  name: string
  rule: string
  request: ToolCallRequest
  expect: ToolCallExpect
}

export const toolCallCases: ToolCallCase[] = ((): ToolCallCase[] => {
  const rule = 'approval-for-destructive-tools.cedar'
  const call = (tool: string, task: ToolCallRequest['task']): ToolCallRequest => ({ workload: 'agent-a', resource: NOTES, tool, scopes: task.scopes, task })
  const destructive = { scopes: ['notes:read', 'notes:delete'], tools: ['read_note', 'delete_note'] }
  return [
    { name: 'delete_note for an approved task', rule, request: call('delete_note', { ...destructive, approved: true }), expect: { allow: true, policies: [grant('agent-a', NOTES)] } },
    { name: 'delete_note for a task awaiting approval', rule, request: call('delete_note', { ...destructive, approved: false }), expect: { allow: false, code: 'invalid_target', policies: ['delete-note-only-when-approved'] } },
    { name: 'delete_note for a task that declared no tools', rule, request: call('delete_note', { scopes: ['notes:read', 'notes:delete'], approved: false }), expect: { allow: false, code: 'invalid_target', policies: ['delete-note-only-when-approved'] } },
    { name: 'read_note for a task that declared no tools', rule, request: call('read_note', { scopes: ['notes:read'], approved: false }), expect: { allow: true, policies: [grant('agent-a', NOTES)] } },
  ]
})()

// ── sending a row over HTTP ──

/** The keys the rows' requests are signed with: the platforms' (GitHub, Kubernetes) and a DPoP proof key. */
export interface CookbookKeys {
  platform: PlatformKeys
  proofKey: { privateKey: CryptoKey; publicJwk: JWK; jkt: string }
}

export async function cookbookKeys(): Promise<CookbookKeys> {
  const { publicKey, privateKey } = await generateKeyPair('ES256')
  const publicJwk = await exportJWK(publicKey)
  return { platform: await platformKeys(), proofKey: { privateKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk) } }
}

/** A DPoP proof (RFC 9449 §4.2) for POST to `path` on the broker, at its current time. */
function dpopProof(b: TestBroker, keys: CookbookKeys, path: '/token' | '/tasks'): Promise<string> {
  return new SignJWT({ jti: randomUUID(), htm: 'POST', htu: `${b.deps.config.issuer}${path}`, iat: b.clock.now() })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: keys.proofKey.publicJwk })
    .sign(keys.proofKey.privateKey)
}

/** The actor token the row's actor presents (default: agent-a's JWT-SVID). */
export function actorToken(b: TestBroker, keys: CookbookKeys, actor: Actor = { spiffe: 'a' }): Promise<string> {
  if ('spiffe' in actor) return b.svid(actor.spiffe)
  if ('github' in actor) return githubToken(b, keys.platform, actor.github)
  return k8sToken(b, keys.platform, actor.kubernetes)
}

/**
 * Sends the row's request over HTTP (after moving the clock to the row's moment, and opening its
 * task and minting its earlier tokens when it has them). `before`: the counts just before the
 * request itself.
 */
export async function sendCase(b: TestBroker, keys: CookbookKeys, r: CookbookRequest): Promise<{ res: Response; before: Counts }> {
  if (r.after !== undefined) b.clock.advance(r.after)
  const session = () => b.session(r.signedInAgo !== undefined ? { auth_time: b.clock.now() - r.signedInAgo } : {})
  const env = r.callerAddress !== undefined ? fromAddress(r.callerAddress) : undefined
  const headers = async (path: '/token' | '/tasks', base: Record<string, string>) => ({ ...base, ...(r.dpop ? { dpop: await dpopProof(b, keys, path) } : {}) })

  const postTask = async (purpose: string, tools?: string[]) =>
    b.app.request(
      '/tasks',
      {
        method: 'POST',
        headers: await headers('/tasks', { 'content-type': 'application/json', authorization: `Bearer ${await session()}`, 'actor-token': await actorToken(b, keys, r.actor) }),
        body: JSON.stringify({ purpose, resources: [{ resource: r.resource, scopes: r.scopes, ...(tools ? { tools } : {}) }], ...(r.ttl !== undefined ? { ttl: r.ttl } : {}) }),
      },
      env,
    )
  const postToken = async (taskId?: string) => {
    const params = await exchangeParams(b, {
      subject_token: await session(),
      actor_token: await actorToken(b, keys, r.actor),
      resource: r.resource,
      scope: r.scopes.join(' '),
      ...(r.ttl !== undefined ? { ttl: String(r.ttl) } : {}),
      ...(taskId !== undefined ? { task_id: taskId } : {}),
    })
    return b.app.request('/token', { method: 'POST', headers: await headers('/token', { 'content-type': 'application/x-www-form-urlencoded' }), body: form(params) }, env)
  }

  if (r.action === 'task.open') {
    const before = await counts(b)
    return { res: await postTask(r.purpose ?? DEFAULT_PURPOSE, r.tools), before }
  }
  let taskId: string | undefined
  if (r.task) {
    const task = await postTask(r.task.purpose)
    assert.equal(task.status, 201, await task.clone().text())
    taskId = ((await task.json()) as { task_id: string }).task_id
    for (let i = 0; i < r.task.minted; i++) assert.equal((await postToken(taskId)).status, 200, `token ${i + 1} of the task`)
  }
  const before = await counts(b)
  return { res: await postToken(taskId), before }
}

/** Opens the tool-call row's task over HTTP as its workload, approving it when the row says so; returns its id. */
export async function openToolCallTask(b: TestBroker, r: ToolCallRequest): Promise<string> {
  const opened = await b.app.request('/tasks', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${await b.session()}`, 'actor-token': await b.svid(r.workload.replace(/^agent-/, '')) },
    body: JSON.stringify({ purpose: DEFAULT_PURPOSE, resources: [{ resource: r.resource, scopes: r.task.scopes, ...(r.task.tools ? { tools: r.task.tools } : {}) }] }),
  })
  assert.equal(opened.status, 201, await opened.clone().text())
  const id = ((await opened.json()) as { task_id: string }).task_id
  if (r.task.approved) {
    assert.equal((await b.app.request(`/admin/tasks/${id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 200)
  }
  return id
}
