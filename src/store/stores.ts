import { randomBytes } from 'node:crypto'
import { and, asc, desc, eq, gt, gte, inArray, isNull, lt, lte, not, or, sql } from 'drizzle-orm'
import type { Database_ } from './db.js'
import { auditHash, verifyChain, type ChainReport } from './audit-chain.js'
import { flaggedRowReader, rowInserter, rowReader } from './raw.js'
import { auditEvents, authorizationCodes, brokerMeta, catalogObjects, policySets, replayEntries, refreshTokens, revocationEvents, revokedSessions, signingKeys, tasks, tokens } from './schema.js'

export type TaskRow = typeof tasks.$inferSelect
export type TokenRow = typeof tokens.$inferSelect
export type AuditRow = typeof auditEvents.$inferInsert
export type AuditEventRow = typeof auditEvents.$inferSelect
export type RevocationEventRow = typeof revocationEvents.$inferSelect
export type NewRevocationEvent = Pick<RevocationEventRow, 'at' | 'kind' | 'relevantUntil'> & Partial<Pick<RevocationEventRow, 'taskId' | 'jti' | 'sid' | 'sub' | 'subjectIssuer' | 'kid'>> & {
  /** The resource URIs of the affected tokens (the task's resources, or the token's `aud`). */
  audiences: readonly string[]
}
export type TaskStatus = TaskRow['status']
export type PolicySetRow = typeof policySets.$inferSelect
export type AuthorizationCodeRow = typeof authorizationCodes.$inferSelect
export type RefreshTokenRow = typeof refreshTokens.$inferSelect
export type CatalogRow = typeof catalogObjects.$inferSelect
export type SigningKeyRow = typeof signingKeys.$inferSelect
/** What a catalog change checks its open tasks against: each open task's workload, user's issuer and resources. */
export type OpenTaskRef = Pick<TaskRow, 'id' | 'workloadId' | 'subjectIssuer' | 'resources' | 'clientId'>

/** `broker_meta` name of the audit chain's anchor: the hash of the last row retention removed. */
const AUDIT_ANCHOR = 'audit_chain_anchor'
/** `broker_meta` name of the catalog's revision: bumped by every change, so other processes notice it. */
const CATALOG_REVISION = 'catalog_revision'
/** `broker_meta` name of the revocation feed's epoch. */
const FEED_EPOCH = 'revocation_feed_epoch'
/**
 * How often the head of the event table is read while anyone is subscribed, so that events
 * written by another process reach this process's subscribers well within a second.
 */
const HEAD_POLL_MS = 250

/**
 * The storage seam: one small store per aggregate. Every method of {@link Stores} returns a
 * promise of what {@link StoreMethods} writes here (one documented shape for both dialects:
 * SQLite prepares every query once and answers at once; PostgreSQL answers over the wire).
 * Statements outside a transaction run one by one; `durably`, `transaction` and `batched` hand
 * their callback the stores of one transaction, which it awaits and uses alone.
 */
export type Stores = StoreTransactions & StoreUpkeep & Aggregates
/** The stores inside one transaction: the same aggregates, no nested transactions. */
export type TxStores = Aggregates

type Aggregates = { [K in keyof StoreMethods]: Asynchronous<StoreMethods[K]> }
/** Each method answers through a promise; `subscribe` registers at once and returns its unsubscribe. */
type Asynchronous<A> = { [M in keyof A]: M extends 'subscribe' ? A[M] : A[M] extends (...args: infer P) => infer R ? (...args: P) => Promise<R> : never }

export interface StoreTransactions {
  /** One write transaction: committed before the promise settles; rolled back if `fn` throws. */
  transaction<T>(fn: (tx: TxStores) => Promise<T>): Promise<T>
  /** {@link transaction}, committed to survive power loss (task and revocation state). */
  durably<T>(fn: (tx: TxStores) => Promise<T>): Promise<T>
  /**
   * Group commit: `fn` runs inside one transaction shared with every other write queued in the
   * same turn of the event loop (each in its own savepoint, so one failure fails only its own
   * caller). The promise settles after the commit. Under load this writes each touched page
   * once per batch instead of once per request. Not power-loss durable: for issuance rows.
   */
  batched<T>(fn: (tx: TxStores) => Promise<T>): Promise<T>
}

/**
 * What another process may change under this one, watched by {@link StoreUpkeep.watch}: the
 * signing keys (a rotation or revocation by the CLI or another instance) and task decisions
 * (an approval decided elsewhere, which a held wait must answer).
 */
export type ChangeTopic = 'keys' | 'tasks'

/** What the broker asks of the database beside the aggregates. */
export interface StoreUpkeep {
  /** Resolves when the database answers a trivial query (readiness). */
  ping(): Promise<void>
  /**
   * A check cheap enough to run on every request: true when another process may have committed
   * a change to `topic` since this check last answered true (then read again; false means
   * nothing to read). Never true for this process's own uncommitted rows.
   * - SQLite: `PRAGMA data_version` moved (any commit by another connection to the file): seen
   *   on the first use after the commit.
   * - PostgreSQL: a `NOTIFY` on the topic's channel arrived (sent by the writing transaction,
   *   delivered at its commit: usually milliseconds), or {@link WATCH_FALLBACK_MS} passed since
   *   the last true: seen within that bound whatever the listening connection does.
   */
  watch(topic: ChangeTopic): () => boolean
  /**
   * Runs the upkeep `job` (pruning) unless another process is running it: then resolves
   * undefined at once. PostgreSQL: a session advisory lock tried, never waited for, so of several
   * instances one prunes at a time. SQLite: always runs (its one writer serialises the statements,
   * and pruning twice deletes nothing twice).
   */
  alone<T>(job: 'prune', fn: () => Promise<T>): Promise<T | undefined>
  /**
   * Moves what the last writes left in the write-ahead log into the database, so that no later
   * commit pays for it: between a backlog's prune batches. SQLite: a passive checkpoint (it waits
   * for no reader or writer), well under a millisecond after one batch; else every few MiB of WAL
   * one commit runs the automatic checkpoint and takes ~10 ms. PostgreSQL: nothing (its
   * checkpointer is a process of its own).
   */
  checkpoint(): Promise<void>
}

/** The longest a PostgreSQL watch goes without answering true (notification or not). */
export const WATCH_FALLBACK_MS = 1000

