/**
 * Test harness: a fresh broker per test (its own :memory: database with the real migrations,
 * real keys minted here, a fixed clock), driven over HTTP through `app.request()` or a real
 * 127.0.0.1 port. No module of ours is mocked.
 *
 * `TASKPASS_TEST_DATABASE=postgres` runs the same tests on PostgreSQL (`npm run test:pg`): each
 * broker gets a database of its own on the `TASKPASS_TEST_POSTGRES` cluster, copied from a
 * migrated template and dropped when the broker closes. A test that is about SQLite itself says
 * so with {@link sqliteOnly}.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer, type AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import pg from 'pg'
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose'
import { createApp, type App } from '../src/app.js'
import { argon2Hasher, createBroker, onServerStart, type Deps } from '../src/broker.js'
import { createFixedClock, type Clock, type FixedClock } from '../src/clock.js'
import { parseConfig, type ConfigInput } from '../src/config.js'
import type { Logger } from '../src/logger.js'
import type { ClientMetadataResolver } from '../src/clients/metadata-document.js'
import { migratedPgDatabase, testPostgres } from './pg-fixtures.js'

/** The dialect the brokers of this run store on: `TASKPASS_TEST_DATABASE` (`sqlite`, the default, or `postgres`). */
export const testDialect: 'sqlite' | 'postgres' = (() => {
  const name = process.env.TASKPASS_TEST_DATABASE || 'sqlite'
  if (name !== 'sqlite' && name !== 'postgres') throw new Error(`TASKPASS_TEST_DATABASE must be sqlite or postgres, not ${JSON.stringify(name)}`)
  if (name === 'postgres' && !testPostgres) throw new Error('TASKPASS_TEST_DATABASE=postgres needs TASKPASS_TEST_POSTGRES (scripts/pg-cluster.sh start <dir> prints it)')
  return name
})()

/**
 * The `skip` option of a test about SQLite itself (its file, its pragmas, better-sqlite3): on the
 * PostgreSQL run, skipped with `why`; on SQLite, run.
 */
export function sqliteOnly(why: string): string | false {
  return testDialect === 'postgres' ? `SQLite only: ${why}` : false
}

/** The `skip` option of a test the PostgreSQL store fails today: skipped there naming `bug`, run on SQLite. */
export function postgresBug(bug: string): string | false {
  return testDialect === 'postgres' ? `PostgreSQL store bug: ${bug}` : false
}

export const T0 = 1_800_000_000
export const ISSUER = 'http://127.0.0.1:8787'
export const USER_ISSUER = 'https://idp.test.example'
export const TRUST_DOMAIN = 'test.example'
export const NOTES = 'https://notes.test.example/mcp'
export const CALENDAR = 'https://calendar.test.example/mcp'
export const UNGRANTED = 'https://ungranted.test.example/mcp'
export const NOTES_SECRET = 'notes-secret-0123456789'
export const CALENDAR_SECRET = 'calendar-secret-0123456789'
export const ADMIN_KEY = 'tpa_test-admin-key'

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt'
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'

export interface SigningKey {
  kid: string
  privateKey: CryptoKey
  publicJwk: JWK
}

async function signingKey(kid: string, alg = 'ES256'): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg } }
}

/** Keys shared by a test file: generating them is the slow part, the broker itself is fresh per test. */
export interface Keys {
  user: SigningKey
  untrustedUser: SigningKey
  spiffe: SigningKey
  otherDomain: SigningKey
  hashes: { notes: string; calendar: string; admin: string }
}

let keysPromise: Promise<Keys> | undefined
export function testKeys(): Promise<Keys> {
  keysPromise ??= (async () => ({
    user: await signingKey('user-key-1'),
    untrustedUser: await signingKey('user-key-1'),
    spiffe: await signingKey('svid-key-1'),
    otherDomain: await signingKey('svid-key-9'),
    hashes: {
      notes: await argon2Hasher.hash(NOTES_SECRET),
      calendar: await argon2Hasher.hash(CALENDAR_SECRET),
      admin: await argon2Hasher.hash(ADMIN_KEY),
    },
  }))()
  return keysPromise
}

