/**
 * The bench broker's configuration and the decision its warm exchange asks for: shared by
 * bench/servers/taskpass.ts and test/bench.test.ts (which checks the policy part's files against
 * exactly this broker and this decision).
 */
import { randomBytes } from 'node:crypto'
import { argon2Hasher } from '../../src/broker.js'
import type { Config, ConfigInput, ResourceConfig } from '../../src/config.js'
import type { PolicyContext, Principal } from '../../src/policy/decide.js'
import { AGENT_SPIFFE_ID, MAX_ACTOR_TOKEN_LIFETIME, RESOURCE, RESOURCE_CLIENT_ID, RESOURCE_SCOPES, RESOURCE_SECRET, SCOPE, SESSION_ID, TRUST_DOMAIN, USER, USER_ISSUER, WORKLOAD_ID, type PublicKeys } from './fixtures.js'
import { HOST } from './server-child.js'

export interface TaskpassServerConfig {
  port: number
  issuer: string
  /** A SQLite file, or a PostgreSQL URL (`postgres://…`). */
  database: string
  keys: PublicKeys
  /**
   * The key-encryption key (base64url, 32 bytes): the same for every process on one database (they
   * share its signing keys); a fresh random one when absent.
   */
  kek?: string
  /** Broker `replay.shared`: single-use `jti`s recorded in the database too (several processes on one SQLite file). */
  replayShared?: boolean
  /** Broker `clockSkew` (also the DPoP proof `iat` window); the broker's default when absent. */
  clockSkew?: number
  /** Broker `dpop.replayCacheSize`: room for every proof a DPoP run sends; the default when absent. */
  dpopReplayCacheSize?: number
  /** Broker `authThrottle` (the guard in front of argon2 verifications); the broker's defaults when absent. */
  authThrottle?: ConfigInput['authThrottle']
  /** More registered resources (no grant, no credential), e.g. the ones a policy file names. */
  extraResources?: Array<{ uri: string; scopes: string[] }>
  /** Broker `policies.file`: a Cedar policy file added to the generated grant permits. */
  policyFile?: string
  /**
   * Broker `tokens.defaultTtl`, seconds: a short one makes issued rows expire within the run, so
   * the periodic prune deletes them while the exchange is measured. The broker's default (300 s,
   * longer than the HTTP rounds) when absent: then pruning finds nothing to delete.
   */
  tokenTtl?: number
  /** How often the child runs pruneStore, ms (src/main.ts: every 10 s, the default here too). */
  pruneIntervalMs?: number
}

/** src/main.ts prunes (and reloads keys) this often. */
export const MAIN_PRUNE_INTERVAL_MS = 10_000

const UNLIMITED = { ratePerSecond: 1e9, burst: 1e9 }

/** The broker configuration (before `parseConfig`) of one bench server. */
export async function brokerConfig(c: TaskpassServerConfig): Promise<ConfigInput> {
  return {
    issuer: c.issuer,
    database: c.database,
    keys: { kek: c.kek ?? randomBytes(32).toString('base64url') },
    maxActorTokenLifetime: MAX_ACTOR_TOKEN_LIFETIME,
    ...(c.clockSkew !== undefined ? { clockSkew: c.clockSkew } : {}),
    ...(c.dpopReplayCacheSize !== undefined ? { dpop: { replayCacheSize: c.dpopReplayCacheSize } } : {}),
    ...(c.replayShared !== undefined ? { replay: { shared: c.replayShared } } : {}),
    ...(c.authThrottle !== undefined ? { authThrottle: c.authThrottle } : {}),
    ...(c.tokenTtl !== undefined ? { tokens: { defaultTtl: c.tokenTtl } } : {}),
    // One loopback client and one workload drive all the load: keep the limiters in the request
    // path (their cost is part of an exchange) but with buckets no benchmark can empty.
    rateLimits: { perIp: UNLIMITED, perWorkload: UNLIMITED },
    subjectIssuers: [{ issuer: USER_ISSUER, jwks: { keys: [c.keys.user as Record<string, unknown>] }, algorithms: ['ES256'] }],
    workloadIssuers: [{ kind: 'spiffe', trustDomain: TRUST_DOMAIN, jwks: { keys: [{ ...c.keys.spiffe, use: 'jwt-svid' }] } }],
    workloads: [
      {
        id: WORKLOAD_ID,
        attestation: { issuer: `spiffe://${TRUST_DOMAIN}`, subject: AGENT_SPIFFE_ID },
        grants: [{ resource: RESOURCE, scopes: RESOURCE_SCOPES }],
      },
    ],
    resources: [{ uri: RESOURCE, scopes: RESOURCE_SCOPES, credential: { clientId: RESOURCE_CLIENT_ID, secretHash: await argon2Hasher.hash(RESOURCE_SECRET) } }, ...(c.extraResources ?? [])],
    ...(c.policyFile !== undefined ? { policies: { file: c.policyFile } } : {}),
    admin: { apiKeyHashes: [await argon2Hasher.hash(`tpa_${randomBytes(16).toString('hex')}`)] },
  }
}

/** What `deps.policy.decide` is asked at each warm exchange of the bench (agent-a, `notes:read` on the bench resource, a task opened a minute ago). */
export interface BenchDecision {
  principal: Principal
  resource: ResourceConfig
  context: PolicyContext
}

export function benchExchangeDecision(config: Config, now = Math.floor(Date.now() / 1000)): BenchDecision {
  const resource = config.resources.find((r) => r.uri === RESOURCE)
  const workload = config.workloads.find((w) => w.id === WORKLOAD_ID)
  if (!resource || !workload) throw new Error('not a bench broker configuration')
  return {
    principal: { user: USER, issuer: USER_ISSUER, sid: SESSION_ID },
    resource,
    context: {
      workload,
      scopes: [SCOPE],
      dpopBound: false,
      now,
      attestation: { kind: 'spiffe', issuer: `spiffe://${TRUST_DOMAIN}`, subject: AGENT_SPIFFE_ID },
      task: { id: 'bench-task', purpose: 'benchmark', resources: [{ resource: RESOURCE, scopes: [SCOPE] }], createdAt: now - 60, expiresAt: now + 3540, tokensMinted: 10, approved: false },
      sessionStartedAt: now - 120,
      callerAddress: HOST,
    },
  }
}
