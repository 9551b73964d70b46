import { sql } from 'drizzle-orm'
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core'

/** A task: what one agent may do for one user, on which resources, until when. */
export const tasks = sqliteTable(
  'tasks',
  {
    id: text('id').primaryKey(),
    userSub: text('user_sub').notNull(),
    subjectIssuer: text('subject_issuer').notNull(),
    /** Session id from the subject token, when it had one: the task is bound to it. */
    sid: text('sid'),
    workloadId: text('workload_id').notNull(),
    purpose: text('purpose').notNull(),
    /** JSON: `[{resource, scopes[]}]`. */
    resources: text('resources').notNull(),
    /** `denied` (a human refused the approval) is final, like `completed` and `revoked`. TypeScript-only: no CHECK in the database. */
    status: text('status', { enum: ['active', 'pending_approval', 'completed', 'revoked', 'denied'] }).notNull(),
    /** RFC 7638 thumbprint of the DPoP key the task is bound to: every token of it must carry this `cnf.jkt`. */
    dpopJkt: text('dpop_jkt'),
    createdAt: integer('created_at').notNull(),
    expiresAt: integer('expires_at').notNull(),
    endedAt: integer('ended_at'),
    endReason: text('end_reason'),
    /** Tokens minted for the task so far (policies read it as `context.task.tokens_minted`). */
    tokensMinted: integer('tokens_minted').notNull().default(0),
    /** At most this many tokens for the task (its own `max_tokens`, or its resources' `maxTokensPerTask`, the least); null: no bound. */
    maxTokens: integer('max_tokens'),
    /** JSON: the claims of the opening session its subject issuer maps into policy (`policyClaims`), or null. */
    userClaims: text('user_claims'),
    /**
     * Set when the task opened `pending_approval`: when the approval request lapses (the task is then
     * derived `expired`). Kept after the approval, so `approved` can be read from it.
     */
    approvalExpiresAt: integer('approval_expires_at'),
    /** A sub-task's parent: the task whose workload delegated this one (null for a task a user opened). */
    parentTaskId: text('parent_task_id'),
    /** How many delegations from the task the user opened: 0 for it, 1 for its sub-tasks, and so on. */
    depth: integer('depth').notNull().default(0),
    /** A sub-task's root: the task the user opened at the top of its chain (null for that task itself). */
    rootTaskId: text('root_task_id'),
    /**
     * The user's session as the freshest session token seen for this task told it (a task a user
     * opened; null for sub-tasks, which read their root's): when it started (`auth_time`, else
     * `iat`) and when that token expires. A sub-task's policy `session_age` and its tokens'
     * lifetime come from here: it never outlives the session it was delegated under.
     */
    sessionStartedAt: integer('session_started_at'),
    sessionExpiresAt: integer('session_expires_at'),
    /**
     * The OAuth client (its Client ID Metadata Document URL) a task opened by the user's consent
     * is for (docs/any-mcp-client.md); null for tasks agents opened with an attestation.
     */
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
export const tokens = sqliteTable(
  'tokens',
  {
    jti: text('jti').primaryKey(),
    taskId: text('task_id').notNull(),
    sub: text('sub').notNull(),
    workloadId: text('workload_id').notNull(),
    aud: text('aud').notNull(),
    scope: text('scope').notNull(),
    iat: integer('iat').notNull(),
    exp: integer('exp').notNull(),
    status: text('status', { enum: ['active', 'revoked'] }).notNull(),
    revokedAt: integer('revoked_at'),
    cnfJkt: text('cnf_jkt'),
    /** The signing key's `kid`: revoking a compromised key revokes every token it signed. */
    kid: text('kid'),
    /** JSON: the attestation the workload proved itself with for this token (policy reads it at `call_tool`). */
    attestation: text('attestation'),
  },
  (t) => [index('tokens_task_idx').on(t.taskId), index('tokens_exp_idx').on(t.exp)],
)

/**
 * Signing keys; the private half is a JWE encrypted under the key-encryption key. At most one key
 * is in each signing state: two processes starting on an empty store cannot both create a current key.
 */
export const signingKeys = sqliteTable(
  'signing_keys',
  {
  kid: text('kid').primaryKey(),
  alg: text('alg').notNull(),
  publicJwk: text('public_jwk').notNull(),
  privateJwe: text('private_jwe').notNull(),
  /**
   * `current` signs; `next` signs after the next rotation and `standby` after that (both
   * pre-published); `retired` is published until `publish_until`; `revoked` (compromised) never again.
   */
  state: text('state', { enum: ['next', 'current', 'retired', 'standby', 'revoked'] }).notNull(),
  createdAt: integer('created_at').notNull(),
  activatedAt: integer('activated_at'),
  retiredAt: integer('retired_at'),
  /** A retired key stays in the JWKS until this time: its last token's expiry plus skew. */
  publishUntil: integer('publish_until'),
  },
  (t) => [uniqueIndex('signing_keys_one_per_signing_state').on(t.state).where(sql`${t.state} in ('current', 'next', 'standby')`)],
)

/** The audit log: every decision, allow or deny, with its reason. */
export const auditEvents = sqliteTable(
  'audit_events',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    at: integer('at').notNull(),
    action: text('action').notNull(),
    decision: text('decision', { enum: ['allow', 'deny'] }).notNull(),
    reason: text('reason').notNull(),
    error: text('error'),
    userSub: text('user_sub'),
    workloadId: text('workload_id'),
    taskId: text('task_id'),
    jti: text('jti'),
    resource: text('resource'),
    /** For a policy decision: the version of the policy set that decided it, and the deciding policy ids (space-separated). */
    policyVersion: text('policy_version'),
    policies: text('policies'),
    /**
     * JSON details a reason cannot hold, e.g. a catalog change's `{before, after}`. Covered by the
     * row's hash when present (rows without one hash exactly as before it existed).
     */
    detail: text('detail'),
    /**
     * The hash chain (docs/audit-evidence.md): `hash` = SHA-256 of this row's content and
     * `prev_hash`, the previous row's `hash`. Null on rows written before the chain existed.
     */
    prevHash: text('prev_hash'),
    hash: text('hash'),
  },
  (t) => [index('audit_at_idx').on(t.at), index('audit_task_idx').on(t.taskId)],
)

/** Durable, ordered revocation events: what the feed serves to verifiers. */
export const revocationEvents = sqliteTable(
  'revocation_events',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    at: integer('at').notNull(),
    kind: text('kind', { enum: ['token_revoked', 'task_completed', 'task_revoked', 'session_revoked', 'key_revoked'] }).notNull(),
    taskId: text('task_id'),
    jti: text('jti'),
    /** The session id and user of the tokens the event ends; a user is the pair (subject issuer, sub). */
    sid: text('sid'),
    sub: text('sub'),
    subjectIssuer: text('subject_issuer'),
    /** For `key_revoked`: the signing key verifiers must stop trusting at once. */
    kid: text('kid'),
    /** Space-separated resource URIs the affected tokens are for: the feed shows an event only to them. */
    audiences: text('audiences').notNull().default(''),
    /** Until when the event matters: after the last affected token expires it can be pruned. */
    relevantUntil: integer('relevant_until').notNull(),
  },
  (t) => [index('revocation_at_idx').on(t.at), index('revocation_task_idx').on(t.taskId)],
)

