import { sql } from 'drizzle-orm'
import { bigint, boolean, index, pgTable, primaryKey, text, uniqueIndex } from 'drizzle-orm/pg-core'

/**
 * The PostgreSQL schema: src/store/schema.ts table for table and column for column (same SQL
 * names, same TypeScript names, same nullability, defaults and indexes), so one set of row types
 * serves both dialects. Epoch seconds and ids are `bigint` read as numbers (they stay far below
 * 2^53); autoincrement ids are identity columns. The column documentation lives with the SQLite
 * schema; test/pg-schema.test.ts keeps the two in step.
 */

/** Epoch seconds, or a count: `int8` on the wire, a JavaScript number in rows. */
const seconds = (name: string) => bigint(name, { mode: 'number' })
/** An id that the database assigns in increasing order (SQLite's `AUTOINCREMENT`). */
const serialId = (name: string) => bigint(name, { mode: 'number' }).primaryKey().generatedByDefaultAsIdentity()

/** A task: what one agent may do for one user, on which resources, until when. */
export const tasks = pgTable(
  'tasks',
  {
    id: text('id').primaryKey(),
    userSub: text('user_sub').notNull(),
    subjectIssuer: text('subject_issuer').notNull(),
    sid: text('sid'),
    workloadId: text('workload_id').notNull(),
    purpose: text('purpose').notNull(),
    resources: text('resources').notNull(),
    status: text('status', { enum: ['active', 'pending_approval', 'completed', 'revoked', 'denied'] }).notNull(),
    dpopJkt: text('dpop_jkt'),
    createdAt: seconds('created_at').notNull(),
    expiresAt: seconds('expires_at').notNull(),
    endedAt: seconds('ended_at'),
    endReason: text('end_reason'),
    tokensMinted: seconds('tokens_minted').notNull().default(0),
    maxTokens: seconds('max_tokens'),
    userClaims: text('user_claims'),
    approvalExpiresAt: seconds('approval_expires_at'),
    parentTaskId: text('parent_task_id'),
    depth: seconds('depth').notNull().default(0),
    rootTaskId: text('root_task_id'),
    sessionStartedAt: seconds('session_started_at'),
    sessionExpiresAt: seconds('session_expires_at'),
    clientId: text('client_id'),
  },
  (t) => [
    index('tasks_user_idx').on(t.userSub, t.createdAt),
    index('tasks_workload_idx').on(t.workloadId),
    index('tasks_expires_idx').on(t.expiresAt),
    index('tasks_parent_idx').on(t.parentTaskId),
    index('tasks_root_idx').on(t.rootTaskId),
  ],
)

/** Every token issued: the record that makes revocation and introspection possible. */
export const tokens = pgTable(
  'tokens',
  {
    jti: text('jti').primaryKey(),
    taskId: text('task_id').notNull(),
    sub: text('sub').notNull(),
    workloadId: text('workload_id').notNull(),
    aud: text('aud').notNull(),
    scope: text('scope').notNull(),
    iat: seconds('iat').notNull(),
    exp: seconds('exp').notNull(),
    status: text('status', { enum: ['active', 'revoked'] }).notNull(),
    revokedAt: seconds('revoked_at'),
    cnfJkt: text('cnf_jkt'),
    kid: text('kid'),
    attestation: text('attestation'),
  },
  (t) => [index('tokens_task_idx').on(t.taskId), index('tokens_exp_idx').on(t.exp)],
)

/** Signing keys; at most one key is in each signing state (a partial unique index). */
export const signingKeys = pgTable(
  'signing_keys',
  {
    kid: text('kid').primaryKey(),
    alg: text('alg').notNull(),
    publicJwk: text('public_jwk').notNull(),
    privateJwe: text('private_jwe').notNull(),
    state: text('state', { enum: ['next', 'current', 'retired', 'standby', 'revoked'] }).notNull(),
    createdAt: seconds('created_at').notNull(),
    activatedAt: seconds('activated_at'),
    retiredAt: seconds('retired_at'),
    publishUntil: seconds('publish_until'),
  },
  (t) => [uniqueIndex('signing_keys_one_per_signing_state').on(t.state).where(sql`${t.state} in ('current', 'next', 'standby')`)],
)

/** The audit log: every decision, allow or deny, with its reason, hash-chained. */
export const auditEvents = pgTable(
  'audit_events',
  {
    id: serialId('id'),
    at: seconds('at').notNull(),
    action: text('action').notNull(),
    decision: text('decision', { enum: ['allow', 'deny'] }).notNull(),
    reason: text('reason').notNull(),
    error: text('error'),
    userSub: text('user_sub'),
    workloadId: text('workload_id'),
    taskId: text('task_id'),
    jti: text('jti'),
    resource: text('resource'),
    policyVersion: text('policy_version'),
    policies: text('policies'),
    detail: text('detail'),
    prevHash: text('prev_hash'),
    hash: text('hash'),
  },
  (t) => [index('audit_at_idx').on(t.at), index('audit_task_idx').on(t.taskId)],
)

