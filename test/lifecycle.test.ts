import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { endTask } from '../src/tasks/lifecycle.js'
import { createTestBroker, form, NOTES, NOTES_SECRET, openTask, type TestBroker } from './harness.js'

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`

async function introspect(b: TestBroker, token: string, creds = basic('notes-mcp', NOTES_SECRET)) {
  const res = await b.post('/introspect', { token }, { authorization: creds })
  assert.equal(res.status, 200)
  return (await res.json()) as Record<string, unknown>
}

describe('task lifecycle', () => {
  let b: TestBroker
  beforeEach(async () => { b = await createTestBroker() })
  afterEach(() => b.close())

  it('open → exchange → introspect active → complete → introspect inactive → exchange refused (invalid_grant)', async () => {
    const opened = await openTask(b, { purpose: 'summarise notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }], ttl: 600 })
    assert.equal(opened.status, 201)
    const task = (await opened.json()) as { task_id: string; status: string; sid: string; expires_at: number }
    assert.equal(task.status, 'active')
    assert.equal(task.sid, 'sess-1')
    assert.equal(task.expires_at, b.clock.now() + 600)

    const res = await b.exchange({ task_id: task.task_id })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('cache-control'), 'no-store')
    const body = (await res.json()) as Record<string, unknown>
    assert.deepEqual(Object.keys(body).sort(), ['access_token', 'expires_in', 'issued_token_type', 'scope', 'task_id', 'token_type'])
    assert.equal(body.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token')
    assert.equal(body.token_type, 'Bearer')
    assert.equal(body.expires_in, 300)
    assert.equal(body.task_id, task.task_id)
    const token = body.access_token as string

    const header = decodeProtectedHeader(token)
    assert.equal(header.typ, 'at+jwt')
    assert.equal(header.alg, 'ES256')
    assert.equal(header.kid, (await b.deps.keys.current()).kid)
    const claims = decodeJwt(token)
    assert.equal(claims.iss, b.deps.config.issuer)
    assert.equal(claims.sub, 'alice')
    assert.equal(claims.aud, NOTES)
    assert.equal(claims.client_id, 'agent-a')
    assert.deepEqual(claims.act, { sub: 'agent-a' })
    assert.equal(claims.scope, 'notes:read')
    assert.equal(claims.task_id, task.task_id)
    assert.equal(claims.sid, 'sess-1')
    assert.equal(claims.iat, b.clock.now())
    assert.equal(claims.nbf, b.clock.now())
    assert.equal(claims.exp, b.clock.now() + 300)
    assert.match(claims.jti!, /^[0-9a-f-]{36}$/)

    const active = await introspect(b, token)
    assert.equal(active.active, true)
    assert.equal(active.task_id, task.task_id)
    assert.equal(active.client_id, 'agent-a')

    const done = await b.app.request(`/tasks/${task.task_id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })
    assert.equal(done.status, 200)
    const ended = (await done.json()) as { task: { status: string }; tokens_revoked: number }
    assert.equal(ended.task.status, 'completed')
    assert.equal(ended.tokens_revoked, 1)
    assert.equal(await b.count('revocation_events'), 1)

    assert.deepEqual(await introspect(b, token), { active: false })

    const tokensBefore = await b.count('tokens')
    const again = await b.exchange({ task_id: task.task_id })
    assert.equal(again.status, 400)
    assert.equal(((await again.json()) as { error: string }).error, 'invalid_grant')
    assert.equal(await b.count('tokens'), tokensBefore)
    assert.equal((await b.lastAudit())?.decision, 'deny')
  })

  it('an exchange without task_id opens a task implicitly and returns its id', async () => {
    const res = await b.exchange()
    assert.equal(res.status, 200)
    const body = (await res.json()) as { task_id: string; scope: string }
    assert.equal(body.scope, 'notes:read')
    const row = await b.deps.stores.tasks.get(body.task_id)
    assert.equal(row?.status, 'active')
    assert.equal(row?.expiresAt, b.clock.now() + b.deps.config.tasks.defaultTtl)
  })

  it('POST /revoke revokes one token (RFC 7009), leaving the task and its other tokens alone', async () => {
    const first = (await (await b.exchange()).json()) as { access_token: string; task_id: string }
    const second = (await (await b.exchange({ task_id: first.task_id })).json()) as { access_token: string }
    const res = await b.post('/revoke', { token: first.access_token }, { authorization: basic('notes-mcp', NOTES_SECRET) })
    assert.equal(res.status, 200)
    assert.deepEqual(await introspect(b, first.access_token), { active: false })
    assert.equal((await introspect(b, second.access_token)).active, true)
    assert.equal((await b.deps.stores.tasks.get(first.task_id))?.status, 'active')
    // RFC 7009 §2.2: an invalid token does not cause an error.
    assert.equal((await b.post('/revoke', { token: 'garbage' }, { authorization: basic('notes-mcp', NOTES_SECRET) })).status, 200)
  })

  it('the workload revokes its own token with its attestation as client assertion', async () => {
    const { access_token } = (await (await b.exchange()).json()) as { access_token: string }
    const res = await b.post('/revoke', { token: access_token, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: await b.svid('a') })
    assert.equal(res.status, 200)
    assert.deepEqual(await introspect(b, access_token), { active: false })
  })

  it('another workload cannot revoke the token (200, nothing changes)', async () => {
    const { access_token } = (await (await b.exchange()).json()) as { access_token: string }
    const res = await b.post('/revoke', { token: access_token, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: await b.svid('b') })
    assert.equal(res.status, 200)
    assert.equal((await introspect(b, access_token)).active, true)
    assert.equal(await b.count('revocation_events'), 0)
  })

  it('tokens and tasks expire with the injected clock', async () => {
    const opened = (await (await openTask(b, { purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }], ttl: 400 })).json()) as { task_id: string }
    const { access_token } = (await (await b.exchange({ task_id: opened.task_id })).json()) as { access_token: string }
    b.clock.advance(299)
    assert.equal((await introspect(b, access_token)).active, true)
    b.clock.advance(1)
    assert.deepEqual(await introspect(b, access_token), { active: false })
    // 100 s of task left: the next token is clamped to it.
    const clamped = (await (await b.exchange({ task_id: opened.task_id })).json()) as { expires_in: number }
    assert.equal(clamped.expires_in, 100)
    b.clock.advance(100)
    const expired = await b.exchange({ task_id: opened.task_id })
    assert.equal(expired.status, 400)
    assert.deepEqual(await expired.json(), { error: 'invalid_grant', error_description: 'task is expired' })
    const view = await b.app.request(`/tasks/${opened.task_id}`, { headers: { authorization: `Bearer ${await b.session()}` } })
    assert.equal(((await view.json()) as { status: string }).status, 'expired')
  })

  it('the owning user revokes a task; every token of it goes inactive', async () => {
    const { access_token, task_id } = (await (await b.exchange()).json()) as { access_token: string; task_id: string }
    const res = await b.app.request(`/tasks/${task_id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${await b.session()}` } })
    assert.equal(res.status, 200)
    assert.deepEqual(await introspect(b, access_token), { active: false })
    const other = await b.app.request(`/tasks/${task_id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${await b.session({ sub: 'mallory' })}` } })
    assert.equal(other.status, 404)
  })

  it('introspection needs a resource credential; another resource sees {active:false}', async () => {
    const { access_token } = (await (await b.exchange()).json()) as { access_token: string }
    const none = await b.post('/introspect', form({ token: access_token }))
    assert.equal(none.status, 401)
    assert.equal(((await none.json()) as { error: string }).error, 'invalid_client')
    const wrong = await b.post('/introspect', { token: access_token }, { authorization: basic('notes-mcp', 'wrong') })
    assert.equal(wrong.status, 401)
    assert.deepEqual(await introspect(b, access_token, basic('calendar-mcp', 'calendar-secret-0123456789')), { active: false })
  })

  it('a task ended while an exchange is in flight never leaves an active token behind', async () => {
    for (const how of ['revoked', 'completed'] as const) {
      const opened = (await (await openTask(b, { purpose: 'race', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })).json()) as { task_id: string }
      await b.exchange({ task_id: opened.task_id }) // warm the verification caches
      // End the task at the moment the exchange signs, i.e. after every check of the task has
      // passed and before its token is written: the window a concurrent request could hit.
      const current = b.deps.keys.current
      const workload = { kind: 'workload' as const, actor: await b.deps.actorTokens.verify(await b.svid('a')) }
      b.deps.keys.current = async () => {
        b.deps.keys.current = current
        // Ended and committed here, before the exchange writes, whatever the store's timing. The
        // exchange's re-check in its write refuses it; on PostgreSQL the token insert's own
        // condition (a task still active) refuses it too.
        await endTask(b.deps, opened.task_id, how, workload)
        return current()
      }
      const exchanged = await b.exchange({ task_id: opened.task_id })
      assert.equal(b.deps.keys.current, current, 'the task was ended mid-exchange')
      assert.equal(exchanged.status, 400)
      assert.equal(((await exchanged.json()) as { error: string }).error, 'invalid_grant')
      const live = (await b.rawQuery("select count(*) as n from tokens where task_id = ? and status = 'active'", [opened.task_id]))[0] as { n: number }
      assert.equal(live.n, 0, `${how}: an active token survived the task's end`)
    }
  })

  it('a signing key revoked while an exchange signs with it leaves no active token behind', async () => {
    await b.exchange() // warm the verification caches
    const current = b.deps.keys.current
    let kid = ''
    b.deps.keys.current = async () => {
      b.deps.keys.current = current
      const key = await current()
      kid = key.kid
      // What a compromise revocation commits (here on the same connection), and the keyset's reload.
      await b.rawQuery("update signing_keys set state = 'revoked', publish_until = ? where kid = ?", [b.clock.now(), kid])
      void b.deps.keys.reload().catch(() => {})
      return key
    }
    const before = await b.count('tokens')
    const res = await b.exchange()
    assert.equal(res.status, 503)
    assert.equal(((await res.json()) as { error: string }).error, 'temporarily_unavailable')
    assert.equal(await b.count('tokens'), before, 'no token row for the revoked key')
    const live = (await b.rawQuery("select count(*) as n from tokens where kid = ? and status = 'active' and exp > ?", [kid, b.clock.now()]))[0] as { n: number }
    assert.ok(live.n <= 1, 'only the warm-up token, signed before the revocation, may remain (the revocation path revokes it)')
    assert.match(String((await b.lastAudit())?.reason), /revoked during the exchange/)
  })

  it('a token carries the sid of the session its task is bound to, never another one', async () => {
    const unbound = (await (await openTask(b, { purpose: 'no session', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session: await b.session({ sid: null }) })).json()) as { task_id: string }
    const res = await b.exchange({ task_id: unbound.task_id, subject_token: await b.session({ sid: 'sess-9' }) })
    assert.equal(res.status, 200)
    assert.equal(decodeJwt(((await res.json()) as { access_token: string }).access_token).sid, undefined)
  })

  it('opening a task honours may_act, and refusals are audited', async () => {
    const res = await openTask(b, { purpose: 'x', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session: await b.session({ may_act: { sub: 'agent-b' } }) })
    assert.equal(res.status, 400)
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_request')
    assert.equal(await b.count('tasks'), 0)
    assert.equal((await b.lastAudit())?.decision, 'deny')
    const ok = await openTask(b, { purpose: 'x', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session: await b.session({ may_act: { sub: 'agent-a' } }) })
    assert.equal(ok.status, 201)
  })
})
