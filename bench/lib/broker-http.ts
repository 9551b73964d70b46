/**
 * The broker over HTTP as the bench's child-process parts use it (bench/verifier.ts,
 * bench/endpoints.ts): a task opened for the bench resource, a token exchanged in it.
 */
import { exchangeForm, RESOURCE, SCOPE } from './fixtures.js'
import type { ServerProcess } from './child.js'

export interface Broker {
  server: ServerProcess
  issuer: string
  subject: string
  actor: string
}

/** The body of `res` as JSON, or an error naming `what` when its status is not `status`. */
export async function expectJson(res: Response, status: number, what: string): Promise<Record<string, unknown>> {
  const text = await res.text()
  if (res.status !== status) throw new Error(`${what} got HTTP ${res.status}: ${text.slice(0, 300)}`)
  return JSON.parse(text) as Record<string, unknown>
}

export async function openTask(b: Broker, purpose: string): Promise<string> {
  const res = await fetch(`${b.issuer}/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${b.subject}`, 'actor-token': b.actor },
    body: JSON.stringify({ purpose, resources: [{ resource: RESOURCE, scopes: [SCOPE] }] }),
  })
  return String((await expectJson(res, 201, 'opening a task')).task_id)
}

export async function exchange(b: Broker, taskId: string): Promise<string> {
  const res = await fetch(`${b.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `${exchangeForm(b.subject, b.actor)}&task_id=${encodeURIComponent(taskId)}`,
  })
  return String((await expectJson(res, 200, 'the exchange')).access_token)
}