/** Sessions ended at the broker (by an admin or the user's IdP): their subject tokens are refused. */
export const revokedSessions = sqliteTable(
  'revoked_sessions',
  {
    subjectIssuer: text('subject_issuer').notNull(),
    sid: text('sid').notNull(),
    at: integer('at').notNull(),
    /** After this, every subject token of the session has expired and the row can be pruned. */
    relevantUntil: integer('relevant_until').notNull(),
  },
  (t) => [primaryKey({ columns: [t.subjectIssuer, t.sid] })],
)

/** Broker-wide facts kept with the data, e.g. the revocation feed's epoch. */
export const brokerMeta = sqliteTable('broker_meta', {
  name: text('name').primaryKey(),
  value: text('value').notNull(),
})

/** Policy sets loaded through the admin API, newest last: the newest is in force (with the file's and the generated ones). */
export const policySets = sqliteTable('policy_sets', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  /** The version id of the whole set in force once this was loaded (what audit rows name). */
  version: text('version').notNull(),
  /** The Cedar text loaded (may be empty: the admin policies were cleared). */
  text: text('text').notNull(),
  loadedAt: integer('loaded_at').notNull(),
  loadedBy: text('loaded_by').notNull(),
})

/**
 * Authorization codes (RFC 6749 §4.1.2): one per consent, redeemed once, minutes long. Only the
 * SHA-256 of the code is stored. A code presented again revokes the task it opened (§4.1.2).
 */
