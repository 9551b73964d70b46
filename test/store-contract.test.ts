/**
 * The store contract: the same assertions against the SQLite store and the PostgreSQL one, so the
 * two answer alike — conditional updates that let one of two racing writers win, the hash chain,
 * the feed's order, head and wake-ups, single-use keys, and transactions that leave nothing when
 * they throw. PostgreSQL runs when `TASKPASS_TEST_POSTGRES` names a cluster (a new database per
 * test, dropped after); without it those cases are skipped, saying why.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { OAuthError } from '../src/errors.js'
import { openDatabase } from '../src/store/db.js'
import { openPgDatabase } from '../src/store/pg/db.js'
import { createPgStores } from '../src/store/pg/stores.js'
import { createStores, type Stores, type TaskRow, type TokenRow } from '../src/store/stores.js'
import { freshPgDatabase, skipWithoutPostgres } from './pg-fixtures.js'

const T0 = 1_800_000_000
const NOTES = 'https://notes.test.example/mcp'

/** A store on a database of its own; `another()` opens a second instance on the same database (PostgreSQL only). */
interface Backend {
  stores: Stores
  another?: () => Promise<Stores>
  close(): Promise<void>
}

const backends: { name: string; skip: string | false; open(): Promise<Backend> }[] = [
  {
    name: 'SQLite',
    skip: false,
    open: async () => {
      const database = openDatabase(':memory:')
      return { stores: createStores(database), close: async () => database.close() }
    },
  },
  {
    name: 'PostgreSQL',
    skip: skipWithoutPostgres,
    open: async () => {
      const fresh = await freshPgDatabase()
      const opened = [await openPgDatabase(fresh.url)]
      return {
        stores: createPgStores(opened[0]!),
        another: async () => {
          const database = await openPgDatabase(fresh.url)
          opened.push(database)
          return createPgStores(database)
        },
        close: async () => {
          await Promise.all(opened.map((d) => d.close()))
          await fresh.drop()
        },
      }
    },
  },
]

function task(id: string, over: Partial<TaskRow> = {}): TaskRow {
  return {
    id, userSub: 'alice', subjectIssuer: 'https://idp.example', sid: 's1', workloadId: 'spiffe://test.example/agent', purpose: 'p',
    resources: JSON.stringify([{ resource: NOTES, scopes: ['notes:read'] }]), status: 'active', dpopJkt: null,
    createdAt: T0, expiresAt: T0 + 3600, endedAt: null, endReason: null, tokensMinted: 0, maxTokens: null, userClaims: null,
    approvalExpiresAt: null, parentTaskId: null, depth: 0, rootTaskId: null, sessionStartedAt: null, sessionExpiresAt: null, clientId: null,
    ...over,
  }
}

function token(jti: string, taskId: string, exp: number): TokenRow {
  return { jti, taskId, sub: 'alice', workloadId: 'w', aud: NOTES, scope: 'notes:read', iat: T0, exp, status: 'active', revokedAt: null, cnfJkt: null, kid: 'k1', attestation: null }
}

/**
 * A subscription whose `next(ms)` resolves at the listener's next call after it is asked, or
 * rejects after `ms` (a bounded wait for a real-time event, never a fixed sleep).
 */
