/**
 * Sub-tasks: the workload of an active task opens a strictly smaller task for another registered
 * workload (POST /tasks/{id}/subtasks); the child proves itself with its own attestation and names
 * the sub-task as its subject; its tokens carry the delegation chain in nested `act`; ending a
 * parent ends every descendant in the same transaction.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose'
import * as oauth from 'oauth4webapi'
import { createTaskTokenVerifier, VerifierError } from '@taskpass/verifier'
import { assertRefusedAndAudited, counts, NOTES, NOTES_SECRET, CALENDAR, startTestServer, withBroker } from './harness.js'
import { childExchange, delegating, errorOf, introspect, openedSubtask, parentTask, subtask } from './subtask-fixtures.js'

describe('sub-tasks', () => {
  it('a child is opened within its parent, for another workload; its tokens carry the chain, the parent id and only its tools', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const child = await openedSubtask(b, parent.task_id)
      assert.equal(child.status, 'active')
      assert.equal(child.workload, 'agent-b')
      assert.equal(child.parent_task_id, parent.task_id)
      assert.equal(child.depth, 1)
      assert.ok(child.expires_at <= parent.expires_at)
      assert.deepEqual(child.resources, [{ resource: NOTES, scopes: ['notes:read'], tools: ['read_note'] }])
      const audit = (await b.lastAudit())!
      assert.equal(audit.action, 'task.open')
      assert.match(String(audit.reason), new RegExp(`sub-task of ${parent.task_id}, delegated by agent-a to agent-b`))
      assert.match(String(audit.policies), /grant\/agent-a\/delegation/)

      const res = await childExchange(b, child.task_id)
      assert.equal(res.status, 200, await res.clone().text())
      const body = (await res.json()) as { access_token: string; task_id: string; scope: string }
      assert.equal(body.task_id, child.task_id)
      assert.equal(body.scope, 'notes:read')
      const claims = decodeJwt(body.access_token)
      assert.deepEqual(claims.act, { sub: 'agent-b', act: { sub: 'agent-a' } })
      assert.equal(claims.client_id, 'agent-b')
      assert.equal(claims.parent_task_id, parent.task_id)
      assert.equal(claims.sub, 'alice')
      assert.equal(claims.sid, 'sess-1')
      assert.deepEqual(claims.authorization_details, [{ type: 'mcp_tools', locations: [NOTES], actions: ['read_note'] }])
      // The child cannot ask for a tool its sub-task does not name.
      const wider = await childExchange(b, child.task_id, { authorization_details: JSON.stringify([{ type: 'mcp_tools', locations: [NOTES], actions: ['write_note'] }]) })
      assert.equal(wider.status, 400)
      assert.equal(await errorOf(wider), 'invalid_authorization_details')
    }))

  it('a sub-task that names no scopes or tools gets the parent’s (within its own grant), never “any tool”', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const child = await openedSubtask(b, parent.task_id, { resources: [{ resource: NOTES }] })
      // agent-b's grant is notes:read only.
      assert.deepEqual(child.resources, [{ resource: NOTES, scopes: ['notes:read'], tools: ['read_note', 'search_notes', 'write_note'] }])
    }))

  it('every widening is refused with its error, writes no task, and is audited: resource, scope, tool, lifetime, depth, token bound', () =>
    withBroker(
      (c) => ({ ...delegating(c), tasks: { maxDepth: 2 } }),
      async (b) => {
        const parent = await parentTask(b, { max_tokens: 4 })
        const cases: [string, Record<string, unknown>, number, string, RegExp][] = [
          ['resource outside the parent', { resources: [{ resource: CALENDAR, scopes: ['cal:read'] }] }, 400, 'invalid_target', /does not cover https:\/\/calendar/],
          ['scope beyond the parent', { resources: [{ resource: NOTES, scopes: ['notes:delete'] }] }, 400, 'invalid_scope', /beyond task .*: notes:delete/],
          ['tool beyond the parent', { resources: [{ resource: NOTES, scopes: ['notes:read'], tools: ['delete_note'] }] }, 400, 'invalid_authorization_details', /beyond task .*: delete_note/],
          ['lifetime beyond the parent', { ttl: 1801 }, 400, 'invalid_request', /ttl 1801s, task .* has 1800s/],
          ['token bound beyond the parent', { max_tokens: 5 }, 400, 'invalid_request', /max_tokens 5, task .* has 4 left/],
          ['unregistered workload', { workload: 'agent-nobody' }, 400, 'invalid_request', /unknown workload agent-nobody/],
          ['disabled workload', { workload: 'agent-off' }, 400, 'unauthorized_client', /workload agent-off is disabled/],
          ['the parent’s own workload', { workload: 'agent-a' }, 400, 'invalid_request', /./],
          ['a workload the policy does not let it delegate to', { workload: 'agent-c' }, 400, 'unauthorized_client', /no policy permits agent-a to delegate .* to agent-c/],
        ]
        for (const [name, body, status, error, reason] of cases) {
          const before = await counts(b)
          const res = await subtask(b, parent.task_id, body)
          assert.equal(res.status, status, name)
          assert.equal(await errorOf(res), error, name)
          await assertRefusedAndAudited(b, before, { error, reason, action: 'task.delegate' })
        }
        // Depth: maxDepth 2 allows a child and a grandchild, no deeper.
        const child = await openedSubtask(b, parent.task_id)
        const grandchild = await openedSubtask(b, child.task_id, { workload: 'agent-c' }, await b.svid('b'))
        assert.equal(grandchild.depth, 2)
        const before = await counts(b)
        const res = await subtask(b, grandchild.task_id, { workload: 'agent-a' }, { svid: await b.svid('c') })
        assert.equal(res.status, 400)
        assert.equal(await errorOf(res), 'invalid_request')
        await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /is at depth 2/, action: 'task.delegate' })
      },
    ))

  it('only the parent’s workload may delegate it (others: 404), only while it is active (409), and not without an attestation (401)', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const before = await counts(b)
      const stranger = await subtask(b, parent.task_id, {}, { svid: await b.svid('b') })
      assert.equal(stranger.status, 404)
      assert.equal(await errorOf(stranger), 'not_found')
      const anonymous = await b.app.request(`/tasks/${parent.task_id}/subtasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
      assert.equal(anonymous.status, 401)
      assert.equal(await errorOf(anonymous), 'invalid_token')
      assert.deepEqual(await counts(b), before)
      const bad = await subtask(b, parent.task_id, { resources: 'all' })
      assert.equal(bad.status, 400)
      assert.equal(await errorOf(bad), 'invalid_request')
      assert.deepEqual(await counts(b), before)

      b.clock.advance(1801)
      const expired = await subtask(b, parent.task_id, {})
      assert.equal(expired.status, 409)
      assert.equal(await errorOf(expired), 'task_not_active')
    }))

  it('a sub-task’s exchange: only its own workload may name it, only a sub-task can be a subject, task_id must agree', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const child = await openedSubtask(b, parent.task_id)
      const cases: [string, () => Promise<Response>][] = [
        ['another workload names the sub-task', () => childExchange(b, child.task_id, {}, 'a')],
        ['a task the user opened named as a sub-task', () => childExchange(b, parent.task_id, {}, 'a')],
        ['an unknown task', () => childExchange(b, 'no-such-task')],
        ['task_id disagrees', () => childExchange(b, child.task_id, { task_id: parent.task_id })],
      ]
      for (const [name, request] of cases) {
        const before = await counts(b)
        const res = await request()
        assert.equal(res.status, 400, name)
        assert.equal(await errorOf(res), 'invalid_request', name)
        await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /sub-task|not a sub-task/ })
      }
    }))

  it('cascade: completing the parent ends every descendant and revokes their tokens in one transaction, with a feed event each', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const child = await openedSubtask(b, parent.task_id)
      const grandchild = await openedSubtask(b, child.task_id, { workload: 'agent-c' }, await b.svid('b'))
      const childToken = ((await (await childExchange(b, child.task_id)).json()) as { access_token: string }).access_token
      const gcRes = await childExchange(b, grandchild.task_id, {}, 'c')
      assert.equal(gcRes.status, 200, await gcRes.clone().text())
      const gcToken = ((await gcRes.json()) as { access_token: string }).access_token
      assert.deepEqual(decodeJwt(gcToken).act, { sub: 'agent-c', act: { sub: 'agent-b', act: { sub: 'agent-a' } } })
      assert.equal(await introspect(b, gcToken), true)

      const events = await b.count('revocation_events')
      const done = await b.app.request(`/tasks/${parent.task_id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
      assert.equal(done.status, 200)
      const ended = (await done.json()) as { subtasks_revoked: string[] }
      assert.deepEqual(ended.subtasks_revoked, [child.task_id, grandchild.task_id])
      assert.equal(await b.count('revocation_events'), events + 3)
      for (const id of [child.task_id, grandchild.task_id]) {
        const row = (await b.deps.stores.tasks.get(id))!
        assert.equal(row.status, 'revoked')
        assert.equal(row.endReason, `parent task ${parent.task_id} completed`)
      }
      assert.equal(await introspect(b, childToken), false)
      assert.equal(await introspect(b, gcToken), false)
      const again = await childExchange(b, child.task_id)
      assert.equal(again.status, 400)
      assert.equal(await errorOf(again), 'invalid_grant')
    }))

  it('a child never outlives its parent, and cannot use what its parent lost: a narrowed grant above narrows every exchange below', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b, { ttl: 200 })
      const child = await openedSubtask(b, parent.task_id)
      assert.equal(child.expires_at, parent.expires_at)
      const first = (await (await childExchange(b, child.task_id, { ttl: '900' })).json()) as { expires_in: number }
      assert.equal(first.expires_in, 200)

      // agent-a loses notes:read: the parent's own exchanges of it fail, so do the child's.
      const a = b.deps.config.workloads.find((w) => w.id === 'agent-a')!
      a.grants = a.grants.map((g) => (g.resource === NOTES ? { ...g, scopes: ['notes:write'] } : g))
      const before = await counts(b)
      const narrowed = await childExchange(b, child.task_id)
      assert.equal(narrowed.status, 400)
      assert.equal(await errorOf(narrowed), 'invalid_scope')
      await assertRefusedAndAudited(b, before, { error: 'invalid_scope', reason: /beyond parent task .* now: notes:read/ })

      // And a delegation the policy no longer permits stops the child's exchanges too.
      a.grants = a.grants.map((g) => (g.resource === NOTES ? { ...g, scopes: ['notes:read', 'notes:write'] } : g))
      assert.equal((await childExchange(b, child.task_id)).status, 200)
      a.delegateTo = []
      const undelegated = await childExchange(b, child.task_id)
      assert.equal(undelegated.status, 400)
      assert.equal(await errorOf(undelegated), 'unauthorized_client')

      b.clock.advance(200)
      const expired = await childExchange(b, child.task_id)
      assert.equal(expired.status, 400)
      assert.equal(await errorOf(expired), 'invalid_grant')
    }))

  it('the delegating workload may read and revoke its sub-task, not complete it; the delegate cannot see the task above', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const child = await openedSubtask(b, parent.task_id)
      const as = async (who: string) => ({ 'actor-token': await b.svid(who) })
      assert.equal((await b.app.request(`/tasks/${child.task_id}`, { headers: await as('a') })).status, 200)
      const notUp = await b.app.request(`/tasks/${parent.task_id}`, { headers: await as('b') })
      assert.equal(notUp.status, 404)
      const before = await counts(b)
      const complete = await b.app.request(`/tasks/${child.task_id}/complete`, { method: 'POST', headers: await as('a') })
      assert.equal(complete.status, 404)
      assert.equal(await errorOf(complete), 'not_found')
      assert.deepEqual(await counts(b), before)
      const revoke = await b.app.request(`/tasks/${child.task_id}/revoke`, { method: 'POST', headers: await as('a') })
      assert.equal(revoke.status, 200)
      assert.equal((await b.deps.stores.tasks.get(child.task_id))!.status, 'revoked')
      assert.equal((await b.deps.stores.tasks.get(parent.task_id))!.status, 'active', 'the task above is untouched')
    }))

  it('the decision API checks a sub-task token’s chain too: a narrowed grant above denies the tool call', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const child = await openedSubtask(b, parent.task_id)
      const token = ((await (await childExchange(b, child.task_id)).json()) as { access_token: string }).access_token
      const ask = async () => {
        const res = await b.app.request('/access/v1/evaluation', {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}` },
          body: JSON.stringify({ subject: { type: 'task_token', id: token }, action: { name: 'tools/call' }, resource: { type: 'tool', id: 'read_note' } }),
        })
        assert.equal(res.status, 200)
        return (await res.json()) as { decision: boolean; context?: { reason?: string } }
      }
      assert.equal((await ask()).decision, true)
      const a = b.deps.config.workloads.find((w) => w.id === 'agent-a')!
      a.grants = a.grants.map((g) => (g.resource === NOTES ? { ...g, scopes: ['notes:write'] } : g))
      const denied = await ask()
      assert.equal(denied.decision, false)
      assert.equal(denied.context?.reason, 'policy_denied')
      assert.match(String((await b.lastAudit())!.reason), /beyond parent task .* now: notes:read/)
    }))

  it('a task’s max_tokens bounds its whole tree: the tokens of its sub-tasks count on it, atomically', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b, { max_tokens: 3 })
      const child = await openedSubtask(b, parent.task_id)
      assert.equal(child.max_tokens, 3, 'the child may at most what the parent has left')
      // Ten parallel exchanges by the child: exactly three tokens in the tree.
      const answers = await Promise.all(Array.from({ length: 10 }, () => childExchange(b, child.task_id)))
      assert.equal(answers.filter((r) => r.status === 200).length, 3)
      for (const r of answers.filter((a) => a.status !== 200)) assert.equal(await errorOf(r), 'invalid_grant')
      assert.equal((await b.deps.stores.tasks.get(parent.task_id))!.tokensMinted, 3)
      const before = await counts(b)
      const own = await b.exchange({ task_id: parent.task_id })
      assert.equal(own.status, 400)
      assert.equal(await errorOf(own), 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /has minted 3 of 3 tokens/ })
      const more = await subtask(b, parent.task_id, { max_tokens: 1 })
      assert.equal(more.status, 400)
      assert.equal(await errorOf(more), 'invalid_request')
    }))

  it('a sub-task lives on the session its root recorded: refused once that session token expired, renewed by a fresher one', () =>
    withBroker(delegating, async (b) => {
      const first = await b.session({ exp: b.clock.now() + 300 })
      const parent = await parentTask(b, {}, { session: first })
      const child = await openedSubtask(b, parent.task_id)
      b.clock.advance(301)
      const before = await counts(b)
      const late = await childExchange(b, child.task_id)
      assert.equal(late.status, 400)
      assert.equal(await errorOf(late), 'invalid_grant')
      await assertRefusedAndAudited(b, before, { error: 'invalid_grant', reason: /no time left/ })
      const notNow = await subtask(b, parent.task_id, {})
      assert.equal(notNow.status, 400)
      assert.equal(await errorOf(notNow), 'invalid_request')
      // The parent's workload exchanges with a fresh session token of the same session: the tree lives on it.
      assert.equal((await b.exchange({ task_id: parent.task_id })).status, 200)
      const renewed = await childExchange(b, child.task_id, { ttl: '900' })
      assert.equal(renewed.status, 200, await renewed.clone().text())
      assert.ok(((await renewed.json()) as { expires_in: number }).expires_in <= 300)
    }))

  it('at most 1000 open sub-tasks below one task a user opened, at every depth', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const row = (await b.deps.stores.tasks.get(parent.task_id))!
      await b.deps.stores.transaction(async (tx) => {
        for (let i = 0; i < 1000; i++) await tx.tasks.insert({ ...row, id: `filler-${i}`, workloadId: 'agent-c', parentTaskId: `filler-parent-${i % 7}`, rootTaskId: row.id, depth: 2 })
      })
      const before = await counts(b)
      const res = await subtask(b, parent.task_id, {})
      assert.equal(res.status, 400)
      assert.equal(await errorOf(res), 'invalid_request')
      await assertRefusedAndAudited(b, before, { error: 'invalid_request', reason: /at most 1000 open sub-tasks in all/, action: 'task.delegate' })
    }))

  it('revoking the user’s session ends the sub-tasks with the task it opened', () =>
    withBroker(delegating, async (b) => {
      const parent = await parentTask(b)
      const child = await openedSubtask(b, parent.task_id)
      const res = await b.app.request('/admin/sessions/revoke', {
        method: 'POST',
        headers: { authorization: 'Bearer tpa_test-admin-key', 'content-type': 'application/json' },
        body: JSON.stringify({ issuer: 'https://idp.test.example', sid: 'sess-1' }),
      })
      assert.equal(res.status, 200, await res.clone().text())
      assert.equal((await b.deps.stores.tasks.get(child.task_id))!.status, 'revoked')
      const after = await childExchange(b, child.task_id)
      assert.equal(after.status, 400)
      assert.equal(await errorOf(after), 'invalid_request')
    }))
})

describe('sub-task tokens judged by third parties', () => {
  it('nested act verifies with jose and oauth4webapi; a verifier on the feed refuses the child’s token within 1 s of the parent’s completion', async () => {
    const s = await startTestServer({ config: delegating })
    const verifier = createTaskTokenVerifier({
      issuer: s.url,
      resource: NOTES,
      requiredScopes: ['notes:read'],
      dpop: 'allowed',
      revocation: { mode: 'feed', feedUrl: `${s.url}/revocations`, credentials: { clientId: 'notes-mcp', clientSecret: NOTES_SECRET }, staleAfterSeconds: 30, pollIntervalMs: 250 },
    })
    try {
      await verifier.ready()
      const parent = await parentTask(s)
      const child = await openedSubtask(s, parent.task_id)
      const res = await childExchange(s, child.task_id)
      assert.equal(res.status, 200)
      const token = ((await res.json()) as { access_token: string }).access_token

      const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(`${s.url}/.well-known/jwks.json`)), { issuer: s.url, audience: NOTES, typ: 'at+jwt' })
      assert.deepEqual(payload.act, { sub: 'agent-b', act: { sub: 'agent-a' } })
      const insecure = { [oauth.allowInsecureRequests]: true } as const
      const as = await oauth.processDiscoveryResponse(new URL(s.url), await oauth.discoveryRequest(new URL(s.url), { algorithm: 'oauth2', ...insecure }))
      const claims = await oauth.validateJwtAccessToken(as, new Request(NOTES, { headers: { authorization: `Bearer ${token}` } }), NOTES, insecure)
      assert.deepEqual(claims.act, { sub: 'agent-b', act: { sub: 'agent-a' } })
      assert.equal(claims.parent_task_id, parent.task_id)
      assert.equal((await verifier.verifyAccessToken(token)).extra.act.sub, 'agent-b')

      const done = await s.app.request(`/tasks/${parent.task_id}/complete`, { method: 'POST', headers: { 'actor-token': await s.svid('a') } })
      assert.equal(done.status, 200)
      const deadline = Date.now() + 1000
      let refused: unknown
      while (Date.now() < deadline && refused === undefined) {
        try {
          await verifier.verifyAccessToken(token)
          await new Promise((r) => setTimeout(r, 20))
        } catch (e) {
          refused = e
        }
      }
      assert.ok(refused instanceof VerifierError, 'refused within 1 s')
      assert.equal(refused.code, 'invalid_token')
    } finally {
      await verifier.close()
      await s.stop()
    }
  })
})
