import { hash as argon2Hash, verify as argon2Verify } from '@node-rs/argon2'
import { createReplayCache } from '@taskpass/verifier/cache'
import type { Clock } from './clock.js'
import type { Config } from './config.js'
import { createDpopChecker, type DpopChecker } from './dpop/checker.js'
import { createNonceSource, deriveNonceKey } from './dpop/nonce.js'
import { createActorTokenVerifier, type ActorTokenVerifier } from './exchange/actor-token.js'
import { createClientAssertionVerifier, type ClientAssertionVerifier } from './exchange/client-assertion.js'
import { createIdJagVerifier, type IdJagVerifier } from './exchange/id-jag.js'
import { createSubjectTokenVerifier, subjectIssuerKeys, type SubjectTokenVerifier } from './exchange/subject-token.js'
import { createAuthThrottle, type AuthThrottle } from './http/auth-throttle.js'
import { createClientAuthenticator, type ClientAuthenticator, type Hasher } from './http/client-auth.js'
import { openKeySet, type KeySet, type KeyStoreOptions } from './keys/keyset.js'
import { createMetrics, type Metrics } from './http/metrics.js'
import { createLimiter, type Limiter } from './http/rate-limit.js'
import type { Logger } from './logger.js'
import { createApprovalWaiters, sqliteDecisionWatch, WAITER_LIMITS, type ApprovalWaiters } from './tasks/approvals.js'
import { revokeTasksOfRetiredWorkloads } from './tasks/lifecycle.js'
import { createPolicyEngine, type PolicyEngine } from './policy/engine.js'
import { openDatabase, type Database_ } from './store/db.js'
import { createStores, type Stores } from './store/stores.js'
import { createOwnTokenVerifier, type OwnTokenVerifier } from './tokens/own-token.js'
import { createSealer, type Sealer } from './lib/seal.js'
import { createClientMetadataResolver, type ClientMetadataResolver } from './clients/metadata-document.js'
import { createOidcLogin, type OidcLogin } from './login/oidc.js'
import { createClientRegistrations, type ClientRegistrations } from './clients/registration.js'

/** Everything the app needs, built once in {@link createBroker}; each test builds its own. */
export interface Deps {
  config: Config
  clock: Clock
  logger: Logger
  database: Database_
  stores: Stores
  keys: KeySet
  keyStore: KeyStoreOptions
  policy: PolicyEngine
  hasher: Hasher
  subjectTokens: SubjectTokenVerifier
  /** Enterprise IdPs' ID-JAGs (the `jwt-bearer` grant), verified with the subject issuers' keys. */
  idJags: IdJagVerifier
  actorTokens: ActorTokenVerifier
  ownTokens: OwnTokenVerifier
  clients: ClientAuthenticator
  /** private_key_jwt (RFC 7523) verification, holding the assertion `jti` replay cache. */
  clientAssertions: ClientAssertionVerifier
  /** DPoP (RFC 9449) at /token and POST /tasks: holds the proof `jti` replay cache and the nonce key. */
  dpop: DpopChecker
  workloadLimiter: Limiter | undefined
  /** The guard in front of every argon2 verification (resource secrets, admin keys). */
  authThrottle: AuthThrottle
  /** Prometheus metrics (prom-client), one registry per broker. */
  metrics: Metrics
  /** Requests held until a task's approval is decided (GET /tasks/{id}?wait=); released when the database closes. */
  approvals: ApprovalWaiters
  /** State the browser carries through the authorization-code flow, sealed under keys derived from the KEK. */
  sealer: Sealer
  /** Client ID Metadata Documents of OAuth clients (fetched, validated, cached). */
  clientMetadata: ClientMetadataResolver
  /** Sign-in at upstream OIDC IdPs (the broker as relying party). */
  oidcLogin: OidcLogin
  /** RFC 7591 dynamic registration (stateless: the client id is the sealed registration), when configured. */
  registrations: ClientRegistrations
}

/** argon2id (the library default algorithm; left unset on purpose, see README). */
export const argon2Hasher: Hasher = {
  hash: (secret) => argon2Hash(secret),
  verify: async (hash, secret) => {
    try {
      return await argon2Verify(hash, secret)
    } catch {
      return false
    }
  },
}

