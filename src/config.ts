import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { DPOP_ALGORITHMS } from '@taskpass/verifier/dpop'
import { MAX_GLOB_LENGTH } from './exchange/attestation/claim-rules.js'
import { parseSpiffeId } from './exchange/attestation/spiffe-id.js'
import { normalizeTyp } from './lib/jwt.js'

/** Admin roles, least first: each may do everything the ones before it may. */
export const ADMIN_ROLES = ['auditor', 'operator', 'admin'] as const
export type AdminRole = (typeof ADMIN_ROLES)[number]

/** Levels `logging.level` accepts (pino's, lowest first); `silent` writes nothing. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/**
 * The broker's configuration: one JSON file plus `TASKPASS_*` environment overrides,
 * validated once. A bad config names every bad field and the broker refuses to start.
 * Every field is documented in README.md ("Configuration").
 */

const jwkSet = z.looseObject({ keys: z.array(z.record(z.string(), z.unknown())) })
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

/** Whether a URL's host is a loopback name or address. */
export function isLoopbackUrl(url: string): boolean {
  return ['127.0.0.1', 'localhost', '[::1]'].includes(new URL(url).hostname)
}

/** Remote key sets are fetched over https; plain http only on a loopback host (local agents, tests). */
const keysUrl = z.url().refine((s) => {
  const u = new URL(s)
  return u.protocol === 'https:' || (u.protocol === 'http:' && isLoopbackUrl(s))
}, 'an https URL (http only on a loopback host)')

/** Where an issuer's verification keys come from: exactly one of the three. */
const keySource = {
  jwks: jwkSet.optional(),
  jwksFile: z.string().optional(),
  jwksUri: keysUrl.optional(),
}
const atMostOneKeySource = [
  (k: { jwks?: unknown; jwksFile?: unknown; jwksUri?: unknown }) => [k.jwks, k.jwksFile, k.jwksUri].filter((x) => x !== undefined).length <= 1,
  { message: 'at most one of jwks, jwksFile, jwksUri', when: () => true },
] as const
const oneKeySource = [
  (k: { jwks?: unknown; jwksFile?: unknown; jwksUri?: unknown }) => [k.jwks, k.jwksFile, k.jwksUri].filter((x) => x !== undefined).length === 1,
  // `when`: checked even if sibling fields are bad, so one run names every problem.
  { message: 'exactly one of jwks, jwksFile, jwksUri', when: () => true },
] as const

/**
 * How long a revoked session is remembered (seconds): at least as long as any subject token may
 * live (`subjectIssuers[].maxTokenLifetime` is capped by it), so a revoked session never returns.
 */
export const SESSION_REVOCATION_RETENTION = 30 * 24 * 3600

/** A JWS `typ` value (RFC 7515 §4.1.9: a media type, `application/` optional, compared case-insensitively). */
const typValue = z.string().regex(/^[A-Za-z0-9!#$&^_.+-]{1,64}(\/[A-Za-z0-9!#$&^_.+-]{1,64})?$/, 'a media type such as JWT or at+jwt')

/** `<name>:`, one colon at the end: users of different issuers can never share a `sub` (see {@link brokerSubject}). */
const subjectPrefix = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}:$/, 'letters, digits, . _ - ending in one ":" (e.g. "partner:")')

