import type { Clock } from '../clock.js'
import type { Config } from '../config.js'
import { temporarilyUnavailable } from '../errors.js'
import { createLimiter, rateLimited, type Limiter } from './rate-limit.js'

/**
 * The guard in front of every argon2id verification (a resource secret at /introspect, /revoke,
 * /revocations; an admin API key at /admin). argon2 is slow on purpose and runs on the libuv
 * threadpool that signing also uses, so an unguarded flood of wrong secrets would make every
 * other request wait. A credential that verified once is cached by its caller and never comes
 * here: legitimate callers do not queue behind a flood.
 *
 * - per client IP and per client id, a token bucket of failures (bounded in keys): a failed
 *   verification spends one token, a successful one gives it back; with the bucket empty the
 *   attempt is refused before hashing, 429 `rate_limited` with `Retry-After`;
 * - broker-wide, a token bucket of failures (`perBroker`: a flood spread over many IPs and
 *   client ids still costs at most that many argon2 runs per second) and at most `maxConcurrent`
 *   verifications at once; beyond either, 503 `temporarily_unavailable` with `Retry-After`,
 *   without queueing (a queue would only move the wait into the flood's own requests and hold
 *   their sockets open).
 */
export interface AuthThrottle {
  /**
   * Runs `verify` (one or more hash verifications) unless the IP or the client id is out of
   * failures or the verification slots are full; counts the outcome against both.
   * @throws OAuthError `rate_limited` (429) or `temporarily_unavailable` (503), both with `Retry-After`
   */
  verify(attempt: { ip?: string | undefined; clientId?: string | undefined }, verify: () => Promise<boolean>): Promise<boolean>
  /** Verifications running now. */
  readonly running: number
}

export function createAuthThrottle(config: Config['authThrottle'], clock: Clock): AuthThrottle {
  const perIp: Limiter | undefined = config.perIp ? createLimiter(config.perIp, clock, config.maxKeys) : undefined
  const perClient: Limiter | undefined = config.perClient ? createLimiter(config.perClient, clock, config.maxKeys) : undefined
  const perBroker: Limiter | undefined = config.perBroker ? createLimiter(config.perBroker, clock, 1) : undefined
  let running = 0
  return {
    get running() {
      return running
    },
    async verify({ ip, clientId }, verify) {
      // A token is taken up front, not after the outcome: concurrent attempts cannot all slip
      // through on the same remaining budget. Given back when the attempt does not count.
      const fromIp = ip !== undefined && perIp !== undefined
      const fromClient = clientId !== undefined && perClient !== undefined
      let fromBroker = false
      const refund = () => {
        if (fromIp) perIp.refund(ip)
        if (fromClient) perClient.refund(clientId)
        if (fromBroker) perBroker?.refund('')
      }
      if (fromIp) {
        const wait = perIp.take(ip)
        if (wait > 0) throw rateLimited(wait)
      }
      if (fromClient) {
        const wait = perClient.take(clientId)
        if (wait > 0) {
          if (fromIp) perIp.refund(ip)
          throw rateLimited(wait)
        }
      }
      if (perBroker !== undefined) {
        const wait = perBroker.take('')
        if (wait > 0) {
          refund()
          throw temporarilyUnavailable(wait, 'broker-wide failed-authentication budget spent')
        }
        fromBroker = true
      }
      if (running >= config.maxConcurrent) {
        refund()
        throw temporarilyUnavailable(1, `${running} credential verifications already running`)
      }
      running++
      let ok = false
      try {
        ok = await verify()
      } finally {
        running--
        if (ok) refund()
      }
      return ok
    },
  }
}
