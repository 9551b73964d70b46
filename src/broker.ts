import { hash as argon2Hash, verify as argon2Verify } from '@node-rs/argon2'
import { createReplayCache, type ReplayCache } from '@taskpass/verifier/cache'
import type { Clock } from './clock.js'
import type { Config } from './config.js'
import { effectiveConfig } from './catalog/effective.js'
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
import { createApprovalWaiters, storeDecisionWatch, WAITER_LIMITS, type ApprovalWaiters } from './tasks/approvals.js'
import { revokeTasksOutsideCatalog } from './catalog/retirement.js'
import { createPolicyEngine, type PolicyEngine } from './policy/engine.js'
import { isPostgresUrl, openStores, type BrokerDatabase } from './store/open.js'
import type { Stores } from './store/stores.js'
import { createOwnTokenVerifier, type OwnTokenVerifier } from './tokens/own-token.js'
import { createSealer, type Sealer } from './lib/seal.js'
import { createFeedHub, type FeedHub } from './revocations/hub.js'
import { sharedReplayCache } from './lib/shared-replay.js'
import { createClientMetadataResolver, type ClientMetadataResolver } from './clients/metadata-document.js'
import { createOidcLogin, type OidcLogin } from './login/oidc.js'
import { createClientRegistrations, type ClientRegistrations } from './clients/registration.js'

/** Everything the app needs, built once in {@link createBroker}; each test builds its own. */
export interface Deps {
  config: Config
  clock: Clock
  logger: Logger
  database: BrokerDatabase
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
  /** The revocation feed's streams: each new event read once and queued for all of them. */
  feedHub: FeedHub
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
  /**
   * The catalog in force (src/catalog/): `config` is `base` (the file's) with the objects stored
   * through the admin API. A change is prepared (validated, verifiers built) before it is stored,
   * then installed: every request after it sees the new catalog whole.
   */
  catalog: {
    readonly base: Config
    /** The stored catalog revision `config` reflects. */
    revision: number
    /** A change committed but its tasks not all ended yet (the sweep failed): the next refresh runs it again. */
    sweepPending: boolean
    prepare(config: Config): CatalogBuilt
    install(config: Config, built: CatalogBuilt, revision: number): void
  }
}

/**
 * The feed hub's bounds: rows read per query, and how many events a stream may have queued (its
 * socket slower than the events come) before it is told to reconnect.
 */
export const FEED_LIMITS = { page: 500, maxQueued: 10_000 }

