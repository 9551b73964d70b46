/**
 * Attack: sub-tasks (POST /tasks/{id}/subtasks, the sub-task exchange, the cascade). Every test
 * tries to get a sub-task wider than its parent, a token of it that outlives what it should, a
 * policy bypass, a 500 or a refusal that is not audited. A finding is a test of the contract
 * that fails on the current code, fixed since (each test failed before its fix); the attacks that are
 * correctly refused are plain tests.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { describe, it } from 'node:test'
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose'
import { toolsInToken } from '@taskpass/verifier'
import { revokeTasksOutsideCatalog } from '../src/catalog/retirement.js'
import { ADMIN_KEY, assertRefusedAndAudited, counts, JWT_TYPE, NOTES, openTask, postgresBug, TOKEN_EXCHANGE, withBroker, type TestBroker } from './harness.js'
import { childExchange, delegating, errorOf, introspect, openedSubtask, PARENT_RESOURCES, parentTask, subtask, TASK_TYPE, tokenOf, type TaskView } from './subtask-fixtures.js'

async function putPolicies(b: TestBroker, policies: string): Promise<void> {
  const res = await b.app.request('/admin/policies', { method: 'PUT', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ policies }) })
  assert.equal(res.status, 200, await res.clone().text())
}

/** A DPoP proof (RFC 9449 §4.2) by a fresh ES256 key, built with jose. */
async function dpopKey() {
  const pair = await generateKeyPair('ES256', { extractable: true })
  const jwk = await exportJWK(pair.publicKey)
  return {
    jkt: await calculateJwkThumbprint(jwk, 'sha256'),
    proof: (b: TestBroker, path: string) =>
      new SignJWT({ jti: randomUUID(), htm: 'POST', htu: `${b.deps.config.issuer}${path}`, iat: b.clock.now() }).setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk }).sign(pair.privateKey),
  }
}