const subjectIssuer = z
  .strictObject({
    issuer: z.string().min(1),
    /** Audience the subject token must carry; defaults to the broker's issuer URL. */
    audience: z.string().optional(),
    algorithms: z.array(asymmetricAlg).min(1).default(['ES256', 'RS256', 'EdDSA']),
    /** Claim naming the user. */
    userClaim: z.string().default('sub'),
    /** Claim naming the session; when present, tasks are bound to it. */
    sessionClaim: z.string().default('sid'),
    /**
     * Prefix of this issuer's users in the tokens' `sub`, so a `sub` is unique in the broker's
     * context (RFC 7519 §4.1.2). Required, and distinct, when there is more than one subject issuer.
     */
    subjectPrefix: subjectPrefix.optional(),
    /** Header `typ` values accepted (RFC 8725 §3.11 explicit typing); a token of another type is refused. */
    typ: z.array(typValue).min(1).default(['JWT', 'at+jwt']),
    /** Whether a token without a `typ` header is accepted (many IdPs omit it on ID tokens). */
    allowMissingTyp: z.boolean().default(true),
    /** Longest accepted session-token lifetime, `exp − iat` (or `exp − now` without `iat`), seconds. */
    maxTokenLifetime: seconds.max(SESSION_REVOCATION_RETENTION, 'at most 30 days: a revoked session is remembered that long').default(86_400),
    /**
     * Session-token claims policy may read, as tags of the Cedar `User` (`context.user.getTag("department")`):
     * string, number and boolean values, as strings (at most 1,024 characters); other values are left out.
     */
    policyClaims: z.array(z.string().min(1).max(128)).max(32).default([]),
    /**
     * This issuer is also an enterprise IdP whose Identity Assertion JWT Authorization Grants
     * (ID-JAG, draft-ietf-oauth-identity-assertion-authz-grant) the token endpoint redeems with the
     * `jwt-bearer` grant (RFC 7523 §2.1), verified with the same keys and algorithms. docs/enterprise-idp.md.
     */
    idJag: z
      .strictObject({
        /** Longest accepted ID-JAG lifetime, `exp − iat`, seconds (RFC 7523 §3: the AS may cap `exp`). */
        maxLifetime: seconds.max(3600).default(300),
        /**
         * The IdP tenant trusted (the ID-JAG's `tenant` claim must equal it). Unset: an ID-JAG carrying a
         * `tenant` is refused, since its `sub` may be unique only within that tenant.
         */
        tenant: z.string().min(1).max(255).optional(),
      })
      .optional(),
    /**
     * Browser sign-in for the authorization-code flow (docs/any-mcp-client.md): `oidc` sends the user
     * to this issuer as an OpenID Connect relying party (authorization code, PKCE, nonce); `dev` is the
     * built-in page for dev mode's users, allowed only when the broker itself is on a loopback address.
     */
    login: z
      .discriminatedUnion('kind', [
        z.strictObject({
          kind: z.literal('oidc'),
          /** The broker's client id at the IdP. */
          clientId: z.string().min(1).max(255),
          /** Its client secret (`client_secret_basic`), or `clientSecretFile`; neither: a public client (PKCE only). */
          clientSecret: z.string().min(1).optional(),
          clientSecretFile: z.string().min(1).optional(),
          /** Where the IdP's OpenID Provider metadata is; default `<issuer>/.well-known/openid-configuration`. */
          discoveryUrl: z.url().optional(),
          /** Scopes asked of the IdP; `openid` is always included. */
          scopes: z.array(scopeToken).max(16).default(['openid']),
          /** Shown on the sign-in button. */
          name: z.string().min(1).max(64).optional(),
        }).refine((l) => l.clientSecret === undefined || l.clientSecretFile === undefined, { message: 'at most one of clientSecret, clientSecretFile', when: () => true }),
        z.strictObject({
          kind: z.literal('dev'),
          /** The dev users who may sign in (their `sub` at this issuer). */
          users: z.array(z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'a lowercase name')).min(1).max(16),
          /** base64url SHA-256 of the one dev password (random, 128 bits or more: a fast hash is enough). */
          passwordSha256: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'base64url of a SHA-256 digest'),
        }),
      ])
      .optional(),
    ...keySource,
  })
  .refine(...oneKeySource)
  // An ID-JAG must never pass as a session token at the token-exchange grant (RFC 8725 §3.11).
  .refine((si) => !si.typ.some((t) => normalizeTyp(t) === 'oauth-id-jag+jwt'), { path: ['typ'], message: 'oauth-id-jag+jwt is the ID-JAG type, never a session token type', when: () => true })

/** JWT-SVID §3: validators MUST reject any other `alg`. */
const jwtSvidAlg = z.enum(['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'])

/** Shared by every workload issuer kind. */
const workloadIssuerCommon = {
  /** Audience the attestation must carry as its sole value; defaults to the broker's issuer URL. */
  audience: z.string().min(1).optional(),
  /** Longest accepted `exp − iat`, seconds; defaults to `maxActorTokenLifetime`. */
  maxTokenLifetime: seconds.optional(),
  /**
   * Header `typ` values accepted, when set: then a token without `typ` or of another type is
   * refused. Unset: the kind's own rule (JWT, JOSE or none). Needed to keep an issuer that is also
   * a subject issuer apart (see the config check below).
   */
  typ: z.array(typValue).min(1).optional(),
}