/** Brokers made in this process: each names its own policy slots (tests make many). */
let brokers = 0

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
  const { clock, logger } = opts
  const base = opts.config
  const { database, stores } = await openStores(base.database)
  const metrics = createMetrics()
  metrics.watchTasks(stores)
  // The file's configuration with the objects stored through the admin API (src/catalog/), and
  // Cedar's set (generated, the file's, the stored admin policies): validated and prepared before
  // anything is served; a bad catalog or policy is a ConfigError.
  let config: Config
  let built: CatalogBuilt
  const revision = await stores.catalog.revision()
  const hasher = opts.hasher ?? argon2Hasher
  const authThrottle = createAuthThrottle(base.authThrottle, clock)
  // The replay cache outlives every rebuild of the catalog: a used assertion stays used.
  // On PostgreSQL (several instances) shared unless set otherwise: a proof used at one instance is used at all.
  const sharedReplay = base.replay.shared ?? isPostgresUrl(base.database)
  const shareReplay = (local: ReplayCache, scope: string) => (sharedReplay ? sharedReplayCache(local, stores.replay, scope) : local)
  const assertionReplay = shareReplay(createReplayCache(base.clientAuth.replayCacheSize), 'client-assertion')
  // The policy engine's slots in the wasm instance (which frees nothing): two, alternating — a
  // change prepares into the ones not in force, so any number of changes costs two engines' worth.
  const broker = ++brokers
  let inForce = 0
  const build = (c: Config, adminText: string | undefined, slots: number): CatalogBuilt => buildCatalogDeps(c, { clock, stores, metrics, hasher, authThrottle, assertionReplay, adminText, slots: `broker${broker}.${slots}` })
  try {
    config = effectiveConfig(base, await stores.catalog.all())
    built = build(config, (await stores.policySets.latest())?.text, inForce)
  } catch (e) {
    await database.close()
    throw e
  }
  const keyStore: KeyStoreOptions = { stores, clock, kek: opts.kek, alg: config.keys.alg, retiredPublishSeconds: config.tokens.maxTtl + config.clockSkew }
  let keys: KeySet
  try {
    keys = await openKeySet(keyStore)
  } catch (e) {
    await database.close()
    throw e
  }
  // Closing the database is how the broker closes (server stop, tests, the CLI): held waits are
  // answered first, so none outlives the store it would read.
  const approvals = createApprovalWaiters(WAITER_LIMITS, storeDecisionWatch({ stores, clock }))
  const feedHub = createFeedHub(stores, FEED_LIMITS)
  const closeDatabase = database.close
  const closing: BrokerDatabase = {
    dialect: database.dialect,
    get sqlite() {
      return database.sqlite
    },
    get pool() {
      return database.pool
    },
    // Held waits and streams are answered before the store they read goes (synchronously, so a
    // caller that does not await still sees them answered).
    close: () => {
      approvals.close()
      feedHub.close()
      return closeDatabase()
    },
  }
  const sealer = createSealer(opts.kek, clock)
  const deps: Deps = {
    ...built,
    approvals,
    feedHub,
    sealer,
    clientMetadata: opts.clientMetadata ?? createClientMetadataResolver({ options: config.authorization.clientMetadata, clock, observeCache: metrics.cacheObserver('client_metadata') }),
    oidcLogin: createOidcLogin({ clock, timeout: config.remoteJwks.timeout, clockSkew: config.clockSkew }),
    config,
    clock,
    logger,
    database: closing,
    stores,
    keys,
    keyStore,
    hasher,
    ownTokens: createOwnTokenVerifier({ keys, issuer: config.issuer, clock }),
    authThrottle,
    metrics,
    workloadLimiter: config.rateLimits.perWorkload ? createLimiter(config.rateLimits.perWorkload, clock) : undefined,
    dpop: createDpopChecker({
      clock,
      iatWindow: config.clockSkew,
      algorithms: config.dpop.algorithms,
      replay: shareReplay(createReplayCache(config.dpop.replayCacheSize), 'dpop'),
      // Stateless nonces keyed from the KEK: the same on every instance and across restarts (README, DPoP).
      nonces: config.dpop.nonce ? createNonceSource({ key: deriveNonceKey(opts.kek), clock, window: config.dpop.nonceWindow }) : undefined,
    }),
    catalog: {
      base,
      revision,
      sweepPending: false,
      prepare: (c) => build(c, deps.policy.adminText, 1 - inForce),
      install(c, next, at) {
        Object.assign(deps, next, { config: c, registrations: createClientRegistrations(c, sealer) })
        // What is installed is what was just prepared, into the slots that were not in force.
        inForce = 1 - inForce
        deps.catalog.revision = at
      },
    },
    registrations: createClientRegistrations(config, sealer),
  }
  return deps
}

/** What depends on the catalog (issuers, workloads, resources, admin keys): rebuilt whole when it changes. */
export type CatalogBuilt = Pick<Deps, 'policy' | 'subjectTokens' | 'idJags' | 'actorTokens' | 'clientAssertions' | 'clients'>

/**
 * Builds the verifiers and the policy engine of one catalog. Caches of verified tokens and fetched
 * keys start empty, so nothing verified under the previous catalog (an issuer since switched
 * off) passes; replay caches are passed in, kept across rebuilds. Throws {@link ConfigError} when
 * the policy set does not validate with it.
 */
function buildCatalogDeps(
  config: Config,
  shared: { clock: Clock; stores: Stores; metrics: Metrics; hasher: Hasher; authThrottle: AuthThrottle; assertionReplay: ReplayCache; adminText: string | undefined; slots: string },
): CatalogBuilt {
  const { clock, stores, metrics } = shared
  const policy = createPolicyEngine(config, { adminText: shared.adminText, slots: shared.slots, observe: (evaluator, action, seconds) => metrics.policyEvaluation.observe({ evaluator, action }, seconds) })
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
    replay: shared.assertionReplay,
    remoteJwks: config.remoteJwks,
  })
  const clients = createClientAuthenticator({ resources: config.resources, hasher: shared.hasher, actorTokens, clientAssertions, clock, throttle: shared.authThrottle })
  return { policy, subjectTokens, idJags, actorTokens, clientAssertions, clients }
}

/**
 * What the server does once at start, before it listens: end the tasks the catalog no longer
 * admits (their workload, resource or issuer removed or disabled while it was down). Only the
 * server runs it — never the CLI, whose `--config` may be another file (a read-only command must
 * not revoke anything).
 */
export async function onServerStart(deps: Deps): Promise<void> {
  const revoked = await revokeTasksOutsideCatalog(deps, 'config')
  if (revoked.length > 0) deps.logger.warn('revoked the open tasks of disabled or removed workloads, resources or issuers', { tasks: revoked.length })
}