function subscription(stores: Stores) {
  let waiter: (() => void) | undefined
  const unsubscribe = stores.revocations.subscribe(() => {
    waiter?.()
  })
  return {
    next(ms: number): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no wake-up within ${ms} ms`)), ms)
        waiter = () => {
          clearTimeout(timer)
          waiter = undefined
          resolve()
        }
      })
    },
    stop: unsubscribe,
  }
}

for (const backend of backends) {
  describe(`store contract: ${backend.name}`, { skip: backend.skip }, () => {
    const withStores = (fn: (b: Backend) => Promise<void>) => async () => {
      const b = await backend.open()
      try {
        await fn(b)
      } finally {
        await b.close()
      }
    }

    it('tasks: insert, get, end once (a second end is false)', withStores(async ({ stores }) => {
      await stores.tasks.insert(task('t1'))
      assert.deepEqual(await stores.tasks.get('t1'), task('t1'))
      assert.equal(await stores.tasks.get('nope'), undefined)
      assert.equal(await stores.tasks.end('t1', 'completed', T0 + 5, 'done'), true)
      assert.equal(await stores.tasks.end('t1', 'revoked', T0 + 6, 'again'), false)
      const ended = await stores.tasks.get('t1')
      assert.equal(ended?.status, 'completed')
      assert.equal(ended?.endedAt, T0 + 5)
      assert.equal(ended?.endReason, 'done')
    }))

    it('tasks, tokens and audit rows read back as written, every column set', withStores(async ({ stores }) => {
      const full = task('t-full', {
        sid: 's9', dpopJkt: 'jkt', endedAt: T0 + 9, endReason: 'why', tokensMinted: 4, maxTokens: 7, userClaims: '{"a":1}', approvalExpiresAt: T0 + 5,
        parentTaskId: 'p1', depth: 2, rootTaskId: 'r1', sessionStartedAt: T0 - 5, sessionExpiresAt: T0 + 50, clientId: 'https://client.example/meta',
      })
      await stores.tasks.insert(full)
      assert.deepEqual(await stores.tasks.get('t-full'), full)
      assert.deepEqual(await stores.tasks.hold('t-full'), full)
      const minted: TokenRow = { ...token('j-full', 't-full', T0 + 100), status: 'revoked', revokedAt: T0 + 3, cnfJkt: 'jkt', attestation: '{"kind":"spiffe"}' }
      await stores.tokens.insert(minted)
      assert.deepEqual(await stores.tokens.get('j-full'), minted)
      assert.equal((await stores.tasks.get('t-full'))?.tokensMinted, 5)
      const audited = { at: T0, action: 'token.exchange', decision: 'deny' as const, reason: 'r', error: 'invalid_grant', userSub: 'alice', workloadId: 'w', taskId: 't-full', jti: 'j-full', resource: NOTES, policyVersion: 'v1', policies: 'p1 p2', detail: '{"d":1}' }
      await stores.audit.insert(audited)
      await stores.transaction(async (tx) => tx.audit.insert({ ...audited, reason: 'r2' }))
      const rows = await stores.audit.ofTask('t-full')
      assert.deepEqual(rows.map(({ id: _id, prevHash: _p, hash: _h, ...content }) => content), [audited, { ...audited, reason: 'r2' }])
      assert.equal(rows[1]!.prevHash, rows[0]!.hash)
      assert.equal((await stores.audit.verify()).ok, true)
    }))

    it('tasks: of two racing decisions on a pending task exactly one wins, and a lapsed request cannot be approved', withStores(async ({ stores, another }) => {
      const other = another ? await another() : stores
      await stores.tasks.insert(task('p1', { status: 'pending_approval', approvalExpiresAt: T0 + 60 }))
      const results = await Promise.all([stores.tasks.approve('p1', T0 + 1), other.tasks.deny('p1', T0 + 1, 'no'), other.tasks.approve('p1', T0 + 1)])
      assert.equal(results.filter(Boolean).length, 1)
      const after = await stores.tasks.get('p1')
      assert.ok(after?.status === 'active' || after?.status === 'denied')
      await stores.tasks.insert(task('p2', { status: 'pending_approval', approvalExpiresAt: T0 + 60 }))
      assert.equal(await stores.tasks.approve('p2', T0 + 60), false)
      assert.equal((await stores.tasks.get('p2'))?.status, 'pending_approval')
    }))

    it('tasks: list filters by status, expiry, workload, user and declared resource', withStores(async ({ stores }) => {
      await stores.tasks.insert(task('a', { createdAt: T0 }))
      await stores.tasks.insert(task('b', { createdAt: T0 + 1, expiresAt: T0 + 10, resources: JSON.stringify([{ resource: 'https://other.example/mcp', scopes: [] }]) }))
      await stores.tasks.insert(task('c', { createdAt: T0 + 2, status: 'pending_approval', approvalExpiresAt: T0 + 5 }))
      const ids = (rows: TaskRow[]) => rows.map((r) => r.id)
      assert.deepEqual(ids(await stores.tasks.list({ limit: 10 })), ['c', 'b', 'a'])
      assert.deepEqual(ids(await stores.tasks.list({ resource: NOTES, limit: 10 })), ['c', 'a'])
      assert.deepEqual(ids(await stores.tasks.list({ expiry: { now: T0 + 7, expired: true }, limit: 10 })), ['c'])
      assert.deepEqual(ids(await stores.tasks.list({ expiry: { now: T0 + 7, expired: false }, limit: 10 })), ['b', 'a'])
      assert.deepEqual(ids(await stores.tasks.list({ statuses: ['pending_approval'], limit: 10 })), ['c'])
      assert.deepEqual(ids(await stores.tasks.list({ limit: 1 })), ['c'])
      assert.equal(await stores.tasks.countOpenInTree('a'), 0)
      assert.deepEqual((await stores.tasks.openWorkloadIds()).sort(), ['spiffe://test.example/agent'])
    }))

    it('tasks: sub-tasks, sessions, counters and pruning', withStores(async ({ stores }) => {
      await stores.tasks.insert(task('root', { createdAt: T0 }))
      await stores.tasks.insert(task('child', { createdAt: T0 + 1, parentTaskId: 'root', rootTaskId: 'root', depth: 1, sid: null }))
      await stores.tasks.insert(task('done', { createdAt: T0 + 2, parentTaskId: 'root', rootTaskId: 'root', depth: 1, status: 'completed', expiresAt: T0 + 5 }))
      assert.deepEqual((await stores.tasks.listOpenChildren('root')).map((t) => t.id), ['child'])
      assert.equal(await stores.tasks.countOpenInTree('root'), 1)
      assert.deepEqual((await stores.tasks.listOpenBySession('https://idp.example', 's1')).map((t) => t.id), ['root'])
      assert.deepEqual((await stores.tasks.listByUser('https://idp.example', 'alice', 2)).map((t) => t.id), ['done', 'child'])
      assert.deepEqual((await stores.tasks.openRefs()).map((r) => r.id).sort(), ['child', 'root'])
      await stores.tasks.refreshSession('root', T0, T0 + 100)
      await stores.tasks.refreshSession('root', T0 - 5, T0 + 50) // older: ignored
      const refreshed = await stores.tasks.get('root')
      assert.deepEqual([refreshed?.sessionStartedAt, refreshed?.sessionExpiresAt], [T0, T0 + 100])
      await stores.tasks.countToken('root')
      assert.equal((await stores.tasks.get('root'))?.tokensMinted, 1)
      assert.equal(await stores.tasks.pruneExpiredBefore(T0 + 6, 1000), 1)
      assert.equal(await stores.tasks.get('done'), undefined)
    }))

    it('authorization codes and refresh tokens: used once', withStores(async ({ stores, another }) => {
      const other = another ? await another() : stores
      await stores.authorizationCodes.insert({
        codeHash: 'h1', taskId: 't1', clientId: 'https://client.example/cimd', redirectUri: 'https://client.example/cb', codeChallenge: 'c', resource: NOTES,
        scope: 'notes:read', tools: null, dpopJkt: null, refresh: true, createdAt: T0, expiresAt: T0 + 60, usedAt: null,
      })
      assert.equal((await stores.authorizationCodes.get('h1'))?.refresh, true)
      assert.equal(await stores.authorizationCodes.countOfTask('t1'), 1)
      assert.deepEqual((await Promise.all([stores.authorizationCodes.use('h1', T0 + 1), other.authorizationCodes.use('h1', T0 + 1)])).sort(), [false, true])
      assert.equal((await stores.authorizationCodes.get('h1'))?.usedAt, T0 + 1)
      assert.equal(await stores.authorizationCodes.pruneExpired(T0 + 61, 1000), 1)
      await stores.refreshTokens.insert({ tokenHash: 'r1', taskId: 't1', clientId: 'c', resource: NOTES, scope: 's', tools: '["a"]', dpopJkt: 'j', createdAt: T0, expiresAt: T0 + 60, usedAt: null })
      assert.equal((await stores.refreshTokens.get('r1'))?.tools, '["a"]')
      assert.deepEqual((await Promise.all([stores.refreshTokens.use('r1', T0 + 1), other.refreshTokens.use('r1', T0 + 1)])).sort(), [false, true])
      assert.equal(await stores.refreshTokens.pruneExpired(T0 + 61, 1000), 1)
      assert.equal(await stores.refreshTokens.get('r1'), undefined)
    }))

    it('tokens: audiences, tokens without a kid, pruning; policy sets: the newest', withStores(async ({ stores }) => {
      await stores.tasks.insert(task('t1'))
      await stores.tokens.insert(token('j1', 't1', T0 + 100))
      await stores.tokens.insert({ ...token('j2', 't1', T0 + 200), kid: null, aud: 'https://other.example/mcp' })
      await stores.tokens.insert({ ...token('j3', 't1', T0 - 1), kid: null })
      assert.deepEqual((await stores.tokens.audiencesOfTask('t1')).sort(), [NOTES, 'https://other.example/mcp'])
      assert.deepEqual((await stores.tokens.revokeWithoutKid(T0)).map((t) => [t.jti, t.status, t.revokedAt]), [['j2', 'revoked', T0]])
      assert.equal(await stores.tokens.pruneExpired(T0, 1000), 1)
      assert.equal(await stores.policySets.latest(), undefined)
      await stores.policySets.insert({ version: 'v1', text: '', loadedAt: T0, loadedBy: 'admin:a' })
      await stores.policySets.insert({ version: 'v2', text: 'permit(principal, action, resource);', loadedAt: T0 + 1, loadedBy: 'admin:a' })
      assert.equal((await stores.policySets.latest())?.version, 'v2')
    }))

    it('tasks: a task two instances open at once under one id is told to the second as a retry (503), not a crash', { skip: backend.name === 'SQLite' && 'SQLite has one writer: the second opening waits, then its re-check finds the task' }, withStores(async ({ stores, another }) => {
      const other = await another!()
      let checked!: () => void
      const bChecked = new Promise<void>((resolve) => (checked = resolve))
      const aCommitted = stores.transaction(async (tx) => {
        assert.equal(await tx.tasks.get('t1'), undefined)
        await tx.tasks.insert(task('t1'))
        await bChecked
      })
      const second = other.transaction(async (tx) => {
        assert.equal(await tx.tasks.get('t1'), undefined) // the first is not committed yet
        checked()
        await aCommitted
        await tx.tasks.insert(task('t1', { purpose: 'second' }))
      })
      const e = await second.then(() => undefined, (err: unknown) => err)
      assert.ok(e instanceof OAuthError, String(e))
      assert.deepEqual([e.code, e.status], ['temporarily_unavailable', 503])
      assert.equal((await stores.tasks.get('t1'))?.purpose, 'p')
    }))

    it('tokens: insert counts on the task; revokeByTask revokes the active ones; maxExpOfTask', withStores(async ({ stores }) => {
      await stores.tasks.insert(task('t1'))
      assert.equal(await stores.tokens.maxExpOfTask('t1'), undefined)
      await stores.tokens.insert(token('j1', 't1', T0 + 100))
      await stores.tokens.insert(token('j2', 't1', T0 + 300))
      await stores.tokens.insert(token('j3', 't1', T0 + 200))
      assert.equal((await stores.tasks.get('t1'))?.tokensMinted, 3)
      assert.equal(await stores.tokens.maxExpOfTask('t1'), T0 + 300)
      assert.equal(await stores.tokens.revoke('j1', T0 + 1), true)
      assert.equal(await stores.tokens.revoke('j1', T0 + 1), false)
      assert.equal(await stores.tokens.revokeByTask('t1', T0 + 2), 2)
      assert.equal(await stores.tokens.revokeByTask('t1', T0 + 3), 0)
      assert.deepEqual((await stores.tokens.ofTask('t1')).map((t) => [t.jti, t.status]), [['j1', 'revoked'], ['j2', 'revoked'], ['j3', 'revoked']])
      assert.equal((await stores.tokens.get('j2'))?.revokedAt, T0 + 2)
      await stores.tokens.insert(token('k1', 't1', T0 + 50))
      assert.deepEqual(await stores.tokens.revokeByKid('k1', T0), { revoked: 1, lastExp: T0 + 50 })
    }))

    it('introspection: tokenState reads status, exp, aud and kid of one row, a revocation seen at the next read, also from another instance; unknown jti undefined', withStores(async ({ stores, another }) => {
      await stores.tasks.insert(task('t1'))
      await stores.tokens.insert(token('j1', 't1', T0 + 100))
      await stores.tokens.insert({ ...token('j2', 't1', T0 + 200), kid: null })
      assert.deepEqual(await stores.introspection.tokenState('j1'), { status: 'active', exp: T0 + 100, aud: NOTES, kid: 'k1' })
      assert.deepEqual(await stores.introspection.tokenState('j2'), { status: 'active', exp: T0 + 200, aud: NOTES, kid: null })
      assert.equal(await stores.introspection.tokenState('nope'), undefined)
      const other = another ? await another() : stores
      assert.equal(await other.tokens.revokeByTask('t1', T0 + 1), 2)
      assert.equal((await stores.introspection.tokenState('j1'))?.status, 'revoked')
      assert.equal((await stores.durably((tx) => tx.introspection.tokenState('j2')))?.status, 'revoked')
    }))

    it('tasks: countToken counts within max_tokens only, so two writers racing for the last token cannot both count it', withStores(async ({ stores, another }) => {
      await stores.tasks.insert(task('bounded', { maxTokens: 2, tokensMinted: 1 }))
      const other = another ? await another() : stores
      const counted = await Promise.all([stores.durably((tx) => tx.tasks.countToken('bounded')), other.durably((tx) => tx.tasks.countToken('bounded'))])
      assert.deepEqual(counted.sort(), [false, true])
      assert.equal((await stores.tasks.get('bounded'))?.tokensMinted, 2)
      assert.equal(await stores.tasks.countToken('bounded'), false)
      await stores.tasks.insert(task('unbounded'))
      assert.equal(await stores.tasks.countToken('unbounded'), true)
    }))

    it('tokens: two instances minting a task\'s last token at once: one is refused invalid_grant, the bound holds', { skip: backend.name === 'SQLite' && 'SQLite has one writer: the exchange checks the bound inside the same write' }, withStores(async ({ stores, another }) => {
      const other = await another!()
      await stores.tasks.insert(task('last', { maxTokens: 1 }))
      const outcomes = await Promise.all([
        stores.batched((tx) => tx.tokens.insert(token('l1', 'last', T0 + 100))).then(() => 'ok', (e: unknown) => e),
        other.batched((tx) => tx.tokens.insert(token('l2', 'last', T0 + 100))).then(() => 'ok', (e: unknown) => e),
      ])
      const refused = outcomes.filter((o) => o !== 'ok')
      assert.equal(refused.length, 1, JSON.stringify(outcomes))
      assert.ok(refused[0] instanceof OAuthError && refused[0].code === 'invalid_grant', String(refused[0]))
      assert.equal((await stores.tasks.get('last'))?.tokensMinted, 1)
    }))

    it('tokens: a task ended by another writer while a token was being written ends with no active token', withStores(async ({ stores, another }) => {
      const other = another ? await another() : stores
      await stores.tasks.insert(task('t1'))
      const end = () => other.durably(async (tx) => {
        await tx.tasks.end('t1', 'revoked', T0 + 1, 'admin')
        await tx.tokens.revokeByTask('t1', T0 + 1)
      })
      let ending: Promise<void> | undefined
      const exchange = stores.batched(async (tx) => {
        assert.equal((await tx.tasks.get('t1'))?.status, 'active') // the exchange's re-check
        ending = end()
        // PostgreSQL: the end commits meanwhile (it waits for no lock of ours). SQLite: it waits for our commit.
        if (another) await ending
        await tx.tokens.insert(token('j1', 't1', T0 + 100))
      })
      const outcome = await exchange.then(() => 'committed', (e: unknown) => e)
      await ending
      assert.equal((await stores.tasks.get('t1'))?.status, 'revoked')
      const written = await stores.tokens.get('j1')
      if (outcome === 'committed') assert.equal(written?.status, 'revoked')
      else {
        assert.ok(outcome instanceof OAuthError, String(outcome))
        assert.deepEqual([outcome.code, outcome.status, outcome.description], ['invalid_grant', 400, 'task is revoked'])
        assert.equal(written, undefined)
        assert.equal((await stores.tasks.get('t1'))?.tokensMinted, 0)
      }
    }))

    it('audit: appends chain, also when appended from two instances at once, and verify says ok after a prune', withStores(async ({ stores, another }) => {
      const other = another ? await another() : stores
      const row = (i: number) => ({ at: T0 + i, action: 'token.exchange', decision: 'allow' as const, reason: `r${i}`, taskId: 't1' })
      await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? other : stores).audit.insert(row(i))))
      const report = await stores.audit.verify()
      assert.equal(report.ok, true, JSON.stringify(report))
      assert.equal(report.rows, 20)
      assert.equal((await stores.audit.ofTask('t1')).length, 20)
      assert.equal((await stores.audit.list({ limit: 5 })).length, 5)
      assert.equal(await stores.audit.retained(), undefined)
      // Retention removes a prefix by id (concurrent appends need not be in `at` order): later rows first.
      for (let i = 100; i < 103; i++) await stores.audit.insert(row(i))
      const whole = await stores.audit.verify()
      assert.equal(await stores.audit.pruneBefore(T0 + 100, 1000), 20)
      assert.equal((await stores.audit.retained())?.since, T0 + 100)
      const after = await stores.audit.verify()
      assert.equal(after.ok, true, JSON.stringify(after))
      assert.equal(after.rows, 3)
      assert.equal(after.head, whole.head)
    }))

    it('audit: retention after an append that rolled back (an id never used) keeps the chain verifiable', withStores(async ({ stores }) => {
      const row = (at: number) => ({ at, action: 'task.open', decision: 'allow' as const, reason: 'r' })
      for (let i = 0; i < 3; i++) await stores.audit.insert(row(T0))
      await assert.rejects(
        stores.transaction(async (tx) => {
          await tx.audit.insert(row(T0))
          throw new Error('rolled back')
        }),
      )
      await stores.audit.insert(row(T0 + 100))
      assert.equal(await stores.audit.pruneBefore(T0 + 100, 1000), 3)
      const report = await stores.audit.verify()
      assert.equal(report.ok, true, JSON.stringify(report))
      assert.equal(report.rows, 1)
    }))

    it('batched: of writes queued in one turn, one that throws after its audit append leaves none of its rows, and the others\' appends chain', withStores(async ({ stores }) => {
      await stores.tasks.insert(task('t1'))
      const row = (reason: string) => ({ at: T0, action: 'token.exchange', decision: 'allow' as const, reason, taskId: 't1' })
      const job = (jti: string, fails: boolean) =>
        stores.batched(async (tx) => {
          await tx.audit.insert(row(jti))
          await tx.tokens.insert(token(jti, 't1', T0 + 100))
          if (fails) throw new Error(`${jti} refused`)
          await tx.audit.insert(row(`${jti} again`))
          return jti
        })
      const settled = await Promise.allSettled([job('j1', false), job('j2', true), job('j3', false), job('j4', true), job('j5', false)])
      assert.deepEqual(settled.map((s) => (s.status === 'fulfilled' ? s.value : (s.reason as Error).message)), ['j1', 'j2 refused', 'j3', 'j4 refused', 'j5'])
      // (PostgreSQL runs each in a transaction of its own, committed in any order.)
      assert.deepEqual((await stores.audit.ofTask('t1')).map((r) => r.reason).sort(), ['j1', 'j1 again', 'j3', 'j3 again', 'j5', 'j5 again'])
      assert.equal(await stores.tokens.get('j2'), undefined)
      assert.equal((await stores.tasks.get('t1'))?.tokensMinted, 3)
      const report = await stores.audit.verify()
      assert.equal(report.ok, true, JSON.stringify(report))
      assert.equal(report.rows, 6)
      // The next write transaction appends after the last row the batch committed.
      await stores.transaction(async (tx) => tx.audit.insert(row('after')))
      assert.equal((await stores.audit.verify()).ok, true)
    }))

    it('batched: a write alone in its turn that throws after its appends leaves none of its rows, and the next one chains', withStores(async ({ stores }) => {
      await stores.tasks.insert(task('t1'))
      const row = (reason: string) => ({ at: T0, action: 'token.exchange', decision: 'allow' as const, reason, taskId: 't1' })
      const job = (jti: string, fails: boolean) =>
        stores.batched(async (tx) => {
          await tx.audit.insert(row(jti))
          await tx.tokens.insert(token(jti, 't1', T0 + 100))
          await tx.sessions.revoke('https://idp.example', jti, T0, T0 + 60)
          if (fails) throw new Error(`${jti} refused`)
          return jti
        })
      assert.equal(await job('j1', false), 'j1')
      await assert.rejects(job('j2', true), /j2 refused/)
      assert.equal(await job('j3', false), 'j3')
      assert.deepEqual((await stores.audit.ofTask('t1')).map((r) => r.reason), ['j1', 'j3'])
      assert.equal(await stores.tokens.get('j2'), undefined)
      assert.equal(await stores.sessions.isRevoked('https://idp.example', 'j2'), false)
      assert.equal((await stores.tasks.get('t1'))?.tokensMinted, 2)
      const report = await stores.audit.verify()
      assert.equal(report.ok, true, JSON.stringify(report))
      assert.equal(report.rows, 2)
    }))

    it('revocations: insert, listAll and list in order, head never lowered by pruning, one epoch', withStores(async ({ stores }) => {
      assert.equal(await stores.revocations.head(), 0)
      await stores.revocations.insert({ at: T0, kind: 'task_revoked', taskId: 't1', relevantUntil: T0 + 10, audiences: [NOTES] })
      await stores.revocations.insert({ at: T0 + 1, kind: 'token_revoked', jti: 'j1', relevantUntil: T0 + 100, audiences: ['https://other.example/mcp'] })
      const all = await stores.revocations.listAll(0, 10)
      assert.deepEqual(all.map((e) => e.kind), ['task_revoked', 'token_revoked'])
      assert.equal(all[0]?.audiences, NOTES)
      assert.deepEqual((await stores.revocations.list(0, 10, NOTES)).map((e) => e.kind), ['task_revoked'])
      assert.deepEqual((await stores.revocations.listAll(all[0]!.id, 10)).map((e) => e.id), [all[1]!.id])
      const head = await stores.revocations.head()
      assert.equal(head, all[1]!.id)
      assert.equal(await stores.revocations.pruneBefore(T0 + 1000, 1000), 2)
      assert.equal(await stores.revocations.head(), head)
      const epoch = await stores.revocations.epoch()
      assert.match(epoch, /^[A-Za-z0-9_-]{22}$/)
      assert.equal(await stores.revocations.epoch(), epoch)
    }))

    it('revocations: a subscriber is woken after each append, its own instance\'s and another\'s', withStores(async ({ stores, another }) => {
      const writers = [stores, ...(another ? [await another()] : [])]
      const sub = subscription(stores)
      try {
        // Three rounds per writer: a start-up wake-up (PostgreSQL wakes once when it starts listening) can answer one at most.
        for (const writer of writers) {
          for (let i = 0; i < 3; i++) {
            const woken = sub.next(5000)
            await writer.revocations.insert({ at: T0, kind: 'task_revoked', taskId: `t${i}`, relevantUntil: T0 + 10, audiences: [NOTES] })
            await woken
          }
        }
      } finally {
        sub.stop()
      }
    }))

    it('replay: fresh once, replayed while live, fresh again once expired', withStores(async ({ stores, another }) => {
      const other = another ? await another() : stores
      const results = await Promise.all([stores.replay.use('k', T0 + 60, T0), other.replay.use('k', T0 + 60, T0)])
      assert.deepEqual(results.sort(), ['fresh', 'replayed'])
      assert.equal(await stores.replay.use('k', T0 + 60, T0 + 59), 'replayed')
      assert.equal(await stores.replay.use('k', T0 + 120, T0 + 60), 'fresh')
      await stores.replay.use('k2', T0 + 10, T0)
      assert.equal(await stores.replay.pruneExpired(T0 + 200, 1), 1)
      assert.equal(await stores.replay.pruneExpired(T0 + 200, 10), 1)
    }))

    it('sessions: a revoke is recorded once', withStores(async ({ stores }) => {
      assert.equal(await stores.sessions.isRevoked('https://idp.example', 's1'), false)
      assert.equal(await stores.sessions.revoke('https://idp.example', 's1', T0, T0 + 60), true)
      assert.equal(await stores.sessions.revoke('https://idp.example', 's1', T0 + 1, T0 + 60), false)
      assert.equal(await stores.sessions.isRevoked('https://idp.example', 's1'), true)
      assert.equal(await stores.sessions.pruneBefore(T0 + 61, 1000), 1)
    }))

    it('tasks: getWithSession answers the task and its session\'s revocation together, the session whether or not the task exists', withStores(async ({ stores, another }) => {
      const idp = 'https://idp.example'
      assert.deepEqual(await stores.tasks.getWithSession('t1', idp, 's1'), { task: undefined, sessionRevoked: false })
      const full = task('t1', { dpopJkt: 'jkt', tokensMinted: 2, maxTokens: 7, userClaims: '{"a":1}', approvalExpiresAt: T0 + 5, parentTaskId: 'p1', depth: 2, rootTaskId: 'r1', sessionStartedAt: T0 - 5, sessionExpiresAt: T0 + 50, clientId: 'https://client.example/meta' })
      await stores.tasks.insert(full)
      assert.deepEqual(await stores.tasks.getWithSession('t1', idp, 's1'), { task: full, sessionRevoked: false })
      // Revoked by another instance: read at once, the task still as stored.
      const other = another ? await another() : stores
      assert.equal(await other.sessions.revoke(idp, 's1', T0, T0 + 60), true)
      assert.deepEqual(await stores.tasks.getWithSession('t1', idp, 's1'), { task: full, sessionRevoked: true })
      assert.deepEqual(await stores.tasks.getWithSession('nope', idp, 's1'), { task: undefined, sessionRevoked: true })
      // The session is (issuer, sid): another sid, or the same sid of another issuer, is not revoked.
      assert.deepEqual(await stores.tasks.getWithSession('t1', idp, 's2'), { task: full, sessionRevoked: false })
      assert.deepEqual(await stores.tasks.getWithSession('t1', 'https://other-idp.example', 's1'), { task: full, sessionRevoked: false })
      // Inside a transaction it reads that transaction's rows.
      const seen = await stores.transaction(async (tx) => {
        await tx.sessions.revoke(idp, 's2', T0, T0 + 60)
        await tx.tasks.end('t1', 'completed', T0 + 1, 'done')
        return tx.tasks.getWithSession('t1', idp, 's2')
      })
      assert.equal(seen.sessionRevoked, true)
      assert.equal(seen.task?.status, 'completed')
    }))

    it('catalog: put replaces in place, get, delete, and every bump a new revision', withStores(async ({ stores, another }) => {
      const other = another ? await another() : stores
      const row = { kind: 'workloads', key: 'w1', body: '{"a":1}', enabled: true, createdAt: T0, updatedAt: T0, updatedBy: 'admin:a' }
      await stores.catalog.put(row)
      await stores.catalog.put({ ...row, key: 'w2' })
      const first = await stores.catalog.get('workloads', 'w1')
      await stores.catalog.put({ ...row, body: null, enabled: false, createdAt: T0 + 9, updatedAt: T0 + 9, updatedBy: 'admin:b' })
      const replaced = await stores.catalog.get('workloads', 'w1')
      assert.deepEqual(replaced, { ...row, id: first!.id, body: null, enabled: false, updatedAt: T0 + 9, updatedBy: 'admin:b' })
      assert.deepEqual((await stores.catalog.all()).map((r) => r.key), ['w1', 'w2'])
      assert.equal(await stores.catalog.delete('workloads', 'w2'), true)
      assert.equal(await stores.catalog.delete('workloads', 'w2'), false)
      assert.equal(await stores.catalog.revision(), 0)
      const bumps = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? other : stores).catalog.bump()))
      assert.deepEqual(bumps.sort(), [1, 2, 3, 4, 5, 6])
      assert.equal(await stores.catalog.revision(), 6)
    }))

    it('a transaction that throws leaves nothing, and one that returns commits everything', withStores(async ({ stores }) => {
      await assert.rejects(
        stores.durably(async (tx) => {
          await tx.tasks.insert(task('t1'))
          await tx.tokens.insert(token('j1', 't1', T0 + 100))
          await tx.audit.insert({ at: T0, action: 'task.open', decision: 'allow', reason: 'r' })
          await tx.revocations.insert({ at: T0, kind: 'task_revoked', taskId: 't1', relevantUntil: T0 + 10, audiences: [NOTES] })
          throw new Error('boom')
        }),
        /boom/,
      )
      assert.equal(await stores.tasks.get('t1'), undefined)
      assert.equal(await stores.tokens.get('j1'), undefined)
      assert.equal((await stores.audit.list({ limit: 10 })).length, 0)
      assert.equal((await stores.revocations.listAll(0, 10)).length, 0)
      assert.equal(await stores.revocations.head(), 0)
      const value = await stores.transaction(async (tx) => {
        await tx.tasks.insert(task('t2'))
        await tx.audit.insert({ at: T0, action: 'task.open', decision: 'allow', reason: 'r' })
        return (await tx.tasks.get('t2'))?.id
      })
      assert.equal(value, 't2')
      assert.equal((await stores.audit.verify()).ok, true)
      assert.equal(await stores.batched(async (tx) => (await tx.tasks.end('t2', 'completed', T0, 'done')) && 'ended'), 'ended')
    }))
  
    it('audit pruning stops at the first row to keep, inside a batch or past it, and never leaves a hole', withStores(async ({ stores }) => {
      // ids 1–3 prunable, 4 kept (a later clock), 5–12 prunable again (written with an older clock), 13 kept.
      const ats = [1, 2, 3, 200, 4, 5, 6, 7, 8, 9, 10, 11, 300]
      for (const [i, at] of ats.entries()) await stores.audit.insert({ at: T0 + at, action: 'task.open', decision: 'allow', reason: `r${i}` })
      assert.equal(await stores.audit.pruneBefore(T0 + 100, 10), 3)
      assert.equal(await stores.audit.pruneBefore(T0 + 100, 10), 0)
      assert.deepEqual((await stores.audit.list({ limit: 20 })).map((r) => r.reason), ats.slice(3).map((_, i) => `r${i + 3}`))
      // Past both kept rows' times: the kept row ending the first batch's window goes too, then the rest by batches.
      assert.equal(await stores.audit.pruneBefore(T0 + 250, 4), 4)
      assert.equal(await stores.audit.pruneBefore(T0 + 250, 4), 4)
      assert.equal(await stores.audit.pruneBefore(T0 + 250, 4), 1)
      assert.equal(await stores.audit.pruneBefore(T0 + 250, 4), 0)
      assert.deepEqual((await stores.audit.list({ limit: 20 })).map((r) => r.reason), ['r12'])
      const report = await stores.audit.verify()
      assert.equal(report.ok, true, JSON.stringify(report))
    }))

    it('pruning in bounded batches: each call deletes at most its limit, oldest audit rows first, the chain verifiable after every batch', withStores(async ({ stores }) => {
      await stores.tasks.insert(task('t1', { expiresAt: T0 + 10 }))
      for (let i = 0; i < 25; i++) await stores.tokens.insert(token(`j${i}`, 't1', T0 + 1))
      const batches: number[] = []
      for (let n = -1; n !== 0; ) batches.push((n = await stores.tokens.pruneExpired(T0 + 2, 10)))
      assert.deepEqual(batches, [10, 10, 5, 0])
      for (let i = 0; i < 17; i++) await stores.audit.insert({ at: T0 + i, action: 'task.open', decision: 'allow', reason: `r${i}` })
      await stores.audit.insert({ at: T0 + 100, action: 'task.open', decision: 'allow', reason: 'kept' })
      const head = (await stores.audit.verify()).head
      const pruned: number[] = []
      for (let n = -1; n !== 0; ) {
        pruned.push((n = await stores.audit.pruneBefore(T0 + 100, 7)))
        const report = await stores.audit.verify()
        assert.equal(report.ok, true, JSON.stringify(report))
        assert.equal(report.head, head)
      }
      assert.deepEqual(pruned, [7, 7, 3, 0])
      assert.deepEqual((await stores.audit.list({ limit: 10 })).map((r) => r.reason), ['kept'])
      for (let i = 0; i < 5; i++) await stores.revocations.insert({ at: T0, kind: 'task_revoked', taskId: `t${i}`, relevantUntil: T0 + 1, audiences: [NOTES] })
      assert.equal(await stores.revocations.pruneBefore(T0 + 2, 3), 3)
      assert.equal(await stores.revocations.pruneBefore(T0 + 2, 3), 2)
      for (let i = 0; i < 4; i++) await stores.sessions.revoke('https://idp.example', `s${i}`, T0, T0 + 1)
      assert.equal(await stores.sessions.pruneBefore(T0 + 2, 3), 3)
      assert.equal(await stores.sessions.pruneBefore(T0 + 2, 3), 1)
      for (let i = 2; i < 6; i++) await stores.tasks.insert(task(`t${i}`, { expiresAt: T0 + 1 }))
      assert.equal(await stores.tasks.pruneExpiredBefore(T0 + 2, 3), 3)
      assert.equal(await stores.tasks.pruneExpiredBefore(T0 + 2, 3), 1)
    }))
  
    it('signing keys: isUsable is false for a revoked or unknown key; on PostgreSQL a revocation waits for a transaction that read the key usable', withStores(async ({ stores, another }) => {
      const key = (kid: string, state: 'current' | 'revoked') => ({ kid, alg: 'ES256', publicJwk: '{}', privateJwe: 'x', state, createdAt: T0, activatedAt: null, retiredAt: null, publishUntil: null })
      await stores.signingKeys.insert(key('k1', 'current'))
      await stores.signingKeys.insert(key('k0', 'revoked'))
      assert.equal(await stores.signingKeys.isUsable('k1'), true)
      assert.equal(await stores.signingKeys.isUsable('k0'), false)
      assert.equal(await stores.signingKeys.isUsable('nope'), false)
      if (!another) return
      const other = await another()
      let release!: () => void
      const held = new Promise<void>((r) => (release = r))
      let read!: () => void
      const readIt = new Promise<void>((r) => (read = r))
      const writing = stores.transaction(async (tx) => {
        assert.equal(await tx.signingKeys.isUsable('k1'), true)
        read()
        await held
      })
      await readIt
      let revokedAt: number | undefined
      const revoking = other.signingKeys.update('k1', { state: 'revoked' }).then(() => (revokedAt = performance.now()))
      await new Promise((r) => setTimeout(r, 200))
      const waited = revokedAt === undefined
      const releasedAt = performance.now()
      release() // before asserting: a failed assertion must not leave the transaction open
      await writing
      assert.ok(waited, 'the revocation waits for the transaction that read the key')
      await revoking
      assert.ok(revokedAt! >= releasedAt)
      assert.equal(await stores.signingKeys.isUsable('k1'), false)
    }))
  })
}
