import { createApp, createMetricsApp } from './app.js'
import { createBroker, onServerStart } from './broker.js'
import { systemClock } from './clock.js'
import { ConfigError } from './config.js'
import { listen } from './http/server.js'
import { createJsonLogger } from './logger.js'
import { loadRuntime } from './runtime.js'
import { pruneStore } from './store/retention.js'

/** The one impure entry: config → db → migrate → keys → createApp(deps) → serve. */
async function main() {
  const logger = createJsonLogger()
  let runtime
  try {
    runtime = await loadRuntime(process.argv.slice(2), process.env, logger)
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`taskpass: ${e.message}\n`)
      process.exit(2)
    }
    throw e
  }
  const { config, kek, dev } = runtime
  const deps = await createBroker({ config, clock: systemClock, logger, kek })
  onServerStart(deps)
  const app = createApp(deps)
  // A key rotated or revoked by the CLI (another process) takes effect on the next request: the
  // keyset checks SQLite's data_version on every use (src/keys/keyset.ts). This reload withdraws
  // retired keys whose publish window has ended; the rest prunes what retention allows.
  const timer = setInterval(() => {
    deps.keys.reload().catch((e: unknown) => logger.error('key reload failed', { error: String(e) }))
    pruneStore(deps.stores, config, systemClock.now())
  }, 10_000)
  timer.unref()
  const server = await listen(app, config.listen)
  logger.info('taskpass listening', { issuer: config.issuer, address: `${server.address.address}:${server.address.port}`, kid: deps.keys.current().kid })
  if (dev) logger.info('dev mode: mint a user session and a workload SVID with `npm run cli -- dev-tokens`')
  const metricsServer = config.metrics.listen ? await listen(createMetricsApp(deps), config.metrics.listen) : undefined
  if (metricsServer) logger.info('metrics listening (no credential)', { address: `${metricsServer.address.address}:${metricsServer.address.port}` })
  const stop = () => {
    void server.close()
    void metricsServer?.close()
    deps.database.close()
    process.exit(0)
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

await main()