/** What each aggregate offers, as its synchronous SQLite implementation states it. */
export interface StoreMethods {
  tasks: {
    get(id: string): TaskRow | undefined
    /**
     * The task's row as committed, held against a concurrent change of it until the caller's
     * transaction ends (PostgreSQL: `FOR SHARE`, so an end of the task waits for that commit and
     * an end already under way is waited for and read). SQLite: {@link get}.
     */
    hold(id: string): TaskRow | undefined
    /**
     * The task's row ({@link get}) and whether the session (`subjectIssuer`, `sid`) is revoked
     * ({@link StoreMethods.sessions}`.isRevoked`), in one statement: what a token exchange that
     * names a task reads before deciding on it. The session is answered whether or not the task exists.
     */
    getWithSession(id: string, subjectIssuer: string, sid: string): { task: TaskRow | undefined; sessionRevoked: boolean }
    insert(row: TaskRow): void
    /** Ends a task that is still open; returns false when it was already ended. */
    end(id: string, status: 'completed' | 'revoked', at: number, reason: string): boolean
    /**
     * Approves a task still awaiting approval at `at` (pending, neither it nor its approval request
     * expired): one conditional update, so of two racing decisions only one wins. False otherwise.
     */
    approve(id: string, at: number): boolean
    /** Denies a task still awaiting approval at `at` (same condition as `approve`): it ends `denied`. */
    deny(id: string, at: number, reason: string): boolean
    listByUser(issuer: string, userSub: string, limit: number): TaskRow[]
    /** The sub-tasks of a task that are still open (active or pending). */
    listOpenChildren(id: string): TaskRow[]
    /** How many sub-tasks below the task a user opened (`root`), at any depth, are still open. */
    countOpenInTree(root: string): number
    /** Records a fresher session token for a task (only when it expires later than the one recorded). */
    refreshSession(id: string, startedAt: number, expiresAt: number): void
    /**
     * Counts a token a sub-task below this task minted (a task's `max_tokens` bounds its whole
     * tree), unless the task has minted all it may: then false, and nothing is counted. One
     * conditional update, so two writers racing for the last token cannot both count it.
     */
    countToken(id: string): boolean
    /** Tasks still open (active or pending) that are bound to a session. */
    listOpenBySession(issuer: string, sid: string): TaskRow[]
    /** The distinct workload ids of tasks still open (active or pending), expired or not. */
    openWorkloadIds(): string[]
    /** Every open task (active or pending approval), with what a catalog change checks it against. */
    openRefs(): OpenTaskRef[]
    /** Deletes up to `limit` tasks that expired before `before` (so ended ones too: a task ends no later than it expires). */
    pruneExpiredBefore(before: number, limit: number): number
    /** How many tasks are in each stored status (the metrics' gauge). */
    countByStatus(): { status: TaskStatus; n: number }[]
    /** Admin listing, newest first: by stored status, expiry relative to `now`, workload and user. */
    list(filter: {
      statuses?: TaskStatus[] | undefined
      expiry?: { now: number; expired: boolean } | undefined
      workloadId?: string | undefined
      user?: { issuer: string; sub: string } | undefined
      /** Tasks that declared this resource URI (exactly). */
      resource?: string | undefined
      limit: number
    }): TaskRow[]
  }
  /** Authorization codes (RFC 6749 §4.1.2), by the SHA-256 of the code. */
  authorizationCodes: {
    insert(row: AuthorizationCodeRow): void
    get(codeHash: string): AuthorizationCodeRow | undefined
    /** Marks the code used at `at`, if it was not: false when it had been (a replay). */
    use(codeHash: string, at: number): boolean
    /** How many codes of the task are on record (one consent issues one). */
    countOfTask(taskId: string): number
    /** Deletes up to `limit` codes expired before `before`; returns how many (so do the other prunes). */
    pruneExpired(before: number, limit: number): number
  }
  /** Task-bound refresh tokens, by the SHA-256 of the token. */
  refreshTokens: {
    insert(row: RefreshTokenRow): void
    get(tokenHash: string): RefreshTokenRow | undefined
    /** Marks the token used (rotated) at `at`, if it was not: false when it had been (a reuse). */
    use(tokenHash: string, at: number): boolean
    pruneExpired(before: number, limit: number): number
  }
  tokens: {
    get(jti: string): TokenRow | undefined
    /** Records an issued token and counts it on its task (`tokens_minted`). */
    insert(row: TokenRow): void
    revoke(jti: string, at: number): boolean
    revokeByTask(taskId: string, at: number): number
    maxExpOfTask(taskId: string): number | undefined
    /** The resources tokens of this task were actually issued for (stored rows, so unexpired ones). */
    audiencesOfTask(taskId: string): string[]
    /** Revokes every unexpired active token signed by `kid`; returns how many, and the last `exp` among them. */
    revokeByKid(kid: string, at: number): { revoked: number; lastExp: number | undefined }
    /**
     * Revokes every unexpired active token whose signing key was not recorded (`kid` NULL: issued
     * before the column existed) and returns them, for their feed events.
     */
    revokeWithoutKid(at: number): TokenRow[]
    pruneExpired(before: number, limit: number): number
    /** Every token of a task still on record, oldest first (its evidence). */
    ofTask(taskId: string): TokenRow[]
  }
  audit: {
    /** Appends a row; every text field is cut to a bounded length first (see {@link AUDIT_FIELD_LIMITS}). */
    insert(row: AuditRow): void
    /**
     * Deletes up to `limit` of the oldest rows recorded before `before` (strictly older): the
     * audit retention. Always a prefix of the chain, its last row's hash kept as the anchor.
     */
    pruneBefore(before: number, limit: number): number
    list(opts: { afterId?: number; limit: number }): (typeof auditEvents.$inferSelect)[]
    /** A task's rows, oldest first (its evidence). */
    ofTask(taskId: string): AuditEventRow[]
    /** When retention has pruned the log: the chain's anchor and the time of the oldest row kept (none kept: undefined). */
    retained(): { anchor: string; since: number | undefined } | undefined
    /** Checks the hash chain from its anchor to its head (src/store/audit-chain.ts). */
    verify(): ChainReport
  }
  policySets: {
    /** The admin policies in force: the newest row. */
    latest(): PolicySetRow | undefined
    insert(row: Omit<PolicySetRow, 'id'>): void
  }
  revocations: {
    /** Appends an event; subscribers are told once the surrounding transaction has committed. */
    insert(row: NewRevocationEvent): void
    /** A task's events still on record, in order (its evidence). */
    ofTask(taskId: string): RevocationEventRow[]
    /** Events after the cursor that concern `audience` (a resource URI), in order. */
    list(afterId: number, limit: number, audience: string): RevocationEventRow[]
    /** Every event after the cursor, in order (the feed hub reads each new event once for all its subscribers). */
    listAll(afterId: number, limit: number): RevocationEventRow[]
    /**
     * Calls `listener` whenever events were appended: by this process (deferred past the current
     * transaction), or by another process sharing the database (noticed by a head poll that runs
     * only while someone is subscribed).
     */
    subscribe(listener: () => void): () => void
    pruneBefore(before: number, limit: number): number
    /**
     * The id of the last event ever appended (0 before the first). Pruning never lowers it; only
     * a new database or a restored older copy does — which is how a verifier whose cursor is
     * beyond it knows the feed went back in time.
     */
    head(): number
    /**
     * The feed's epoch: a random value created with the database (in `broker_meta`), so a
     * verifier can tell a new database, whose event ids start again from 1, from the one it
     * has been reading.
     */
    epoch(): string
  }
  replay: {
    /**
     * Records the single-use `key` until `until` (epoch seconds) for every process on the
     * database: `fresh` the first time, `replayed` while a live entry exists (one statement, so
     * two processes racing for one key cannot both see it fresh).
     */
    use(key: string, until: number, now: number): 'fresh' | 'replayed'
    /** Deletes up to `limit` entries expired at `now`; returns how many. */
    pruneExpired(now: number, limit: number): number
  }
  catalog: {
    /** Every stored catalog object, oldest first. */
    all(): CatalogRow[]
    get(kind: string, key: string): CatalogRow | undefined
    /** Inserts or replaces the row of (kind, key). */
    put(row: Omit<CatalogRow, 'id'>): void
    delete(kind: string, key: string): boolean
    /** The revision, bumped by every change ({@link bump}); 0 before the first. */
    revision(): number
    /** Bumps the revision (inside the change's transaction) and returns the new one. */
    bump(): number
  }
  /**
   * The signing keys (src/keys/keyset.ts owns their life cycle). A handful of rows; at most one
   * each in `current`, `next` and `standby` (a unique index: never two current keys).
   */
  signingKeys: {
    /** Every key, oldest first (by creation, then kid). */
    all(): SigningKeyRow[]
    insert(row: SigningKeyRow): void
    /**
     * Whether the key `kid` is on record and not revoked, read in the caller's transaction:
     * PostgreSQL takes a share lock on its row, so a revocation of it waits for that transaction
     * to commit (and its revocation of the key's tokens then sees the caller's token).
     */
    isUsable(kid: string): boolean
    /** Changes one key's row; false when no key has this kid. */
    update(kid: string, patch: Partial<Omit<SigningKeyRow, 'kid'>>): boolean
  }
  /**
   * Locks that order two transactions deciding on the same thing from different instances, each
   * held until the caller's transaction ends: both sides of a race take the same lock inside
   * their write transactions, and the one that takes it second reads what the first committed.
   * PostgreSQL: transaction advisory locks (`pg_advisory_xact_lock`), on a key hashed from the
   * name. SQLite: nothing to do (its one writer already runs write transactions one at a time).
   * Meaningless outside a transaction (there is none to hold them to).
   */
  locks: {
    /** A user's session: its revocation, and every write opening a task bound to it or minting for one. */
    session(subjectIssuer: string, sid: string): void
    /** The sub-tasks of a task a user opened (`root`): each opening below it counts the open ones in turn. */
    tree(root: string): void
    /** One task's one-time issues (its consent's authorization code), and its exchanges when a policy counts its tokens: each is counted and written in turn. */
    task(id: string): void
    /**
     * The catalog: a change (`change`) reads the stored objects, validates the whole and writes
     * under it alone; a write recording a task or a token (`admit`) reads the stored revision
     * under it, shared with the others (they wait only for a change, never for each other).
     */
    catalog(mode: 'change' | 'admit'): void
    /** The admin policies: a change reads the newest stored text, edits it and stores the result under it alone. */
    policies(): void
  }
  sessions: {
    /** Records a revoked session; false when it already was. */
    revoke(subjectIssuer: string, sid: string, at: number, relevantUntil: number): boolean
    isRevoked(subjectIssuer: string, sid: string): boolean
    pruneBefore(before: number, limit: number): number
  }
  /** The one read introspection makes per request (src/tokens/introspect.ts). */
  introspection: {
    /**
     * What decides whether a token is active, from its row: one statement on the primary key,
     * only the columns it needs. Every revocation (the token, its task, its session, its signing
     * key) lands in `status` of this row in the revoking transaction, so reading it per request
     * is what makes "revoked" mean "inactive at the next introspection", whichever process wrote it.
     */
    tokenState(jti: string): TokenState | undefined
  }
}