const workloadIssuer = z.discriminatedUnion('kind', [
  z
    .strictObject({
      kind: z.literal('spiffe'),
      /** SPIFFE trust domain, e.g. `prod.example.com`. */
      trustDomain: z.string().max(255).regex(/^[a-z0-9._-]+$/, 'a lowercase SPIFFE trust domain'),
      algorithms: z.array(jwtSvidAlg).min(1).default(['ES256', 'RS256', 'PS256', 'ES384', 'RS384', 'PS384', 'ES512', 'RS512', 'PS512']),
      /** A SPIFFE bundle inline or in a file, or `jwksUri`: the bundle endpoint URL (refreshed per `spiffe_refresh_hint`). */
      ...keySource,
      ...workloadIssuerCommon,
    })
    .refine(...oneKeySource),
  z
    .strictObject({
      kind: z.literal('oidc'),
      /** The token's `iss`, e.g. a Kubernetes cluster issuer or `https://token.actions.githubusercontent.com`. */
      issuer: z.string().min(1),
      algorithms: z.array(asymmetricAlg).min(1).default(['RS256', 'ES256']),
      ...keySource,
      ...workloadIssuerCommon,
    })
    .refine(...oneKeySource),
  z
    .strictObject({
      /** Kubernetes projected service-account tokens: `iss` is the cluster's service-account issuer. */
      kind: z.literal('kubernetes'),
      issuer: z.string().min(1),
      algorithms: z.array(asymmetricAlg).min(1).default(['RS256', 'ES256']),
      /** Refuse tokens not bound to a pod (e.g. `kubectl create token`): only projected volume tokens count. */
      requireBoundPod: z.boolean().default(true),
      ...keySource,
      ...workloadIssuerCommon,
    })
    .refine(...oneKeySource),
  z
    .strictObject({
      /** GitHub Actions OIDC tokens (`core.getIDToken(<broker issuer>)`); GHES: `https://HOST/_services/token`. */
      kind: z.literal('github'),
      issuer: z.string().min(1).default('https://token.actions.githubusercontent.com'),
      algorithms: z.array(asymmetricAlg).min(1).default(['RS256']),
      /** Keys: default `jwksUri` is `<issuer>/.well-known/jwks`. */
      ...keySource,
      ...workloadIssuerCommon,
    })
    .refine(...atMostOneKeySource),
])

/**
 * A claim rule: an exact string, `{glob}` (`*` matches within one segment — any run of
 * characters other than `/` and `:` — and `**` matches across segments), or a list of these
 * (any one matching suffices). A plain string is always exact, even if it contains `*`. A glob is
 * at most MAX_GLOB_LENGTH characters: with the cap on the value it bounds the cost of a match.
 */
const claimPattern = z.union([z.string().min(1), z.strictObject({ glob: z.string().min(1).max(MAX_GLOB_LENGTH, `a glob of at most ${MAX_GLOB_LENGTH} characters`) })])
const claimRule = z.union([claimPattern, z.array(claimPattern).min(1)])

/** Client authentication at /token: `none` (the actor token alone) or `private_key_jwt` required. */
const tokenEndpointAuth = z.enum(['none', 'private_key_jwt'])

const grant = z.strictObject({ resource: absoluteUri, scopes: z.array(scopeToken) })

/** A workload id: a plain name, or a SPIFFE ID (then it appears verbatim as `client_id` and `act.sub`). */
const workloadId = z.string().refine((s) => /^[A-Za-z0-9._:-]{1,128}$/.test(s) || (s.startsWith('spiffe://') && parseSpiffeId(s).ok), 'letters, digits, . _ : - (1–128), or a SPIFFE ID (spiffe://trust-domain/path)')