export function spiffeId(name: string, td = TRUST_DOMAIN): string {
  return `spiffe://${td}/agent/${name}`
}

export function testConfig(keys: Keys, issuer = ISSUER): ConfigInput {
  return {
    issuer,
    database: ':memory:',
    keys: { kek: randomBytes(32).toString('base64url') },
    subjectIssuers: [{ issuer: USER_ISSUER, jwks: { keys: [keys.user.publicJwk as Record<string, unknown>] }, algorithms: ['ES256'] }],
    workloadIssuers: [
      { kind: 'spiffe', trustDomain: TRUST_DOMAIN, jwks: { keys: [{ ...keys.spiffe.publicJwk, use: 'jwt-svid' }] } },
    ],
    workloads: [
      {
        id: 'agent-a',
        attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('a') },
        grants: [
          { resource: NOTES, scopes: ['notes:read', 'notes:write'] },
          { resource: CALENDAR, scopes: ['cal:read'] },
        ],
      },
      { id: 'agent-b', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('b') }, grants: [{ resource: NOTES, scopes: ['notes:read'] }] },
      { id: 'agent-off', attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: spiffeId('off') }, grants: [{ resource: NOTES, scopes: ['notes:read'] }], enabled: false },
    ],
    resources: [
      { uri: NOTES, scopes: ['notes:read', 'notes:write', 'notes:delete'], credential: { clientId: 'notes-mcp', secretHash: keys.hashes.notes } },
      { uri: CALENDAR, scopes: ['cal:read'], credential: { clientId: 'calendar-mcp', secretHash: keys.hashes.calendar } },
      { uri: UNGRANTED, scopes: ['x:read'] },
    ],
    admin: { apiKeyHashes: [keys.hashes.admin] },
  }
}

export interface TestBroker {
  app: App
  deps: Deps
  clock: FixedClock
  keys: Keys
  /** Mints a user session token; `claims` override the defaults (`null` removes a claim). */
  session(claims?: Partial<Record<string, unknown>>, opts?: { key?: SigningKey; alg?: string; header?: Record<string, unknown> }): Promise<string>
  /** Mints a JWT-SVID for `spiffe://test.example/agent/<name>`. */
  svid(name?: string, claims?: Partial<Record<string, unknown>>, opts?: { key?: SigningKey; header?: Record<string, unknown> }): Promise<string>
  post(path: string, body: Record<string, string | string[]> | string, headers?: Record<string, string>): Promise<Response>
  exchange(params?: Record<string, string | string[] | undefined>): Promise<Response>
  count(table: 'tokens' | 'tasks' | 'audit_events' | 'revocation_events'): Promise<number>
  lastAudit(): Promise<Record<string, unknown> | undefined>
  /**
   * A statement on the broker's own database, whichever dialect it runs on: `?` placeholders,
   * rows as SQLite gives them (a PostgreSQL bigint as a number, a boolean as 1 or 0); none for a
   * statement that returns no rows.
   */
  rawQuery<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>
  /** What the broker logged, oldest first (the last 200 entries). */
  logs: LogEntry[]
  /** Closes the broker's database (on PostgreSQL, and drops it). */
  close(): Promise<void>
}

export async function mint(key: SigningKey, claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
  const clean = Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== null && v !== undefined))
  return new SignJWT(clean).setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT', ...header }).sign(key.privateKey)
}

export function form(body: Record<string, string | string[] | undefined>): string {
  const p = new URLSearchParams()
  for (const [k, v] of Object.entries(body)) {
    if (v === undefined) continue
    for (const one of Array.isArray(v) ? v : [v]) p.append(k, one)
  }
  return p.toString()
}

export interface LogEntry {
  level: 'info' | 'warn' | 'error'
  msg: string
  fields: Record<string, unknown>
}

