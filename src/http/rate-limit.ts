import type { Context, MiddlewareHandler } from 'hono'
import type { Clock } from '../clock.js'
import { OAuthError } from '../errors.js'

export interface RateLimit {
  /** Sustained requests per second. */
  ratePerSecond: number
  /** Bucket size: requests allowed in a burst. */
  burst: number
}

/**
 * Token buckets by key (client IP, workload id), bounded in number: the oldest-touched keys are
 * dropped first, so a flood of distinct keys costs memory, not correctness.
 */
export interface Limiter {
  /** Takes one token; returns 0 when allowed, else the seconds to wait. */
  take(key: string): number
  /** Gives back a token taken for an attempt that turned out not to count (never above the burst). */
  refund(key: string): void
}

export function createLimiter(limit: RateLimit, clock: Clock, maxKeys = 100_000): Limiter {
  const buckets = new Map<string, { tokens: number; at: number }>()
  return {
    take(key) {
      const now = clock.nowMs() / 1000
      let b = buckets.get(key)
      if (b) {
        buckets.delete(key)
        b.tokens = Math.min(limit.burst, b.tokens + (now - b.at) * limit.ratePerSecond)
        b.at = now
      } else {
        if (buckets.size >= maxKeys) buckets.delete(buckets.keys().next().value!)
        b = { tokens: limit.burst, at: now }
      }
      buckets.set(key, b)
      if (b.tokens >= 1) {
        b.tokens -= 1
        return 0
      }
      return Math.ceil((1 - b.tokens) / limit.ratePerSecond)
    },
    refund(key) {
      const b = buckets.get(key)
      if (b) b.tokens = Math.min(limit.burst, b.tokens + 1)
    },
  }
}

export const rateLimited = (retryAfter: number) =>
  new OAuthError('rate_limited', 429, 'too many requests', undefined, { 'Retry-After': String(Math.max(1, retryAfter)) })

/** The peer address of the TCP connection (never a forwarded header: those are spoofable). */
export function remoteAddress(c: Context): string | undefined {
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } }; server?: { incoming?: { socket?: { remoteAddress?: string } } } } | undefined
  return (env?.server ?? env)?.incoming?.socket?.remoteAddress
}

/** Per-client-IP rate limit. Requests without a socket (in-process `app.request`) are not limited. */
export function rateLimitByIp(limiter: Limiter): MiddlewareHandler {
  return async function rateLimitByIp(c, next) {
    const ip = remoteAddress(c)
    if (ip !== undefined) {
      const wait = limiter.take(ip)
      if (wait > 0) throw rateLimited(wait)
    }
    await next()
  }
}