/** The columns of a token's row introspection decides with. */
export type TokenState = Pick<TokenRow, 'status' | 'exp' | 'aud' | 'kid'>

/**
 * Longest stored length of each audit text field (characters). Reasons quote request values
 * (a resource URI, an untrusted `iss`): cut, they still say what happened, and no request can
 * make a row cost more than a few kilobytes.
 */
export const AUDIT_FIELD_LIMITS = { action: 64, reason: 1024, error: 64, userSub: 512, workloadId: 2048, taskId: 64, jti: 64, resource: 2048, policyVersion: 64, policies: 2048, detail: 256 * 1024 } as const

const AUDIT_LIMITS = Object.entries(AUDIT_FIELD_LIMITS) as [keyof typeof AUDIT_FIELD_LIMITS, number][]

function bound(value: string | null | undefined, max: number): string | null | undefined {
  return typeof value === 'string' && value.length > max ? `${value.slice(0, max - 1)}…` : value
}

/** The row with every text field cut to its {@link AUDIT_FIELD_LIMITS} bound (both stores append through it). */
export function boundAuditFields(row: AuditRow): AuditRow {
  const out = { ...row }
  for (const [field, max] of AUDIT_LIMITS) {
    const v = bound(out[field] as string | null | undefined, max)
    if (v !== undefined) (out as Record<string, unknown>)[field] = v
  }
  return out
}