/**
 * A logger that keeps what it is told, so tests can read the private reasons of unaudited refusals.
 * Access lines (`request`, one per request) go to `access` when given, else nowhere: `into` holds
 * what the broker chose to say, so its last entry is the last thing said about a request.
 */
export function recordingLogger(into: LogEntry[], access?: LogEntry[]): Logger {
  const log = (level: LogEntry['level']) => (msg: string, fields: Record<string, unknown> = {}) => {
    if (msg === 'request') {
      access?.push({ level, msg, fields })
      if (access && access.length > 200) access.shift()
      return
    }
    into.push({ level, msg, fields })
    if (into.length > 200) into.shift()
  }
  return { info: log('info'), warn: log('warn'), error: log('error') }
}

export async function createTestBroker(opts: { clock?: Clock & Partial<FixedClock>; issuer?: string; config?: (c: ConfigInput) => ConfigInput; logger?: Logger; clientMetadata?: ClientMetadataResolver } = {}): Promise<TestBroker> {
  const keys = await testKeys()
  const clock = (opts.clock ?? createFixedClock(T0)) as FixedClock
  const input = (opts.config ?? ((c) => c))(testConfig(keys, opts.issuer))
  // On the PostgreSQL run, a broker on the default in-memory database gets a database of its own.
  const pgDatabase = testDialect === 'postgres' && input.database === ':memory:' ? await migratedPgDatabase() : undefined
  if (pgDatabase) input.database = pgDatabase.url
  const config = parseConfig(input)
  const logs: LogEntry[] = []
  const deps = await createBroker({ config, clock, logger: opts.logger ?? recordingLogger(logs), kek: Buffer.from(config.keys.kek!, 'base64url'), ...(opts.clientMetadata ? { clientMetadata: opts.clientMetadata } : {}) })
  // As the server does at start (src/main.ts).
  await onServerStart(deps)
  const app = createApp(deps)
  const issuer = config.issuer
  let closing: Promise<void> | undefined

  const broker: TestBroker = {
    app,
    deps,
    clock,
    keys,
    session(claims = {}, o = {}) {
      const now = clock.now()
      return mint(o.key ?? keys.user, { iss: USER_ISSUER, sub: 'alice', sid: 'sess-1', aud: issuer, iat: now, exp: now + 3600, ...claims } as JWTPayload, o.header)
    },
    svid(name = 'a', claims = {}, o = {}) {
      const now = clock.now()
      return mint(o.key ?? keys.spiffe, { sub: spiffeId(name), aud: issuer, iat: now, exp: now + 300, ...claims } as JWTPayload, o.header)
    },
    post(path, body, headers = {}) {
      return Promise.resolve(
        app.request(path, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
          body: typeof body === 'string' ? body : form(body),
        }),
      )
    },
    async exchange(params = {}) {
      return broker.post('/token', (await exchangeParams(broker, params)) as Record<string, string | string[]>)
    },
    async count(table) {
      return (await broker.rawQuery<{ n: number }>(`select count(*) as n from ${table}`))[0]!.n
    },
    async lastAudit() {
      return (await broker.rawQuery('select * from audit_events order by id desc limit 1'))[0]
    },
    rawQuery<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
      return rawQuery<T>(deps, sql, params)
    },
    logs,
    close() {
      // Once, however often a test and its hooks call it.
      closing ??= (async () => {
        await deps.database.close()
        await pgDatabase?.drop()
      })()
      return closing
    },
  }
  return broker
}

/**
 * The `database` setting of a broker a test builds itself (with createBroker): the in-memory
 * SQLite database, or on the PostgreSQL run a database of its own; `drop()` once it is closed.
 */
export async function testDatabase(): Promise<{ location: string; drop(): Promise<void> }> {
  if (testDialect === 'sqlite') return { location: ':memory:', drop: async () => {} }
  const { url, drop } = await migratedPgDatabase()
  return { location: url, drop }
}

