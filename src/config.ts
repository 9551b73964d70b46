import { readFileSync } from 'node:fs'
import { z } from 'zod'

/**
 * The broker's configuration: one JSON file plus `TASKPASS_*` environment overrides,
 * validated once. A bad config names every bad field and the broker refuses to start.
 * Every field is documented in README.md ("Configuration").
 */

const jwkSet = z.object({ keys: z.array(z.record(z.string(), z.unknown())) })
const asymmetricAlg = z.enum(['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'])
const scopeToken = z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, 'a scope token (RFC 6749 §3.3)')
const absoluteUri = z.string().refine((s) => {
  try {
    const u = new URL(s)
    return u.hash === '' && !s.includes('#')
  } catch {
    return false
  }
}, 'an absolute URI without fragment')
const seconds = z.number().int().positive()

/** Where an issuer's verification keys come from: exactly one of the three. */
const keySource = {
  jwks: jwkSet.optional(),
  jwksFile: z.string().optional(),
  jwksUri: z.url().optional(),
}
const oneKeySource = [
  (k: { jwks?: unknown; jwksFile?: unknown; jwksUri?: unknown }) => [k.jwks, k.jwksFile, k.jwksUri].filter((x) => x !== undefined).length === 1,
  // `when`: checked even if sibling fields are bad, so one run names every problem.
  { message: 'exactly one of jwks, jwksFile, jwksUri', when: () => true },
] as const

const subjectIssuer = z
  .object({
    issuer: z.string().min(1),
    /** Audience the subject token must carry; defaults to the broker's issuer URL. */
    audience: z.string().optional(),
    algorithms: z.array(asymmetricAlg).min(1).default(['ES256', 'RS256', 'EdDSA']),
    /** Claim naming the user. */
    userClaim: z.string().default('sub'),
    /** Claim naming the session; when present, tasks are bound to it. */
    sessionClaim: z.string().default('sid'),
    ...keySource,
  })
  .refine(...oneKeySource)

const workloadIssuer = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('spiffe'),
      /** SPIFFE trust domain, e.g. `prod.example.com`. */
      trustDomain: z.string().regex(/^[a-z0-9._-]+$/, 'a lowercase SPIFFE trust domain'),
      algorithms: z.array(asymmetricAlg).min(1).default(['ES256', 'RS256', 'PS256', 'ES384', 'RS384', 'PS384', 'ES512', 'RS512', 'PS512']),
      ...keySource,
    })
    .refine(...oneKeySource),
  z
    .object({
      kind: z.literal('oidc'),
      /** The token's `iss`, e.g. a Kubernetes cluster issuer or `https://token.actions.githubusercontent.com`. */
      issuer: z.string().min(1),
      algorithms: z.array(asymmetricAlg).min(1).default(['RS256', 'ES256']),
      ...keySource,
    })
    .refine(...oneKeySource),
])

const grant = z.object({ resource: absoluteUri, scopes: z.array(scopeToken) })

const workload = z.object({
  id: z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'letters, digits, . _ : - (1–128)'),
  /**
   * How an attestation maps to this workload: the token's issuer (a SPIFFE trust domain
   * as `spiffe://<td>`, or an OIDC `iss`), its exact `sub`, and optional exact claims.
   */
  attestation: z.object({
    issuer: z.string().min(1),
    subject: z.string().min(1),
    claims: z.record(z.string(), z.string()).default({}),
  }),
  grants: z.array(grant).default([]),
  maxTtl: seconds.optional(),
  enabled: z.boolean().default(true),
})

const resource = z.object({
  uri: absoluteUri,
  scopes: z.array(scopeToken).min(1),
  maxTtl: seconds.optional(),
  /** Tasks asking for this resource wait for an admin's approval. */
  requireApproval: z.boolean().default(false),
  /** Credential the resource uses at /introspect and /revoke (HTTP Basic); the secret argon2id-hashed. */
  credential: z.object({ clientId: z.string().min(1), secretHash: z.string().startsWith('$argon2') }).optional(),
})