export function createStores(database: Database_): Stores {
  const { db } = database
  const p = sql.placeholder

  // Derived expiry (see taskState): the task's time has passed, or — still pending — its approval request's has.
  const expiredAt = (now: number) =>
    // coalesce: a NULL must not make the negation NULL (and drop open tasks from both lists).
    or(lte(tasks.expiresAt, now), and(eq(tasks.status, 'pending_approval'), sql`coalesce(${tasks.approvalExpiresAt}, ${tasks.expiresAt}) <= ${now}`))!

  // The statements every token exchange runs are raw (src/store/raw.ts): no per-call drizzle mapping.
  const getTask = rowReader<TaskRow>(database.sqlite, tasks, 'id = ?')
  const getTaskWithSession = flaggedRowReader<TaskRow>(database.sqlite, tasks, 'exists (select 1 from revoked_sessions where subject_issuer = ? and sid = ?)', 'id = ?')
  const insertTask = db.insert(tasks).values({
    id: p('id'), userSub: p('userSub'), subjectIssuer: p('subjectIssuer'), sid: p('sid'), workloadId: p('workloadId'), purpose: p('purpose'),
    resources: p('resources'), status: p('status'), dpopJkt: p('dpopJkt'), createdAt: p('createdAt'), expiresAt: p('expiresAt'), endedAt: p('endedAt'), endReason: p('endReason'),
    tokensMinted: p('tokensMinted'), approvalExpiresAt: p('approvalExpiresAt'), userClaims: p('userClaims'), maxTokens: p('maxTokens'),
    parentTaskId: p('parentTaskId'), depth: p('depth'), rootTaskId: p('rootTaskId'), sessionStartedAt: p('sessionStartedAt'), sessionExpiresAt: p('sessionExpiresAt'), clientId: p('clientId'),
  }).prepare()
  const openInTree = db
    .select({ n: sql<number>`count(*)` })
    .from(tasks)
    .where(and(eq(tasks.rootTaskId, p('root')), sql`${tasks.status} in ('active', 'pending_approval')`))
    .prepare()
  // Only ever forward: an older session token presented later changes nothing.
  const refreshSession = db
    .update(tasks)
    .set({ sessionStartedAt: sql`${p('startedAt')}`, sessionExpiresAt: sql`${p('expiresAt')}` })
    .where(and(eq(tasks.id, p('id')), or(isNull(tasks.sessionExpiresAt), lt(tasks.sessionExpiresAt, p('expiresAt')))))
    .prepare()
  const openChildren = db
    .select()
    .from(tasks)
    .where(and(eq(tasks.parentTaskId, p('id')), sql`${tasks.status} in ('active', 'pending_approval')`))
    .prepare()
  const countMinted = database.sqlite.prepare<[string]>('update tasks set tokens_minted = tokens_minted + 1 where id = ?')
  const countWithinBound = db
    .update(tasks)
    .set({ tokensMinted: sql`${tasks.tokensMinted} + 1` })
    .where(and(eq(tasks.id, p('id')), or(isNull(tasks.maxTokens), lt(tasks.tokensMinted, tasks.maxTokens))))
    .prepare()
  const openBySession = db
    .select()
    .from(tasks)
    .where(and(eq(tasks.subjectIssuer, p('issuer')), eq(tasks.sid, p('sid')), sql`${tasks.status} in ('active', 'pending_approval')`))
    .prepare()
  const endTask = db
    .update(tasks)
    .set({ status: sql`${p('status')}`, endedAt: sql`${p('at')}`, endReason: sql`${p('reason')}` })
    .where(and(eq(tasks.id, p('id')), sql`${tasks.status} in ('active', 'pending_approval')`))
    .prepare()
  // The decision's whole precondition is in the WHERE clause: read-then-write would let two
  // concurrent decisions (or a decision and the request's expiry) both pass the check.
  const stillAwaiting = and(
    eq(tasks.id, p('id')),
    eq(tasks.status, 'pending_approval'),
    gt(tasks.expiresAt, p('at')),
    or(isNull(tasks.approvalExpiresAt), gt(tasks.approvalExpiresAt, p('at'))),
  )
  // approval_expires_at stays set (a task opened before it existed gets the approval time): it is
  // how `context.task.approved` knows the task went through an approval.
  const approveTask = db.update(tasks).set({ status: 'active', approvalExpiresAt: sql`coalesce(${tasks.approvalExpiresAt}, ${p('at')})` }).where(stillAwaiting).prepare()
  const denyTask = db.update(tasks).set({ status: 'denied', endedAt: sql`${p('at')}`, endReason: sql`${p('reason')}` }).where(stillAwaiting).prepare()
  const openWorkloads = db
    .selectDistinct({ workloadId: tasks.workloadId })
    .from(tasks)
    .where(sql`${tasks.status} in ('active', 'pending_approval')`)
    .prepare()
  const openRefs = db
    .select({ id: tasks.id, workloadId: tasks.workloadId, subjectIssuer: tasks.subjectIssuer, resources: tasks.resources, clientId: tasks.clientId })
    .from(tasks)
    .where(sql`${tasks.status} in ('active', 'pending_approval')`)
    .prepare()
  const pruneTasks = database.sqlite.prepare('delete from tasks where rowid in (select rowid from tasks where expires_at < ? limit ?)')
  const tasksByStatus = db.select({ status: tasks.status, n: sql<number>`count(*)` }).from(tasks).groupBy(tasks.status).prepare()
  const allKeys = db.select().from(signingKeys).orderBy(asc(signingKeys.createdAt), asc(signingKeys.kid)).prepare()
  const keyState = database.sqlite.prepare<[string], SigningKeyRow['state']>('select state from signing_keys where kid = ?').pluck()
  const listTasks = db
    .select()
    .from(tasks)
    .where(and(eq(tasks.subjectIssuer, p('issuer')), eq(tasks.userSub, p('userSub'))))
    .orderBy(desc(tasks.createdAt))
    .limit(p('limit'))
    .prepare()

  const insertCode = db.insert(authorizationCodes).values({
    codeHash: p('codeHash'), taskId: p('taskId'), clientId: p('clientId'), redirectUri: p('redirectUri'), codeChallenge: p('codeChallenge'), resource: p('resource'),
    scope: p('scope'), tools: p('tools'), dpopJkt: p('dpopJkt'), refresh: p('refresh'), createdAt: p('createdAt'), expiresAt: p('expiresAt'), usedAt: p('usedAt'),
  }).prepare()
  const getCode = db.select().from(authorizationCodes).where(eq(authorizationCodes.codeHash, p('hash'))).prepare()
  // One conditional update: of two concurrent redemptions only one finds the code unused.
  const useCode = db.update(authorizationCodes).set({ usedAt: sql`${p('at')}` }).where(and(eq(authorizationCodes.codeHash, p('hash')), isNull(authorizationCodes.usedAt))).prepare()
  const codesOfTask = db.select({ n: sql<number>`count(*)` }).from(authorizationCodes).where(eq(authorizationCodes.taskId, p('taskId'))).prepare()
  const pruneCodes = database.sqlite.prepare('delete from authorization_codes where rowid in (select rowid from authorization_codes where expires_at < ? limit ?)')
  const insertRefresh = db.insert(refreshTokens).values({
    tokenHash: p('tokenHash'), taskId: p('taskId'), clientId: p('clientId'), resource: p('resource'), scope: p('scope'), tools: p('tools'), dpopJkt: p('dpopJkt'),
    createdAt: p('createdAt'), expiresAt: p('expiresAt'), usedAt: p('usedAt'),
  }).prepare()
  const getRefresh = db.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, p('hash'))).prepare()
  const useRefresh = db.update(refreshTokens).set({ usedAt: sql`${p('at')}` }).where(and(eq(refreshTokens.tokenHash, p('hash')), isNull(refreshTokens.usedAt))).prepare()
  const pruneRefresh = database.sqlite.prepare('delete from refresh_tokens where rowid in (select rowid from refresh_tokens where expires_at < ? limit ?)')

  const getToken = db.select().from(tokens).where(eq(tokens.jti, p('jti'))).prepare()
  const insertToken = rowInserter<TokenRow>(database.sqlite, tokens)
  const revokeToken = db.update(tokens).set({ status: 'revoked', revokedAt: sql`${p('at')}` }).where(and(eq(tokens.jti, p('jti')), eq(tokens.status, 'active'))).prepare()
  const revokeTaskTokens = db.update(tokens).set({ status: 'revoked', revokedAt: sql`${p('at')}` }).where(and(eq(tokens.taskId, p('taskId')), eq(tokens.status, 'active'))).prepare()
  const maxExp = db.select({ exp: sql<number | null>`max(${tokens.exp})` }).from(tokens).where(eq(tokens.taskId, p('taskId'))).prepare()
  const taskAudiences = db.selectDistinct({ aud: tokens.aud }).from(tokens).where(eq(tokens.taskId, p('taskId'))).prepare()
  // `exp > at` first: expired rows are pruned every few seconds, so the exp index narrows the scan to live tokens.
  const revokeKidTokens = db
    .update(tokens)
    .set({ status: 'revoked', revokedAt: sql`${p('at')}` })
    .where(and(gt(tokens.exp, p('at')), eq(tokens.kid, p('kid')), eq(tokens.status, 'active')))
    .returning({ exp: tokens.exp })
    .prepare()
  const revokeNoKidTokens = db
    .update(tokens)
    .set({ status: 'revoked', revokedAt: sql`${p('at')}` })
    .where(and(gt(tokens.exp, p('at')), isNull(tokens.kid), eq(tokens.status, 'active')))
    .returning()
    .prepare()
  const pruneTokens = database.sqlite.prepare('delete from tokens where rowid in (select rowid from tokens where exp < ? limit ?)')

  const insertAudit = rowInserter<Omit<AuditEventRow, 'id'>>(database.sqlite, auditEvents, ['id'])
  const auditOfTask = db.select().from(auditEvents).where(eq(auditEvents.taskId, p('taskId'))).orderBy(asc(auditEvents.id)).prepare()
  const tokensOfTask = db.select().from(tokens).where(eq(tokens.taskId, p('taskId'))).orderBy(asc(tokens.iat), asc(tokens.jti)).prepare()
  const revocationsOfTask = db.select().from(revocationEvents).where(eq(revocationEvents.taskId, p('taskId'))).orderBy(asc(revocationEvents.id)).prepare()
  const oldestAudit = db.select({ at: auditEvents.at }).from(auditEvents).orderBy(asc(auditEvents.id)).limit(1).prepare()
  // Raw, as every exchange's write reads them (the head once per batch, the catalog's revision once per job).
  const lastAuditHash = database.sqlite.prepare<[], string | null>('select hash from audit_events order by id desc limit 1').pluck()
  const metaValue = database.sqlite.prepare<[string], string>('select value from broker_meta where name = ?').pluck()
  // Among the oldest `limit` rows by id (by count, so gaps in ids do not shorten a batch): the first
  // one to keep, and the last. Only those rows are read: `min(id) where at >= ?` over the whole
  // table walks every prunable row (SQLite's min() optimisation scans by id), so each batch of a
  // large backlog re-read all of it (52 ms a batch at 1M rows).
  const auditPrefixWindow = database.sqlite.prepare<[number, number], { kept: number | null; last: number | null }>(
    'select min(case when at >= ? then id end) as kept, max(id) as last from (select id, at from audit_events order by id limit ?)',
  )
  // The last row at or below an id (an id the chain's own deletions left out has none of its own).
  const auditAtOrBelow = db.select({ hash: auditEvents.hash }).from(auditEvents).where(lte(auditEvents.id, p('id'))).orderBy(desc(auditEvents.id)).limit(1).prepare()
  const pruneAuditThrough = db.delete(auditEvents).where(lte(auditEvents.id, p('id'))).prepare()
  const setMeta = db.insert(brokerMeta).values({ name: p('name'), value: p('value') }).onConflictDoUpdate({ target: brokerMeta.name, set: { value: sql`excluded.value` } }).prepare()
  const getMeta = db.select({ value: brokerMeta.value }).from(brokerMeta).where(eq(brokerMeta.name, p('name'))).prepare()
  // The chain's head as the open write transaction left it (its last append): the transaction
  // holds the write lock, so no other process appends meanwhile, and the next append of it (the
  // next job of a group commit) links to this hash without reading it again. Forgotten when a
  // batched job's savepoint rolls back; valid for its transaction only (its id).
  let head: { transaction: number; hash: string } | undefined
  // Read the head and append in one transaction: another process's append in between fails ours
  // (SQLite refuses to write on a stale snapshot) rather than forking the chain.
  const appendToChain = (row: Required<Omit<AuditRow, 'id' | 'prevHash' | 'hash'>>) => {
    const transaction = database.transactionId()
    const prevHash = transaction !== undefined && head?.transaction === transaction ? head.hash : (lastAuditHash.get() ?? metaValue.get(AUDIT_ANCHOR) ?? null)
    const hash = auditHash(prevHash, row)
    insertAudit({ ...row, prevHash, hash })
    head = transaction === undefined ? undefined : { transaction, hash }
  }
  const appendAlone = database.sqlite.transaction(appendToChain)
  // Inside a caller's transaction (the exchange's batch) no savepoint of its own is needed: that one already holds both.
  const appendAudit = (row: Required<Omit<AuditRow, 'id' | 'prevHash' | 'hash'>>) => (database.sqlite.inTransaction ? appendToChain(row) : appendAlone.immediate(row))
  // Retention removes a prefix of the chain (by id, so a row written with an older clock in the
  // middle never leaves a hole) and keeps the hash of its last row as the chain's anchor.
  const pruneAuditPrefix = database.sqlite.transaction((before: number, limit: number) => {
    // At most `limit` rows of the prefix per call: a backlog goes in several short transactions.
    const window = auditPrefixWindow.get(before, limit)
    if (window === undefined || window.last === null) return 0
    const through = window.kept === null ? window.last : window.kept - 1
    if (through < 1) return 0
    const last = auditAtOrBelow.get({ id: through })
    if (last?.hash) setMeta.run({ name: AUDIT_ANCHOR, value: last.hash })
    return pruneAuditThrough.run({ id: through }).changes
  })
  const latestPolicySet = db.select().from(policySets).orderBy(desc(policySets.id)).limit(1).prepare()
  const insertPolicySet = db.insert(policySets).values({ version: p('version'), text: p('text'), loadedAt: p('loadedAt'), loadedBy: p('loadedBy') }).prepare()
  const listAudit = db.select().from(auditEvents).where(gt(auditEvents.id, p('afterId'))).orderBy(asc(auditEvents.id)).limit(p('limit')).prepare()

  const insertRevocation = db
    .insert(revocationEvents)
    .values({ at: p('at'), kind: p('kind'), taskId: p('taskId'), jti: p('jti'), sid: p('sid'), sub: p('sub'), subjectIssuer: p('subjectIssuer'), kid: p('kid'), relevantUntil: p('relevantUntil'), audiences: p('audiences') })
    .prepare()
  // URIs contain no spaces (RFC 3986), so a space-delimited list can be matched as a whole word.
  const listRevocations = db
    .select()
    .from(revocationEvents)
    .where(and(gt(revocationEvents.id, p('afterId')), sql`instr(' ' || ${revocationEvents.audiences} || ' ', ' ' || ${p('audience')} || ' ') > 0`))
    .orderBy(asc(revocationEvents.id))
    .limit(p('limit'))
    .prepare()
  const listAllRevocations = db.select().from(revocationEvents).where(gt(revocationEvents.id, p('afterId'))).orderBy(asc(revocationEvents.id)).limit(p('limit')).prepare()
  const pruneRevocations = database.sqlite.prepare('delete from revocation_events where id in (select id from revocation_events where relevant_until < ? limit ?)')
  // AUTOINCREMENT keeps the largest id ever used in sqlite_sequence: unlike max(id), pruning cannot lower it.
  const revocationHead = database.sqlite.prepare("select seq from sqlite_sequence where name = 'revocation_events'").pluck()
  const insertEpoch = db.insert(brokerMeta).values({ name: FEED_EPOCH, value: p('value') }).onConflictDoNothing().prepare()
  const getEpoch = db.select({ value: brokerMeta.value }).from(brokerMeta).where(eq(brokerMeta.name, FEED_EPOCH)).prepare()
  let epoch: string | undefined

  const insertSession = db
    .insert(revokedSessions)
    .values({ subjectIssuer: p('issuer'), sid: p('sid'), at: p('at'), relevantUntil: p('relevantUntil') })
    .onConflictDoNothing()
    .prepare()
  const isSessionRevoked = database.sqlite.prepare<[string, string], number>('select 1 from revoked_sessions where subject_issuer = ? and sid = ?').pluck()
  // An expired entry is taken over in place: the upsert only writes when the old one is dead.
  const useReplay = db
    .insert(replayEntries)
    .values({ key: p('key'), until: p('until') })
    .onConflictDoUpdate({ target: replayEntries.key, set: { until: sql`excluded.until` }, setWhere: lte(replayEntries.until, p('now')) })
    .prepare()
  const pruneReplay = database.sqlite.prepare('delete from replay_entries where rowid in (select rowid from replay_entries where until <= ? limit ?)')
  const allCatalog = db.select().from(catalogObjects).orderBy(asc(catalogObjects.id)).prepare()
  const getCatalog = db.select().from(catalogObjects).where(and(eq(catalogObjects.kind, p('kind')), eq(catalogObjects.key, p('key')))).prepare()
  // Replacing keeps the row's id (its place in the order) and creation time.
  const putCatalog = db
    .insert(catalogObjects)
    .values({ kind: p('kind'), key: p('key'), body: p('body'), enabled: p('enabled'), createdAt: p('createdAt'), updatedAt: p('updatedAt'), updatedBy: p('updatedBy') })
    .onConflictDoUpdate({ target: [catalogObjects.kind, catalogObjects.key], set: { body: sql`excluded.body`, enabled: sql`excluded.enabled`, updatedAt: sql`excluded.updated_at`, updatedBy: sql`excluded.updated_by` } })
    .prepare()
  const deleteCatalog = db.delete(catalogObjects).where(and(eq(catalogObjects.kind, p('kind')), eq(catalogObjects.key, p('key')))).prepare()
  const pruneSessions = database.sqlite.prepare('delete from revoked_sessions where rowid in (select rowid from revoked_sessions where relevant_until < ? limit ?)')

  const readHead = () => (revocationHead.get() as number | undefined) ?? 0

  // Subscribers are woken by this process's own inserts at once, and by other processes' inserts
  // (the CLI, another broker instance on the same database) through one shared head poll: a
  // single cheap query per tick however many streams are open, and none when nobody listens.
  const listeners = new Set<() => void>()
  let notifyScheduled = false
  let announcedHead = 0
  let headPoll: NodeJS.Timeout | undefined
  async function announce(always: boolean): Promise<void> {
    let head: number
    try {
      // Through the gate: an open transaction's uncommitted event is no head to announce.
      head = await database.exclusive(readHead)
    } catch {
      // The database is closed (shutdown) or momentarily unreadable: the next tick tries again.
      return
    }
    if (!always && head === announcedHead) return
    announcedHead = head
    for (const l of listeners) l()
  }
  function scheduleNotify() {
    if (notifyScheduled || listeners.size === 0) return
    notifyScheduled = true
    // better-sqlite3 transactions are synchronous: by the next macrotask the writer has committed.
    setImmediate(() => {
      notifyScheduled = false
      void announce(true)
    })
  }

  const methods: StoreMethods = {
    tasks: {
      get: (id) => getTask(id),
      hold: (id) => getTask(id),
      getWithSession: (id, issuer, sid) => {
        const { flag, row } = getTaskWithSession(issuer, sid, id)
        return { task: row, sessionRevoked: flag === 1 }
      },
      insert: (row) => void insertTask.run(row),
      end: (id, status, at, reason) => endTask.run({ id, status, at, reason }).changes === 1,
      approve: (id, at) => approveTask.run({ id, at }).changes === 1,
      deny: (id, at, reason) => denyTask.run({ id, at, reason }).changes === 1,
      listByUser: (issuer, userSub, limit) => listTasks.all({ issuer, userSub, limit }),
      listOpenBySession: (issuer, sid) => openBySession.all({ issuer, sid }),
      listOpenChildren: (id) => openChildren.all({ id }),
      countOpenInTree: (root) => openInTree.get({ root })?.n ?? 0,
      refreshSession: (id, startedAt, expiresAt) => void refreshSession.run({ id, startedAt, expiresAt }),
      countToken: (id) => countWithinBound.run({ id }).changes === 1,
      openWorkloadIds: () => openWorkloads.all().map((r) => r.workloadId),
      openRefs: () => openRefs.all(),
      pruneExpiredBefore: (before, limit) => pruneTasks.run(before, limit).changes,
      countByStatus: () => tasksByStatus.all(),
      list: ({ statuses, expiry, workloadId, user, resource, limit }) =>
        db
          .select()
          .from(tasks)
          .where(
            and(
              statuses ? inArray(tasks.status, statuses) : undefined,
              expiry ? (expiry.expired ? expiredAt(expiry.now) : not(expiredAt(expiry.now))) : undefined,
              workloadId ? eq(tasks.workloadId, workloadId) : undefined,
              user ? and(eq(tasks.subjectIssuer, user.issuer), eq(tasks.userSub, user.sub)) : undefined,
              // `resources` is the declared JSON `[{resource, scopes}]`: compared by equality, never as a pattern.
              resource ? sql`exists (select 1 from json_each(${tasks.resources}) where json_extract(json_each.value, '$.resource') = ${resource})` : undefined,
            ),
          )
          .orderBy(desc(tasks.createdAt), desc(tasks.id))
          .limit(limit)
          .all(),
    },
    authorizationCodes: {
      insert: (row) => void insertCode.run(row),
      get: (hash) => getCode.get({ hash }),
      use: (hash, at) => useCode.run({ hash, at }).changes === 1,
      countOfTask: (taskId) => codesOfTask.get({ taskId })?.n ?? 0,
      pruneExpired: (before, limit) => pruneCodes.run(before, limit).changes,
    },
    refreshTokens: {
      insert: (row) => void insertRefresh.run(row),
      get: (hash) => getRefresh.get({ hash }),
      use: (hash, at) => useRefresh.run({ hash, at }).changes === 1,
      pruneExpired: (before, limit) => pruneRefresh.run(before, limit).changes,
    },
    tokens: {
      get: (jti) => getToken.get({ jti }),
      insert: (row) => {
        insertToken(row)
        countMinted.run(row.taskId)
      },
      revoke: (jti, at) => revokeToken.run({ jti, at }).changes === 1,
      revokeByTask: (taskId, at) => revokeTaskTokens.run({ taskId, at }).changes,
      maxExpOfTask: (taskId) => maxExp.get({ taskId })?.exp ?? undefined,
      audiencesOfTask: (taskId) => taskAudiences.all({ taskId }).map((r) => r.aud),
      revokeByKid: (kid, at) => {
        const rows = revokeKidTokens.all({ kid, at })
        // reduce, not Math.max(...rows): a key may have signed more tokens than fit in an argument list.
        return { revoked: rows.length, lastExp: rows.reduce<number | undefined>((m, r) => (m === undefined || r.exp > m ? r.exp : m), undefined) }
      },
      revokeWithoutKid: (at) => revokeNoKidTokens.all({ at }),
      pruneExpired: (before, limit) => pruneTokens.run(before, limit).changes,
      ofTask: (taskId) => tokensOfTask.all({ taskId }),
    },
    policySets: {
      latest: () => latestPolicySet.get(),
      insert: (row) => void insertPolicySet.run(row),
    },
    audit: {
      insert: (row) => {
        const { prevHash: _p, hash: _h, id: _id, ...content } = boundAuditFields(row)
        appendAudit({ error: null, userSub: null, workloadId: null, taskId: null, jti: null, resource: null, policyVersion: null, policies: null, detail: null, ...content })
      },
      pruneBefore: (before, limit) => pruneAuditPrefix.immediate(before, limit),
      list: ({ afterId = 0, limit }) => listAudit.all({ afterId, limit }),
      ofTask: (taskId) => auditOfTask.all({ taskId }),
      retained: () => {
        const anchor = getMeta.get({ name: AUDIT_ANCHOR })?.value ?? null
        return anchor === null ? undefined : { anchor, since: oldestAudit.get()?.at ?? undefined }
      },
      verify: () => verifyChain(getMeta.get({ name: AUDIT_ANCHOR })?.value ?? null, (afterId, limit) => listAudit.all({ afterId, limit })),
    },
    revocations: {
      insert: (row) => {
        insertRevocation.run({ taskId: null, jti: null, sid: null, sub: null, subjectIssuer: null, kid: null, ...row, audiences: row.audiences.join(' ') })
        scheduleNotify()
      },
      ofTask: (taskId) => revocationsOfTask.all({ taskId }),
      list: (afterId, limit, audience) => listRevocations.all({ afterId, limit, audience }),
      listAll: (afterId, limit) => listAllRevocations.all({ afterId, limit }),
      subscribe: (listener) => {
        listeners.add(listener)
        if (!headPoll) {
          // Through the gate, as every announce: an open transaction's uncommitted event is no head.
          void database.exclusive(readHead).then(
            (head) => void (announcedHead = head),
            () => undefined,
          )
          headPoll = setInterval(() => void announce(false), HEAD_POLL_MS)
          headPoll.unref()
        }
        return () => {
          listeners.delete(listener)
          if (listeners.size === 0 && headPoll) {
            clearInterval(headPoll)
            headPoll = undefined
          }
        }
      },
      pruneBefore: (before, limit) => pruneRevocations.run(before, limit).changes,
      head: readHead,
      epoch: () => {
        if (epoch === undefined) {
          // Created once per database; a concurrent first writer wins and both read its value.
          insertEpoch.run({ value: randomBytes(16).toString('base64url') })
          epoch = getEpoch.get()!.value
        }
        return epoch
      },
    },
    replay: {
      use: (key, until, now) => (useReplay.run({ key, until, now }).changes === 1 ? 'fresh' : 'replayed'),
      pruneExpired: (now, limit) => pruneReplay.run(now, limit).changes,
    },
    catalog: {
      all: () => allCatalog.all(),
      get: (kind, key) => getCatalog.get({ kind, key }),
      put: (row) => void putCatalog.run(row),
      delete: (kind, key) => deleteCatalog.run({ kind, key }).changes === 1,
      revision: () => Number(metaValue.get(CATALOG_REVISION) ?? 0),
      bump: () => {
        const next = Number(metaValue.get(CATALOG_REVISION) ?? 0) + 1
        setMeta.run({ name: CATALOG_REVISION, value: String(next) })
        return next
      },
    },
    signingKeys: {
      all: () => allKeys.all(),
      insert: (row) => void db.insert(signingKeys).values(row).run(),
      isUsable: (kid) => {
        const state = keyState.get(kid)
        return state !== undefined && state !== 'revoked'
      },
      update: (kid, patch) => db.update(signingKeys).set(patch).where(eq(signingKeys.kid, kid)).run().changes === 1,
    },
    // One writer: every write transaction already runs alone.
    locks: {
      session: () => undefined,
      tree: () => undefined,
      task: () => undefined,
      catalog: () => undefined,
      policies: () => undefined,
    },
    sessions: {
      revoke: (issuer, sid, at, relevantUntil) => insertSession.run({ issuer, sid, at, relevantUntil }).changes === 1,
      isRevoked: (issuer, sid) => isSessionRevoked.get(issuer, sid) !== undefined,
      pruneBefore: (before, limit) => pruneSessions.run(before, limit).changes,
    },
    introspection: introspectionMethods(database),
  }

  // Outside a transaction each statement waits for the connection; inside one it runs at once.
  const outside = aggregates(methods, database.exclusive)
  const inside = aggregates(methods, atOnce)

  type Job = { fn: (tx: TxStores) => Promise<unknown>; resolve: (v: unknown) => void; reject: (e: unknown) => void }
  let queue: Job[] = []
  async function runBatch(): Promise<void> {
    const jobs = queue
    queue = []
    const settled: (() => void)[] = []
    try {
      await database.transaction(async () => {
        // Alone in its batch, a job needs no savepoint: its failure rolls back the transaction, which is only its own.
        if (jobs.length === 1) {
          const job = jobs[0]!
          const value = await job.fn(inside)
          settled.push(() => job.resolve(value))
          return
        }
        for (const job of jobs) {
          database.sqlite.exec('SAVEPOINT batched_job')
          try {
            const value = await job.fn(inside)
            database.sqlite.exec('RELEASE batched_job')
            settled.push(() => job.resolve(value))
          } catch (e) {
            // An error that made SQLite roll the whole transaction back (disk full, I/O) fails the batch with it.
            if (!database.sqlite.inTransaction) throw e
            // The job's appends are undone: the head is read again at the next one.
            head = undefined
            database.sqlite.exec('ROLLBACK TO batched_job')
            database.sqlite.exec('RELEASE batched_job')
            settled.push(() => job.reject(e))
          }
        }
      })
    } catch (e) {
      for (const job of jobs) job.reject(e)
      return
    }
    for (const s of settled) s()
  }

  const ping = database.sqlite.prepare('select 1')
  const dataVersion = database.sqlite.prepare('PRAGMA data_version').pluck()
  const checkpoint = database.sqlite.prepare('PRAGMA wal_checkpoint(PASSIVE)')
  return {
    ping: () => database.exclusive(() => void ping.get()),
    alone: (_job, fn) => fn(),
    checkpoint: () => database.exclusive(() => void checkpoint.get()),
    // One counter for every topic: any commit by another connection to the file.
    watch() {
      let seen = dataVersion.get()
      return () => {
        // This process's own transaction is open (between two of its awaits): the connection
        // reads its uncommitted rows, which are nothing to adopt. The next use looks again.
        if (database.sqlite.inTransaction) return false
        const now = dataVersion.get()
        if (now === seen) return false
        seen = now
        return true
      }
    },
    transaction: (fn) => database.transaction(() => fn(inside)),
    durably: (fn) => database.durably(() => fn(inside)),
    batched<T>(fn: (tx: TxStores) => Promise<T>): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        if (queue.length === 0) setImmediate(() => void runBatch())
        queue.push({ fn, resolve: resolve as (v: unknown) => void, reject })
      })
    },
    ...outside,
  }
}