/** {@link TestBroker.rawQuery} on a broker a test built itself: one statement, `?` placeholders. */
export async function rawQuery<T = Record<string, unknown>>(deps: Deps, sql: string, params: readonly unknown[] = []): Promise<T[]> {
  if (deps.database.dialect === 'postgres') {
    const result = await deps.database.pool.query({ text: numberedPlaceholders(sql), values: [...params], types: { getTypeParser: sqliteLikeParser } })
    return result.rows as T[]
  }
  const statement = deps.database.sqlite.prepare(sql)
  if (statement.reader) return statement.all(...params) as T[]
  statement.run(...params)
  return []
}

/** `?` placeholders (outside quotes) as PostgreSQL's `$1`, `$2`, … */
function numberedPlaceholders(sql: string): string {
  let n = 0
  return sql.replace(/'(?:[^']|'')*'|"(?:[^"])*"|\?/g, (m) => (m === '?' ? `$${++n}` : m))
}

/** Values as SQLite answers them: an int8 or numeric as a number, a boolean as 1 or 0. */
const sqliteLikeParser = ((oid: number, format?: string) => {
  if (oid === pg.types.builtins.INT8 || oid === pg.types.builtins.NUMERIC) return (v: string) => Number(v)
  if (oid === pg.types.builtins.BOOL) return (v: string) => (v === 't' ? 1 : 0)
  return pg.types.getTypeParser(oid, format as 'text')
}) as pg.CustomTypesConfig['getTypeParser']

/** The rows a refused request must not add to. */
export interface Counts {
  tokens: number
  tasks: number
  audit_events: number
  revocation_events: number
}

export async function counts(b: TestBroker): Promise<Counts> {
  return { tokens: await b.count('tokens'), tasks: await b.count('tasks'), audit_events: await b.count('audit_events'), revocation_events: await b.count('revocation_events') }
}

/**
 * What every refused request must leave behind: no token, task or revocation row, and exactly
 * one audit row — a deny by `action` with this `error` whose private reason matches `reason`
 * (so a row cannot pass because some other check happened to fire). Returns that audit row.
 */
export async function assertRefusedAndAudited(b: TestBroker, before: Counts, expect: { error: string; reason: RegExp; action?: string }): Promise<Record<string, unknown>> {
  const after = await counts(b)
  assert.equal(after.tokens, before.tokens, 'no token row')
  assert.equal(after.tasks, before.tasks, 'no task row')
  assert.equal(after.revocation_events, before.revocation_events, 'no revocation event')
  assert.equal(after.audit_events, before.audit_events + 1, 'one audit row')
  const audit = (await b.lastAudit())!
  assert.equal(audit.action, expect.action ?? 'token.exchange')
  assert.equal(audit.decision, 'deny')
  assert.equal(audit.error, expect.error)
  assert.match(String(audit.reason), expect.reason)
  return audit
}

/**
 * What a token request refused before its caller was authenticated must leave behind: no row at
 * all (not even an audit row: unauthenticated traffic never grows the database), one count in
 * `taskpass_unauthenticated_refusals_total`, and the private reason in the log (or, for
 * invalid_client, in the error handler's warning). Returns the log entry.
 */
export async function assertRefusedUnauthenticated(b: TestBroker, before: Counts, expect: { error: string; reason: RegExp }): Promise<LogEntry> {
  assert.deepEqual(await counts(b), before, 'refused before authentication: nothing written, not even an audit row')
  const metrics = await b.deps.metrics.registry.getSingleMetricAsString('taskpass_unauthenticated_refusals_total')
  assert.match(metrics, new RegExp(`error="${expect.error}"[^\n]*\} [1-9]`), 'counted as an unauthenticated refusal')
  const entry = [...b.logs].reverse().find((l) => /refused/.test(l.msg))
  assert.ok(entry, 'the refusal is logged')
  assert.equal(entry.fields.error ?? entry.fields.code, expect.error)
  assert.match(String(entry.fields.detail), expect.reason)
  return entry
}

