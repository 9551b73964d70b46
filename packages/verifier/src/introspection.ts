import type { Clock } from './clock.js'
import { TtlCache } from './ttl-cache.js'
import { basicCredentials } from './revocation-feed.js'

/**
 * RFC 7662 token introspection as the verifier's revocation check: the broker is asked whether
 * a token (already verified locally) is still active. An inactive answer is remembered until
 * the token's expiry (a revoked token never comes back); an active one only for `cacheMs`
 * (default 0: every request asks, so a revocation takes effect at once). Concurrent questions
 * about the same token share one request.
 */
export type TokenStatus = 'active' | 'inactive' | 'unavailable'

export interface IntrospectionClientOptions {
  introspectionUrl: string
  credentials: { clientId: string; clientSecret: string }
  cacheMs: number
  clock: Clock
  fetch: typeof fetch
  onError?: ((error: Error) => void) | undefined
}

export interface IntrospectionClient {
  status(token: string, claims: { jti: string; exp: number }): Promise<TokenStatus>
}

const REQUEST_TIMEOUT_MS = 3000

export function createIntrospectionClient(opts: IntrospectionClientOptions): IntrospectionClient {
  const authorization = basicCredentials(opts.credentials.clientId, opts.credentials.clientSecret)
  // Keyed by jti: the token was verified locally, so its jti is authentic.
  const inactive = new TtlCache<true>(100_000)
  const active = new TtlCache<true>(100_000)
  const inflight = new Map<string, Promise<TokenStatus>>()

  async function ask(token: string, jti: string, exp: number): Promise<TokenStatus> {
    let body: unknown
    try {
      const res = await opts.fetch(opts.introspectionUrl, {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      })
      if (!res.ok) {
        await res.body?.cancel()
        throw new Error(`introspection answered HTTP ${res.status}`)
      }
      body = await res.json()
    } catch (e) {
      opts.onError?.(e instanceof Error ? e : new Error(String(e)))
      return 'unavailable'
    }
    const answer = body as { active?: unknown; jti?: unknown }
    // RFC 7662 §2.2: `active` is required; anything but `true` is inactive. A jti that differs
    // from the token's means the answer is about something else.
    if (answer.active !== true || (answer.jti !== undefined && answer.jti !== jti)) {
      inactive.set(jti, true, exp + 1)
      return 'inactive'
    }
    if (opts.cacheMs > 0) active.set(jti, true, (opts.clock.nowMs() + opts.cacheMs) / 1000)
    return 'active'
  }

  return {
    async status(token, { jti, exp }) {
      const now = opts.clock.nowMs() / 1000
      if (inactive.get(jti, now)) return 'inactive'
      if (opts.cacheMs > 0 && active.get(jti, now)) return 'active'
      let pending = inflight.get(jti)
      if (!pending) {
        pending = ask(token, jti, exp).finally(() => inflight.delete(jti))
        inflight.set(jti, pending)
      }
      return pending
    },
  }
}
