/**
 * The kinds of catalog object (docs/admin-api.md): what the broker trusts and serves. Each is a
 * list of the configuration file, and each object has one key within its kind.
 */
export const CATALOG_KINDS = ['subject-issuers', 'workload-issuers', 'workloads', 'resources', 'admin-keys'] as const
export type CatalogKind = (typeof CATALOG_KINDS)[number]

type AnyObject = Record<string, unknown>

interface KindSpec {
  /** One object, in messages: "workload", "resource"… */
  noun: string
  /** Where the list is in the configuration, as validation issues name it. */
  path: string
  /** The list of `config` (an object of the configuration's shape). */
  list(config: AnyObject): AnyObject[]
  /** `config` with the list replaced (a copy). */
  withList(config: AnyObject, items: AnyObject[]): AnyObject
  /** The object's key: undefined while the object is too malformed to have one. */
  keyOf(object: AnyObject): string | undefined
  /** The field the key is, as the admin writes it. */
  keyField: string
}

const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined)

const topLevel = (field: string, keyField: string, noun: string, keyOf?: (o: AnyObject) => string | undefined): KindSpec => ({
  noun,
  path: field,
  keyField,
  list: (c) => (Array.isArray(c[field]) ? (c[field] as AnyObject[]) : []),
  withList: (c, items) => ({ ...c, [field]: items }),
  keyOf: keyOf ?? ((o) => str(o[keyField])),
})

export const KINDS: Record<CatalogKind, KindSpec> = {
  'subject-issuers': topLevel('subjectIssuers', 'issuer', 'subject issuer'),
  // A SPIFFE trust domain is named as workloads name it: `spiffe://<trust domain>`.
  'workload-issuers': topLevel('workloadIssuers', 'issuer', 'workload issuer', (o) => (o.kind === 'spiffe' ? (str(o.trustDomain) && `spiffe://${o.trustDomain as string}`) : str(o.issuer))),
  workloads: topLevel('workloads', 'id', 'workload'),
  resources: topLevel('resources', 'uri', 'resource'),
  'admin-keys': {
    noun: 'admin key',
    path: 'admin.keys',
    keyField: 'name',
    list: (c) => {
      const admin = c.admin as AnyObject | undefined
      return Array.isArray(admin?.keys) ? (admin.keys as AnyObject[]) : []
    },
    withList: (c, items) => ({ ...c, admin: { ...(c.admin as AnyObject | undefined), keys: items } }),
    keyOf: (o) => str(o.name),
  },
}

export function isCatalogKind(kind: string): kind is CatalogKind {
  return (CATALOG_KINDS as readonly string[]).includes(kind)
}

/** What the API shows in place of a secret or a hash. */
export const REDACTED = '[redacted]'

/**
 * An object as the admin API shows it (and audit rows record it): secrets and hashes replaced.
 * Public keys, issuers and rules stay: they are what an auditor checks.
 */
export function redact(kind: CatalogKind, object: AnyObject): AnyObject {
  const out = structuredClone(object)
  if (kind === 'admin-keys' && 'hash' in out) out.hash = REDACTED
  if (kind === 'resources' && typeof out.credential === 'object' && out.credential !== null) out.credential = { ...(out.credential as AnyObject), secretHash: REDACTED }
  if (kind === 'subject-issuers' && typeof out.login === 'object' && out.login !== null) {
    const login = out.login as AnyObject
    out.login = { ...login, ...('clientSecret' in login ? { clientSecret: REDACTED } : {}), ...('passwordSha256' in login ? { passwordSha256: REDACTED } : {}) }
  }
  return out
}

/** The field of `object` that holds {@link REDACTED} where a secret belongs, if any (an object read, then written back). */
export function redactedField(kind: CatalogKind, object: AnyObject): string | undefined {
  const login = object.login as AnyObject | undefined
  if (kind === 'subject-issuers' && login?.clientSecret === REDACTED) return 'login.clientSecret'
  const credential = object.credential as AnyObject | undefined
  if (kind === 'resources' && credential?.secretHash === REDACTED) return 'credential.secretHash'
  return undefined
}