const workload = z.strictObject({
  id: workloadId,
  /**
   * How an attestation maps to this workload: the token's issuer (a SPIFFE trust domain
   * as `spiffe://<td>`, or the `iss` of an oidc/kubernetes/github issuer), a rule on its `sub`,
   * and rules on its claims (per kind, README "Workload attestation"). Every rule must match.
   */
  attestation: z
    .strictObject({
      issuer: z.string().min(1),
      subject: claimRule.optional(),
      /** Keys: a top-level claim name, or an RFC 6901 JSON Pointer (`/kubernetes.io/pod/name`). */
      claims: z.record(z.string().refine((k) => k !== '' && (!k.startsWith('/') || /^(\/([^~/]|~[01])*)+$/.test(k)), 'a claim name or an RFC 6901 JSON Pointer'), claimRule).default({}),
    })
    .refine((a) => a.subject !== undefined || Object.keys(a.claims).length > 0, { message: 'a subject or at least one claim rule', when: () => true })
    .optional(),
  /**
   * Instead of `attestation`: this workload is the public OAuth clients (MCP clients) whose
   * Client ID Metadata Document URL matches `clientId` (exact, a glob, or a list). They get task
   * tokens through the authorization-code flow, the user's consent opening the task
   * (docs/any-mcp-client.md). Their tokens name the client's URL as `client_id` and `act.sub`.
   */
  oauthClient: z
    .strictObject({
      clientId: claimRule,
      /** Issue task-bound refresh tokens to clients whose metadata asks for the `refresh_token` grant. */
      refreshTokens: z.boolean().default(true),
    })
    .optional(),
  /** The workload's public keys for `private_key_jwt` (RFC 7523): each with its one `alg`. */
  ...keySource,
  /** `private_key_jwt`: /token refuses this workload's requests without a client assertion. */
  tokenEndpointAuth: tokenEndpointAuth.default('none'),
  grants: z.array(grant).default([]),
  maxTtl: seconds.optional(),
  enabled: z.boolean().default(true),
  /** RFC 9449 §5.2 `dpop_bound_access_tokens`: this workload's tasks and tokens must be DPoP-bound. */
  requireDpop: z.boolean().default(false),
  /**
   * The workloads this one may open sub-tasks for (`POST /tasks/{id}/subtasks`): the generated
   * default policy permits `delegate` to exactly these; none by default.
   */
  delegateTo: z.array(workloadId).max(64).default([]),
})
  .refine(...atMostOneKeySource)
  .refine((w) => (w.attestation === undefined) !== (w.oauthClient === undefined), { message: 'exactly one of attestation, oauthClient', when: () => true })
  .superRefine((w, ctx) => {
    if (w.oauthClient && (w.delegateTo.length > 0 || w.tokenEndpointAuth !== 'none' || w.jwks || w.jwksFile || w.jwksUri)) {
      ctx.addIssue({ code: 'custom', path: ['oauthClient'], message: 'an OAuth client workload is a public client: no keys, tokenEndpointAuth or delegateTo' })
    }
    if (w.tokenEndpointAuth === 'private_key_jwt' && !w.jwks && !w.jwksFile && !w.jwksUri) {
      ctx.addIssue({ code: 'custom', path: ['tokenEndpointAuth'], message: 'private_key_jwt needs the workload keys (jwks, jwksFile or jwksUri)' })
    }
    w.jwks?.keys.forEach((k, i) => {
      // RFC 8725bis §3.1: each key is used with exactly one algorithm, so it must name it.
      if (typeof k.alg !== 'string' || !asymmetricAlg.options.includes(k.alg as never)) ctx.addIssue({ code: 'custom', path: ['jwks', 'keys', i, 'alg'], message: `an asymmetric alg (${asymmetricAlg.options.join(', ')})` })
      if ('d' in k) ctx.addIssue({ code: 'custom', path: ['jwks', 'keys', i], message: 'a public key (this one has private members)' })
    })
  })

const resource = z.strictObject({
  uri: absoluteUri,
  scopes: z.array(scopeToken).min(1),
  maxTtl: seconds.optional(),
  /** Tasks asking for this resource wait for a human's approval (docs/approvals.md). */
  requireApproval: z.boolean().default(false),
  /** At most this many tokens per task that includes this resource (all its resources' tokens count). */
  maxTokensPerTask: z.number().int().positive().max(1_000_000).optional(),
  /** Tokens for this resource (and tasks that include it) must be DPoP-bound (RFC 9449). */
  requireDpop: z.boolean().default(false),
  /** Credential the resource uses at /introspect and /revoke (HTTP Basic); the secret argon2id-hashed. */
  credential: z.strictObject({ clientId: z.string().min(1), secretHash: z.string().startsWith('$argon2') }).optional(),
})

/**
 * A named admin key with its role; `hash` is the argon2id hash of the key. The audit log names
 * who acted as `admin:<name>`, so a name may not be one the log gives others: `key<n>` (the
 * `apiKeyHashes`) or `cli` (the command line).
 */
const adminKey = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'a lowercase name (letters, digits, -)')
    .refine((n) => !/^key[0-9]+$/.test(n) && n !== 'cli', 'key<n> and cli name the unnamed admin keys and the command line in the audit log: choose another name'),
  role: z.enum(ADMIN_ROLES),
  hash: z.string().startsWith('$argon2'),
})

