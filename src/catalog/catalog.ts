import { createHash, randomBytes } from 'node:crypto'
import { z } from 'zod'
import type { Deps } from '../broker.js'
import { ADMIN_ROLES, ConfigError, objectSchemas, type Config } from '../config.js'
import { conflict, InvalidObject, notFound } from '../errors.js'
import { AUDIT_FIELD_LIMITS, type CatalogRow } from '../store/stores.js'
import { revokeTasksOutsideCatalog } from './retirement.js'
import { effectiveConfig } from './effective.js'
import { KINDS, redact, REDACTED, redactedField, type CatalogKind } from './kinds.js'

type AnyObject = Record<string, unknown>
type CatalogDeps = Pick<Deps, 'catalog' | 'stores' | 'clock' | 'config' | 'policy' | 'approvals' | 'hasher' | 'logger'>

/** A catalog object as the admin API and the CLI show it (the same snake_case fields). */
export interface CatalogEntryView {
  kind: CatalogKind
  key: string
  /** `file`: the configuration file defines it (the API may only switch it off and on); `api`: stored through the admin API. */
  managed_by: 'file' | 'api'
  enabled: boolean
  /** The object in the configuration file's shape, defaults filled in, secrets and hashes redacted. */
  object: AnyObject
  created_at?: number
  updated_at?: number
  updated_by?: string
}

/** What a change answers: the object after it (absent once deleted) and the tasks it ended. */
export interface CatalogChangeView {
  kind: CatalogKind
  key: string
  action: CatalogAction
  entry?: CatalogEntryView
  tasks_revoked: number
  /** An admin key created: the key itself, shown this once (only its argon2id hash is kept). */
  admin_key?: string
}

export type CatalogAction = 'create' | 'replace' | 'disable' | 'enable' | 'delete'

const SCHEMAS: Record<CatalogKind, z.ZodType> = {
  'subject-issuers': objectSchemas.subjectIssuer,
  'workload-issuers': objectSchemas.workloadIssuer,
  workloads: objectSchemas.workload,
  resources: objectSchemas.resource,
  'admin-keys': objectSchemas.adminKey,
}

/** An admin key is created from a name and a role; the broker makes the key. Changing it changes the role only. */
const newAdminKey = z.strictObject({ name: z.string(), role: z.enum(ADMIN_ROLES) })
const adminKeyChange = z.strictObject({ role: z.enum(ADMIN_ROLES) })

/** Every object of a kind: the file's first, in its order, then the stored ones, oldest first. */
export async function listEntries(deps: CatalogDeps, kind: CatalogKind): Promise<CatalogEntryView[]> {
  return entriesOf(deps.catalog.base, kind, await deps.stores.catalog.all())
}

/** One object; 404 `not_found` when its kind has none by that key. */
export async function getEntry(deps: CatalogDeps, kind: CatalogKind, key: string): Promise<CatalogEntryView> {
  return (await listEntries(deps, kind)).find((e) => e.key === key) ?? fail(notFound(`no ${KINDS[kind].noun} ${key}`))
}

function entriesOf(base: Config, kind: CatalogKind, rows: readonly CatalogRow[]): CatalogEntryView[] {
  const spec = KINDS[kind]
  const mine = rows.filter((r) => r.kind === kind)
  const rowOf = new Map(mine.map((r) => [r.key, r]))
  const file = spec.list(base as unknown as AnyObject).map((o): CatalogEntryView => {
    const key = spec.keyOf(o)!
    const row = rowOf.get(key)
    return { kind, key, managed_by: 'file', enabled: o.enabled !== false && (row?.enabled ?? true), object: redact(kind, o), ...(row ? { updated_at: row.updatedAt, updated_by: row.updatedBy } : {}) }
  })
  const stored = mine.flatMap((r): CatalogEntryView[] => {
    if (r.body === null) return []
    const given = JSON.parse(r.body) as AnyObject
    const parsed = SCHEMAS[kind].safeParse(given)
    const object = parsed.success ? (parsed.data as AnyObject) : given
    return [{ kind, key: r.key, managed_by: 'api', enabled: r.enabled && object.enabled !== false, object: redact(kind, object), created_at: r.createdAt, updated_at: r.updatedAt, updated_by: r.updatedBy }]
  })
  return [...file, ...stored]
}

