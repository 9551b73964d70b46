/**
 * The AuthZEN PDP (docs/authzen.md): an MCP server, authenticated with its resource credential,
 * asks before each tool call whether the task token it received may call that tool. Every
 * answer is audited; refusals of the request itself are OAuth errors with exact statuses.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import type { ConfigInput } from '../src/config.js'
import { CALENDAR, CALENDAR_SECRET, counts, ISSUER, NOTES, NOTES_SECRET, openTask, withBroker, type TestBroker } from './harness.js'

const dir = mkdtempSync(join(tmpdir(), 'taskpass-authzen-'))
let n = 0
/** A policy file forbidding `delete_note` on NOTES for everyone. */
function forbidDelete(c: ConfigInput): ConfigInput {
  const file = join(dir, `p${++n}.cedar`)
  writeFileSync(file, `@id("no-delete-note")\nforbid (principal, action == Taskpass::Action::"call_tool", resource == Taskpass::Tool::"${NOTES}#delete_note");\n`)
  return { ...c, policies: { file } }
}

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
const NOTES_AUTH = basic('notes-mcp', NOTES_SECRET)
const CALENDAR_AUTH = basic('calendar-mcp', CALENDAR_SECRET)

type Json = Record<string, unknown>

/** A task token for NOTES (agent-a for alice), optionally in a task that declared its tools. */
async function notesToken(b: TestBroker, opts: { tools?: string[]; scope?: string } = {}): Promise<{ token: string; taskId: string }> {
  const opened = await openTask(b, { purpose: 'notes', resources: [{ resource: NOTES, scopes: ['notes:read', 'notes:write'], ...(opts.tools ? { tools: opts.tools } : {}) }] })
  assert.equal(opened.status, 201, await opened.clone().text())
  const taskId = ((await opened.json()) as { task_id: string }).task_id
  const res = await b.exchange({ task_id: taskId, scope: opts.scope ?? 'notes:read' })
  assert.equal(res.status, 200, await res.clone().text())
  return { token: ((await res.json()) as { access_token: string }).access_token, taskId }
}

function ask(b: TestBroker, body: unknown, opts: { auth?: string | null; path?: string; headers?: Record<string, string> } = {}): Promise<Response> {
  const auth = opts.auth === undefined ? NOTES_AUTH : opts.auth
  return Promise.resolve(
    b.app.request(opts.path ?? '/access/v1/evaluation', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}), ...opts.headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    }),
  )
}

const toolCall = (token: string, tool: string, extra: Json = {}) => ({ subject: { type: 'task_token', id: token }, action: { name: 'tools/call' }, resource: { type: 'tool', id: tool }, ...extra })

async function decision(res: Response): Promise<Json> {
  assert.equal(res.status, 200, await res.clone().text())
  assert.equal(res.headers.get('cache-control'), 'no-store')
  return (await res.json()) as Json
}

