import { randomBytes } from 'node:crypto'
import { and, asc, desc, eq, gt, gte, inArray, isNull, lt, lte, not, or, sql, type SQL } from 'drizzle-orm'
import type { NodePgQueryResultHKT } from 'drizzle-orm/node-postgres'
import type { PgDatabase as DrizzlePgDatabase } from 'drizzle-orm/pg-core'
import pg from 'pg'
import { invalidGrant, temporarilyUnavailable } from '../../errors.js'
import { auditHash, verifyChainAsync } from '../audit-chain.js'
import { isUniqueViolation } from '../db.js'
import { boundAuditFields, WATCH_FALLBACK_MS, type CatalogRow, type ChangeTopic, type Stores, type TxStores } from '../stores.js'
import type { PgDatabase } from './db.js'
import * as schema from './schema.js'
import type { TokenState } from '../stores.js'

const { auditEvents, authorizationCodes, brokerMeta, catalogObjects, policySets, replayEntries, refreshTokens, revocationEvents, revokedSessions, signingKeys, tasks, tokens } = schema

/** The pool, or the one connection of a transaction: the same query builder either way. */
type Q = DrizzlePgDatabase<NodePgQueryResultHKT, typeof schema>

/** `broker_meta` names, as in the SQLite store (src/store/stores.ts). */
const AUDIT_ANCHOR = 'audit_chain_anchor'
const CATALOG_REVISION = 'catalog_revision'
const FEED_EPOCH = 'revocation_feed_epoch'
/**
 * `broker_meta` name of the feed's head: the id of the last event ever appended, written in the
 * appending transaction (a sequence's value is not transactional: a rolled-back append would
 * raise it, and it would count an event not yet committed).
 */
const FEED_HEAD = 'revocation_feed_head'
/** The channel `revocations.insert` notifies (payload: the event id), delivered at commit. */
export const REVOCATION_CHANNEL = 'taskpass_revocations'
/**
 * The transaction advisory lock (`pg_advisory_xact_lock`) every append to the audit chain and to
 * the revocation feed takes first, held to commit. SQLite has one writer; PostgreSQL instances
 * write together, and without it two appends would read the same chain head (forking the
 * chain), or a feed event would commit after a later-numbered one that a verifier had already
 * read past (skipping it). One lock for both logs: a transaction appending to both cannot
 * deadlock against another taking them in the other order.
 */
const APPEND_LOCK = sql.raw(String(0x74706c6f67)) // "tplog"
/**
 * The channel every change another instance must notice is announced on (payload: its
 * {@link ChangeTopic}), by the writing transaction: delivered at commit, to every instance.
 */
export const CHANGE_CHANNEL = 'taskpass_changes'
/** The session advisory lock of each upkeep job (`pg_try_advisory_lock`): one instance at a time runs it. */
const UPKEEP_LOCKS = { prune: String(0x7470707275) } as const // "tppru"
/** As in the SQLite store: while anyone is subscribed, the feed head is read this often. */
const HEAD_POLL_MS = 250

const open = sql`('active', 'pending_approval')`

/** `count(*)`, `max(...)`: PostgreSQL answers `int8` as a string; null stays null. */
const num = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : Number(v))

/**
 * {@link Stores} on PostgreSQL: the same methods with the same answers as `createStores` (SQLite),
 * for several broker instances sharing one database. Outside a transaction each statement runs
 * on any pooled connection; `transaction`, `durably` and `batched` hold one connection from
 * BEGIN to COMMIT (ROLLBACK when `fn` throws) and hand `fn` the stores running on it. Races
 * SQLite never sees (it has one writer) are closed the PostgreSQL way: conditional updates and
 * `INSERT … ON CONFLICT`, which READ COMMITTED re-checks against the committed row, and
 * {@link APPEND_LOCK} for the two hash- or id-ordered logs.
 */
