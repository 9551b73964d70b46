import { createHash, randomBytes, randomFillSync } from 'node:crypto'
import type { Clock } from './clock.js'

/**
 * Random bytes for ids, taken from a pool the CSPRNG refills 4 KiB at a time (as Node's own
 * randomUUID does): one call into OpenSSL per 256 ids instead of one per id. Each byte is handed
 * out once, copied into a fresh buffer, then the pool moves past it. Never for secrets: what was
 * handed out stays in the pool until its refill.
 */
const POOL = Buffer.alloc(4096)
let poolAt = POOL.length

function pooledRandom(n: number): Buffer {
  if (n > POOL.length) return randomFillSync(Buffer.alloc(n))
  if (poolAt + n > POOL.length) {
    randomFillSync(POOL)
    poolAt = 0
  }
  const out = Buffer.from(POOL.subarray(poolAt, poolAt + n))
  poolAt += n
  return out
}

/**
 * UUIDv7 (RFC 9562 §5.7): 48-bit millisecond timestamp, then 74 random bits.
 * Time-ordered ids keep SQLite's primary-key b-tree appending at the right edge,
 * which makes inserts markedly faster than random UUIDs.
 */
export function uuidv7(clock: Clock): string {
  const ms = clock.nowMs()
  const b = pooledRandom(16)
  b[0] = Math.floor(ms / 2 ** 40) & 0xff
  b[1] = Math.floor(ms / 2 ** 32) & 0xff
  b[2] = (ms >>> 24) & 0xff
  b[3] = (ms >>> 16) & 0xff
  b[4] = (ms >>> 8) & 0xff
  b[5] = ms & 0xff
  b[6] = 0x70 | (b[6]! & 0x0f)
  b[8] = 0x80 | (b[8]! & 0x3f)
  const h = b.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** A random url-safe secret with `bytes` of entropy (straight from the CSPRNG, never pooled). */
export function randomSecret(bytes = 32): string {
  return randomBytes(bytes).toString('base64url')
}

/**
 * A UUIDv8 (RFC 9562 §5.8) from SHA-256 of `parts` (joined by NUL): the same parts always give the
 * same id — durably, on every instance — and it can never collide with a UUIDv7.
 */
export function derivedUuid(...parts: string[]): string {
  const b = createHash('sha256').update(parts.join('\0')).digest().subarray(0, 16)
  b[6] = 0x80 | (b[6]! & 0x0f)
  b[8] = 0x80 | (b[8]! & 0x3f)
  const h = b.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}