/** Runs `fn` on a fresh broker (options, or just a config transform) and closes it. */
export async function withBroker<T>(opts: Parameters<typeof createTestBroker>[0] | ((c: ConfigInput) => ConfigInput) | undefined, fn: (b: TestBroker) => Promise<T>): Promise<T> {
  const b = await createTestBroker(typeof opts === 'function' ? { config: opts } : opts)
  try {
    return await fn(b)
  } finally {
    await b.close()
  }
}

/** A valid token-exchange form (fresh subject and actor tokens for alice and agent-a), with overrides. */
export async function exchangeParams(b: TestBroker, params: Record<string, string | string[] | undefined> = {}): Promise<Record<string, string | string[] | undefined>> {
  return {
    grant_type: TOKEN_EXCHANGE,
    subject_token: await b.session(),
    subject_token_type: JWT_TYPE,
    actor_token: await b.svid('a'),
    actor_token_type: JWT_TYPE,
    resource: NOTES,
    scope: 'notes:read',
    ...params,
  }
}

/** Opens a task over HTTP and returns its id. */
export async function openTask(b: TestBroker, body: unknown, opts: { session?: string; svid?: string } = {}): Promise<Response> {
  return b.app.request('/tasks', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${opts.session ?? (await b.session())}`,
      'actor-token': opts.svid ?? (await b.svid('a')),
    },
    body: JSON.stringify(body),
  })
}

/**
 * A broker on a real 127.0.0.1 port, with `issuer` equal to its URL (RFC 8414 discovery
 * requires it). Uses the system clock unless given one: third-party verifiers read real time.
 */
export async function startTestServer(opts: { clock?: Clock; config?: (c: ConfigInput) => ConfigInput; clientMetadata?: ClientMetadataResolver } = {}): Promise<TestBroker & { url: string; stop(): Promise<void> }> {
  let handler: ((r: Request, env: unknown) => Response | Promise<Response>) | undefined
  // The node-server env (the socket) is passed on: the app reads the peer address from it.
  const server = serve({ fetch: (r: Request, env: unknown) => handler!(r, env), hostname: '127.0.0.1', port: 0 })
  await new Promise<void>((resolve) => server.once('listening', () => resolve()))
  const { port } = server.address() as AddressInfo
  const url = `http://127.0.0.1:${port}`
  const broker = await createTestBroker({ clock: opts.clock ?? systemClockForTests(), issuer: url, ...(opts.config ? { config: opts.config } : {}), ...(opts.clientMetadata ? { clientMetadata: opts.clientMetadata } : {}) })
  handler = (r, env) => broker.app.fetch(r, env)
  return {
    ...broker,
    url,
    stop: () =>
      Promise.all([new Promise<void>((resolve) => server.close(() => resolve())), broker.close()]).then(() => undefined),
  }
}

/** The real clock, with the FixedClock methods a TestBroker type expects (unused on it). */
function systemClockForTests(): FixedClock {
  return {
    now: () => Math.floor(Date.now() / 1000),
    nowMs: () => Date.now(),
    set() { throw new Error('system clock cannot be set') },
    advance() { throw new Error('system clock cannot be advanced') },
  }
}

// ── Kubernetes and GitHub Actions attestations (token shapes as in test/attestation.test.ts) ──

export const K8S_ISSUER = 'https://oidc.eks.eu-west-1.amazonaws.com/id/6A1F0C3E9B2D4E5F8A7B6C5D4E3F2A1B'
export const GH_ISSUER = 'https://token.actions.githubusercontent.com'

/** The signing keys of a Kubernetes cluster's service-account issuer and of GitHub Actions (both RS256, as deployed). */
export interface PlatformKeys {
  k8s: SigningKey
  github: SigningKey
}

let platformKeysPromise: Promise<PlatformKeys> | undefined
export function platformKeys(): Promise<PlatformKeys> {
  platformKeysPromise ??= (async () => ({ k8s: await signingKey('k8s-sa-key-1', 'RS256'), github: await signingKey('cc413527-173f-5a05-976e-9c52b1d7b431', 'RS256') }))()
  return platformKeysPromise
}

/** The workload issuers that trust {@link platformKeys}: the cluster at {@link K8S_ISSUER} and GitHub Actions. */
export function platformIssuers(keys: PlatformKeys): NonNullable<ConfigInput['workloadIssuers']> {
  return [
    { kind: 'kubernetes', issuer: K8S_ISSUER, jwks: { keys: [keys.k8s.publicJwk as Record<string, unknown>] } },
    { kind: 'github', jwks: { keys: [keys.github.publicJwk as Record<string, unknown>] } },
  ]
}

/** A projected service-account token as kubelet mounts it, audience the broker, bound to a pod of `serviceAccount`; issued by the cluster at {@link K8S_ISSUER} unless `issuer` names another. */
export function k8sToken(b: TestBroker, keys: PlatformKeys, who: { namespace: string; serviceAccount: string; issuer?: string | undefined }): Promise<string> {
  const now = b.clock.now()
  return mint(
    keys.k8s,
    {
      aud: [b.deps.config.issuer],
      exp: now + 3600,
      iat: now,
      nbf: now,
      iss: who.issuer ?? K8S_ISSUER,
      jti: randomBytes(16).toString('hex'),
      'kubernetes.io': {
        namespace: who.namespace,
        node: { name: 'ip-10-0-12-34.eu-west-1.compute.internal', uid: '5e0e4ab2-8d3e-4d6b-a3c6-1d2c3b4a5f60' },
        pod: { name: `${who.serviceAccount}-7c9f8d6b5-x2x9q`, uid: 'd1a6e3f0-2b4c-4e8a-9f7d-6c5b4a3e2d10' },
        serviceaccount: { name: who.serviceAccount, uid: '0f9e8d7c-6b5a-4f3e-8d2c-1b0a9f8e7d6c' },
      },
      sub: `system:serviceaccount:${who.namespace}:${who.serviceAccount}`,
    },
    { alg: 'RS256' },
  )
}

/** What a GitHub Actions job is: its repository (name and immutable id), the ref it runs on, its environment (none: a job without one). */
export interface GithubJob {
  repository: string
  repositoryId: string
  ref: string
  environment?: string | undefined
  /** The token's issuer: default GitHub.com's ({@link GH_ISSUER}); a GitHub Enterprise Server's is `https://HOST/_services/token`. */
  issuer?: string | undefined
}

/** A GitHub Actions OIDC token (docs.github.com claim shape) for `job`, audience the broker. */
export function githubToken(b: TestBroker, keys: PlatformKeys, job: GithubJob): Promise<string> {
  const now = b.clock.now()
  const owner = job.repository.split('/')[0]!
  const workflow = `${job.repository}/.github/workflows/deploy.yml@${job.ref}`
  return mint(
    keys.github,
    {
      jti: randomBytes(16).toString('hex'),
      sub: job.environment ? `repo:${job.repository}:environment:${job.environment}` : `repo:${job.repository}:ref:${job.ref}`,
      environment: job.environment,
      aud: b.deps.config.issuer,
      ref: job.ref,
      sha: 'd2c1f0e9b8a7d6c5b4a3f2e1d0c9b8a7f6e5d4c3',
      repository: job.repository,
      repository_owner: owner,
      repository_owner_id: '65432109',
      repository_id: job.repositoryId,
      repository_visibility: 'private',
      actor: 'octocat',
      actor_id: '583231',
      run_id: '9876543210',
      run_number: '42',
      run_attempt: '1',
      runner_environment: 'github-hosted',
      workflow: 'deploy',
      event_name: 'push',
      ref_type: 'branch',
      workflow_ref: workflow,
      job_workflow_ref: workflow,
      iss: job.issuer ?? GH_ISSUER,
      nbf: now - 600,
      exp: now + 300,
      iat: now,
    },
    { alg: 'RS256' },
  )
}

/**
 * The `env` argument of `app.request` that makes a request come from `address`, as the
 * node-server adapter passes the socket: what the broker reads as the caller's address.
 */
export function fromAddress(address: string): { incoming: { socket: { remoteAddress: string } } } {
  return { incoming: { socket: { remoteAddress: address } } }
}

/** A free loopback port for a server that must know its URL before it starts (the resource URI is registered at the broker). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/** A task with a story for the audit log: opened, two tokens, one refusal, completed. Returns its id. */
export async function auditStory(b: TestBroker): Promise<string> {
  const opened = (await (await openTask(b, { purpose: 'read notes', resources: [{ resource: NOTES, scopes: ['notes:read'] }] })).json()) as { task_id: string }
  for (let i = 0; i < 2; i++) assert.equal((await b.exchange({ task_id: opened.task_id })).status, 200)
  assert.equal((await b.exchange({ task_id: opened.task_id, scope: 'notes:delete' })).status, 400)
  assert.equal((await b.app.request(`/tasks/${opened.task_id}/complete`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })).status, 200)
  return opened.task_id
}

