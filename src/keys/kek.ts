import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import { ConfigError } from '../config.js'
import type { Logger } from '../logger.js'

/**
 * The key-encryption key (32 bytes, AES-256-GCM via JWE `dir`) that protects signing keys at rest.
 * From `keys.kek` / TASKPASS_KEK (base64url), from `keys.kekFile`, or — in dev mode only — a file
 * generated in the data directory, which the broker announces loudly.
 */
export function loadKek(opts: { kek?: string | undefined; kekFile?: string | undefined; devKekFile?: string | undefined }, logger: Logger): Uint8Array {
  if (opts.kek) return decode(opts.kek, 'keys.kek')
  if (opts.kekFile) {
    if (!existsSync(opts.kekFile)) throw new ConfigError([`keys.kekFile: ${opts.kekFile} does not exist`])
    return decode(readFileSync(opts.kekFile, 'utf8').trim(), 'keys.kekFile')
  }
  if (opts.devKekFile) {
    if (!existsSync(opts.devKekFile)) {
      mkdirSync(dirname(opts.devKekFile), { recursive: true })
      writeFileSync(opts.devKekFile, randomBytes(32).toString('base64url') + '\n', { mode: 0o600 })
      logger.warn('dev mode: generated a key-encryption key', { file: opts.devKekFile })
    }
    return decode(readFileSync(opts.devKekFile, 'utf8').trim(), 'devKekFile')
  }
  throw new ConfigError(['keys.kek: a key-encryption key is required (TASKPASS_KEK, keys.kek or keys.kekFile)'])
}

function decode(value: string, field: string): Uint8Array {
  const bytes = Buffer.from(value, 'base64url')
  if (bytes.length !== 32) throw new ConfigError([`${field}: must be base64url of exactly 32 bytes`])
  return new Uint8Array(bytes)
}