/** Durable, ordered revocation events: what the feed serves to verifiers. */
export const revocationEvents = pgTable(
  'revocation_events',
  {
    id: serialId('id'),
    at: seconds('at').notNull(),
    kind: text('kind', { enum: ['token_revoked', 'task_completed', 'task_revoked', 'session_revoked', 'key_revoked'] }).notNull(),
    taskId: text('task_id'),
    jti: text('jti'),
    sid: text('sid'),
    sub: text('sub'),
    subjectIssuer: text('subject_issuer'),
    kid: text('kid'),
    audiences: text('audiences').notNull().default(''),
    relevantUntil: seconds('relevant_until').notNull(),
  },
  (t) => [index('revocation_at_idx').on(t.at), index('revocation_task_idx').on(t.taskId)],
)

/** Sessions ended at the broker (by an admin or the user's IdP): their subject tokens are refused. */
export const revokedSessions = pgTable(
  'revoked_sessions',
  {
    subjectIssuer: text('subject_issuer').notNull(),
    sid: text('sid').notNull(),
    at: seconds('at').notNull(),
    relevantUntil: seconds('relevant_until').notNull(),
  },
  (t) => [primaryKey({ columns: [t.subjectIssuer, t.sid] })],
)

/** Broker-wide facts kept with the data, e.g. the revocation feed's epoch. */
export const brokerMeta = pgTable('broker_meta', {
  name: text('name').primaryKey(),
  value: text('value').notNull(),
})

/** Policy sets loaded through the admin API, newest last. */
export const policySets = pgTable('policy_sets', {
  id: serialId('id'),
  version: text('version').notNull(),
  text: text('text').notNull(),
  loadedAt: seconds('loaded_at').notNull(),
  loadedBy: text('loaded_by').notNull(),
})

/** Authorization codes (RFC 6749 §4.1.2), by the SHA-256 of the code. */
export const authorizationCodes = pgTable(
  'authorization_codes',
  {
    codeHash: text('code_hash').primaryKey(),
    taskId: text('task_id').notNull(),
    clientId: text('client_id').notNull(),
    redirectUri: text('redirect_uri').notNull(),
    codeChallenge: text('code_challenge').notNull(),
    resource: text('resource').notNull(),
    scope: text('scope').notNull(),
    tools: text('tools'),
    dpopJkt: text('dpop_jkt'),
    refresh: boolean('refresh').notNull(),
    createdAt: seconds('created_at').notNull(),
    expiresAt: seconds('expires_at').notNull(),
    usedAt: seconds('used_at'),
  },
  (t) => [index('authorization_codes_task_idx').on(t.taskId), index('authorization_codes_expires_idx').on(t.expiresAt)],
)

/** Task-bound refresh tokens, by the SHA-256 of the token. */
export const refreshTokens = pgTable(
  'refresh_tokens',
  {
    tokenHash: text('token_hash').primaryKey(),
    taskId: text('task_id').notNull(),
    clientId: text('client_id').notNull(),
    resource: text('resource').notNull(),
    scope: text('scope').notNull(),
    tools: text('tools'),
    dpopJkt: text('dpop_jkt'),
    createdAt: seconds('created_at').notNull(),
    expiresAt: seconds('expires_at').notNull(),
    usedAt: seconds('used_at'),
  },
  (t) => [index('refresh_tokens_task_idx').on(t.taskId), index('refresh_tokens_expires_idx').on(t.expiresAt)],
)

/** The catalog objects managed through the admin API (docs/admin-api.md). */
export const catalogObjects = pgTable(
  'catalog_objects',
  {
    id: serialId('id'),
    kind: text('kind').notNull(),
    key: text('key').notNull(),
    body: text('body'),
    enabled: boolean('enabled').notNull(),
    createdAt: seconds('created_at').notNull(),
    updatedAt: seconds('updated_at').notNull(),
    updatedBy: text('updated_by').notNull(),
  },
  (t) => [uniqueIndex('catalog_objects_kind_key').on(t.kind, t.key)],
)

/** Single-use identifiers shared by every process on the database (`replay.shared`). */
export const replayEntries = pgTable(
  'replay_entries',
  {
    key: text('key').primaryKey(),
    until: seconds('until').notNull(),
  },
  (t) => [index('replay_entries_until_idx').on(t.until)],
)
