/**
 * What the sub-task tests share: a configuration where agent-a may delegate to agent-b (and the
 * disabled agent-off), agent-b to agent-c; a parent task over the notes server's three tools; and
 * the calls of the delegation and of the delegate's exchange.
 */
import assert from 'node:assert/strict'
import type { ConfigInput } from '../src/config.js'
import { JWT_TYPE, NOTES, NOTES_SECRET, openTask, spiffeId, TOKEN_EXCHANGE, TRUST_DOMAIN, type TestBroker } from './harness.js'

export const TASK_TYPE = 'urn:taskpass:params:oauth:token-type:task'

/** agent-a may delegate to agent-b (and agent-off), agent-b to agent-c. */
export function delegating(c: ConfigInput): ConfigInput {
  const workloads = c.workloads!.map((w) => (w.id === 'agent-a' ? { ...w, delegateTo: ['agent-b', 'agent-off'] } : w.id === 'agent-b' ? { ...w, delegateTo: ['agent-c'] } : w))
  workloads.push({ id: 'agent-c', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('c') }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] })
  return { ...c, workloads }
}

export interface TaskView {
  task_id: string
  status: string
  expires_at: number
  depth: number
  resources: { resource: string; scopes: string[]; tools?: string[] }[]
  max_tokens?: number
  dpop_jkt?: string
  parent_task_id?: string
  workload: string
}

export const PARENT_RESOURCES = [{ resource: NOTES, scopes: ['notes:read', 'notes:write'], tools: ['read_note', 'search_notes', 'write_note'] }]

export async function parentTask(b: TestBroker, body: Record<string, unknown> = {}, opts: { session?: string } = {}): Promise<TaskView> {
  const res = await openTask(b, { purpose: 'triage notes', resources: PARENT_RESOURCES, ttl: 1800, ...body }, opts)
  assert.equal(res.status, 201, await res.clone().text())
  return (await res.json()) as TaskView
}

export async function subtask(b: TestBroker, parent: string, body: Record<string, unknown>, opts: { svid?: string; headers?: Record<string, string>; raw?: string } = {}): Promise<Response> {
  return b.app.request(`/tasks/${parent}/subtasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'actor-token': opts.svid ?? (await b.svid('a')), ...opts.headers },
    body: opts.raw ?? JSON.stringify({ workload: 'agent-b', purpose: 'read the inbox note', resources: [{ resource: NOTES, scopes: ['notes:read'], tools: ['read_note'] }], ...body }),
  })
}

export async function openedSubtask(b: TestBroker, parent: string, body: Record<string, unknown> = {}, svid?: string): Promise<TaskView> {
  const res = await subtask(b, parent, body, svid ? { svid } : {})
  assert.equal(res.status, 201, await res.clone().text())
  return (await res.json()) as TaskView
}

export async function childExchange(b: TestBroker, child: string, params: Record<string, string> = {}, who = 'b', headers: Record<string, string> = {}): Promise<Response> {
  return b.post('/token', { grant_type: TOKEN_EXCHANGE, subject_token: child, subject_token_type: TASK_TYPE, actor_token: await b.svid(who), actor_token_type: JWT_TYPE, resource: NOTES, ...params }, headers)
}

export async function tokenOf(res: Response): Promise<string> {
  assert.equal(res.status, 200, await res.clone().text())
  return ((await res.json()) as { access_token: string }).access_token
}

export async function errorOf(res: Response): Promise<string> {
  return ((await res.json()) as { error: string }).error
}

export async function introspect(b: TestBroker, token: string): Promise<boolean> {
  const res = await b.post('/introspect', { token }, { authorization: `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}` })
  return ((await res.json()) as { active: boolean }).active
}

