import { resolve } from 'node:path'
import { argon2Hasher } from './broker.js'
import { applyEnv, loadConfigFile, parseConfig, type Config } from './config.js'
import { devConfig, ensureDevMaterial, type DevMaterial } from './dev/dev-setup.js'
import { loadKek } from './keys/kek.js'
import type { Logger } from './logger.js'

export interface Runtime {
  config: Config
  kek: Uint8Array
  dev: DevMaterial | undefined
}

/**
 * Dev mode's issuer follows where it listens: `TASKPASS_PORT=8798` must not advertise 8787. A
 * wildcard host is advertised as the loopback address (a dev broker is reached locally).
 */
function devIssuer(env: NodeJS.ProcessEnv): string | undefined {
  if (!env.TASKPASS_PORT && !env.TASKPASS_HOST) return undefined
  const host = !env.TASKPASS_HOST || env.TASKPASS_HOST === '0.0.0.0' || env.TASKPASS_HOST === '::' ? '127.0.0.1' : env.TASKPASS_HOST
  const url = new URL('http://127.0.0.1')
  url.hostname = host.includes(':') ? `[${host}]` : host
  url.port = env.TASKPASS_PORT ?? '8787'
  return url.origin
}

/**
 * Resolves what the broker runs with: the config file named by `--config` or TASKPASS_CONFIG
 * (plus TASKPASS_* overrides), or — with neither — the dev configuration in TASKPASS_DATA_DIR
 * (default `.taskpass/`), announced loudly.
 */
export async function loadRuntime(argv: string[], env: NodeJS.ProcessEnv, logger: Logger): Promise<Runtime> {
  const i = argv.indexOf('--config')
  const file = i >= 0 ? argv[i + 1] : env.TASKPASS_CONFIG
  if (file) {
    const config = parseConfig(applyEnv(loadConfigFile(file), env))
    return { config, kek: loadKek(config.keys, logger), dev: undefined }
  }
  const dev = await ensureDevMaterial(resolve(env.TASKPASS_DATA_DIR ?? '.taskpass'))
  const config = parseConfig(applyEnv(await devConfig(dev, argon2Hasher) as Record<string, unknown>, { ...env, TASKPASS_ISSUER: env.TASKPASS_ISSUER || devIssuer(env) }))
  logger.warn('dev mode: no config given, using the built-in dev configuration — not for production', { dataDir: dev.dir })
  return { config, kek: loadKek({ ...config.keys, devKekFile: resolve(dev.dir, 'kek') }, logger), dev }
}