export const configSchema = z
  .strictObject({
    /** The broker's issuer identifier: the exact base URL, no trailing slash. */
    issuer: z.url().refine((s) => !s.endsWith('/') && !s.includes('?') && !s.includes('#'), 'no trailing slash, query or fragment'),
    listen: z.strictObject({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).default(8787) }).prefault({}),
    /**
     * SQLite database file (`:memory:` for throwaway), or a PostgreSQL URL (`postgres://…`) that
     * several broker instances share (README "Running several instances").
     */
    database: z.string().default('.taskpass/taskpass.db'),
    keys: z
      .strictObject({
        alg: z.enum(['ES256', 'EdDSA']).default('ES256'),
        /** Key-encryption key: base64url of 32 random bytes. Or `kekFile`. Env: TASKPASS_KEK. */
        kek: z.string().optional(),
        kekFile: z.string().optional(),
      })
      .prefault({}),
    tokens: z
      .strictObject({ defaultTtl: seconds.default(300), maxTtl: seconds.default(900) })
      .prefault({})
      .refine((t) => t.defaultTtl <= t.maxTtl, 'defaultTtl must not exceed maxTtl'),
    tasks: z
      .strictObject({
        defaultTtl: seconds.default(3600),
        maxTtl: seconds.default(86400),
        /** How long an approval request stays open, seconds (never beyond the task's own expiry); default 900, or `maxTtl` when that is shorter. */
        approvalTtl: seconds.optional(),
        /** How many delegations deep sub-tasks may go: 1 lets a task a user opened have sub-tasks, and those none. */
        maxDepth: z.number().int().min(0).max(10).default(3),
      })
      .prefault({})
      .refine((t) => t.approvalTtl === undefined || t.approvalTtl <= t.maxTtl, { path: ['approvalTtl'], message: 'approvalTtl must not exceed maxTtl' })
      .transform((t) => ({ ...t, approvalTtl: t.approvalTtl ?? Math.min(900, t.maxTtl) })),
    /** Tolerated clock skew for incoming tokens, seconds. */
    clockSkew: z.number().int().min(0).max(300).default(60),
    /** Longest lifetime accepted for an actor (workload) token, seconds: attestations must be short-lived. */
    maxActorTokenLifetime: seconds.default(3600),
    /** private_key_jwt client assertions (RFC 7523, 7523bis). */
    clientAuth: z
      .strictObject({
        /** `exp` may be at most this far ahead (plus clockSkew), seconds. */
        maxAssertionLifetime: seconds.max(3600).default(300),
        algorithms: z.array(asymmetricAlg).min(1).default(['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA']),
        /** Remembered `jti`s (each until its assertion's exp); when full of live entries, assertions are refused. */
        replayCacheSize: z.number().int().positive().default(100_000),
      })
      .prefault({}),
    /** DPoP proofs (RFC 9449) at POST /token and POST /tasks; their `iat` window is `clockSkew`. */
    dpop: z
      .strictObject({
        /** Require a broker-issued nonce in every proof (§8): proofs without one get `use_dpop_nonce` + `DPoP-Nonce`. */
        nonce: z.boolean().default(false),
        /** Nonce window, seconds: a nonce is accepted in the window it was issued in and the next one. */
        nonceWindow: z.number().int().min(10).max(3600).default(60),
        /** Proof signature algorithms accepted (asymmetric only), advertised as `dpop_signing_alg_values_supported`. */
        algorithms: z.array(z.enum(DPOP_ALGORITHMS)).min(1).default([...DPOP_ALGORITHMS]),
        /** Remembered proof `jti`s (each for its iat window); when full of live entries, proofs are refused. */
        replayCacheSize: z.number().int().positive().default(100_000),
      })
      .prefault({}),
    /**
     * Single-use `jti`s (DPoP proofs, client assertions). `shared`: also recorded in the database,
     * so a proof or assertion used at one broker process is refused at every other on the same
     * database (README "Running several processes"); one write per proof or assertion. Unset:
     * shared on PostgreSQL (several instances), not on SQLite.
     */
    replay: z.strictObject({ shared: z.boolean().optional() }).prefault({}),
    /** Fetching remote key sets (`jwksUri` of any issuer or workload, SPIFFE bundle endpoints). */
    remoteJwks: z
      .strictObject({
        /** Milliseconds for the whole request, body included. */
        timeout: z.number().int().positive().max(60_000).default(3000),
        maxBytes: z.number().int().positive().default(128 * 1024),
        cacheMaxAge: seconds.default(600),
        cooldown: seconds.default(30),
      })
      .prefault({}),
    bodyLimit: z.number().int().positive().default(16 * 1024),
    /** Token-bucket rate limits; `false` turns one off. Per IP is the TCP peer (put the limit at the proxy when behind one). */
    rateLimits: z
      .strictObject({
        perIp: z.union([z.literal(false), z.strictObject({ ratePerSecond: z.number().positive(), burst: z.number().int().positive() })]).default({ ratePerSecond: 1000, burst: 2000 }),
        perWorkload: z.union([z.literal(false), z.strictObject({ ratePerSecond: z.number().positive(), burst: z.number().int().positive() })]).default({ ratePerSecond: 500, burst: 1000 }),
      })
      .prefault({}),
    /**
     * Authentications that need an argon2id verification (a resource secret or an admin key not
     * already verified): failure budgets per client IP, per client id and broker-wide, and a cap
     * on concurrent verifications. README "Rate limits".
     */
    authThrottle: z
      .strictObject({
        perIp: z.union([z.literal(false), z.strictObject({ ratePerSecond: z.number().positive(), burst: z.number().int().positive() })]).default({ ratePerSecond: 1, burst: 20 }),
        perClient: z.union([z.literal(false), z.strictObject({ ratePerSecond: z.number().positive(), burst: z.number().int().positive() })]).default({ ratePerSecond: 1, burst: 10 }),
        /** All failures together, whoever sends them: bounds argon2's share of the CPU under a distributed flood. */
        perBroker: z.union([z.literal(false), z.strictObject({ ratePerSecond: z.number().positive(), burst: z.number().int().positive() })]).default({ ratePerSecond: 20, burst: 40 }),
        /** Keep below the libuv threadpool size (UV_THREADPOOL_SIZE, default 4): signing needs threads too. */
        maxConcurrent: z.number().int().min(1).max(64).default(1),
        /** IPs and client ids remembered by each budget (the least recently seen are dropped first). */
        maxKeys: z.number().int().positive().default(10_000),
      })
      .prefault({}),
    /**
     * Logs (docs/operations.md "Logs"): pino JSON lines on stderr at `level` and above; the access
     * log is at `info`. Env: TASKPASS_LOG_LEVEL.
     */
    logging: z.strictObject({ level: z.enum(LOG_LEVELS).default('info') }).prefault({}),
    /**
     * GET /metrics (Prometheus). `access` on the main listener: `admin` (an admin API key as
     * Bearer), `public` (no credential: only where the network already restricts who connects),
     * `none` (not served there). `listen`: also serve it, unauthenticated, on its own listener
     * (default host 127.0.0.1) for a local Prometheus. README "Metrics".
     */
    metrics: z
      .strictObject({
        access: z.enum(['admin', 'public', 'none']).default('admin'),
        listen: z.strictObject({ host: z.string().min(1).default('127.0.0.1'), port: z.number().int().min(0).max(65535) }).optional(),
      })
      .prefault({}),
    /**
     * Cedar policies (docs/policy.md). The grants of `workloads` become a generated default policy
     * set; `file` adds a deployment's own policies to it, or replaces it with `replaceDefaults`.
     * Admin policies come from the admin API (stored in the database). A set is validated whole
     * against the schema when it is loaded: a bad policy stops the broker at start, and is refused
     * (the running set kept) at run time.
     */
    policies: z
      .strictObject({
        /** A Cedar policy file (`.cedar`), read at start. */
        file: z.string().min(1).optional(),
        /** Leave out the policies generated from the grants: only the file's (and the admin) policies decide. */
        replaceDefaults: z.boolean().default(false),
        /** Largest request body of `PUT /admin/policies` and `POST /admin/policy/evaluate`, bytes. */
        maxBodyBytes: z.number().int().positive().max(64 * 1024 * 1024).default(1024 * 1024),
      })
      .prefault({})
      .refine((p) => !p.replaceDefaults || p.file !== undefined, { message: 'replaceDefaults needs a policy file', path: ['replaceDefaults'] }),
    /**
     * The authorization-code flow for stock MCP clients (docs/any-mcp-client.md): `/authorize`, the
     * sign-in and consent pages, `authorization_code` and `refresh_token` at /token, the user's page.
     * On when some workload is an `oauthClient` and some subject issuer has a `login`.
     */
    authorization: z
      .strictObject({
        /** Authorization codes live this long, seconds (RFC 6749 §4.1.2: at most 10 minutes). */
        codeTtl: seconds.max(600).default(60),
        /** The user has this long from /authorize to their answer on the consent page, seconds. */
        requestTtl: seconds.max(3600).default(600),
        /** A browser sign-in lasts this long, seconds (never beyond the IdP's ID token's own session). */
        loginTtl: seconds.max(86_400).default(3600),
        /** Fetching Client ID Metadata Documents. */
        clientMetadata: z
          .strictObject({
            /** Milliseconds for the whole request, body included. */
            timeout: z.number().int().positive().max(30_000).default(3000),
            /** Largest document accepted, bytes. */
            maxBytes: z.number().int().positive().max(64 * 1024).default(5120),
            /** A document is used at most this long without fetching it again, seconds (less when its Cache-Control says so). */
            maxCacheAge: seconds.max(86_400).default(3600),
            /** Documents held in the cache at once. */
            cacheSize: z.number().int().positive().max(100_000).default(1000),
            /** Fetch documents from loopback addresses too (dev mode and tests only; never private or other special-use ones). */
            allowLoopback: z.boolean().default(false),
            /** Extra CA certificates (PEM file) trusted for documents, besides the system's. */
            caFile: z.string().min(1).optional(),
          })
          .prefault({}),
        /**
         * RFC 7591 dynamic registration (`POST /register`) for clients without a metadata document,
         * off unless set: the OAuth client workload registered clients belong to. Registrations are
         * stateless (the client id is the sealed registration) and last 30 days.
         */
        dynamicRegistration: z.strictObject({ workload: z.string().min(1) }).optional(),
      })
      .prefault({}),
    subjectIssuers: z.array(subjectIssuer).default([]),
    workloadIssuers: z.array(workloadIssuer).default([]),
    workloads: z.array(workload).default([]),
    resources: z.array(resource).default([]),
    /**
     * Admin API keys (argon2id hashes). `apiKeyHashes` are full admins (named `key<n>`); `keys` name
     * each key and give it a role (docs/operations.md "Admin roles"): `auditor` reads (tasks, audit,
     * evidence, policies, the dry run, metrics), `operator` also acts on tasks, approvals and
     * sessions, `admin` also rotates and revokes keys and loads policies.
     */
    admin: z
      .strictObject({
        apiKeyHashes: z.array(z.string().startsWith('$argon2')).default([]),
        keys: z.array(adminKey).default([]),
      })
      .prefault({})
      .refine((a) => new Set(a.keys.map((k) => k.name)).size === a.keys.length, { message: 'admin key names must be distinct', path: ['keys'] }),
    /**
     * How long evidence is kept. Audit rows are pruned once older than `audit`; tasks once `tasks`
     * has passed since they expired (a task ended early is kept at least as long as one that ran out).
     * Nothing younger than its retention is ever pruned.
     */
    retention: z
      .strictObject({
        audit: seconds.min(86_400).default(365 * 86_400),
        tasks: seconds.min(3600).default(30 * 86_400),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    // A user is the pair (issuer, subject): with several subject issuers each needs its own prefix.
    if (c.subjectIssuers.length > 1) {
      const prefixes = new Set<string>()
      c.subjectIssuers.forEach((si, i) => {
        if (si.subjectPrefix === undefined) ctx.addIssue({ code: 'custom', path: ['subjectIssuers', i, 'subjectPrefix'], message: 'required when there is more than one subject issuer' })
        else if (prefixes.has(si.subjectPrefix)) ctx.addIssue({ code: 'custom', path: ['subjectIssuers', i, 'subjectPrefix'], message: `duplicate subject prefix ${si.subjectPrefix}` })
        else prefixes.add(si.subjectPrefix)
      })
    }
    // ID-JAG draft: an authorization server never accepts an ID-JAG it issued itself.
    c.subjectIssuers.forEach((si, i) => {
      if (si.idJag && si.issuer === c.issuer) ctx.addIssue({ code: 'custom', path: ['subjectIssuers', i, 'idJag'], message: 'the broker never redeems an ID-JAG it issued itself' })
    })
    // RFC 8725 §3.12: one issuer as both subject and workload issuer is safe only if explicit
    // types keep a session token from passing as an attestation and the other way round.
    c.subjectIssuers.forEach((si, i) => {
      for (const wi of c.workloadIssuers) {
        if (wi.kind === 'spiffe' || wi.issuer !== si.issuer) continue
        const subjectTyps = new Set(si.typ.map(normalizeTyp))
        const overlap = wi.typ === undefined || si.allowMissingTyp || wi.typ.some((t) => subjectTyps.has(normalizeTyp(t)))
        if (overlap) ctx.addIssue({ code: 'custom', path: ['subjectIssuers', i, 'typ'], message: `${si.issuer} is also a workload issuer: give both disjoint "typ" lists and set allowMissingTyp to false` })
      }
    })
    const resources = new Set(c.resources.map((r) => r.uri))
    // A resource signs in (/introspect, /revoke, AuthZEN) by its credential's client id: two
    // resources sharing one would leave only one of them able to, with the other's secret.
    const clientIds = new Set<string>()
    c.resources.forEach((r, i) => {
      if (r.credential === undefined) return
      if (clientIds.has(r.credential.clientId)) ctx.addIssue({ code: 'custom', path: ['resources', i, 'credential', 'clientId'], message: `duplicate credential client id ${r.credential.clientId}` })
      clientIds.add(r.credential.clientId)
    })
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
    c.workloads.forEach((w, i) => {
      w.delegateTo.forEach((d, j) => {
        if (!ids.has(d)) ctx.addIssue({ code: 'custom', path: ['workloads', i, 'delegateTo', j], message: `unknown workload ${d}` })
        else if (d === w.id) ctx.addIssue({ code: 'custom', path: ['workloads', i, 'delegateTo', j], message: 'a workload does not delegate to itself' })
      })
    })
    const registered = c.authorization.dynamicRegistration
    if (registered && !c.workloads.some((w) => w.id === registered.workload && w.oauthClient !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['authorization', 'dynamicRegistration', 'workload'], message: `${registered.workload} is not an OAuth client workload (one with oauthClient)` })
    }
    // The built-in dev sign-in has a shared password: never on a broker reachable from elsewhere.
    c.subjectIssuers.forEach((si, i) => {
      if (si.login?.kind === 'dev' && !isLoopbackUrl(c.issuer)) ctx.addIssue({ code: 'custom', path: ['subjectIssuers', i, 'login'], message: 'the dev sign-in is only for a broker whose issuer is on a loopback address' })
    })
    // GitHub names can be renamed and re-registered by someone else: a workload mapped from a
    // GitHub token must pin an immutable id exactly (standards.md §7).
    const githubIssuers = new Set(c.workloadIssuers.flatMap((wi) => (wi.kind === 'github' ? [wi.issuer] : [])))
    c.workloads.forEach((w, i) => {
      const attestation = w.attestation
      if (!attestation || !githubIssuers.has(attestation.issuer)) return
      const pinned = ['repository_id', 'repository_owner_id'].some((k) => typeof attestation.claims[k] === 'string')
      if (!pinned) ctx.addIssue({ code: 'custom', path: ['workloads', i, 'attestation', 'claims'], message: 'a GitHub workload needs an exact repository_id or repository_owner_id rule' })
    })
  })