/** The one wiring point: config → database (migrated) → keys → verifiers → deps. */
export async function createBroker(opts: { config: Config; clock: Clock; logger: Logger; kek: Uint8Array; hasher?: Hasher; clientMetadata?: ClientMetadataResolver }): Promise<Deps> {
  const { config, clock, logger } = opts
  const database = openDatabase(config.database)
  const stores = createStores(database)
  const metrics = createMetrics()
  metrics.watchTasks(database.sqlite)
  // Cedar: the set (generated, the file's, the stored admin policies) is validated and prepared
  // before anything is served; a bad policy is a ConfigError.
  let policy: PolicyEngine
  try {
    policy = createPolicyEngine(config, { adminText: stores.policySets.latest()?.text, observe: (evaluator, action, seconds) => metrics.policyEvaluation.observe({ evaluator, action }, seconds) })
  } catch (e) {
    database.close()
    throw e
  }
  const keyStore: KeyStoreOptions = { database, clock, kek: opts.kek, alg: config.keys.alg, retiredPublishSeconds: config.tokens.maxTtl + config.clockSkew }
  const keys = await openKeySet(keyStore)
  const hasher = opts.hasher ?? argon2Hasher
  // One key resolver per subject issuer, shared by its session tokens and its ID-JAGs.
  const issuerKeys = subjectIssuerKeys(config.subjectIssuers, { clock, remoteJwks: config.remoteJwks })
  const subjectTokens = createSubjectTokenVerifier({
    keys: issuerKeys,
    issuers: config.subjectIssuers,
    brokerIssuer: config.issuer,
    clock,
    clockSkew: config.clockSkew,
    remoteJwks: config.remoteJwks,
    isSessionRevoked: stores.sessions.isRevoked,
    observeCache: metrics.cacheObserver('subject_tokens'),
  })
  const idJags = createIdJagVerifier({ issuers: config.subjectIssuers, keys: issuerKeys, brokerIssuer: config.issuer, clock, clockSkew: config.clockSkew, isSessionRevoked: stores.sessions.isRevoked })
  const actorTokens = createActorTokenVerifier({
    issuers: config.workloadIssuers,
    workloads: config.workloads,
    brokerIssuer: config.issuer,
    clock,
    clockSkew: config.clockSkew,
    maxLifetime: config.maxActorTokenLifetime,
    remoteJwks: config.remoteJwks,
    observeCache: metrics.cacheObserver('actor_tokens'),
  })
  const clientAssertions = createClientAssertionVerifier({
    workloads: config.workloads,
    issuer: config.issuer,
    clock,
    clockSkew: config.clockSkew,
    maxLifetime: config.clientAuth.maxAssertionLifetime,
    algorithms: config.clientAuth.algorithms,
    replay: createReplayCache(config.clientAuth.replayCacheSize),
    remoteJwks: config.remoteJwks,
  })
  const authThrottle = createAuthThrottle(config.authThrottle, clock)
  // Closing the database is how the broker closes (server stop, tests, the CLI): held waits are
  // answered first, so none outlives the store it would read.
  const approvals = createApprovalWaiters(WAITER_LIMITS, sqliteDecisionWatch({ database, stores, clock }))
  const closeDatabase = database.close
  database.close = () => {
    approvals.close()
    closeDatabase()
  }
  const sealer = createSealer(opts.kek, clock)
  return {
    approvals,
    sealer,
    registrations: createClientRegistrations(config, sealer),
    clientMetadata: opts.clientMetadata ?? createClientMetadataResolver({ options: config.authorization.clientMetadata, clock, observeCache: metrics.cacheObserver('client_metadata') }),
    oidcLogin: createOidcLogin({ clock, timeout: config.remoteJwks.timeout, clockSkew: config.clockSkew }),
    config,
    clock,
    logger,
    database,
    stores,
    keys,
    keyStore,
    policy,
    hasher,
    subjectTokens,
    idJags,
    actorTokens,
    ownTokens: createOwnTokenVerifier({ keys, issuer: config.issuer, clock }),
    clients: createClientAuthenticator({ resources: config.resources, hasher, actorTokens, clientAssertions, clock, throttle: authThrottle }),
    authThrottle,
    clientAssertions,
    metrics,
    workloadLimiter: config.rateLimits.perWorkload ? createLimiter(config.rateLimits.perWorkload, clock) : undefined,
    dpop: createDpopChecker({
      clock,
      iatWindow: config.clockSkew,
      algorithms: config.dpop.algorithms,
      replay: createReplayCache(config.dpop.replayCacheSize),
      // Stateless nonces keyed from the KEK: the same on every instance and across restarts (README, DPoP).
      nonces: config.dpop.nonce ? createNonceSource({ key: deriveNonceKey(opts.kek), clock, window: config.dpop.nonceWindow }) : undefined,
    }),
  }
}

/**
 * What the server does once at start, before it listens: end the tasks of workloads the
 * configuration disables or no longer lists. Only the server runs it — never the CLI, whose
 * `--config` may be another file (a read-only command must not revoke anything).
 */
export function onServerStart(deps: Deps): void {
  const revoked = revokeTasksOfRetiredWorkloads(deps, deps.config.workloads)
  if (revoked.length > 0) deps.logger.warn('revoked the open tasks of disabled or removed workloads', { tasks: revoked.length })
}