export const configSchema = z
  .object({
    /** The broker's issuer identifier: the exact base URL, no trailing slash. */
    issuer: z.url().refine((s) => !s.endsWith('/') && !s.includes('?') && !s.includes('#'), 'no trailing slash, query or fragment'),
    listen: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).default(8787) }).prefault({}),
    /** SQLite database file (`:memory:` for throwaway). */
    database: z.string().default('.taskpass/taskpass.db'),
    keys: z
      .object({
        alg: z.enum(['ES256', 'EdDSA']).default('ES256'),
        /** Key-encryption key: base64url of 32 random bytes. Or `kekFile`. Env: TASKPASS_KEK. */
        kek: z.string().optional(),
        kekFile: z.string().optional(),
      })
      .prefault({}),
    tokens: z
      .object({ defaultTtl: seconds.default(300), maxTtl: seconds.default(900) })
      .prefault({})
      .refine((t) => t.defaultTtl <= t.maxTtl, 'defaultTtl must not exceed maxTtl'),
    tasks: z.object({ defaultTtl: seconds.default(3600), maxTtl: seconds.default(86400) }).prefault({}),
    /** Tolerated clock skew for incoming tokens, seconds. */
    clockSkew: z.number().int().min(0).max(300).default(60),
    /** Longest lifetime accepted for an actor (workload) token, seconds: attestations must be short-lived. */
    maxActorTokenLifetime: seconds.default(3600),
    bodyLimit: z.number().int().positive().default(16 * 1024),
    /** Token-bucket rate limits; `false` turns one off. Per IP is the TCP peer (put the limit at the proxy when behind one). */
    rateLimits: z
      .object({
        perIp: z.union([z.literal(false), z.object({ ratePerSecond: z.number().positive(), burst: z.number().int().positive() })]).default({ ratePerSecond: 1000, burst: 2000 }),
        perWorkload: z.union([z.literal(false), z.object({ ratePerSecond: z.number().positive(), burst: z.number().int().positive() })]).default({ ratePerSecond: 500, burst: 1000 }),
      })
      .prefault({}),
    subjectIssuers: z.array(subjectIssuer).default([]),
    workloadIssuers: z.array(workloadIssuer).default([]),
    workloads: z.array(workload).default([]),
    resources: z.array(resource).default([]),
    admin: z.object({ apiKeyHashes: z.array(z.string().startsWith('$argon2')).default([]) }).prefault({}),
  })
  .superRefine((c, ctx) => {
    const resources = new Set(c.resources.map((r) => r.uri))
    c.workloads.forEach((w, i) => {
      w.grants.forEach((g, j) => {
        if (!resources.has(g.resource)) ctx.addIssue({ code: 'custom', path: ['workloads', i, 'grants', j, 'resource'], message: `unknown resource ${g.resource}` })
      })
    })
    const ids = new Set<string>()
    c.workloads.forEach((w, i) => {
      if (ids.has(w.id)) ctx.addIssue({ code: 'custom', path: ['workloads', i, 'id'], message: `duplicate workload id ${w.id}` })
      ids.add(w.id)
    })
  })

export type Config = z.infer<typeof configSchema>
export type ConfigInput = z.input<typeof configSchema>
export type SubjectIssuerConfig = Config['subjectIssuers'][number]
export type WorkloadIssuerConfig = Config['workloadIssuers'][number]
export type WorkloadConfig = Config['workloads'][number]
export type ResourceConfig = Config['resources'][number]

export class ConfigError extends Error {
  readonly issues: string[]
  constructor(issues: string[]) {
    super(`invalid configuration:\n${issues.map((i) => `  - ${i}`).join('\n')}`)
    this.name = 'ConfigError'
    this.issues = issues
  }
}

/** Validates a config object; throws {@link ConfigError} naming every bad field. */
export function parseConfig(input: unknown): Config {
  const result = configSchema.safeParse(input)
  if (!result.success) {
    throw new ConfigError(result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`))
  }
  return result.data
}

/** Environment overrides, applied on top of the file. */
export function applyEnv(input: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = { ...input }
  const listen = { ...(out.listen as object | undefined) } as Record<string, unknown>
  const keys = { ...(out.keys as object | undefined) } as Record<string, unknown>
  if (env.TASKPASS_ISSUER) out.issuer = env.TASKPASS_ISSUER
  if (env.TASKPASS_DATABASE) out.database = env.TASKPASS_DATABASE
  if (env.TASKPASS_HOST) listen.host = env.TASKPASS_HOST
  if (env.TASKPASS_PORT) listen.port = Number(env.TASKPASS_PORT)
  if (env.TASKPASS_KEK) keys.kek = env.TASKPASS_KEK
  if (env.TASKPASS_KEK_FILE) keys.kekFile = env.TASKPASS_KEK_FILE
  out.listen = listen
  out.keys = keys
  return out
}

export function loadConfigFile(path: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (e) {
    throw new ConfigError([`(file): cannot read ${path}: ${(e as Error).message}`])
  }
  try {
    return JSON.parse(text) as Record<string, unknown>
  } catch (e) {
    throw new ConfigError([`(file): ${path} is not valid JSON: ${(e as Error).message}`])
  }
}