describe('POST /access/v1/evaluation', () => {
  it('permits a granted tool: {decision: true}, audited as an allow naming the deciding policy, the token and the task', () =>
    withBroker(undefined, async (b) => {
      const { token, taskId } = await notesToken(b)
      const before = await counts(b)
      assert.deepEqual(await decision(await ask(b, toolCall(token, 'read_note', { context: { arguments: { name: 'todo' } } }))), { decision: true, context: { reason: 'permitted' } })
      assert.equal((await counts(b)).audit_events, before.audit_events + 1)
      assert.equal((await counts(b)).tokens, before.tokens)
      const row = (await b.lastAudit())!
      assert.equal(row.action, 'tool.call')
      assert.equal(row.decision, 'allow')
      assert.equal(row.policies, `grant/agent-a/${NOTES}`)
      assert.equal(row.policy_version, b.deps.policy.version)
      assert.equal(row.task_id, taskId)
      assert.equal(row.workload_id, 'agent-a')
      assert.equal(row.resource, NOTES)
      assert.match(String(row.reason), /^read_note: permitted by policy/)
    }))

  it('the Cedar action name call_tool is accepted as the action too', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      assert.equal((await decision(await ask(b, { ...toolCall(token, 'read_note'), action: { name: 'call_tool' } }))).decision, true)
    }))

  it('a Cedar forbid on one tool: that tool is denied (policy_denied, no policy id sent), the audit row names the forbid; another tool is permitted', () =>
    withBroker(forbidDelete, async (b) => {
      const { token } = await notesToken(b)
      const denied = await decision(await ask(b, toolCall(token, 'delete_note')))
      assert.deepEqual(denied, { decision: false, context: { reason: 'policy_denied' } })
      assert.doesNotMatch(JSON.stringify(denied), /no-delete-note/)
      const row = (await b.lastAudit())!
      assert.equal(row.action, 'tool.call')
      assert.equal(row.decision, 'deny')
      assert.equal(row.error, 'invalid_target')
      assert.equal(row.policies, 'no-delete-note')
      assert.equal(row.policy_version, b.deps.policy.version)
      assert.match(String(row.reason), /^delete_note: forbidden by policy no-delete-note$/)
      assert.equal((await decision(await ask(b, toolCall(token, 'read_note')))).decision, true)
      assert.equal((await b.lastAudit())!.policies, `grant/agent-a/${NOTES}`)
    }))

  it('a task that declared its tools: a tool outside them is denied (tool_not_in_task), one inside is permitted', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b, { tools: ['read_note'] })
      assert.deepEqual(await decision(await ask(b, toolCall(token, 'write_note'))), { decision: false, context: { reason: 'tool_not_in_task' } })
      const row = (await b.lastAudit())!
      assert.equal(row.decision, 'deny')
      assert.equal(row.error, 'tool_not_in_task')
      assert.match(String(row.reason), /^tool write_note is not among the tools task \S+ declared for https:\/\/notes\.test\.example\/mcp$/)
      assert.equal((await decision(await ask(b, toolCall(token, 'read_note')))).decision, true)
      // Exact names: no prefix or case games.
      assert.equal((await decision(await ask(b, toolCall(token, 'read_note2')))).decision, false)
      assert.equal((await decision(await ask(b, toolCall(token, 'READ_NOTE')))).decision, false)
    }))

  it("a completed task's token is denied (token_revoked: ending the task revoked its tokens), though it has not expired", () =>
    withBroker(undefined, async (b) => {
      const { token, taskId } = await notesToken(b)
      const done = await b.app.request(`/tasks/${taskId}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
      assert.equal(done.status, 200, await done.text())
      const answer = await decision(await ask(b, toolCall(token, 'read_note')))
      // Ending the task revoked its tokens; the token check answers first.
      assert.equal(answer.decision, false)
      assert.equal((answer.context as Json).reason, 'token_revoked')
      assert.equal((await b.lastAudit())!.decision, 'deny')
    }))

  it('an expired task (its token row still active) is denied task_not_active', () =>
    withBroker(undefined, async (b) => {
      const { token, taskId } = await notesToken(b)
      // The task ends by time before its token is revoked by anything: only the task state says no.
      await b.rawQuery('update tasks set expires_at = ? where id = ?', [b.clock.now() - 1, taskId])
      assert.deepEqual(await decision(await ask(b, toolCall(token, 'read_note'))), { decision: false, context: { reason: 'task_not_active' } })
      assert.equal((await b.lastAudit())!.reason, 'task is expired')
    }))

  it('a completed or revoked task is a deny even if a token row of it were still active (task_not_active)', () =>
    withBroker(undefined, async (b) => {
      for (const status of ['completed', 'revoked', 'pending_approval']) {
        const { token, taskId } = await notesToken(b)
        await b.rawQuery('update tasks set status = ? where id = ?', [status, taskId])
        assert.deepEqual(await decision(await ask(b, toolCall(token, 'read_note'))), { decision: false, context: { reason: 'task_not_active' } }, status)
        assert.equal((await b.lastAudit())!.reason, `task is ${status}`)
      }
    }))

  it('a revoked token is denied (token_revoked)', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      const revoked = await b.post('/revoke', { token }, { authorization: NOTES_AUTH })
      assert.equal(revoked.status, 200)
      assert.deepEqual(await decision(await ask(b, toolCall(token, 'read_note'))), { decision: false, context: { reason: 'token_revoked' } })
      assert.equal((await b.lastAudit())!.error, 'token_revoked')
    }))

  it('an expired token is denied (token_expired); a token not issued here is denied (token_invalid)', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      const forged = `${token.slice(0, token.lastIndexOf('.') + 1)}AAAA`
      assert.deepEqual(await decision(await ask(b, toolCall(forged, 'read_note'))), { decision: false, context: { reason: 'token_invalid' } })
      assert.deepEqual(await decision(await ask(b, toolCall('not-a-jwt', 'read_note'))), { decision: false, context: { reason: 'token_invalid' } })
      b.clock.advance(3600)
      assert.deepEqual(await decision(await ask(b, toolCall(token, 'read_note'))), { decision: false, context: { reason: 'token_expired' } })
    }))

  it('other subject types, actions, resource types and tool names are denied, each with its reason', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      const cases: [unknown, string][] = [
        [{ ...toolCall(token, 'read_note'), subject: { type: 'identity', id: 'alice' } }, 'unsupported_subject_type'],
        [{ ...toolCall(token, 'read_note'), action: { name: 'tools/list' } }, 'unsupported_action'],
        [{ ...toolCall(token, 'read_note'), resource: { type: 'mcp_server', id: NOTES } }, 'unsupported_resource_type'],
        [toolCall(token, 'read note'), 'invalid_tool_name'],
        [toolCall(token, 'x'.repeat(129)), 'invalid_tool_name'],
      ]
      for (const [body, reason] of cases) {
        const before = await counts(b)
        assert.deepEqual(await decision(await ask(b, body)), { decision: false, context: { reason } }, reason)
        assert.equal((await counts(b)).audit_events, before.audit_events + 1, `${reason} is audited`)
        assert.equal((await b.lastAudit())!.error, reason)
      }
    }))

  it('unauthenticated → 401 invalid_client with a Basic challenge, and nothing is written', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      for (const auth of [null, basic('notes-mcp', 'wrong-secret'), basic('nobody', 'x'), `Bearer ${token}`]) {
        const before = await counts(b)
        const res = await ask(b, toolCall(token, 'read_note'), { auth })
        assert.equal(res.status, 401, String(auth))
        assert.equal(res.headers.get('www-authenticate'), 'Basic realm="taskpass"')
        assert.deepEqual(((await res.json()) as Json).error, 'invalid_client')
        assert.deepEqual(await counts(b), before)
      }
      const batch = await ask(b, { evaluations: [toolCall(token, 'read_note')] }, { auth: null, path: '/access/v1/evaluations' })
      assert.equal(batch.status, 401)
    }))

  it("another resource's credential asking about a NOTES token → 403 unauthorized_client, audited", () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      const before = await counts(b)
      const res = await ask(b, toolCall(token, 'read_note'), { auth: CALENDAR_AUTH })
      assert.equal(res.status, 403)
      assert.deepEqual(await res.json(), { error: 'unauthorized_client', error_description: 'this resource may ask only about tokens issued for it' })
      assert.equal((await counts(b)).audit_events, before.audit_events + 1)
      const row = (await b.lastAudit())!
      assert.equal(row.decision, 'deny')
      assert.equal(row.error, 'unauthorized_client')
      assert.equal(row.resource, CALENDAR)
      assert.equal(row.reason, `token is for ${NOTES}, not ${CALENDAR}`)
      // In a batch the same question is a per-item error (§7.2): decision false with the status.
      const batch = await decision(await ask(b, { evaluations: [toolCall(token, 'read_note')] }, { auth: CALENDAR_AUTH, path: '/access/v1/evaluations' }))
      assert.deepEqual(batch, { evaluations: [{ decision: false, context: { reason: 'not_this_resource', error: { status: 403, message: 'this resource may ask only about tokens issued for it' } } }] })
    }))

  it('malformed requests → 400 invalid_request, nothing written; never a 500', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      const deep = JSON.parse('{"a":'.repeat(40) + '1' + '}'.repeat(40)) as Json
      const bodies: [unknown, RegExp][] = [
        ['{not json', /malformed JSON/],
        ['[]', /body/],
        [{ action: { name: 'tools/call' }, resource: { type: 'tool', id: 'read_note' } }, /"subject"/],
        [{ ...toolCall(token, 'read_note'), subject: { type: 'task_token' } }, /"subject.id"/],
        [{ ...toolCall(token, 'read_note'), action: {} }, /"action.name"/],
        [{ ...toolCall(token, 'read_note'), resource: { type: 'tool', id: 7 } }, /"resource.id"/],
        [{ ...toolCall(token, 'read_note'), context: 'x' }, /"context"/],
        [toolCall(token, 'read_note', { context: { arguments: [1, 2] } }), /"context.arguments" must be an object/],
        [toolCall(token, 'read_note', { context: { arguments: deep } }), /nests deeper than 32/],
        [toolCall(token, 'read_note', { context: { arguments: { text: 'x'.repeat(9000) } } }), /longer than 8192/],
        [{ ...toolCall(token, 'read_note'), subject: { type: 'task_token', id: 'x'.repeat(8193) } }, /"subject.id"/],
      ]
      for (const [body, message] of bodies) {
        const before = await counts(b)
        const res = await ask(b, body)
        assert.equal(res.status, 400, String(message))
        const err = (await res.json()) as Json
        assert.equal(err.error, 'invalid_request')
        assert.match(String(err.error_description), message)
        assert.deepEqual(await counts(b), before)
      }
      const wrongType = await b.app.request('/access/v1/evaluation', { method: 'POST', headers: { 'content-type': 'text/plain', authorization: NOTES_AUTH }, body: JSON.stringify(toolCall(token, 'read_note')) })
      assert.equal(wrongType.status, 400)
      // Unknown members are ignored (§10.1), properties accepted and not evaluated.
      const extra = { ...toolCall(token, 'read_note'), subject: { type: 'task_token', id: token, properties: { role: 'admin' } }, surprise: true }
      assert.equal((await decision(await ask(b, extra))).decision, true)
    }))

  it('a body over the broker body limit → 413, nothing written', () =>
    withBroker(undefined, async (b) => {
      const before = await counts(b)
      const res = await ask(b, { pad: 'x'.repeat(20_000) })
      assert.equal(res.status, 413)
      assert.deepEqual(await counts(b), before)
    }))

  it('X-Request-ID is echoed on decisions and on refusals', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      const ok = await ask(b, toolCall(token, 'read_note'), { headers: { 'x-request-id': 'req-42' } })
      assert.equal(ok.status, 200)
      assert.equal(ok.headers.get('x-request-id'), 'req-42')
      const unauth = await ask(b, toolCall(token, 'read_note'), { auth: null, headers: { 'x-request-id': 'req-43' } })
      assert.equal(unauth.status, 401)
      assert.equal(unauth.headers.get('x-request-id'), 'req-43')
      const bad = await ask(b, '{', { path: '/access/v1/evaluations', headers: { 'x-request-id': 'req-44' } })
      assert.equal(bad.status, 400)
      assert.equal(bad.headers.get('x-request-id'), 'req-44')
      // Without one, the broker's own request id (the one its access log line carries).
      const none = await ask(b, toolCall(token, 'read_note'))
      assert.match(none.headers.get('x-request-id') ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
    }))
})

describe('POST /access/v1/evaluations', () => {
  const evaluations = (b: TestBroker, body: unknown, auth?: string) => ask(b, body, { path: '/access/v1/evaluations', ...(auth ? { auth } : {}) })

  /** Top-level defaults (subject, action), per-item resources. */
  const batchOf = (token: string, tools: string[], semantic?: string) => ({
    subject: { type: 'task_token', id: token },
    action: { name: 'tools/call' },
    evaluations: tools.map((t) => ({ resource: { type: 'tool', id: t } })),
    ...(semantic ? { options: { evaluations_semantic: semantic } } : {}),
  })
  const decisions = (body: Json) => (body.evaluations as Json[]).map((e) => e.decision)

  it('execute_all (the default): every item, in order, each audited', () =>
    withBroker(forbidDelete, async (b) => {
      const { token } = await notesToken(b)
      const before = await counts(b)
      const body = await decision(await evaluations(b, batchOf(token, ['read_note', 'delete_note', 'write_note'])))
      assert.deepEqual(decisions(body), [true, false, true])
      assert.deepEqual((body.evaluations as Json[])[1], { decision: false, context: { reason: 'policy_denied' } })
      assert.equal(body.decision, undefined, 'no top-level decision')
      assert.equal((await counts(b)).audit_events, before.audit_events + 3)
      const explicit = await decision(await evaluations(b, batchOf(token, ['read_note', 'delete_note', 'write_note'], 'execute_all')))
      assert.deepEqual(decisions(explicit), [true, false, true])
    }))

  it('deny_on_first_deny: stops at the first deny and truncates the response after it', () =>
    withBroker(forbidDelete, async (b) => {
      const { token } = await notesToken(b)
      const before = await counts(b)
      const body = await decision(await evaluations(b, batchOf(token, ['read_note', 'delete_note', 'write_note'], 'deny_on_first_deny')))
      assert.deepEqual(decisions(body), [true, false])
      assert.equal((await counts(b)).audit_events, before.audit_events + 2, 'only evaluated items are audited')
      assert.deepEqual(decisions(await decision(await evaluations(b, batchOf(token, ['read_note', 'write_note'], 'deny_on_first_deny')))), [true, true])
    }))

  it('permit_on_first_permit: stops at the first permit and truncates the response after it', () =>
    withBroker(forbidDelete, async (b) => {
      const { token } = await notesToken(b)
      const body = await decision(await evaluations(b, batchOf(token, ['delete_note', 'read_note', 'delete_note'], 'permit_on_first_permit')))
      assert.deepEqual(decisions(body), [false, true])
      assert.deepEqual(decisions(await decision(await evaluations(b, batchOf(token, ['delete_note', 'bad name'], 'permit_on_first_permit')))), [false, false])
    }))

  it('per-item members override the defaults; items missing a required member → 400', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      const { token: other } = await notesToken(b, { tools: ['write_note'] })
      const body = await decision(
        await evaluations(b, {
          subject: { type: 'task_token', id: token },
          action: { name: 'tools/call' },
          resource: { type: 'tool', id: 'read_note' },
          evaluations: [{}, { subject: { type: 'task_token', id: other } }, { subject: { type: 'task_token', id: other }, resource: { type: 'tool', id: 'write_note' } }],
        }),
      )
      assert.deepEqual(decisions(body), [true, false, true])
      const before = await counts(b)
      const missing = await evaluations(b, { action: { name: 'tools/call' }, evaluations: [{ subject: { type: 'task_token', id: token }, resource: { type: 'tool', id: 'read_note' } }, { resource: { type: 'tool', id: 'read_note' } }] })
      assert.equal(missing.status, 400)
      assert.match(String(((await missing.json()) as Json).error_description), /"evaluations.1": subject missing/)
      assert.deepEqual(await counts(b), before, 'a 400 evaluates nothing')
    }))

  it('without items it is one Access Evaluation, with that response shape', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      assert.deepEqual(await decision(await evaluations(b, toolCall(token, 'read_note'))), { decision: true, context: { reason: 'permitted' } })
      assert.deepEqual(await decision(await evaluations(b, { ...toolCall(token, 'read_note'), evaluations: [] })), { decision: true, context: { reason: 'permitted' } })
      assert.equal((await evaluations(b, { evaluations: [] })).status, 400)
    }))

  it('bounds: more than 32 items → 400; an unknown semantic → 400; nothing written', () =>
    withBroker(undefined, async (b) => {
      const { token } = await notesToken(b)
      const before = await counts(b)
      const many = { subject: { type: 'task_token', id: token }, action: { name: 'tools/call' }, evaluations: Array.from({ length: 33 }, () => ({ resource: { type: 'tool', id: 'r' } })) }
      const res = await evaluations(b, many)
      assert.equal(res.status, 400)
      assert.match(String(((await res.json()) as Json).error_description), /at most 32 items/)
      const ok = { ...many, evaluations: many.evaluations.slice(0, 32) }
      assert.equal(decisions(await decision(await evaluations(b, ok))).length, 32)
      const afterOk = await counts(b)
      assert.equal(afterOk.audit_events, before.audit_events + 32)
      const semantic = await evaluations(b, batchOf(token, ['read_note'], 'first_wins'))
      assert.equal(semantic.status, 400)
      assert.deepEqual(await counts(b), afterOk)
    }))
})

describe('GET /.well-known/authzen-configuration', () => {
  it('publishes the PDP metadata: policy_decision_point is the issuer, both evaluation endpoints', () =>
    withBroker(undefined, async (b) => {
      const res = await b.app.request('/.well-known/authzen-configuration')
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), {
        policy_decision_point: ISSUER,
        access_evaluation_endpoint: `${ISSUER}/access/v1/evaluation`,
        access_evaluations_endpoint: `${ISSUER}/access/v1/evaluations`,
      })
    }))

  it('for an issuer with a path, the well-known segment is inserted before the path', () =>
    withBroker({ issuer: 'https://broker.test.example/tenant-1' }, async (b) => {
      const res = await b.app.request('/.well-known/authzen-configuration/tenant-1')
      assert.equal(res.status, 200)
      const doc = (await res.json()) as Json
      assert.equal(doc.policy_decision_point, 'https://broker.test.example/tenant-1')
      assert.equal(doc.access_evaluation_endpoint, 'https://broker.test.example/tenant-1/access/v1/evaluation')
      assert.equal((await b.app.request('/.well-known/authzen-configuration')).status, 404)
    }))
})

describe('docs/authzen.md: its samples', () => {
  const page = readFileSync(new URL('../docs/authzen.md', import.meta.url), 'utf8')
  const blocks = (lang: string) => [...page.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!)

  it('the request and its answer: the broker answers the page’s request (with a real token) with the page’s answer', () =>
    withBroker(undefined, async (b) => {
      const [request, answer] = blocks('json')
      const { token } = await notesToken(b)
      const body = JSON.parse(request!.replace('<the access token the MCP server received>', token)) as Json
      assert.deepEqual(await decision(await ask(b, body)), JSON.parse(answer!))
    }))

  it('the discovery document is what a broker at https://broker.example.com serves', () =>
    withBroker({ issuer: 'https://broker.example.com' }, async (b) => {
      const shown = JSON.parse(blocks('json')[2]!) as Json
      const res = await b.app.request('/.well-known/authzen-configuration')
      assert.deepEqual(await res.json(), shown)
    }))

  it('the server sample is docs/examples/authzen-mcp-server.ts verbatim (the file the end-to-end test runs)', () => {
    const file = readFileSync(new URL('../docs/examples/authzen-mcp-server.ts', import.meta.url), 'utf8')
    const sample = blocks('ts').find((b) => b.includes('export function notesApp'))!
    assert.ok(file.includes(sample), 'the page shows the file’s code as it is')
  })
})
