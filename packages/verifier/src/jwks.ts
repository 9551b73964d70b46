import { createLocalJWKSet, errors, type CryptoKey, type FlattenedJWSInput, type JWK, type JWSHeaderParameters } from 'jose'
import type { Clock } from './clock.js'

/**
 * The broker's signing keys as a resource server sees them: its JWK Set (RFC 7517 §5), fetched
 * and cached for as long as the response's `Cache-Control: max-age` says (RFC 9111 §5.2.2.1,
 * less its `Age`), so a key the broker withdraws stops verifying when the broker said it would.
 * Keys named by a `key_revoked` feed event are excluded at once and stay excluded, whatever a
 * later fetch returns, until the event no longer matters.
 */
export interface VerifierKeySet {
  /** Resolves the key for a JWS header (jose `compactVerify`'s key function). */
  getKey(header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey>
  /** Stops trusting `kid` until `until` (epoch seconds). */
  exclude(kid: string, until: number): void
  /** Whether `kid` is excluded at `now` (epoch seconds). */
  isExcluded(kid: string, now: number): boolean
}

export interface VerifierKeySetOptions {
  clock: Clock
  fetch: typeof fetch
  /** Whole-request timeout (connect, headers, body), milliseconds. */
  timeoutMs: number
  /** Least time between two fetches caused by an unknown `kid`, milliseconds. */
  cooldownMs: number
  /** Reports fetch failures (the verification itself fails closed). */
  onError?: ((error: Error) => void) | undefined
}

/** Used when the response has no usable `max-age`: the broker's own published value. */
export const DEFAULT_JWKS_MAX_AGE_SECONDS = 300
/** `max-age` is honoured within these bounds: at most one fetch a second, at least one an hour. */
const MIN_MAX_AGE_SECONDS = 1
const MAX_MAX_AGE_SECONDS = 3600
const MAX_BYTES = 256 * 1024

/**
 * Freshness lifetime of a JWKS response in seconds: `max-age` (0 for `no-store`/`no-cache`)
 * minus `Age`, clamped to [1 s, 1 h]; {@link DEFAULT_JWKS_MAX_AGE_SECONDS} when absent.
 */
export function jwksMaxAgeSeconds(headers: Headers): number {
  const cacheControl = (headers.get('cache-control') ?? '').toLowerCase()
  const directives = cacheControl.split(',').map((d) => d.trim())
  let maxAge: number | undefined
  if (directives.some((d) => d === 'no-store' || d === 'no-cache')) maxAge = 0
  else {
    const m = directives.map((d) => /^max-age=("?)([0-9]{1,10})\1$/.exec(d)).find((x) => x !== null)
    if (m) maxAge = Number(m[2])
  }
  if (maxAge === undefined) return DEFAULT_JWKS_MAX_AGE_SECONDS
  const age = /^[0-9]{1,10}$/.test(headers.get('age') ?? '') ? Number(headers.get('age')) : 0
  return Math.min(Math.max(maxAge - age, MIN_MAX_AGE_SECONDS), MAX_MAX_AGE_SECONDS)
}

export function createVerifierKeySet(url: URL, opts: VerifierKeySetOptions): VerifierKeySet {
  const { clock } = opts
  let fetched: { keys: JWK[]; atMs: number; maxAgeMs: number } | undefined
  let local: ReturnType<typeof createLocalJWKSet> | undefined
  let inflight: Promise<void> | undefined
  let lastFailure: { atMs: number; error: Error } | undefined
  const excluded = new Map<string, number>()

  /** The local set holds every fetched key that is not excluded; rebuilt when either changes. */
  function rebuild(): void {
    const now = clock.now()
    for (const [kid, until] of excluded) if (until < now) excluded.delete(kid)
    local = fetched ? createLocalJWKSet({ keys: fetched.keys.filter((k) => typeof k.kid !== 'string' || !excluded.has(k.kid)) }) : undefined
  }

  async function fetchOnce(): Promise<void> {
    const startedMs = clock.nowMs()
    let res: Response
    try {
      // No redirects: the broker's keys come from the broker's URL, never from wherever a 3xx points.
      res = await opts.fetch(url, { redirect: 'error', signal: AbortSignal.timeout(opts.timeoutMs), headers: { accept: 'application/jwk-set+json, application/json' } })
    } catch (e) {
      if (e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError')) throw new errors.JWKSTimeout()
      throw new errors.JWKSInvalid(`fetching ${url.href} failed: ${e instanceof Error ? e.message : String(e)}`)
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => {})
      throw new errors.JWKSInvalid(`fetching ${url.href} answered HTTP ${res.status}`)
    }
    if (Number(res.headers.get('content-length') ?? 0) > MAX_BYTES) {
      await res.body?.cancel().catch(() => {})
      throw new errors.JWKSInvalid(`${url.href}: the response is larger than ${MAX_BYTES} bytes`)
    }
    let doc: unknown
    try {
      const text = await res.text()
      if (text.length > MAX_BYTES) throw new Error(`larger than ${MAX_BYTES} bytes`)
      doc = JSON.parse(text)
    } catch (e) {
      if (e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError')) throw new errors.JWKSTimeout()
      throw new errors.JWKSInvalid(`${url.href}: the response is not a JWK Set (${e instanceof Error ? e.message : String(e)})`)
    }
    const keys = (doc as { keys?: unknown } | null)?.keys
    if (typeof doc !== 'object' || doc === null || !Array.isArray(keys) || !keys.every((k) => typeof k === 'object' && k !== null && !Array.isArray(k))) {
      throw new errors.JWKSInvalid(`${url.href}: the response is not a JWK Set`)
    }
    fetched = { keys: keys as JWK[], atMs: startedMs, maxAgeMs: jwksMaxAgeSeconds(res.headers) * 1000 }
    rebuild()
  }

  /**
   * Fetches the set, at most once per cooldown after a failure: while the broker's key endpoint
   * fails, forged tokens naming unknown kids must not turn into one fetch (and one report) each.
   */
  function reload(): Promise<void> {
    if (lastFailure && clock.nowMs() - lastFailure.atMs < opts.cooldownMs) return Promise.reject(lastFailure.error)
    inflight ??= fetchOnce()
      .then(() => { lastFailure = undefined })
      .catch((e: unknown) => {
        const error = e instanceof Error ? e : new Error(String(e))
        lastFailure = { atMs: clock.nowMs(), error }
        opts.onError?.(error)
        throw e
      })
      .finally(() => { inflight = undefined })
    return inflight
  }

  return {
    async getKey(header, token) {
      const nowMs = clock.nowMs()
      // An expired set is fetched again before use; if that fails the token is refused (stale keys are never used).
      if (!fetched || nowMs - fetched.atMs >= fetched.maxAgeMs) await reload()
      try {
        return (await local!(header, token)) as CryptoKey
      } catch (e) {
        // An unknown kid may be a rotation this cache has not seen: one refetch per cooldown.
        if (!(e instanceof errors.JWKSNoMatchingKey) || clock.nowMs() - fetched!.atMs < opts.cooldownMs) throw e
        await reload()
        return (await local!(header, token)) as CryptoKey
      }
    },
    exclude(kid, until) {
      excluded.set(kid, Math.max(until, excluded.get(kid) ?? until))
      rebuild()
    },
    isExcluded(kid, now) {
      const until = excluded.get(kid)
      return until !== undefined && until >= now
    },
  }
}