/** Runs a synchronous statement now, as a settled promise. */
function atOnce<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn())
  } catch (e) {
    return Promise.reject(e)
  }
}

/** Each method of each aggregate, run through `gate` (`subscribe` excepted: it only registers). */
function aggregates(methods: StoreMethods, gate: <T>(fn: () => T) => Promise<T>): Aggregates {
  const out: Record<string, Record<string, unknown>> = {}
  for (const [name, aggregate] of Object.entries(methods) as [string, Record<string, (...args: unknown[]) => unknown>][]) {
    out[name] = Object.fromEntries(
      Object.entries(aggregate).map(([method, fn]) => [method, method === 'subscribe' ? fn : (...args: unknown[]) => gate(() => fn(...args))]),
    )
  }
  return out as Aggregates
}

/**
 * {@link StoreMethods.introspection} on SQLite: a raw prepared statement (an array per row, no
 * ORM mapping of the 13 columns), as it runs on every introspection.
 */
function introspectionMethods(database: Database_): StoreMethods['introspection'] {
  const state = database.sqlite.prepare<[string], [TokenState['status'], number, string, string | null]>('select status, exp, aud, kid from tokens where jti = ?').raw()
  return {
    tokenState(jti) {
      const row = state.get(jti)
      return row && { status: row[0], exp: row[1], aud: row[2], kid: row[3] }
    },
  }
}