export function createPgStores(database: PgDatabase): Stores {
  const { db } = database

  const expiredAt = (now: number) =>
    or(lte(tasks.expiresAt, now), and(eq(tasks.status, 'pending_approval'), sql`coalesce(${tasks.approvalExpiresAt}, ${tasks.expiresAt}) <= ${now}`))!

  let epoch: string | undefined

  async function getMeta(q: Q, name: string): Promise<string | undefined> {
    const [row] = await q.select({ value: brokerMeta.value }).from(brokerMeta).where(eq(brokerMeta.name, name))
    return row?.value
  }
  async function setMeta(q: Q, name: string, value: string): Promise<void> {
    await q.insert(brokerMeta).values({ name, value }).onConflictDoUpdate({ target: brokerMeta.name, set: { value: sql`excluded.value` } })
  }
  const readHead = async (q: Q) => Number((await getMeta(q, FEED_HEAD)) ?? 0)
  const listAudit = (q: Q, afterId: number, limit: number) => q.select().from(auditEvents).where(gt(auditEvents.id, afterId)).orderBy(asc(auditEvents.id)).limit(limit)

  /** The stores running on `q`; `inTx`: `q` is a transaction, so several statements are atomic already. */
  function on(q: Q, inTx: boolean): TxStores {
    // Several statements that must hold together: in the caller's transaction, or one of their own.
    const atomically = <T>(fn: (t: Q) => Promise<T>): Promise<T> => (inTx ? fn(q) : q.transaction((t) => fn(t)))
    const changed = async (statement: PromiseLike<{ rowCount: number | null }>) => (await statement).rowCount ?? 0
    /** Tells every instance's watches of `topic` (at commit; PostgreSQL folds repeats within one transaction). */
    const announce = async (topic: ChangeTopic) => void (await q.execute(sql`select pg_notify(${CHANGE_CHANNEL}, ${topic})`))
    /** A transaction advisory lock named `name` (see `locks` in src/store/stores.ts), held to commit. */
    const advisory = async (name: string, shared = false) => {
      if (!inTx) throw new Error(`the lock "${name}" is taken inside a transaction`)
      const key = sql`hashtextextended(${`taskpass ${name}`}, 0)`
      await q.execute(shared ? sql`select pg_advisory_xact_lock_shared(${key})` : sql`select pg_advisory_xact_lock(${key})`)
    }
    /** `n` rows changed; announced to `topic`'s watches when any did. */
    const announced = async (n: number, topic: ChangeTopic) => {
      if (n > 0) await announce(topic)
      return n
    }

    return {
      tasks: {
        get: async (id) => (await q.select().from(tasks).where(eq(tasks.id, id)))[0],
        hold: async (id) => (await q.select().from(tasks).where(eq(tasks.id, id)).for('share'))[0],
        // One row always (the session's answer), the task joined when it exists: one round trip for both.
        getWithSession: async (id, issuer, sid) => {
          const [row] = await q
            .select({ revoked: sql<boolean>`exists (select 1 from ${revokedSessions} where ${revokedSessions.subjectIssuer} = ${issuer} and ${revokedSessions.sid} = ${sid})`, task: tasks })
            .from(sql`(select 1) as one`)
            .leftJoin(tasks, eq(tasks.id, id))
          return { task: row?.task ?? undefined, sessionRevoked: row?.revoked === true }
        },
        // A task whose id the grant derives (an ID-JAG's) may be opened by two instances at once:
        // both re-checks find none (SQLite's one writer rules that out), the second insert meets
        // the first's key. Told as the exchange tells a concurrent opening: ask again.
        insert: async (row) => {
          try {
            await q.insert(tasks).values(row)
          } catch (e) {
            if (isUniqueViolation(e)) throw temporarilyUnavailable(1, `task ${row.id} was opened by a concurrent request`)
            throw e
          }
        },
        // Ends and decisions are announced: a wait held on another instance answers at once.
        end: async (id, status, at, reason) =>
          (await announced(await changed(q.update(tasks).set({ status, endedAt: at, endReason: reason }).where(and(eq(tasks.id, id), sql`${tasks.status} in ${open}`))), 'tasks')) === 1,
        // The decision's whole precondition is in the WHERE clause (see the SQLite store).
        approve: async (id, at) =>
          (await announced(await changed(q.update(tasks).set({ status: 'active', approvalExpiresAt: sql`coalesce(${tasks.approvalExpiresAt}, ${at})` }).where(stillAwaiting(id, at))), 'tasks')) === 1,
        deny: async (id, at, reason) => (await announced(await changed(q.update(tasks).set({ status: 'denied', endedAt: at, endReason: reason }).where(stillAwaiting(id, at))), 'tasks')) === 1,
        listByUser: (issuer, userSub, limit) =>
          q.select().from(tasks).where(and(eq(tasks.subjectIssuer, issuer), eq(tasks.userSub, userSub))).orderBy(desc(tasks.createdAt)).limit(limit),
        listOpenBySession: (issuer, sid) => q.select().from(tasks).where(and(eq(tasks.subjectIssuer, issuer), eq(tasks.sid, sid), sql`${tasks.status} in ${open}`)),
        listOpenChildren: (id) => q.select().from(tasks).where(and(eq(tasks.parentTaskId, id), sql`${tasks.status} in ${open}`)),
        countOpenInTree: async (root) =>
          num((await q.select({ n: sql`count(*)` }).from(tasks).where(and(eq(tasks.rootTaskId, root), sql`${tasks.status} in ${open}`)))[0]?.n) ?? 0,
        // Only ever forward: an older session token presented later changes nothing.
        refreshSession: async (id, startedAt, expiresAt) =>
          void (await q
            .update(tasks)
            .set({ sessionStartedAt: startedAt, sessionExpiresAt: expiresAt })
            .where(and(eq(tasks.id, id), or(isNull(tasks.sessionExpiresAt), lt(tasks.sessionExpiresAt, expiresAt))))),
        countToken: async (id) =>
          (await changed(q.update(tasks).set({ tokensMinted: sql`${tasks.tokensMinted} + 1` }).where(and(eq(tasks.id, id), or(isNull(tasks.maxTokens), lt(tasks.tokensMinted, tasks.maxTokens)))))) === 1,
        openWorkloadIds: async () => (await q.selectDistinct({ workloadId: tasks.workloadId }).from(tasks).where(sql`${tasks.status} in ${open}`)).map((r) => r.workloadId),
        openRefs: () =>
          q
            .select({ id: tasks.id, workloadId: tasks.workloadId, subjectIssuer: tasks.subjectIssuer, resources: tasks.resources, clientId: tasks.clientId })
            .from(tasks)
            .where(sql`${tasks.status} in ${open}`),
        pruneExpiredBefore: (before, limit) => changed(q.delete(tasks).where(inArray(tasks.id, q.select({ id: tasks.id }).from(tasks).where(lt(tasks.expiresAt, before)).limit(limit)))),
        countByStatus: async () => (await q.select({ status: tasks.status, n: sql`count(*)` }).from(tasks).groupBy(tasks.status)).map((r) => ({ status: r.status, n: num(r.n) ?? 0 })),
        list: ({ statuses, expiry, workloadId, user, resource, limit }) =>
          q
            .select()
            .from(tasks)
            .where(
              and(
                statuses ? inArray(tasks.status, statuses) : undefined,
                expiry ? (expiry.expired ? expiredAt(expiry.now) : not(expiredAt(expiry.now))) : undefined,
                workloadId ? eq(tasks.workloadId, workloadId) : undefined,
                user ? and(eq(tasks.subjectIssuer, user.issuer), eq(tasks.userSub, user.sub)) : undefined,
                // `resources` is the declared JSON `[{resource, scopes}]`: compared by equality, never as a pattern.
                resource ? sql`exists (select 1 from json_array_elements(${tasks.resources}::json) as r(value) where r.value ->> 'resource' = ${resource})` : undefined,
              ),
            )
            .orderBy(desc(tasks.createdAt), desc(tasks.id))
            .limit(limit),
      },
      authorizationCodes: {
        insert: async (row) => void (await q.insert(authorizationCodes).values(row)),
        get: async (hash) => (await q.select().from(authorizationCodes).where(eq(authorizationCodes.codeHash, hash)))[0],
        // One conditional update: of two concurrent redemptions only one finds the code unused.
        use: async (hash, at) => (await changed(q.update(authorizationCodes).set({ usedAt: at }).where(and(eq(authorizationCodes.codeHash, hash), isNull(authorizationCodes.usedAt))))) === 1,
        countOfTask: async (taskId) => num((await q.select({ n: sql`count(*)` }).from(authorizationCodes).where(eq(authorizationCodes.taskId, taskId)))[0]?.n) ?? 0,
        pruneExpired: (before, limit) =>
          changed(q.delete(authorizationCodes).where(inArray(authorizationCodes.codeHash, q.select({ h: authorizationCodes.codeHash }).from(authorizationCodes).where(lt(authorizationCodes.expiresAt, before)).limit(limit)))),
      },
      refreshTokens: {
        insert: async (row) => void (await q.insert(refreshTokens).values(row)),
        get: async (hash) => (await q.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, hash)))[0],
        use: async (hash, at) => (await changed(q.update(refreshTokens).set({ usedAt: at }).where(and(eq(refreshTokens.tokenHash, hash), isNull(refreshTokens.usedAt))))) === 1,
        pruneExpired: (before, limit) =>
          changed(q.delete(refreshTokens).where(inArray(refreshTokens.tokenHash, q.select({ h: refreshTokens.tokenHash }).from(refreshTokens).where(lt(refreshTokens.expiresAt, before)).limit(limit)))),
      },
      tokens: {
        get: async (jti) => (await q.select().from(tokens).where(eq(tokens.jti, jti)))[0],
        // The exchange re-reads its task inside the write, but under READ COMMITTED a task ended by
        // another instance after that read would still get an active token (SQLite's one writer
        // rules that out). So the count is a conditional update: it waits for a concurrent end's
        // row lock and re-checks the status the end committed; an ended task refuses the token and
        // the write rolls back. (An end that locks the row after us waits, then revokes the token.)
        insert: (row) =>
          atomically(async (t) => {
            await t.insert(tokens).values(row)
            const counted = await t
              .update(tasks)
              .set({ tokensMinted: sql`${tasks.tokensMinted} + 1` })
              // Within its bound too: two instances minting a task's last token cannot both count it.
              .where(and(eq(tasks.id, row.taskId), eq(tasks.status, 'active'), or(isNull(tasks.maxTokens), lt(tasks.tokensMinted, tasks.maxTokens))))
              .returning({ id: tasks.id })
            if (counted.length === 0) {
              const [now] = await t.select({ status: tasks.status, minted: tasks.tokensMinted, max: tasks.maxTokens }).from(tasks).where(eq(tasks.id, row.taskId))
              if (now && now.status !== 'active') throw invalidGrant(`task is ${now.status}`, `task ${row.taskId} became ${now.status} during the exchange`)
              if (now) throw invalidGrant('the task has minted all the tokens it may', `task ${row.taskId} has minted ${now.minted} of ${now.max} tokens`)
            }
          }),
        revoke: async (jti, at) => (await changed(q.update(tokens).set({ status: 'revoked', revokedAt: at }).where(and(eq(tokens.jti, jti), eq(tokens.status, 'active'))))) === 1,
        revokeByTask: (taskId, at) => changed(q.update(tokens).set({ status: 'revoked', revokedAt: at }).where(and(eq(tokens.taskId, taskId), eq(tokens.status, 'active')))),
        maxExpOfTask: async (taskId) => num((await q.select({ exp: sql`max(${tokens.exp})` }).from(tokens).where(eq(tokens.taskId, taskId)))[0]?.exp),
        audiencesOfTask: async (taskId) => (await q.selectDistinct({ aud: tokens.aud }).from(tokens).where(eq(tokens.taskId, taskId))).map((r) => r.aud),
        revokeByKid: async (kid, at) => {
          const rows = await q
            .update(tokens)
            .set({ status: 'revoked', revokedAt: at })
            .where(and(gt(tokens.exp, at), eq(tokens.kid, kid), eq(tokens.status, 'active')))
            .returning({ exp: tokens.exp })
          return { revoked: rows.length, lastExp: rows.reduce<number | undefined>((m, r) => (m === undefined || r.exp > m ? r.exp : m), undefined) }
        },
        revokeWithoutKid: (at) =>
          q
            .update(tokens)
            .set({ status: 'revoked', revokedAt: at })
            .where(and(gt(tokens.exp, at), isNull(tokens.kid), eq(tokens.status, 'active')))
            .returning(),
        pruneExpired: (before, limit) => changed(q.delete(tokens).where(inArray(tokens.jti, q.select({ jti: tokens.jti }).from(tokens).where(lt(tokens.exp, before)).limit(limit)))),
        ofTask: (taskId) => q.select().from(tokens).where(eq(tokens.taskId, taskId)).orderBy(asc(tokens.iat), asc(tokens.jti)),
      },
      policySets: {
        latest: async () => (await q.select().from(policySets).orderBy(desc(policySets.id)).limit(1))[0],
        insert: async (row) => void (await q.insert(policySets).values(row)),
      },
      audit: {
        insert: (row) => {
          const { prevHash: _p, hash: _h, id: _id, ...rest } = boundAuditFields(row)
          const content = { error: null, userSub: null, workloadId: null, taskId: null, jti: null, resource: null, policyVersion: null, policies: null, detail: null, ...rest }
          return atomically(async (t) => {
            // The head is read under the append lock, held to commit: no other instance appends in between.
            await t.execute(sql`select pg_advisory_xact_lock(${APPEND_LOCK})`)
            const [last] = await t.select({ hash: auditEvents.hash }).from(auditEvents).orderBy(desc(auditEvents.id)).limit(1)
            const prevHash = last?.hash ?? (await getMeta(t, AUDIT_ANCHOR)) ?? null
            await t.insert(auditEvents).values({ ...content, prevHash, hash: auditHash(prevHash, content) })
          })
        },
        // Retention removes a prefix of the chain by id and keeps the hash of its last row as the anchor.
        pruneBefore: (before, limit) =>
          atomically(async (t) => {
            await t.execute(sql`select pg_advisory_xact_lock(${APPEND_LOCK})`)
            // At most `limit` rows of the prefix per call: a backlog goes in several short transactions.
            // Only the oldest `limit` rows by id are read (the first to keep among them, and the last):
            // `min(id) where at >= ?` over the whole table may walk every prunable row of a backlog.
            const oldest = t.select({ id: auditEvents.id, at: auditEvents.at }).from(auditEvents).orderBy(asc(auditEvents.id)).limit(limit).as('oldest')
            const [window] = await t.select({ kept: sql`min(case when ${oldest.at} >= ${before} then ${oldest.id} end)`, last: sql`max(${oldest.id})` }).from(oldest)
            const last = num(window?.last)
            if (last === undefined) return 0
            const kept = num(window?.kept)
            const through = kept === undefined ? last : kept - 1
            if (through < 1) return 0
            // The last row at or below `through` (ids have gaps where an append rolled back).
            const [anchor] = await t.select({ hash: auditEvents.hash }).from(auditEvents).where(lte(auditEvents.id, through)).orderBy(desc(auditEvents.id)).limit(1)
            if (anchor?.hash) await setMeta(t, AUDIT_ANCHOR, anchor.hash)
            return changed(t.delete(auditEvents).where(lte(auditEvents.id, through)))
          }),
        list: ({ afterId = 0, limit }) => listAudit(q, afterId, limit),
        ofTask: (taskId) => q.select().from(auditEvents).where(eq(auditEvents.taskId, taskId)).orderBy(asc(auditEvents.id)),
        retained: async () => {
          const anchor = (await getMeta(q, AUDIT_ANCHOR)) ?? null
          if (anchor === null) return undefined
          const [oldest] = await q.select({ at: auditEvents.at }).from(auditEvents).orderBy(asc(auditEvents.id)).limit(1)
          return { anchor, since: oldest?.at }
        },
        // One snapshot for the whole walk: rows appended or pruned meanwhile cannot tear it.
        verify: () => {
          const walk = async (t: Q) => verifyChainAsync((await getMeta(t, AUDIT_ANCHOR)) ?? null, (afterId, limit) => listAudit(t, afterId, limit))
          return inTx ? walk(q) : q.transaction(walk, { isolationLevel: 'repeatable read', accessMode: 'read only' })
        },
      },
      revocations: {
        insert: (row) =>
          atomically(async (t) => {
            await t.execute(sql`select pg_advisory_xact_lock(${APPEND_LOCK})`)
            const [event] = await t
              .insert(revocationEvents)
              .values({ taskId: null, jti: null, sid: null, sub: null, subjectIssuer: null, kid: null, ...row, audiences: row.audiences.join(' ') })
              .returning({ id: revocationEvents.id })
            const id = String(event!.id)
            await setMeta(t, FEED_HEAD, id)
            // Delivered to listeners when (and only if) the transaction commits.
            await t.execute(sql`select pg_notify(${REVOCATION_CHANNEL}, ${id})`)
          }),
        ofTask: (taskId) => q.select().from(revocationEvents).where(eq(revocationEvents.taskId, taskId)).orderBy(asc(revocationEvents.id)),
        // URIs contain no spaces (RFC 3986), so a space-delimited list can be matched as a whole word.
        list: (afterId, limit, audience) =>
          q
            .select()
            .from(revocationEvents)
            .where(and(gt(revocationEvents.id, afterId), sql`strpos(' ' || ${revocationEvents.audiences} || ' ', ' ' || ${audience} || ' ') > 0`))
            .orderBy(asc(revocationEvents.id))
            .limit(limit),
        listAll: (afterId, limit) => q.select().from(revocationEvents).where(gt(revocationEvents.id, afterId)).orderBy(asc(revocationEvents.id)).limit(limit),
        subscribe,
        pruneBefore: (before, limit) =>
          changed(q.delete(revocationEvents).where(inArray(revocationEvents.id, q.select({ id: revocationEvents.id }).from(revocationEvents).where(lt(revocationEvents.relevantUntil, before)).limit(limit)))),
        head: () => readHead(q),
        epoch: async () => {
          if (epoch === undefined) {
            // Created once per database; a concurrent first writer wins and both read its value.
            await q.insert(brokerMeta).values({ name: FEED_EPOCH, value: randomBytes(16).toString('base64url') }).onConflictDoNothing()
            epoch = (await getMeta(q, FEED_EPOCH))!
          }
          return epoch
        },
      },
      replay: {
        // An expired entry is taken over in place: the upsert only writes when the old one is dead.
        use: async (key, until, now) =>
          (await changed(
            q
              .insert(replayEntries)
              .values({ key, until })
              .onConflictDoUpdate({ target: replayEntries.key, set: { until: sql`excluded.until` }, setWhere: lte(replayEntries.until, now) }),
          )) === 1
            ? 'fresh'
            : 'replayed',
        pruneExpired: (now, limit) =>
          changed(q.execute(sql`delete from ${replayEntries} where ${replayEntries.key} in (select ${replayEntries.key} from ${replayEntries} where ${replayEntries.until} <= ${now} limit ${limit})`)),
      },
      catalog: {
        all: () => q.select().from(catalogObjects).orderBy(asc(catalogObjects.id)),
        get: async (kind, key) => (await q.select().from(catalogObjects).where(and(eq(catalogObjects.kind, kind), eq(catalogObjects.key, key))))[0],
        // Replacing keeps the row's id (its place in the order) and creation time; a new row's id
        // is the identity column's next (the caller's row carries a placeholder id, as on SQLite).
        put: async ({ kind, key, body, enabled, createdAt, updatedAt, updatedBy }) =>
          void (await q
            .insert(catalogObjects)
            .values({ kind, key, body, enabled, createdAt, updatedAt, updatedBy })
            .onConflictDoUpdate({
              target: [catalogObjects.kind, catalogObjects.key],
              set: { body: sql`excluded.body`, enabled: sql`excluded.enabled`, updatedAt: sql`excluded.updated_at`, updatedBy: sql`excluded.updated_by` },
            })),
        delete: async (kind, key) => (await changed(q.delete(catalogObjects).where(and(eq(catalogObjects.kind, kind), eq(catalogObjects.key, key))))) === 1,
        revision: async () => Number((await getMeta(q, CATALOG_REVISION)) ?? 0),
        // One statement: two instances bumping together get two revisions, never the same one.
        bump: async () => {
          const [row] = await q
            .insert(brokerMeta)
            .values({ name: CATALOG_REVISION, value: '1' })
            .onConflictDoUpdate({ target: brokerMeta.name, set: { value: sql`(${brokerMeta.value}::bigint + 1)::text` } })
            .returning({ value: brokerMeta.value })
          return Number(row!.value)
        },
      },
      // Every change is announced: the other instances' key sets read the table again on their next use.
      signingKeys: {
        all: () => q.select().from(signingKeys).orderBy(asc(signingKeys.createdAt), asc(signingKeys.kid)),
        insert: async (row) => {
          await q.insert(signingKeys).values(row)
          await announce('keys')
        },
        isUsable: async (kid) => {
          const [row] = await q.select({ state: signingKeys.state }).from(signingKeys).where(eq(signingKeys.kid, kid)).for('share')
          return row !== undefined && row.state !== 'revoked'
        },
        update: async (kid, patch) => (await announced(await changed(q.update(signingKeys).set(patch).where(eq(signingKeys.kid, kid))), 'keys')) === 1,
      },
      // A 64-bit key hashed from the lock's name (a collision only makes two unrelated writes wait for each other).
      locks: {
        session: (issuer, sid) => advisory(`session ${issuer} ${sid}`),
        tree: (root) => advisory(`tree ${root}`),
        task: (id) => advisory(`task ${id}`),
        catalog: (mode) => advisory('catalog', mode === 'admit'),
        policies: () => advisory('policies'),
      },
      sessions: {
        revoke: async (issuer, sid, at, relevantUntil) =>
          (await changed(q.insert(revokedSessions).values({ subjectIssuer: issuer, sid, at, relevantUntil }).onConflictDoNothing())) === 1,
        isRevoked: async (issuer, sid) =>
          (await q.select({ at: revokedSessions.at }).from(revokedSessions).where(and(eq(revokedSessions.subjectIssuer, issuer), eq(revokedSessions.sid, sid)))).length > 0,
        pruneBefore: (before, limit) =>
          changed(
            q
              .delete(revokedSessions)
              .where(sql`(${revokedSessions.subjectIssuer}, ${revokedSessions.sid}) in (select ${revokedSessions.subjectIssuer}, ${revokedSessions.sid} from ${revokedSessions} where ${revokedSessions.relevantUntil} < ${before} limit ${limit})`),
          ),
      },
      introspection: introspectionMethods(q),
    }
  }

  function stillAwaiting(id: string, at: number): SQL {
    return and(eq(tasks.id, id), eq(tasks.status, 'pending_approval'), gt(tasks.expiresAt, at), or(isNull(tasks.approvalExpiresAt), gt(tasks.approvalExpiresAt, at)))!
  }

  // Subscribers are woken by NOTIFY (every instance's appends, this one's included, at their
  // commit) on one dedicated connection, and — should that connection drop — by the same shared
  // head poll the SQLite store runs. Both only while someone is subscribed.
  const listeners = new Set<() => void>()
  let announcedHead: number | undefined
  let headPoll: NodeJS.Timeout | undefined
  let listener: pg.Client | undefined
  function wake(head: number): void {
    if (announcedHead !== undefined && head <= announcedHead) return
    announcedHead = head
    for (const l of listeners) l()
  }
  /** Opens the LISTEN connection unless it is open; resolves once it listens (or failed: the poll covers). */
  function listen(): Promise<void> {
    if (listener) return listening
    const client = new pg.Client({ connectionString: database.url })
    listener = client
    const drop = () => {
      if (listener === client) listener = undefined
      void client.end().catch(() => {})
    }
    client.on('error', drop)
    client.on('notification', (n) => {
      if (n.channel === REVOCATION_CHANNEL) wake(Number(n.payload))
    })
    listening = client
      .connect()
      .then(() => client.query(`listen ${REVOCATION_CHANNEL}`))
      .then(() => undefined, drop)
    return listening
  }
  let listening: Promise<void> = Promise.resolve()
  async function poll(): Promise<void> {
    // Until the first subscriber's start has read the head there is nothing to compare with.
    if (announcedHead === undefined) return
    let head: number
    try {
      head = await readHead(db)
    } catch {
      // The database is closed (shutdown) or momentarily unreachable: the next tick tries again.
      return
    }
    wake(head)
    if (listeners.size > 0) void listen() // reconnects a dropped LISTEN connection
  }
  /**
   * The first subscriber's start: listen, then read the head to compare later heads with. An event
   * committed between `subscribe()` and that read is in the head already, and no NOTIFY of it may
   * have reached the connection: so the subscribers are woken once then (at worst for nothing).
   */
  async function start(): Promise<void> {
    await listen()
    let head = 0
    try {
      head = await readHead(db)
    } catch {
      // Unreachable now: the wake-up below still lets subscribers look; the poll retries.
    }
    if (!headPoll) return // everyone unsubscribed meanwhile
    announcedHead = Math.max(announcedHead ?? 0, head)
    for (const l of listeners) l()
  }
  function subscribe(l: () => void): () => void {
    listeners.add(l)
    if (!headPoll) {
      announcedHead = undefined
      headPoll = setInterval(() => void poll(), HEAD_POLL_MS)
      headPoll.unref()
      void start()
    }
    return () => {
      listeners.delete(l)
      if (listeners.size === 0 && headPoll) {
        clearInterval(headPoll)
        headPoll = undefined
        const client = listener
        listener = undefined
        void client?.end().catch(() => {})
      }
    }
  }

  // The watches (StoreUpkeep.watch): one LISTEN connection for every topic, opened by the first
  // watch and kept (opened again when it drops). A notification makes a watch answer true at
  // once; whatever the connection does, each watch also answers true every WATCH_FALLBACK_MS —
  // a connection can be half-open (a NAT's idle timeout, a failover) and look up while nothing
  // reaches it, so the bound cannot rest on it.
  const watches = new Set<{ topic: ChangeTopic; pending: boolean; last: number }>()
  let changes: pg.Client | undefined
  let changesUp = false
  let lastAttempt = 0
  function listenForChanges(): void {
    if (changes) return
    lastAttempt = performance.now()
    const client = new pg.Client({ connectionString: database.url, keepAlive: true })
    changes = client
    const drop = () => {
      if (changes === client) {
        changes = undefined
        changesUp = false
      }
      void client.end().catch(() => {})
    }
    client.on('error', drop)
    client.on('end', drop)
    client.on('notification', (n) => {
      if (n.channel !== CHANGE_CHANNEL) return
      for (const w of watches) if (w.topic === n.payload) w.pending = true
    })
    client
      .connect()
      .then(() => client.query(`listen ${CHANGE_CHANNEL}`))
      .then(() => {
        if (changes !== client) return
        changesUp = true
        // Whatever was committed before the listener was up is read once now.
        for (const w of watches) w.pending = true
      }, drop)
  }
  let closed = false
  function watch(topic: ChangeTopic): () => boolean {
    const w = { topic, pending: false, last: performance.now() }
    watches.add(w)
    if (!closed) listenForChanges()
    return () => {
      // Elapsed time, not the clock: a bound on a connection's silence, not a protocol time.
      const now = performance.now()
      if (!changesUp && !closed && now - lastAttempt >= WATCH_FALLBACK_MS) listenForChanges()
      if (w.pending || now - w.last >= WATCH_FALLBACK_MS) {
        w.pending = false
        w.last = now
        return true
      }
      return false
    }
  }
  const closeDatabase = database.close
  database.close = async () => {
    closed = true
    const client = changes
    changes = undefined
    changesUp = false
    await client?.end().catch(() => {})
    await closeDatabase()
  }

  const outside = on(db, false)
  const transaction = <T>(fn: (tx: TxStores) => Promise<T>): Promise<T> => db.transaction((tx) => fn(on(tx, true)))
  return {
    ping: async () => void (await db.execute(sql`select 1`)),
    checkpoint: async () => {},
    // The lock lives on one pooled connection for the job's length; the job's statements run on
    // others, each its own short transaction (no long lock on any table).
    async alone(job, fn) {
      const client = await database.pool.connect()
      // A connection whose unlock failed still holds the lock (and would take it again at once:
      // advisory locks nest per session): it is closed, not returned to the pool.
      let broken = false
      try {
        const { rows } = await client.query<{ taken: boolean }>('select pg_try_advisory_lock($1) as taken', [UPKEEP_LOCKS[job]])
        if (!rows[0]?.taken) return undefined
        try {
          return await fn()
        } finally {
          await client.query('select pg_advisory_unlock($1)', [UPKEEP_LOCKS[job]]).catch(() => (broken = true))
        }
      } finally {
        client.release(broken)
      }
    },
    watch,
    transaction,
    // A PostgreSQL commit is durable (WAL flushed at COMMIT with the server's default synchronous_commit).
    durably: transaction,
    // One transaction per call: the pool already runs concurrent callers' commits in parallel.
    batched: transaction,
    ...outside,
  }
}

/** {@link Stores.introspection} on PostgreSQL: one select of four columns by primary key. */
function introspectionMethods(q: Q): TxStores['introspection'] {
  return {
    tokenState: async (jti): Promise<TokenState | undefined> =>
      (await q.select({ status: tokens.status, exp: tokens.exp, aud: tokens.aud, kid: tokens.kid }).from(tokens).where(eq(tokens.jti, jti)).limit(1))[0],
  }
}