describe('attack: sub-tasks never wider than the parent (findings)', () => {
  it('finding 1: a sub-task whose scopes come out empty (the parent’s ∩ the delegate’s grant) is refused, never widened to the delegate’s own grant', () =>
    withBroker(delegating, async (b) => {
      // The parent declares notes:write only; agent-b's grant is notes:read only.
      const parent = await parentTask(b, { resources: [{ resource: NOTES, scopes: ['notes:write'], tools: ['write_note'] }] })
      for (const resources of [[{ resource: NOTES }], [{ resource: NOTES, scopes: [] }]]) {
        const before = await counts(b)
        const res = await subtask(b, parent.task_id, { resources })
        const body = (await res.clone().json()) as TaskView & { error?: string }
        assert.equal(res.status, 400, `opened a sub-task declaring ${JSON.stringify(body.resources)} under a parent that declared notes:write only`)
        assert.equal(body.error, 'invalid_scope')
        await assertRefusedAndAudited(b, before, { error: 'invalid_scope', reason: /no (allowed )?scope/, action: 'task.delegate' })
      }
    }))

  it('finding 2: session_age at a sub-task’s exchange is the user’s session’s, not reset to the sub-task’s opening', () =>
    withBroker(delegating, async (b) => {
      // A session-freshness rule, written as a forbid (session_age is absent at call_tool).
      await putPolicies(b, `@id("fresh-session")\nforbid (principal, action == Taskpass::Action::"exchange", resource) when { context has session_age && context.session_age > 600 };`)
      const session = await b.session()
      const parent = await parentTask(b, {}, { session })
      b.clock.advance(700)
      // The parent may not mint with a 700 s old session...
      const own = await b.post('/token', { grant_type: TOKEN_EXCHANGE, subject_token: session, subject_token_type: JWT_TYPE, actor_token: await b.svid('a'), actor_token_type: JWT_TYPE, resource: NOTES, scope: 'notes:read', task_id: parent.task_id })
      assert.equal(own.status, 400)
      const refusedAs = await errorOf(own)
      // ...so neither may a sub-task it opens now, on the same session.
      const child = await openedSubtask(b, parent.task_id)
      const res = await childExchange(b, child.task_id)
      assert.equal(res.status, 400, 'the sub-task minted a token though its user’s session is past the freshness rule')
      assert.equal(await errorOf(res), refusedAs)
      assert.match(String((await b.lastAudit())!.reason), /fresh-session/)
    }))

  it('finding 3: a sub-task mints no token beyond its user’s session (the parent cannot mint on an expired session)', () =>
    withBroker(delegating, async (b) => {
      const session = await b.session({ exp: b.clock.now() + 300 })
      const parent = await parentTask(b, {}, { session })
      const child = await openedSubtask(b, parent.task_id)
      const ownFirst = (await (await b.post('/token', { grant_type: TOKEN_EXCHANGE, subject_token: session, subject_token_type: JWT_TYPE, actor_token: await b.svid('a'), actor_token_type: JWT_TYPE, resource: NOTES, scope: 'notes:read', task_id: parent.task_id, ttl: '900' })).json()) as { expires_in: number }
      assert.ok(ownFirst.expires_in <= 300, 'the parent’s tokens end with the session')
      const first = (await (await childExchange(b, child.task_id, { ttl: '900' })).json()) as { expires_in: number }
      assert.ok(first.expires_in <= 300, `the sub-task's token lives ${first.expires_in}s, past the user's session (300s)`)
      b.clock.advance(400)
      const late = await childExchange(b, child.task_id)
      assert.equal(late.status, 400, 'the sub-task minted a token after its user’s session expired')
    }))

  it('finding 4: a sub-task of a DPoP-bound parent mints no bearer token (the binding is not dropped by delegating)', () =>
    withBroker(delegating, async (b) => {
      const k = await dpopKey()
      const opened = await b.app.request('/tasks', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${await b.session()}`, 'actor-token': await b.svid('a'), dpop: await k.proof(b, '/tasks') },
        body: JSON.stringify({ purpose: 'bound', resources: PARENT_RESOURCES, ttl: 1800 }),
      })
      assert.equal(opened.status, 201, await opened.clone().text())
      const parent = (await opened.json()) as TaskView
      assert.equal(parent.dpop_jkt, k.jkt)
      // The parent's own bearer exchange is refused: its tokens are sender-constrained.
      const bearer = await b.post('/token', { grant_type: TOKEN_EXCHANGE, subject_token: await b.session(), subject_token_type: JWT_TYPE, actor_token: await b.svid('a'), actor_token_type: JWT_TYPE, resource: NOTES, scope: 'notes:read', task_id: parent.task_id })
      assert.equal(bearer.status, 400)
      const res = await subtask(b, parent.task_id, {}, { headers: { dpop: await k.proof(b, `/tasks/${parent.task_id}/subtasks`) } })
      assert.equal(res.status, 201, await res.clone().text())
      const child = (await res.json()) as TaskView
      const before = await counts(b)
      const childBearer = await childExchange(b, child.task_id)
      assert.equal(childBearer.status, 400, 'the sub-task of a DPoP-bound task minted a bearer token')
      assert.equal(await errorOf(childBearer), 'invalid_dpop_proof')
      await assertRefusedAndAudited(b, before, { error: 'invalid_dpop_proof', reason: /DPoP/ })
    }))

  it('finding 5: a bad DPoP proof at POST /tasks/{id}/subtasks, from the authenticated task workload, is audited as a task.delegate denial', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const before = await counts(b)
      const res = await subtask(b, parent.task_id, {}, { headers: { dpop: 'not-a-proof' } })
      assert.equal(res.status, 400)
      assert.equal(await errorOf(res), 'invalid_dpop_proof')
      // POST /tasks audits the same refusal (auditTaskOpenDenied); this route writes nothing at all.
      await assertRefusedAndAudited(b, before, { error: 'invalid_dpop_proof', reason: /./, action: 'task.delegate' })
    }))
})

describe('attack: sub-tasks never wider than the parent (refused correctly)', () => {
  it('resource URI variants (case, trailing slash, default port, dot segment, query) and a duplicated resource are refused and audited', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const variants = [NOTES.toUpperCase(), 'https://NOTES.test.example/mcp', `${NOTES}/`, 'https://notes.test.example:443/mcp', 'https://notes.test.example/./mcp', `${NOTES}?x=1`, ` ${NOTES}`, `${NOTES}\u200b`]
      for (const uri of variants) {
        const before = await counts(b)
        const res = await subtask(b, parent.task_id, { resources: [{ resource: uri, scopes: ['notes:read'] }] })
        assert.equal(res.status, 400, uri)
        assert.equal(await errorOf(res), 'invalid_target', uri)
        await assertRefusedAndAudited(b, before, { error: 'invalid_target', reason: /does not cover/, action: 'task.delegate' })
      }
      const before = await counts(b)
      const dup = await subtask(b, parent.task_id, { resources: [{ resource: NOTES, scopes: ['notes:read'] }, { resource: NOTES, scopes: ['notes:write'] }] })
      assert.equal(dup.status, 400)
      assert.equal(await errorOf(dup), 'invalid_request')
      await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /listed twice/, action: 'task.delegate' })
    }))

  it('scope and tool case variants are refused; duplicates collapse; `tools: []` gives a token no tool may be called with', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      for (const [resources, error] of [
        [[{ resource: NOTES, scopes: ['Notes:Read'] }], 'invalid_scope'],
        [[{ resource: NOTES, scopes: ['notes:read'], tools: ['Read_Note'] }], 'invalid_authorization_details'],
        [[{ resource: NOTES, scopes: ['notes:read'], tools: ['read_note', 'delete_note'] }], 'invalid_authorization_details'],
      ] as const) {
        const before = await counts(b)
        const res = await subtask(b, parent.task_id, { resources })
        assert.equal(res.status, 400, JSON.stringify(resources))
        assert.equal(await errorOf(res), error)
        await assertRefusedAndAudited(b, before, { error, reason: /beyond task/, action: 'task.delegate' })
      }
      const dup = await openedSubtask(b, parent.task_id, { resources: [{ resource: NOTES, scopes: ['notes:read', 'notes:read'], tools: ['read_note', 'read_note'] }] })
      assert.deepEqual(dup.resources, [{ resource: NOTES, scopes: ['notes:read'], tools: ['read_note'] }])

      const none = await openedSubtask(b, parent.task_id, { resources: [{ resource: NOTES, scopes: ['notes:read'], tools: [] }] })
      assert.deepEqual(none.resources[0]!.tools, [])
      const claims = decodeJwt(await tokenOf(await childExchange(b, none.task_id)))
      assert.deepEqual(claims.authorization_details, [{ type: 'mcp_tools', locations: [NOTES], actions: [] }])
      // The kit reads an empty list as "no tool", never as "scope-only" (any tool).
      assert.deepEqual(toolsInToken(claims.authorization_details, NOTES), { ok: true, tools: [] })
      // And the sub-task's exchange may not ask for any tool back.
      const wider = await childExchange(b, none.task_id, { authorization_details: JSON.stringify([{ type: 'mcp_tools', locations: [NOTES], actions: ['read_note'] }]) })
      assert.equal(wider.status, 400)
      assert.equal(await errorOf(wider), 'invalid_authorization_details')
    }))

  it('a parent that named no tools: the sub-task may name some, and a grandchild cannot get back to “any tool”', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b, { resources: [{ resource: NOTES, scopes: ['notes:read', 'notes:write'] }] })
      const child = await openedSubtask(b, parent.task_id, { resources: [{ resource: NOTES, scopes: ['notes:read'], tools: ['read_note'] }] })
      const grandchild = await openedSubtask(b, child.task_id, { workload: 'agent-c', resources: [{ resource: NOTES }] }, await b.svid('b'))
      assert.deepEqual(grandchild.resources, [{ resource: NOTES, scopes: ['notes:read'], tools: ['read_note'] }])
      const before = await counts(b)
      const wider = await subtask(b, child.task_id, { workload: 'agent-c', resources: [{ resource: NOTES, tools: ['write_note'] }] }, { svid: await b.svid('b') })
      assert.equal(wider.status, 400)
      assert.equal(await errorOf(wider), 'invalid_authorization_details')
      await assertRefusedAndAudited(b, before, { error: 'invalid_authorization_details', reason: /write_note/, action: 'task.delegate' })
    }))

  it('token bound: an unbounded parent’s sub-task may be bounded; an exhausted parent’s sub-task mints nothing', () =>
    withBroker(delegating, async (b) => {
      const unbounded = await parentTask(b)
      assert.equal(unbounded.max_tokens, undefined)
      const bounded = await openedSubtask(b, unbounded.task_id, { max_tokens: 1 })
      assert.equal(bounded.max_tokens, 1)
      await tokenOf(await childExchange(b, bounded.task_id))
      const second = await childExchange(b, bounded.task_id)
      assert.equal(second.status, 400)
      assert.equal(await errorOf(second), 'invalid_grant')

      const one = await parentTask(b, { max_tokens: 1 })
      await tokenOf(await b.post('/token', { grant_type: TOKEN_EXCHANGE, subject_token: await b.session(), subject_token_type: JWT_TYPE, actor_token: await b.svid('a'), actor_token_type: JWT_TYPE, resource: NOTES, scope: 'notes:read', task_id: one.task_id }))
      const before = await counts(b)
      const asked = await subtask(b, one.task_id, { max_tokens: 1 })
      assert.equal(asked.status, 400)
      assert.equal(await errorOf(asked), 'invalid_request')
      await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /has 0 left/, action: 'task.delegate' })
      const defaulted = await openedSubtask(b, one.task_id)
      assert.equal(defaulted.max_tokens, 0)
      const res = await childExchange(b, defaulted.task_id)
      assert.equal(res.status, 400)
      assert.equal(await errorOf(res), 'invalid_grant')
    }))

  it('lifetime: the sub-task ends with its parent and its tokens never outlive it', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b, { ttl: 600 })
      b.clock.advance(500)
      const before = await counts(b)
      const long = await subtask(b, parent.task_id, { ttl: 101 })
      assert.equal(long.status, 400)
      assert.equal(await errorOf(long), 'invalid_request')
      await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /ttl 101s/, action: 'task.delegate' })
      const child = await openedSubtask(b, parent.task_id)
      assert.equal(child.expires_at, parent.expires_at)
      const claims = decodeJwt(await tokenOf(await childExchange(b, child.task_id, { ttl: '3600' })))
      assert.ok(claims.exp! <= parent.expires_at)
    }))

  it('a parent pending approval cannot delegate (409), and a denied one never had a sub-task', () =>
    withBroker(delegating, async (b) => {
      await putPolicies(b, `@id("approve-notes") @constraint_only("true") @approval_required("true")\npermit (principal == Taskpass::Workload::"agent-a", action == Taskpass::Action::"open_task", resource == Taskpass::Resource::"${NOTES}");`)
      const res = await openTask(b, { purpose: 'needs approval', resources: PARENT_RESOURCES })
      const parent = (await res.json()) as TaskView
      assert.equal(parent.status, 'pending_approval')
      const before = await counts(b)
      const sub = await subtask(b, parent.task_id, {})
      assert.equal(sub.status, 409)
      assert.equal(await errorOf(sub), 'task_not_active')
      await assertRefusedAndAudited(b, before, { error: 'task_not_active', reason: /pending_approval/, action: 'task.delegate' })
    }))

  it('a DPoP-bound parent delegates only with a proof by its key (none, or another key’s: refused and audited)', () =>
    withBroker(delegating, async (b) => {
      const k = await dpopKey()
      const other = await dpopKey()
      const opened = await b.app.request('/tasks', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${await b.session()}`, 'actor-token': await b.svid('a'), dpop: await k.proof(b, '/tasks') },
        body: JSON.stringify({ purpose: 'bound', resources: PARENT_RESOURCES, ttl: 1800 }),
      })
      const parent = (await opened.json()) as TaskView
      for (const headers of [{}, { dpop: await other.proof(b, `/tasks/${parent.task_id}/subtasks`) }] as Record<string, string>[]) {
        const before = await counts(b)
        const res = await subtask(b, parent.task_id, {}, { headers })
        assert.equal(res.status, 400)
        assert.equal(await errorOf(res), 'invalid_dpop_proof')
        await assertRefusedAndAudited(b, before, { error: 'invalid_dpop_proof', reason: /DPoP-bound|bound to/, action: 'task.delegate' })
      }
    }))

  it('policy: a Cedar forbid on delegate is honoured; a @constraint_only permit alone permits no delegation', () =>
    withBroker(delegating, async (b) => {
      await putPolicies(
        b,
        `@id("no-delegation-of-notes")\nforbid (principal == Taskpass::Workload::"agent-a", action == Taskpass::Action::"delegate", resource == Taskpass::Resource::"${NOTES}");\n` +
          `@id("only-constrains") @constraint_only("true") @max_ttl("60")\npermit (principal == Taskpass::Workload::"agent-b", action == Taskpass::Action::"delegate", resource);`,
      )
      const parent = await parentTask(b)
      let before = await counts(b)
      const forbidden = await subtask(b, parent.task_id, {})
      assert.equal(forbidden.status, 400)
      await assertRefusedAndAudited(b, before, { error: await errorOf(forbidden), reason: /no-delegation-of-notes/, action: 'task.delegate' })
      // agent-b's delegateTo is agent-c: allowed by defaults. agent-b → agent-a is not, and the constraint-only permit does not make it so.
      await putPolicies(b, `@id("only-constrains") @constraint_only("true") @max_ttl("60")\npermit (principal == Taskpass::Workload::"agent-b", action == Taskpass::Action::"delegate", resource);`)
      const child = await openedSubtask(b, parent.task_id)
      before = await counts(b)
      const back = await subtask(b, child.task_id, { workload: 'agent-a' }, { svid: await b.svid('b') })
      assert.equal(back.status, 400)
      assert.equal(await errorOf(back), 'unauthorized_client')
      await assertRefusedAndAudited(b, before, { error: 'unauthorized_client', reason: /no policy permits agent-b to delegate/, action: 'task.delegate' })
    }))

  it('every ending path ends the sub-tasks and their tokens: user revoke, delegator revoke, admin revoke, workload disabled at start', () =>
    withBroker(delegating, async (b) => {
      const setup = async () => {
        const parent = await parentTask(b)
        const child = await openedSubtask(b, parent.task_id)
        const grandchild = await openedSubtask(b, child.task_id, { workload: 'agent-c' }, await b.svid('b'))
        const tokens = [await tokenOf(await childExchange(b, child.task_id)), await tokenOf(await childExchange(b, grandchild.task_id, {}, 'c'))]
        return { parent, child, grandchild, tokens }
      }
      const ended = async (s: Awaited<ReturnType<typeof setup>>, how: string) => {
        for (const t of s.tokens) assert.equal(await introspect(b, t), false, how)
        for (const id of [s.child.task_id, s.grandchild.task_id]) assert.equal((await b.deps.stores.tasks.get(id))!.status, 'revoked', how)
        const again = await childExchange(b, s.grandchild.task_id, {}, 'c')
        assert.equal(again.status, 400, how)
        assert.equal(await errorOf(again), 'invalid_grant', how)
      }
      const byUser = await setup()
      assert.equal((await b.app.request(`/tasks/${byUser.parent.task_id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${await b.session()}` } })).status, 200)
      await ended(byUser, 'user revoke')

      // The middle of the chain revoked by the workload above it: the grandchild ends too.
      const middle = await setup()
      assert.equal((await b.app.request(`/tasks/${middle.child.task_id}/revoke`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })).status, 200)
      await ended(middle, 'middle revoked by the delegator')
      assert.equal((await b.deps.stores.tasks.get(middle.parent.task_id))!.status, 'active')

      const byAdmin = await setup()
      assert.equal((await b.app.request(`/admin/tasks/${byAdmin.parent.task_id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 200)
      await ended(byAdmin, 'admin revoke')

      const disabled = await setup()
      const workloads = b.deps.config.workloads.map((w) => ({ ...w, enabled: w.id === 'agent-a' ? false : w.enabled }))
      assert.ok((await revokeTasksOutsideCatalog({ ...b.deps, config: { ...b.deps.config, workloads } }, 'config')).includes(disabled.parent.task_id))
      await ended(disabled, 'workload disabled at start')
    }))

  it('a delegating workload disabled (or removed from delegateTo) stops the sub-task’s next exchange; so does the delegate itself', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const child = await openedSubtask(b, parent.task_id)
      const a = b.deps.config.workloads.find((w) => w.id === 'agent-a')!
      a.enabled = false
      const before = await counts(b)
      const res = await childExchange(b, child.task_id)
      assert.equal(res.status, 400)
      assert.equal(await errorOf(res), 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /no longer covers/ })
      a.enabled = true
      b.deps.config.workloads.find((w) => w.id === 'agent-b')!.enabled = false
      const self = await childExchange(b, child.task_id)
      assert.equal(self.status, 400)
    }))

  it('the act chain cannot be spoofed with the actor token’s own act, nor through task_id', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const child = await openedSubtask(b, parent.task_id)
      const res = await b.post('/token', { grant_type: TOKEN_EXCHANGE, subject_token: child.task_id, subject_token_type: TASK_TYPE, actor_token: await b.svid('b', { act: { sub: 'agent-admin' } }), actor_token_type: JWT_TYPE, resource: NOTES })
      if (res.status === 200) {
        const claims = decodeJwt(((await res.json()) as { access_token: string }).access_token)
        assert.deepEqual(claims.act, { sub: 'agent-b', act: { sub: 'agent-a' } })
      } else assert.equal(res.status, 400)
      // The parent named with the task type by its own workload, or by the delegate via task_id: refused.
      for (const [params, who] of [[{ subject_token: parent.task_id }, 'a'], [{ task_id: parent.task_id }, 'b'], [{ subject_token: parent.task_id }, 'b']] as const) {
        const r = await childExchange(b, child.task_id, params, who)
        assert.equal(r.status, 400, JSON.stringify(params))
        assert.equal(await errorOf(r), 'invalid_request')
      }
    }))

  it('bad bodies, odd shapes and unknown ids: a 4xx with an OAuth error, never a 500, nothing written', () =>
    withBroker((c) => ({ ...delegating(c), bodyLimit: 64 * 1024 }), async (b) => {
      const parent = await parentTask(b)
      const raws = [
        '',
        'null',
        '[]',
        '"x"',
        '{',
        '{"workload":null}',
        JSON.stringify({ workload: ['agent-b'], purpose: 'p', resources: [{ resource: NOTES }] }),
        JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: [] }),
        JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: [{}] }),
        JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: [{ resource: NOTES, scopes: 'notes:read' }] }),
        JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: [{ resource: NOTES, tools: [1] }] }),
        JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: [{ resource: NOTES }], ttl: 1e308 }),
        JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: [{ resource: NOTES }], max_tokens: -1 }),
        JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: [{ resource: NOTES }], parent_task_id: 'x' }),
        `{"workload":"agent-b","purpose":"p","resources":[{"resource":"${NOTES}"}],"__proto__":{"x":1}}`,
        JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: [{ resource: NOTES }], ttl: 0 }),
        JSON.stringify({ workload: 'x'.repeat(300), purpose: 'p', resources: [{ resource: NOTES }] }),
        '\ufeff' + JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: 'x' }),
      ]
      for (const raw of raws) {
        const before = await counts(b)
        const res = await subtask(b, parent.task_id, {}, { raw })
        assert.ok(res.status >= 400 && res.status < 500, `${res.status} for ${raw.slice(0, 60)}`)
        assert.equal(typeof (await res.json()).error, 'string')
        assert.equal((await counts(b)).tasks, before.tasks)
        assert.equal((await counts(b)).tokens, before.tokens)
      }
      const huge = await subtask(b, parent.task_id, {}, { raw: JSON.stringify({ workload: 'agent-b', purpose: 'p', resources: [{ resource: NOTES, scopes: Array.from({ length: 20000 }, (_, i) => `s${i}`) }] }) })
      assert.equal(huge.status, 413)
      for (const id of ['no-such-task', '%00', 'x'.repeat(4000), '..%2F..%2Fadmin']) {
        const res = await subtask(b, id, {})
        assert.ok(res.status === 404 || res.status === 400, `${res.status} for ${id.slice(0, 40)}`)
      }
      // Unknown ids at the exchange: the sub-task type with an absurd subject.
      for (const id of ['x'.repeat(10000), '\u0000', '🙂']) {
        const res = await childExchange(b, id)
        assert.equal(res.status, 400)
        assert.equal(await errorOf(res), 'invalid_request')
      }
    }))

  it('row growth: at most 100 open sub-tasks per task; the 101st is refused and audited, with nothing written', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const svid = await b.svid('a')
      for (let i = 0; i < 100; i++) {
        const res = await subtask(b, parent.task_id, {}, { svid })
        assert.equal(res.status, 201)
      }
      const before = await counts(b)
      const res = await subtask(b, parent.task_id, {}, { svid })
      assert.equal(res.status, 400)
      assert.equal(await errorOf(res), 'invalid_request')
      await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /./, action: 'task.delegate' })
    }))
})
