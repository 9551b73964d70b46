/**
 * The real broker, wired as src/main.ts wires it (createBroker + createApp, system clock, real
 * argon2id hasher, a SQLite file), with a configuration built the way test/harness.ts builds
 * one: inline JWKS for the user issuer and the SPIFFE trust domain, one workload, one resource.
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { createApp } from '../../src/app.js'
import { argon2Hasher, createBroker, type Deps } from '../../src/broker.js'
import { systemClock } from '../../src/clock.js'
import { parseConfig, type ConfigInput } from '../../src/config.js'
import { listen } from '../../src/http/server.js'
import { createJsonLogger } from '../../src/logger.js'
import type { PolicyContext } from '../../src/policy/decide.js'
import { AGENT_SPIFFE_ID, MAX_ACTOR_TOKEN_LIFETIME, RESOURCE, RESOURCE_CLIENT_ID, RESOURCE_SCOPES, RESOURCE_SECRET, SCOPE, SESSION_ID, TRUST_DOMAIN, USER, USER_ISSUER, WORKLOAD_ID, type PublicKeys } from '../lib/fixtures.js'
import { announceReady, answerCommands, exitWithParent, HOST, readServerConfig } from '../lib/server-child.js'

export interface TaskpassServerConfig {
  port: number
  issuer: string
  database: string
  keys: PublicKeys
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
}

/** What the child tells the parent with its READY line (bench/lib/server-child.ts). */
export interface TaskpassServerInfo {
  /** Milliseconds createBroker took: database, migrations, the policy set (read, validated, prepared), keys. */
  createBrokerMs: number
  /** Policies in force, generated grant permits included. */
  policies: number
  /** Policies Cedar evaluates for the bench resource (its bucket), and for the largest bucket. */
  benchBucket: number
  largestBucket: number
  /** Whether decisions are Cedar's (a policy file) or the native grant evaluator's (none). */
  evaluator: 'cedar' | 'native'
}

/**
 * The decision a warm exchange of the bench asks for (agent-a, `notes:read` on the bench resource,
 * a task opened a minute ago, a SPIFFE attestation), `count` times after as many warm-up calls;
 * the median of per-batch means, in microseconds (what one decision costs, without the HTTP
 * load's noise). Throws if the decision is not an allow. The parent asks for it between load runs
 * (`time-decisions <count>` on stdin).
 */
function timeDecisions(deps: Deps, count: number): number {
  const resource = deps.config.resources.find((r) => r.uri === RESOURCE)!
  const workload = deps.config.workloads.find((w) => w.id === WORKLOAD_ID)!
  const now = Math.floor(Date.now() / 1000)
  const context: PolicyContext = {
    workload,
    scopes: [SCOPE],
    dpopBound: false,
    now,
    attestation: { kind: 'spiffe', issuer: `spiffe://${TRUST_DOMAIN}`, subject: AGENT_SPIFFE_ID },
    task: { id: 'bench-task', purpose: 'benchmark', resources: [{ resource: RESOURCE, scopes: [SCOPE] }], createdAt: now - 60, expiresAt: now + 3540, tokensMinted: 10, approved: false },
    sessionStartedAt: now - 120,
    callerAddress: HOST,
  }
  const principal = { user: USER, issuer: USER_ISSUER, sid: SESSION_ID }
  const first = deps.policy.decide(principal, 'token.exchange', resource, context)
  if (!first.allow) throw new Error(`the bench exchange's decision is a deny: ${first.reason}`)
  for (let i = 0; i < count; i++) deps.policy.decide(principal, 'token.exchange', resource, context)
  const batch = Math.max(1, Math.floor(count / 20))
  const means: number[] = []
  for (let done = 0; done < count; done += batch) {
    const t = performance.now()
    for (let i = 0; i < batch; i++) deps.policy.decide(principal, 'token.exchange', resource, context)
    means.push(((performance.now() - t) * 1000) / batch)
  }
  means.sort((a, b) => a - b)
  return Number(means[Math.floor(means.length / 2)]!.toFixed(1))
}

const UNLIMITED = { ratePerSecond: 1e9, burst: 1e9 }

async function brokerConfig(c: TaskpassServerConfig): Promise<ConfigInput> {
  return {
    issuer: c.issuer,
    database: c.database,
    keys: { kek: randomBytes(32).toString('base64url') },
    maxActorTokenLifetime: MAX_ACTOR_TOKEN_LIFETIME,
    ...(c.clockSkew !== undefined ? { clockSkew: c.clockSkew } : {}),
    ...(c.dpopReplayCacheSize !== undefined ? { dpop: { replayCacheSize: c.dpopReplayCacheSize } } : {}),
    ...(c.authThrottle !== undefined ? { authThrottle: c.authThrottle } : {}),
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

const c = readServerConfig<TaskpassServerConfig>()
mkdirSync(dirname(c.database), { recursive: true })
const config = parseConfig(await brokerConfig(c))
const logger = createJsonLogger()
const t0 = performance.now()
const deps = await createBroker({ config, clock: systemClock, logger, kek: Buffer.from(config.keys.kek!, 'base64url') })
const createBrokerMs = Math.round(performance.now() - t0)
const buckets = [...deps.policy.set.byResource.values()].map((b) => b.length)
const info: TaskpassServerInfo = {
  createBrokerMs,
  policies: deps.policy.set.policies.size,
  benchBucket: deps.policy.set.byResource.get(RESOURCE)?.length ?? 0,
  largestBucket: Math.max(0, ...buckets),
  evaluator: deps.policy.set.generatedOnly ? 'native' : 'cedar',
}
const app = createApp(deps)

// As src/main.ts: pick up key rotations and prune expired token rows every 10 s.
const timer = setInterval(() => {
  deps.keys.reload().catch((e: unknown) => logger.error('key reload failed', { error: String(e) }))
  deps.stores.tokens.pruneExpired(systemClock.now() - config.clockSkew)
}, 10_000)
timer.unref()

// The listener src/main.ts uses (src/http/server.ts).
const server = await listen(app, { host: HOST, port: c.port })
exitWithParent(() => {
  void server.close()
  deps.database.close()
})
answerCommands((command) => {
  const m = /^time-decisions ([1-9][0-9]{0,6})$/.exec(command)
  if (!m) throw new Error(`unknown command "${command}" (expected: time-decisions <count>)`)
  return timeDecisions(deps, Number(m[1]))
})
announceReady(server.address.port, info)