/** The schemas of one catalog object each (the admin API validates a single object with these first). */
export const objectSchemas = { subjectIssuer, workloadIssuer, workload, resource, adminKey } as const

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
/** A configuration scalar settable from the environment (docs/configuration.md). */
export interface EnvVariable {
  name: string
  /** Where it goes in the configuration, e.g. `["tokens", "defaultTtl"]`. */
  path: string[]
  kind: 'string' | 'number' | 'boolean'
}

/** Shorter names kept for the most used settings (they were the first). */
const ENV_ALIASES: Record<string, string> = {
  'listen.host': 'TASKPASS_HOST',
  'listen.port': 'TASKPASS_PORT',
  'keys.kek': 'TASKPASS_KEK',
  'keys.kekFile': 'TASKPASS_KEK_FILE',
  'logging.level': 'TASKPASS_LOG_LEVEL',
}

/** `defaultTtl` → `DEFAULT_TTL`. */
const envSegment = (key: string) => key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()

type ZodDef = { type: string; innerType?: { _zod: { def: ZodDef } }; in?: { _zod: { def: ZodDef } }; shape?: Record<string, { _zod: { def: ZodDef } }> }

/**
 * Every scalar of the configuration outside lists — strings, numbers, booleans, enums — as a
 * `TASKPASS_<PATH>` variable (`tokens.defaultTtl` → `TASKPASS_TOKENS_DEFAULT_TTL`), read from the
 * schema itself so no setting is left out. Lists (issuers, workloads, resources…) and settings
 * that are one of several shapes (`rateLimits.perIp`) are the file's only.
 */
