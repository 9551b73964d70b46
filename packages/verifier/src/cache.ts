/**
 * `@taskpass/verifier/cache` — the bounded caches the kit verifies with, exposed so the broker
 * uses the same ones: {@link TtlCache} (verified tokens and keys, served from memory until they
 * expire) and {@link createReplayCache} (single-use `jti`s, refusing rather than forgetting a
 * live entry, RFC 9449 §11.1 and RFC 7523 §3).
 */
export { TtlCache } from './ttl-cache.js'
export { createReplayCache, type MemoryReplayCache, type ReplayCache, type ReplayVerdict } from './replay-cache.js'