/**
 * Broker processes started as an operator starts them (`npm start`, one per port, `env` on top
 * of this process's), resolved once each answers /healthz (bounded); `stop()` ends each process
 * group (npm starts the broker as its child), and `kill(i)` sends SIGKILL to one.
 */
export async function startBrokerProcesses(ports: readonly number[], env: Record<string, string>): Promise<{ kill(i: number): void; stop(): Promise<void> }> {
  const root = new URL('../', import.meta.url)
  const children = ports.map((port) =>
    spawn('npm', ['start', '--silent'], { cwd: root, env: { ...process.env, ...env, TASKPASS_PORT: String(port) }, stdio: ['ignore', 'ignore', 'inherit'], detached: true }),
  )
  const signal = (i: number, sig: NodeJS.Signals) => {
    try {
      process.kill(-children[i]!.pid!, sig)
    } catch {
      // already gone (a killed one)
    }
  }
  const stop = async () => {
    for (const i of children.keys()) signal(i, 'SIGTERM')
    await new Promise((r) => setTimeout(r, 300))
  }
  try {
    for (const port of ports) {
      const deadline = Date.now() + 60_000
      while (!(await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false))) {
        if (Date.now() > deadline) throw new Error(`the broker on port ${port} did not start`)
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  } catch (e) {
    await stop()
    throw e
  }
  return { kill: (i) => signal(i, 'SIGKILL'), stop }
}

/** A token-exchange form for alice and agent-a on the real clock (for broker processes, which run on it). */
export async function realTimeExchangeForm(keys: Keys, issuer: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const session = await mint(keys.user, { iss: USER_ISSUER, sub: 'alice', sid: 'sess-1', aud: issuer, iat: now, exp: now + 3600 })
  const svid = await mint(keys.spiffe, { sub: spiffeId('a'), aud: issuer, iat: now, exp: now + 300 })
  return form({ grant_type: TOKEN_EXCHANGE, subject_token: session, subject_token_type: JWT_TYPE, actor_token: svid, actor_token_type: JWT_TYPE, resource: NOTES, scope: 'notes:read' })
}

/** An admin API call with an admin key (the full admin's by default): its status and JSON body. */
export async function adminRequest(b: Pick<TestBroker, 'app'>, method: string, path: string, body?: unknown, key = ADMIN_KEY): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await b.app.request(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

/** The admin CLI in dev mode on its own data directory, as a separate process: status and output. */
export function devCli(dataDir: string, args: readonly string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    ...(input === undefined ? {} : { input }),
    env: { ...process.env, TASKPASS_DATA_DIR: dataDir, TASKPASS_CONFIG: '' },
  })
  return { status: run.status, stdout: run.stdout, stderr: run.stderr }
}
