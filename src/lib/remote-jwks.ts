import { createLocalJWKSet, errors, type JWK, type JWTVerifyGetKey } from 'jose'
import type { Clock } from '../clock.js'
import { readCappedBody } from './read-capped.js'

/** How remote key sets (an issuer's `jwks_uri`, a SPIFFE bundle endpoint) are fetched. */
export interface RemoteJwksOptions {
  /** Whole-request timeout (connect, headers and body), milliseconds. */
  timeout: number
  /** Largest accepted response body, bytes. */
  maxBytes: number
  /** Seconds a fetched key set is used before it must be fetched again. */
  cacheMaxAge: number
  /** Seconds between two fetches triggered by an unknown `kid`, and after a failed fetch. */
  cooldown: number
}

/**
 * The keys could not be fetched or the response was unusable. Verification refuses the token:
 * an issuer whose keys are unavailable is never a reason to accept (RFC 8725 §3.10 spirit: fail closed).
 */
export class KeysUnavailableError extends Error {
  readonly code = 'ERR_KEYS_UNAVAILABLE'
  constructor(message: string) {
    super(message)
    this.name = 'KeysUnavailableError'
  }
}

/** SPIFFE bundle (SPIFFE Trust Domain and Bundle §4): a JWK Set, optionally with a refresh hint. */
interface FetchedSet {
  keys: JWK[]
  refreshHint: number | undefined
}

/** A refresh hint is honoured within these bounds (seconds): never hammer, never exceed cacheMaxAge. */
const MIN_REFRESH_HINT = 10

/**
 * Fetches `url` once: no redirects (`redirect: 'error'`, a 3xx is a failure rather than a key
 * source chosen by someone else), a timeout covering the body, a body size cap enforced while
 * reading (not only from Content-Length), status 200 and a JSON object with a `keys` array.
 */
export async function fetchJwkSet(url: URL, opts: Pick<RemoteJwksOptions, 'timeout' | 'maxBytes'>, fetchImpl: typeof fetch = fetch): Promise<FetchedSet> {
  const signal = AbortSignal.timeout(opts.timeout)
  let res: Response
  try {
    res = await fetchImpl(url, { redirect: 'error', signal, headers: { accept: 'application/jwk-set+json, application/json' } })
  } catch (e) {
    throw new KeysUnavailableError(`fetching ${url.href} failed: ${describeFetchError(e)}`)
  }
  if (res.status !== 200) {
    await res.body?.cancel().catch(() => {})
    throw new KeysUnavailableError(`fetching ${url.href} failed: HTTP ${res.status}`)
  }
  const declared = Number(res.headers.get('content-length') ?? NaN)
  if (Number.isFinite(declared) && declared > opts.maxBytes) {
    await res.body?.cancel().catch(() => {})
    throw new KeysUnavailableError(`${url.href}: response of ${declared} bytes exceeds ${opts.maxBytes}`)
  }
  const text = await readCapped(res, opts.maxBytes, url)
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    throw new KeysUnavailableError(`${url.href}: response is not JSON`)
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc) || !Array.isArray((doc as { keys?: unknown }).keys)) {
    throw new KeysUnavailableError(`${url.href}: response is not a JWK Set`)
  }
  const keys = ((doc as { keys: unknown[] }).keys).filter((k): k is JWK => typeof k === 'object' && k !== null && !Array.isArray(k))
  const hint = (doc as { spiffe_refresh_hint?: unknown }).spiffe_refresh_hint
  return { keys, refreshHint: typeof hint === 'number' && Number.isFinite(hint) && hint > 0 ? hint : undefined }
}

async function readCapped(res: Response, maxBytes: number, url: URL): Promise<string> {
  try {
    return Buffer.from(await readCappedBody(res, maxBytes, () => new KeysUnavailableError(`${url.href}: response exceeds ${maxBytes} bytes`))).toString('utf8')
  } catch (e) {
    if (e instanceof KeysUnavailableError) throw e
    throw new KeysUnavailableError(`reading ${url.href} failed: ${describeFetchError(e)}`)
  }
}

function describeFetchError(e: unknown): string {
  if (e instanceof Error) {
    if (e.name === 'TimeoutError' || e.name === 'AbortError') return 'timed out'
    const cause = (e as { cause?: unknown }).cause
    return cause instanceof Error ? `${e.message} (${cause.message})` : e.message
  }
  return String(e)
}

/**
 * A key resolver over a remote JWK Set, hardened for keys we do not host:
 * - timeout, size cap and no redirects on every fetch ({@link fetchJwkSet});
 * - the set is used for `cacheMaxAge` seconds (or the SPIFFE `spiffe_refresh_hint`, when
 *   `honourRefreshHint`, clamped to [10 s, cacheMaxAge]); after that it must be fetched again;
 * - an unknown `kid` triggers at most one refetch per `cooldown`;
 * - when the keys cannot be fetched — first fetch, expired cache, or within `cooldown` after a
 *   failure — verification fails with {@link KeysUnavailableError}. Stale keys are never used:
 *   a key removed from the set (e.g. after a compromise) stops verifying as soon as the set expires.
 * Concurrent verifications share one in-flight fetch. Time comes from `clock`.
 */
export function createRemoteKeySet(
  url: URL,
  opts: RemoteJwksOptions & {
    clock: Clock
    /** Maps each key to the key to use, or drops it. */
    select?: (k: JWK) => JWK | undefined
    honourRefreshHint?: boolean
    fetch?: typeof fetch
  },
): JWTVerifyGetKey {
  const select = opts.select ?? ((k: JWK) => k)
  let current: { getKey: JWTVerifyGetKey; fetchedAt: number; maxAgeMs: number } | undefined
  let lastFailure: { at: number; message: string } | undefined
  let inflight: Promise<void> | undefined

  function reload(): Promise<void> {
    inflight ??= (async () => {
      const started = opts.clock.nowMs()
      try {
        const set = await fetchJwkSet(url, opts, opts.fetch)
        const keys = set.keys.map(select).filter((k): k is JWK => k !== undefined)
        const hint = opts.honourRefreshHint && set.refreshHint !== undefined ? Math.min(Math.max(set.refreshHint, MIN_REFRESH_HINT), opts.cacheMaxAge) : opts.cacheMaxAge
        current = { getKey: createLocalJWKSet({ keys }), fetchedAt: started, maxAgeMs: hint * 1000 }
        lastFailure = undefined
      } catch (e) {
        lastFailure = { at: started, message: e instanceof Error ? e.message : String(e) }
        throw e instanceof KeysUnavailableError ? e : new KeysUnavailableError(lastFailure.message)
      } finally {
        inflight = undefined
      }
    })()
    return inflight
  }

  async function ensureFresh(now: number): Promise<NonNullable<typeof current>> {
    if (current && now - current.fetchedAt < current.maxAgeMs) return current
    if (lastFailure && now - lastFailure.at < opts.cooldown * 1000) {
      throw new KeysUnavailableError(`keys of ${url.href} unavailable (last fetch failed: ${lastFailure.message})`)
    }
    await reload()
    return current!
  }

  return async (header, token) => {
    const now = opts.clock.nowMs()
    const set = await ensureFresh(now)
    try {
      return await set.getKey(header, token)
    } catch (e) {
      // RFC 8725bis / STYLE: an unknown kid may mean a rotation — one rate-limited refetch.
      if (!(e instanceof errors.JWKSNoMatchingKey) || now - set.fetchedAt < opts.cooldown * 1000) throw e
      if (lastFailure && now - lastFailure.at < opts.cooldown * 1000) throw e
      await reload()
      return current!.getKey(header, token)
    }
  }
}
