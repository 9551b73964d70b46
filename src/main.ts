import { createApp, createMetricsApp } from './app.js'
import { createBroker, onServerStart } from './broker.js'
import { systemClock } from './clock.js'
import { ConfigError, LOG_LEVELS } from './config.js'
import { listen } from './http/server.js'
import { createPinoLogger } from './logger.js'
import { createPolicyEngine } from './policy/engine.js'
import { loadRuntime } from './runtime.js'
import { pruneStore } from './store/retention.js'
import { refreshCatalog } from './catalog/catalog.js'
import { refreshPolicies } from './policy/manage.js'

/**
 * `--check-config`: the configuration (file, env overrides, key-encryption key, Cedar policy
 * file) validated as at start, without opening the database or listening. Prints the problems
 * or "configuration ok"; exit status 0 or 2.
 */
async function checkConfig(argv: string[]): Promise<number> {
  try {
    const { config } = await loadRuntime(argv, process.env, createPinoLogger({ level: 'warn' }))
    createPolicyEngine(config)
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`taskpass: ${e.message}\n`)
      return 2
    }
    throw e
  }
  process.stdout.write('configuration ok\n')
  return 0
}

/** The one impure entry: config → db → migrate → keys → createApp(deps) → serve. */
async function main() {
  const argv = process.argv.slice(2)
  if (argv.includes('--check-config')) process.exit(await checkConfig(argv))
  // Until the configuration is read, the level comes from the environment alone.
  const logger = createPinoLogger({ level: LOG_LEVELS.find((l) => l === process.env.TASKPASS_LOG_LEVEL) ?? 'info' })
  let runtime
  try {
    runtime = await loadRuntime(argv, process.env, logger)
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`taskpass: ${e.message}\n`)
      process.exit(2)
    }
    throw e
  }
  const { config, kek, dev } = runtime
  logger.setLevel(config.logging.level)
  const deps = await createBroker({ config, clock: systemClock, logger, kek })
  await onServerStart(deps)
  const app = createApp(deps)
  // A key rotated or revoked by the CLI or another instance takes effect on the next request after
  // the store's change watch sees it (src/keys/keyset.ts, StoreUpkeep.watch). This reload withdraws
  // retired keys whose publish window has ended; the rest prunes what retention allows.
  const timer = setInterval(() => {
    deps.keys.reload().catch((e: unknown) => logger.error('key reload failed', { error: String(e) }))
    // The database busy (another process writing): the next run prunes what this one left.
    // One instance at a time (several on one PostgreSQL database): the others skip this run.
    deps.stores.alone('prune', () => pruneStore(deps.stores, config, systemClock.now())).catch((e: unknown) => logger.error('pruning failed', { error: String(e) }))
  }, 10_000)
  timer.unref()
  // A catalog change or admin policies stored by the CLI or another instance (another process)
  // are taken up within a second: the catalog first, so the policies are validated against it.
  const catalogTimer = setInterval(async () => {
    try {
      await refreshCatalog(deps)
    } catch (e) {
      logger.error('catalog refresh failed', { error: String(e) })
    }
    try {
      await refreshPolicies(deps)
    } catch (e) {
      logger.error('policy refresh failed', { error: String(e) })
    }
  }, 1000)
  catalogTimer.unref()
  const server = await listen(app, config.listen)
  logger.info('taskpass listening', { issuer: config.issuer, address: `${server.address.address}:${server.address.port}`, kid: (await deps.keys.current()).kid })
  if (dev) logger.info('dev mode: mint a user session and a workload SVID with `npm run cli -- dev-tokens`; sign in to the dev pages with the password it prints', { account: `${config.issuer}/account` })
  const metricsServer = config.metrics.listen ? await listen(createMetricsApp(deps), config.metrics.listen) : undefined
  if (metricsServer) logger.info('metrics listening (no credential)', { address: `${metricsServer.address.address}:${metricsServer.address.port}` })
  const stop = () => {
    void server.close()
    void metricsServer?.close()
    // A PostgreSQL pool ends over the wire; whatever it answers, the process ends.
    void deps.database
      .close()
      .catch(() => {})
      .finally(() => {
        logger.flush()
        process.exit(0)
      })
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

await main()