export const authorizationCodes = sqliteTable(
  'authorization_codes',
  {
    codeHash: text('code_hash').primaryKey(),
    /** The task the user's consent opened; the code's token is that task's. */
    taskId: text('task_id').notNull(),
    clientId: text('client_id').notNull(),
    redirectUri: text('redirect_uri').notNull(),
    /** RFC 7636 §4.2 S256 challenge. */
    codeChallenge: text('code_challenge').notNull(),
    resource: text('resource').notNull(),
    scope: text('scope').notNull(),
    /** JSON array of the tools consented to, or null (any tool the task allows). */
    tools: text('tools'),
    /** RFC 9449 §10: the code is redeemed only with a DPoP proof by this key. */
    dpopJkt: text('dpop_jkt'),
    /** Whether the code's client gets a refresh token with it (its workload allows, its metadata asks). */
    refresh: integer('refresh', { mode: 'boolean' }).notNull(),
    createdAt: integer('created_at').notNull(),
    expiresAt: integer('expires_at').notNull(),
    usedAt: integer('used_at'),
  },
  (t) => [index('authorization_codes_task_idx').on(t.taskId), index('authorization_codes_expires_idx').on(t.expiresAt)],
)

/**
 * Task-bound refresh tokens (docs/any-mcp-client.md): rotated at every use, never beyond their
 * task. Only the SHA-256 is stored. A used one presented again revokes the task.
 */
export const refreshTokens = sqliteTable(
  'refresh_tokens',
  {
    tokenHash: text('token_hash').primaryKey(),
    taskId: text('task_id').notNull(),
    clientId: text('client_id').notNull(),
    resource: text('resource').notNull(),
    scope: text('scope').notNull(),
    tools: text('tools'),
    /** RFC 9449 §5: a public client's refresh token is bound to the DPoP key it first used. */
    dpopJkt: text('dpop_jkt'),
    createdAt: integer('created_at').notNull(),
    /** The task's expiry: a refresh token never outlives its task. */
    expiresAt: integer('expires_at').notNull(),
    /** Set when it was exchanged for its successor (rotation). */
    usedAt: integer('used_at'),
  },
  (t) => [index('refresh_tokens_task_idx').on(t.taskId), index('refresh_tokens_expires_idx').on(t.expiresAt)],
)

/**
 * The catalog objects managed through the admin API (docs/admin-api.md): subject issuers, workload
 * issuers, workloads, resources and admin keys, in the configuration file's shape. An object the
 * file defines is the file's; a row for it only switches it off (`body` null, `enabled` false).
 */
export const catalogObjects = sqliteTable(
  'catalog_objects',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    /** `subject-issuers`, `workload-issuers`, `workloads`, `resources` or `admin-keys`. */
    kind: text('kind').notNull(),
    /** The object's key within its kind: an issuer, a workload id, a resource URI, a key name. */
    key: text('key').notNull(),
    /** JSON: the object as the admin gave it; null for an object of the file switched off here. */
    body: text('body'),
    enabled: integer('enabled', { mode: 'boolean' }).notNull(),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    /** Who made the last change (`admin:<key>`). */
    updatedBy: text('updated_by').notNull(),
  },
  (t) => [uniqueIndex('catalog_objects_kind_key').on(t.kind, t.key)],
)

/**
 * Single-use identifiers shared by every process on the database (`replay.shared`): DPoP proof
 * and client-assertion `jti`s (hashed with what scopes them), each kept until its token can no
 * longer be accepted, so a proof used at one broker process is refused at every other.
 */
export const replayEntries = sqliteTable(
  'replay_entries',
  {
    key: text('key').primaryKey(),
    until: integer('until').notNull(),
  },
  (t) => [index('replay_entries_until_idx').on(t.until)],
)
