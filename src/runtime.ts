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
  const config = parseConfig(applyEnv(await devConfig(dev, argon2Hasher) as Record<string, unknown>, env))
  logger.warn('dev mode: no config given, using the built-in dev configuration — not for production', { dataDir: dev.dir })
  return { config, kek: loadKek({ ...config.keys, devKekFile: resolve(dev.dir, 'kek') }, logger), dev }
}