function definedByFile(deps: CatalogDeps, kind: CatalogKind, key: string): boolean {
  const spec = KINDS[kind]
  return spec.list(deps.catalog.base as unknown as AnyObject).some((o) => spec.keyOf(o) === key)
}

/**
 * How deep an object may nest: the configuration's deepest (a claim rule in a workload's
 * attestation, a JWK's `x5c`) is under 10; validating, storing and auditing recurse.
 */
const MAX_DEPTH = 32
/**
 * The largest object, as JSON characters. Its audit row holds it twice (before and after) within
 * the row's limit, whole: the CLI reads a file, where no request body limit applies.
 */
const MAX_OBJECT_CHARS = 64 * 1024

function asObject(body: unknown): AnyObject {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InvalidObject(['(body): a JSON object'])
  // Walked without recursion: the depth is what is being checked.
  const stack: [unknown, number][] = [[body, 1]]
  while (stack.length > 0) {
    const [value, depth] = stack.pop()!
    if (typeof value !== 'object' || value === null) continue
    if (depth > MAX_DEPTH) throw new InvalidObject([`(body): nested deeper than ${MAX_DEPTH} levels`])
    for (const v of Object.values(value)) stack.push([v, depth + 1])
  }
  if (JSON.stringify(body).length > MAX_OBJECT_CHARS) throw new InvalidObject([`(body): too large (more than ${MAX_OBJECT_CHARS} characters of JSON)`])
  return body as AnyObject
}

/**
 * The fields of an object that name a file of the broker's host. The configuration file may use
 * them (its author runs the host); an object of the API may not: the broker would read whatever
 * the caller names — and send a `clientSecretFile` to the IdP the caller chose — and the object,
 * stored in the database, would depend on a file the database does not hold (another instance,
 * or the next start, may not have it). Inline keys and `jwksUri` do the same.
 */
function hostFiles(kind: CatalogKind, object: AnyObject): string[] {
  if (kind === 'admin-keys' || kind === 'resources') return []
  const login = object.login as AnyObject | undefined
  return [
    ...(object.jwksFile !== undefined ? ['jwksFile: a file of the broker host is for the configuration file only: give the keys inline (jwks) or a jwksUri'] : []),
    ...(kind === 'subject-issuers' && login?.clientSecretFile !== undefined ? ['login.clientSecretFile: a file of the broker host is for the configuration file only: give clientSecret (stored, never shown)'] : []),
  ]
}

/** A secret sent back as the API shows it (`[redacted]`) would replace the real one: refused. */
function refuseRedacted(kind: CatalogKind, object: AnyObject): void {
  const path = redactedField(kind, object)
  if (path) throw new InvalidObject([`${path}: the secret itself, not ${REDACTED} (the API never shows it)`])
}

function refuseHostFiles(kind: CatalogKind, object: AnyObject): void {
  const problems = hostFiles(kind, object)
  if (problems.length > 0) throw new InvalidObject(problems)
}

