import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createFixedClock } from '../src/clock.js'
import { createLimiter } from '../src/http/rate-limit.js'
import { createTestBroker, startTestServer } from './harness.js'

describe('rate limits', () => {
  it('a token bucket refills at its rate and says how long to wait', () => {
    const clock = createFixedClock(1000)
    const limiter = createLimiter({ ratePerSecond: 2, burst: 3 }, clock)
    assert.deepEqual([0, 1, 2, 3].map(() => limiter.take('ip')), [0, 0, 0, 1])
    assert.equal(limiter.take('other'), 0, 'keys are independent')
    clock.advance(0.5)
    assert.equal(limiter.take('ip'), 0)
    assert.equal(limiter.take('ip'), 1)
  })

  it('per IP over a real socket: 429 rate_limited with Retry-After, and nothing else happens', async () => {
    const s = await startTestServer({ config: (c) => ({ ...c, rateLimits: { perIp: { ratePerSecond: 0.01, burst: 2 } } }) })
    try {
      const statuses = []
      for (let i = 0; i < 3; i++) statuses.push((await fetch(`${s.url}/healthz`)).status)
      assert.deepEqual(statuses, [200, 200, 429])
      const refused = await fetch(`${s.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=x' })
      assert.equal(refused.status, 429)
      assert.ok(Number(refused.headers.get('retry-after')) >= 1)
      assert.equal(refused.headers.get('cache-control'), 'no-store')
      assert.equal(((await refused.json()) as { error: string }).error, 'rate_limited')
      assert.equal(await s.count('audit_events'), 0)
    } finally {
      await s.stop()
    }
  })

  it('per workload at the token endpoint: 429 rate_limited, counted (not audited: a flood must not grow the database), nothing issued; other workloads unaffected', async () => {
    const b = await createTestBroker({ config: (c) => ({ ...c, rateLimits: { perIp: false, perWorkload: { ratePerSecond: 0.001, burst: 1 } } }) })
    try {
      assert.equal((await b.exchange()).status, 200)
      const tokens = await b.count('tokens')
      const refused = await b.exchange()
      assert.equal(refused.status, 429)
      assert.equal(((await refused.json()) as { error: string }).error, 'rate_limited')
      assert.equal(await b.count('tokens'), tokens)
      assert.equal((await b.lastAudit())?.decision, 'allow', 'no audit row for the limited request')
      assert.match(await b.deps.metrics.registry.getSingleMetricAsString('taskpass_unauthenticated_refusals_total'), /error="rate_limited"[^\n]*\} 1/)
      assert.equal((await b.exchange({ actor_token: await b.svid('b') })).status, 200)
      b.clock.advance(1000)
      assert.equal((await b.exchange()).status, 200)
    } finally {
      await b.close()
    }
  })
})