export function envVariables(): EnvVariable[] {
  const out: EnvVariable[] = []
  const walk = (def: ZodDef, path: string[]) => {
    while (def.innerType || (def.type === 'pipe' && def.in)) def = (def.innerType ?? def.in)!._zod.def
    if (def.type === 'object' && def.shape) {
      for (const [key, child] of Object.entries(def.shape)) walk(child._zod.def, [...path, key])
      return
    }
    const kind = def.type === 'number' ? 'number' : def.type === 'boolean' ? 'boolean' : def.type === 'string' || def.type === 'enum' ? 'string' : undefined
    if (kind === undefined) return
    out.push({ name: ENV_ALIASES[path.join('.')] ?? `TASKPASS_${path.map(envSegment).join('_')}`, path, kind })
  }
  walk(configSchema._zod.def as unknown as ZodDef, [])
  return out
}

/**
 * The configuration with the environment's `TASKPASS_*` variables applied over the file's values
 * ({@link envVariables}). A number or boolean that does not parse is passed on as it was written,
 * so validation names the setting it was for.
 */
export function applyEnv(input: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = structuredClone(input)
  for (const v of envVariables()) {
    const raw = env[v.name]
    if (raw === undefined || raw === '') continue
    const value = v.kind === 'number' && /^-?[0-9]+(\.[0-9]+)?$/.test(raw) ? Number(raw) : v.kind === 'boolean' && (raw === 'true' || raw === 'false') ? raw === 'true' : raw
    let at = out
    for (const key of v.path.slice(0, -1)) {
      const next = at[key]
      at = at[key] = typeof next === 'object' && next !== null && !Array.isArray(next) ? { ...(next as Record<string, unknown>) } : {}
    }
    at[v.path.at(-1)!] = value
  }
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
