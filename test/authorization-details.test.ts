/**
 * Tool-scoped task tokens (RFC 9396 Rich Authorization Requests): a task token names the MCP tools
 * its task declared as one `mcp_tools` authorization detail; a token request may narrow them and
 * never widen them; introspection returns them, the metadata advertises the type, and the
 * decision API refuses a tool the token does not name.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { decodeJwt } from 'jose'
import { assertRefusedAndAudited, counts, NOTES, NOTES_SECRET, openTask, withBroker, type TestBroker } from './harness.js'

type Json = Record<string, unknown>
const NOTES_AUTH = `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}`
const detail = (actions: string[], extra: Json = {}) => JSON.stringify([{ type: 'mcp_tools', locations: [NOTES], actions, ...extra }])

async function taskWith(b: TestBroker, tools?: string[]): Promise<string> {
  const res = await openTask(b, { purpose: 'read my notes', resources: [{ resource: NOTES, scopes: ['notes:read'], ...(tools ? { tools } : {}) }] })
  assert.equal(res.status, 201, await res.clone().text())
  return ((await res.json()) as { task_id: string }).task_id
}

async function issued(res: Response): Promise<{ body: Json; claims: Json }> {
  assert.equal(res.status, 200, await res.clone().text())
  const body = (await res.json()) as Json
  return { body, claims: decodeJwt(String(body.access_token)) as Json }
}

describe('tools in the token (authorization_details, type mcp_tools)', () => {
  it('a token of a task that declared tools names exactly those tools, in the token and in the response', () =>
    withBroker(undefined, async (b) => {
      const taskId = await taskWith(b, ['read_note', 'search_notes'])
      const { body, claims } = await issued(await b.exchange({ task_id: taskId, scope: 'notes:read' }))
      const expected = [{ type: 'mcp_tools', locations: [NOTES], actions: ['read_note', 'search_notes'] }]
      assert.deepEqual(claims.authorization_details, expected)
      assert.deepEqual(body.authorization_details, expected, 'RFC 9396 §7.1: the token response says what was granted')
    }))

  it('a task that declared no tools gets a scope-only token (no authorization_details)', () =>
    withBroker(undefined, async (b) => {
      const { body, claims } = await issued(await b.exchange({ task_id: await taskWith(b), scope: 'notes:read' }))
      assert.equal(claims.authorization_details, undefined)
      assert.equal(body.authorization_details, undefined)
    }))

  it('a request may narrow the tools; with no tool list on the task, the request names them', () =>
    withBroker(undefined, async (b) => {
      const narrowed = await issued(await b.exchange({ task_id: await taskWith(b, ['read_note', 'search_notes']), scope: 'notes:read', authorization_details: detail(['read_note']) }))
      assert.deepEqual(narrowed.claims.authorization_details, [{ type: 'mcp_tools', locations: [NOTES], actions: ['read_note'] }])
      // `locations` may be left out: it can only be the requested resource.
      const open = await issued(await b.exchange({ task_id: await taskWith(b), scope: 'notes:read', authorization_details: JSON.stringify([{ type: 'mcp_tools', actions: ['search_notes'] }]) }))
      assert.deepEqual(open.claims.authorization_details, [{ type: 'mcp_tools', locations: [NOTES], actions: ['search_notes'] }])
    }))

  it('an implicit task (no task_id) declares the tools the request names', () =>
    withBroker(undefined, async (b) => {
      const { body } = await issued(await b.exchange({ scope: 'notes:read', authorization_details: detail(['read_note']) }))
      const task = (await b.deps.stores.tasks.get(String(body.task_id)))!
      assert.deepEqual(JSON.parse(task.resources), [{ resource: NOTES, scopes: ['notes:read'], tools: ['read_note'] }])
    }))

  it('a widening request → 400 invalid_authorization_details, nothing issued, audited', () =>
    withBroker(undefined, async (b) => {
      const taskId = await taskWith(b, ['read_note'])
      const before = await counts(b)
      const res = await b.exchange({ task_id: taskId, scope: 'notes:read', authorization_details: detail(['read_note', 'delete_note']) })
      assert.equal(res.status, 400)
      assert.equal(((await res.json()) as Json).error, 'invalid_authorization_details')
      await assertRefusedAndAudited(b, before, { error: 'invalid_authorization_details', reason: /^beyond task: delete_note$/ })
    }))

  it('a malformed or foreign detail → 400 invalid_authorization_details, nothing issued (RFC 9396 §5: an unknown type is refused)', () =>
    withBroker(undefined, async (b) => {
      const taskId = await taskWith(b, ['read_note'])
      for (const [value, reason] of [
        ['not json', /is not JSON/],
        ['{}', /must be an array of one mcp_tools detail/],
        ['[]', /must be an array of one/],
        [JSON.stringify([{ type: 'mcp_tools', actions: ['read_note'] }, { type: 'mcp_tools', actions: ['read_note'] }]), /must be an array of one/],
        [JSON.stringify([{ type: 'payment_initiation', actions: ['read_note'] }]), /type "payment_initiation" is not supported/],
        [JSON.stringify(['mcp_tools']), /must be an object/],
        [detail(['read_note'], { datatypes: ['notes'] }), /unknown mcp_tools field datatypes/],
        [JSON.stringify([{ type: 'mcp_tools', locations: ['https://calendar.test.example/mcp'], actions: ['read_note'] }]), /"locations" must be the requested resource/],
        [detail([]), /"actions" must be 1–64 MCP tool names/],
        [detail(['read note']), /"actions" must be 1–64 MCP tool names/],
        [detail(['x'.repeat(9000)]), /longer than 8192/],
      ] as const) {
        const before = await counts(b)
        const res = await b.exchange({ task_id: taskId, scope: 'notes:read', authorization_details: value })
        assert.equal(res.status, 400, value.slice(0, 80))
        assert.equal(((await res.json()) as Json).error, 'invalid_authorization_details', value.slice(0, 80))
        await assertRefusedAndAudited(b, before, { error: 'invalid_authorization_details', reason })
      }
    }))

  it('the metadata advertises the type; introspection returns the token’s details', () =>
    withBroker(undefined, async (b) => {
      const meta = (await (await b.app.request('/.well-known/oauth-authorization-server')).json()) as Json
      assert.deepEqual(meta.authorization_details_types_supported, ['mcp_tools'])
      const { body } = await issued(await b.exchange({ task_id: await taskWith(b, ['read_note']), scope: 'notes:read' }))
      const res = await b.app.request('/introspect', { method: 'POST', headers: { authorization: NOTES_AUTH, 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${String(body.access_token)}` })
      const info = (await res.json()) as Json
      assert.equal(info.active, true)
      assert.deepEqual(info.authorization_details, [{ type: 'mcp_tools', locations: [NOTES], actions: ['read_note'] }])
    }))

  it('the decision API refuses a tool the token does not name, though its task declared it', () =>
    withBroker(undefined, async (b) => {
      const { body } = await issued(await b.exchange({ task_id: await taskWith(b, ['read_note', 'search_notes']), scope: 'notes:read', authorization_details: detail(['read_note']) }))
      const ask = async (tool: string) => {
        const res = await b.app.request('/access/v1/evaluation', {
          method: 'POST',
          headers: { authorization: NOTES_AUTH, 'content-type': 'application/json' },
          body: JSON.stringify({ subject: { type: 'task_token', id: body.access_token }, action: { name: 'tools/call' }, resource: { type: 'tool', id: tool } }),
        })
        assert.equal(res.status, 200)
        return (await res.json()) as Json
      }
      assert.deepEqual(await ask('read_note'), { decision: true, context: { reason: 'permitted' } })
      assert.deepEqual(await ask('search_notes'), { decision: false, context: { reason: 'tool_not_in_task' } })
      assert.match(String((await b.lastAudit())!.reason), /search_notes is not among the tools the token names/)
    }))
})