/** Zod's issues for one object, each naming its field. */
function problemsOf(error: z.ZodError): string[] {
  return error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`)
}

/**
 * Creates an object through the admin API (201 with the object). Validated alone, then with the
 * whole catalog exactly as the file is at start. 409 `conflict` when its key is taken (by the
 * file or the API). An admin key is made by the broker from `{name, role}` and returned this once.
 */
export async function createObject(deps: CatalogDeps, kind: CatalogKind, body: unknown, by: string): Promise<CatalogChangeView> {
  let object = asObject(body)
  let adminKey: string | undefined
  const taken = async (key: string) => {
    if (definedByFile(deps, kind, key)) throw conflict(`${KINDS[kind].noun} ${key} is defined by the configuration file`)
    if ((await deps.stores.catalog.get(kind, key))?.body) throw conflict(`${KINDS[kind].noun} ${key} exists`)
  }
  if (kind === 'admin-keys') {
    const given = newAdminKey.safeParse(object)
    if (!given.success) throw new InvalidObject(problemsOf(given.error))
    // Refused before argon2 runs when the name is taken (checked again inside the transaction).
    await taken(given.data.name)
    adminKey = `tpak_${randomBytes(32).toString('base64url')}`
    // Hashed before the write, never inside it (argon2 is slow, the transaction synchronous).
    object = { name: given.data.name, role: given.data.role, hash: await deps.hasher.hash(adminKey) }
  }
  const parsed = SCHEMAS[kind].safeParse(object)
  if (!parsed.success) throw new InvalidObject(problemsOf(parsed.error))
  refuseHostFiles(kind, parsed.data as AnyObject)
  refuseRedacted(kind, object)
  const key = KINDS[kind].keyOf(parsed.data as AnyObject)!
  await taken(key)
  const result = await change(deps, kind, key, 'create', by, (rows, now) => {
    // Again inside the transaction: another process (the CLI, another instance) may have created it since.
    if (rows.some((r) => r.kind === kind && r.key === key && r.body !== null)) throw conflict(`${KINDS[kind].noun} ${key} exists`)
    return [...rows.filter((r) => !(r.kind === kind && r.key === key)), row(kind, key, JSON.stringify(object), true, now, now, by)]
  })
  return { ...result, ...(adminKey ? { admin_key: adminKey } : {}) }
}

/** Replaces an object stored through the API (its key may not change); 409 for the file's. */
export async function replaceObject(deps: CatalogDeps, kind: CatalogKind, key: string, body: unknown, by: string): Promise<CatalogChangeView> {
  const existing = await storedOrFail(deps, kind, key)
  let object = asObject(body)
  if (kind === 'admin-keys') {
    const given = adminKeyChange.safeParse(object)
    if (!given.success) throw new InvalidObject(problemsOf(given.error))
    object = { ...(JSON.parse(existing.body!) as AnyObject), role: given.data.role }
  }
  const parsed = SCHEMAS[kind].safeParse(object)
  if (!parsed.success) throw new InvalidObject(problemsOf(parsed.error))
  refuseHostFiles(kind, parsed.data as AnyObject)
  refuseRedacted(kind, object)
  const spec = KINDS[kind]
  if (spec.keyOf(parsed.data as AnyObject) !== key) throw new InvalidObject([`${spec.keyField}: must stay ${key} (the path's); create another ${spec.noun} instead`])
  return change(deps, kind, key, 'replace', by, (rows, now) => {
    // Again inside the transaction: another process may have deleted or changed it since (an
    // admin key's replacement carries its hash: one of a key made again since must not return).
    const current = rows.find((r) => r.kind === kind && r.key === key && r.body !== null)
    if (!current) throw notFound(`no ${KINDS[kind].noun} ${key}`)
    if (current.body !== existing.body) throw conflict(`${KINDS[kind].noun} ${key} changed meanwhile: read it again`)
    return rows.map((r) => (r.kind === kind && r.key === key ? row(kind, key, JSON.stringify(object), r.enabled, r.createdAt, now, by) : r))
  })
}

/**
 * Switches an object off or on. Off: the broker acts as if it were not there (a workload stays
 * listed, disabled), its open tasks end, its tokens are revoked. Works for the file's objects
 * too: the switch is stored, and holds across restarts until switched on again.
 */
export async function setEnabled(deps: CatalogDeps, kind: CatalogKind, key: string, enabled: boolean, by: string): Promise<CatalogChangeView> {
  const entry = await getEntry(deps, kind, key)
  const action: CatalogAction = enabled ? 'enable' : 'disable'
  const stored = await deps.stores.catalog.get(kind, key)
  // The switch cannot turn on what its own definition turns off: that is changed where it is defined.
  if (enabled && entry.object.enabled === false) throw conflict(`${KINDS[kind].noun} ${key} says enabled: false itself: ${entry.managed_by === 'file' ? 'change it in the configuration file' : 'replace it without'}`)
  // Already so: nothing is written. The sweep runs all the same — an earlier change's may have
  // failed after its commit (the database busy), and asking again must finish what it started.
  if ((stored?.enabled ?? true) === enabled) return { kind, key, action, entry, tasks_revoked: (await sweep(deps, by)).length }
  return change(deps, kind, key, action, by, (rows, now) => {
    // Again inside the transaction: another process may have deleted or switched it since.
    const current = rows.find((r) => r.kind === kind && r.key === key)
    if (entry.managed_by === 'api' && !current?.body) throw notFound(`no ${KINDS[kind].noun} ${key}`)
    if ((current?.enabled ?? true) === enabled) throw conflict(`${KINDS[kind].noun} ${key} was ${PAST[action]} meanwhile`)
    const others = rows.filter((r) => !(r.kind === kind && r.key === key))
    if (entry.managed_by === 'file') return enabled ? others : [...others, row(kind, key, null, false, current?.createdAt ?? now, now, by)]
    return rows.map((r) => (r.kind === kind && r.key === key ? { ...r, enabled, updatedAt: now, updatedBy: by } : r))
  })
}

/** Deletes an object stored through the API (its tasks end as when disabled); 409 for the file's. */
export async function deleteObject(deps: CatalogDeps, kind: CatalogKind, key: string, by: string): Promise<CatalogChangeView> {
  await storedOrFail(deps, kind, key)
  return change(deps, kind, key, 'delete', by, (rows) => {
    if (!rows.some((r) => r.kind === kind && r.key === key && r.body !== null)) throw notFound(`no ${KINDS[kind].noun} ${key}`)
    return rows.filter((r) => !(r.kind === kind && r.key === key))
  })
}

async function storedOrFail(deps: CatalogDeps, kind: CatalogKind, key: string): Promise<CatalogRow> {
  if (definedByFile(deps, kind, key)) throw conflict(`${KINDS[kind].noun} ${key} is defined by the configuration file: change it there (the API may only disable and enable it)`)
  const stored = await deps.stores.catalog.get(kind, key)
  if (!stored?.body) throw notFound(`no ${KINDS[kind].noun} ${key}`)
  return stored
}

function row(kind: CatalogKind, key: string, body: string | null, enabled: boolean, createdAt: number, updatedAt: number, updatedBy: string): CatalogRow {
  return { id: 0, kind, key, body, enabled, createdAt, updatedAt, updatedBy }
}

const PAST: Record<CatalogAction, string> = { create: 'created', replace: 'replaced', disable: 'disabled', enable: 'enabled', delete: 'deleted' }

/**
 * One change, all or nothing: inside one durable transaction the stored rows are read, the change
 * applied to them (`next`), the whole catalog validated and its verifiers and policy set built,
 * then the row written, the revision bumped and the audit row (with `{before, after}`) appended.
 * Only after the commit is the new catalog put in force, and the tasks it no longer admits ended.
 */
async function change(deps: CatalogDeps, kind: CatalogKind, key: string, action: CatalogAction, by: string, next: (rows: CatalogRow[], now: number) => CatalogRow[]): Promise<CatalogChangeView> {
  const now = deps.clock.now()
  const find = (entries: CatalogEntryView[]) => entries.find((e) => e.key === key)
  const done = await deps.stores.durably(async (tx) => {
    // Alone, to its commit: another instance's change validated at the same time would not see
    // this one (two keys revoked at once, each sparing the other as "the last admin key"), and a
    // task or token recorded meanwhile waits (checkAdmittedInWrite), then is swept below.
    await tx.locks.catalog('change')
    const rows = await tx.catalog.all()
    const after = next(rows, now)
    const config = validated(deps, after)
    const built = prepared(deps, config)
    const mine = after.find((r) => r.kind === kind && r.key === key)
    if (mine) await tx.catalog.put(mine)
    else await tx.catalog.delete(kind, key)
    const revision = await tx.catalog.bump()
    const before = find(entriesOf(deps.catalog.base, kind, rows))
    const entry = find(entriesOf(deps.catalog.base, kind, after))
    await tx.audit.insert({
      at: now,
      action: `catalog.${action}`,
      decision: 'allow',
      reason: `${KINDS[kind].noun} ${key} ${PAST[action]} by ${by}`,
      ...(kind === 'workloads' ? { workloadId: key } : kind === 'resources' ? { resource: key } : {}),
      detail: auditDetail({ kind, key, before: before ?? null, after: entry ?? null }),
    })
    return { config, built, revision, entry }
  })
  deps.catalog.install(done.config, done.built, done.revision)
  return { kind, key, action, ...(done.entry ? { entry: done.entry } : {}), tasks_revoked: (await sweep(deps, by)).length }
}

/**
 * A change's `{before, after}` for its audit row: whole when it fits the row's bound, else its
 * SHA-256 and what it was about (a file object, which no API bound limits, can be large: cut,
 * it would no longer be JSON).
 */
function auditDetail(detail: { kind: CatalogKind; key: string; before: unknown; after: unknown }): string {
  const text = JSON.stringify(detail)
  if (text.length <= AUDIT_FIELD_LIMITS.detail) return text
  return JSON.stringify({ kind: detail.kind, key: detail.key, truncated: true, sha256: createHash('sha256').update(text).digest('hex') })
}

/**
 * Ends the tasks the catalog in force no longer admits. It runs after a change's commit, so it
 * can fail on its own (another process holding the database): then it is marked pending, and the
 * next refresh (within a second) or the next change runs it again.
 */
async function sweep(deps: CatalogDeps, by: string): Promise<string[]> {
  deps.catalog.sweepPending = true
  const revoked = await revokeTasksOutsideCatalog(deps, by)
  deps.catalog.sweepPending = false
  return revoked
}

function validated(deps: CatalogDeps, rows: readonly CatalogRow[]): Config {
  let config: Config
  try {
    config = effectiveConfig(deps.catalog.base, rows)
  } catch (e) {
    if (e instanceof ConfigError) throw new InvalidObject(e.issues)
    throw e
  }
  // Nobody may take the last way in: a change may not leave no admin-role key where there was one
  // (a broker run without the admin API, from the CLI alone, has none to lose).
  if (adminRoleKeys(config) === 0 && adminRoleKeys(deps.config) > 0) throw conflict('this would leave no admin key with the admin role')
  return config
}

const adminRoleKeys = (config: Pick<Config, 'admin'>) => config.admin.apiKeyHashes.length + config.admin.keys.filter((k) => k.role === 'admin').length

function prepared(deps: CatalogDeps, config: Config) {
  try {
    return deps.catalog.prepare(config)
  } catch (e) {
    if (e instanceof ConfigError) throw new InvalidObject(e.issues)
    throw e
  }
}

/**
 * Takes up what another process (the CLI, another instance) changed: when the stored revision
 * moved, the catalog is rebuilt from the stored rows and put in force, and the tasks it no longer
 * admits are ended here too (ending is idempotent). A stored catalog that no longer validates
 * (the file changed under it) leaves the running one in force, logged. Returns whether it changed.
 */
export async function refreshCatalog(deps: CatalogDeps): Promise<boolean> {
  const revision = await deps.stores.catalog.revision()
  if (revision === deps.catalog.revision) {
    if (deps.catalog.sweepPending) await sweep(deps, 'catalog')
    return false
  }
  let config: Config
  try {
    config = effectiveConfig(deps.catalog.base, await deps.stores.catalog.all())
    deps.catalog.install(config, deps.catalog.prepare(config), revision)
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    deps.logger.error('the stored catalog does not validate: the running one stays in force', { revision, issues: e.issues.slice(0, 10) })
    deps.catalog.revision = revision
    return false
  }
  await sweep(deps, 'catalog')
  return true
}

function fail(e: Error): never {
  throw e
}
