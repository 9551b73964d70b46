/**
 * Failed authentications cannot be turned into an argon2 amplifier: every hash verification
 * (resource secrets at /introspect, /revoke, /revocations; admin keys at /admin) goes through
 * per-IP and per-client-id failure budgets and a broker-wide cap on concurrent verifications,
 * while a credential already verified never waits. The hasher is injected: it counts its
 * verifications and can be held (a verification that does not finish until released), so
 * "concurrent" is exact instead of timed; the clock is fixed and moved to refill the budgets.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createApp, type App } from '../src/app.js'
import { argon2Hasher, createBroker, type Deps } from '../src/broker.js'
import { createFixedClock, type FixedClock } from '../src/clock.js'
import { parseConfig, type ConfigInput } from '../src/config.js'
import type { Hasher } from '../src/http/client-auth.js'
import { silentLogger } from '../src/logger.js'
import { ADMIN_KEY, CALENDAR_SECRET, form, NOTES_SECRET, rawQuery, T0, testConfig, testDatabase, testKeys } from './harness.js'

/** argon2id, but each verification can be held until released, and every one is counted. */
function gatedHasher() {
  let held: Array<() => void> | undefined
  const hasher: Hasher & { verifications: number; hold(): void; release(): void; waiting(): number } = {
    verifications: 0,
    hash: (s) => argon2Hasher.hash(s),
    async verify(hash, secret) {
      hasher.verifications++
      if (held) await new Promise<void>((resolve) => held!.push(resolve))
      return argon2Hasher.verify(hash, secret)
    },
    hold() {
      held = []
    },
    release() {
      const waiting = held ?? []
      held = undefined
      for (const go of waiting) go()
    },
    waiting: () => held?.length ?? 0,
  }
  return hasher
}

interface Throttled {
  app: App
  deps: Deps
  clock: FixedClock
  hasher: ReturnType<typeof gatedHasher>
  /** A request from `ip` (the TCP peer the broker sees), in-process. */
  send(path: string, init: RequestInit & { ip?: string }): Promise<Response>
  introspect(id: string, secret: string, ip?: string): Promise<Response>
  rows(): Promise<number>
  close(): Promise<void>
}

async function throttled(authThrottle: ConfigInput['authThrottle'], extra: Partial<ConfigInput> = {}): Promise<Throttled> {
  const keys = await testKeys()
  const clock = createFixedClock(T0)
  const database = await testDatabase()
  const config = parseConfig({ ...testConfig(keys), database: database.location, authThrottle, ...extra })
  const hasher = gatedHasher()
  const deps = await createBroker({ config, clock, logger: silentLogger, kek: Buffer.from(config.keys.kek!, 'base64url'), hasher })
  const app = createApp(deps)
  const t: Throttled = {
    app,
    deps,
    clock,
    hasher,
    send: async (path, { ip = '192.0.2.1', ...init }) => app.request(path, init, { incoming: { socket: { remoteAddress: ip } } }),
    introspect: (id, secret, ip) =>
      t.send('/introspect', { ip, method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(id, secret) }, body: form({ token: 'x' }) }),
    rows: async () => (await rawQuery<{ n: number }>(deps, 'select (select count(*) from tokens) + (select count(*) from tasks) + (select count(*) from audit_events) + (select count(*) from revocation_events) as n'))[0]!.n,
    close: async () => {
      await deps.database.close()
      await database.drop()
    },
  }
  return t
}

function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`
}

async function expectError(res: Response | Promise<Response>, status: number, error: string, retryAfter?: string): Promise<void> {
  const r = await res
  const body = (await r.json()) as { error: string }
  assert.equal(r.status, status, JSON.stringify(body))
  assert.equal(body.error, error)
  assert.equal(r.headers.get('cache-control'), 'no-store')
  if (retryAfter !== undefined) assert.equal(r.headers.get('retry-after'), retryAfter)
}

/** Waits (bounded) for the broker to reach a state; no fixed sleep. */
async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!condition()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
}

const OPEN = { ratePerSecond: 1e6, burst: 1e6 }

describe('authentication throttle', () => {
  it('a wrong admin key costs at most the broker budget in argon2 runs, however many admin keys are configured', async () => {
    const keys = await testKeys()
    const t = await throttled({ perIp: OPEN, perClient: OPEN, perBroker: { ratePerSecond: 0.001, burst: 2 }, maxConcurrent: 4 }, { admin: { apiKeyHashes: [keys.hashes.admin, keys.hashes.admin, keys.hashes.admin] } })
    try {
      await expectError(t.send('/admin/tasks', { headers: { authorization: 'Bearer not-the-key' } }), 503, 'temporarily_unavailable')
      assert.equal(t.hasher.verifications, 2, 'one argon2 run per budget token, not one per configured key')
    } finally {
      await t.close()
    }
  })

  it('the same credential arriving several times at once shares one verification (a verifier reconnecting after a restart)', async () => {
    const t = await throttled({ perIp: OPEN, perClient: OPEN, perBroker: OPEN, maxConcurrent: 1 })
    try {
      t.hasher.hold()
      const together = [t.introspect('notes-mcp', NOTES_SECRET), t.send('/revocations', { headers: { authorization: basic('notes-mcp', NOTES_SECRET) } }), t.introspect('notes-mcp', NOTES_SECRET)]
      await until(() => t.hasher.waiting() === 1, 'one verification running')
      t.hasher.release()
      const answers = await Promise.all(together)
      assert.deepEqual(answers.map((r) => r.status), [200, 200, 200], 'none refused as busy')
      assert.equal(t.hasher.verifications, 1)
    } finally {
      await t.close()
    }
  })

  it('concurrent verifications are capped: beyond the cap 503 temporarily_unavailable + Retry-After, no hash run; a verified credential still passes', async () => {
    const t = await throttled({ perIp: OPEN, perClient: OPEN, perBroker: OPEN, maxConcurrent: 2 })
    try {
      assert.equal((await t.introspect('notes-mcp', NOTES_SECRET)).status, 200, 'verified once, then cached')
      const before = await t.rows()
      t.hasher.hold()
      const flood = [t.introspect('notes-mcp', 'wrong-1', '198.51.100.1'), t.introspect('nobody', 'wrong-2', '198.51.100.2')]
      await until(() => t.hasher.waiting() === 2, 'two verifications running')
      const verifications = t.hasher.verifications
      await expectError(t.introspect('calendar-mcp', 'wrong-3', '198.51.100.3'), 503, 'temporarily_unavailable', '1')
      await expectError(t.send('/revocations', { headers: { authorization: basic('notes-mcp', 'wrong-4') } }), 503, 'temporarily_unavailable', '1')
      await expectError(t.send('/admin/tasks', { headers: { authorization: 'Bearer not-the-key' } }), 503, 'temporarily_unavailable', '1')
      assert.equal(t.hasher.verifications, verifications, 'refused before hashing')
      // The legitimate resource, already verified: no argon2, no slot, no wait behind the flood.
      const ok = await t.introspect('notes-mcp', NOTES_SECRET)
      assert.equal(ok.status, 200)
      assert.deepEqual(await ok.json(), { active: false })
      assert.equal(t.hasher.verifications, verifications)
      t.hasher.release()
      for (const r of await Promise.all(flood)) await expectError(r, 401, 'invalid_client')
      assert.equal(t.deps.authThrottle.running, 0)
      // Slots are free again: a first-time credential verifies.
      assert.equal((await t.introspect('calendar-mcp', CALENDAR_SECRET)).status, 200)
      assert.equal(await t.rows(), before, 'nothing written by any refusal')
    } finally {
      await t.close()
    }
  })

  it('per client IP: failures spend the budget, then 429 rate_limited + Retry-After without hashing, for any client id; other IPs and verified credentials pass; refills with the clock', async () => {
    const t = await throttled({ perIp: { ratePerSecond: 0.1, burst: 3 }, perClient: false })
    try {
      const IP = '203.0.113.7'
      assert.equal((await t.introspect('notes-mcp', NOTES_SECRET, IP)).status, 200, 'a success does not spend the budget')
      const before = await t.rows()
      await expectError(t.introspect('notes-mcp', 'wrong', IP), 401, 'invalid_client')
      await expectError(t.introspect('calendar-mcp', 'wrong', IP), 401, 'invalid_client')
      await expectError(t.introspect('unknown-id', 'wrong', IP), 401, 'invalid_client')
      const verifications = t.hasher.verifications
      await expectError(t.introspect('another-unknown-id', 'wrong', IP), 429, 'rate_limited', '10')
      await expectError(t.introspect('calendar-mcp', CALENDAR_SECRET, IP), 429, 'rate_limited', '10')
      await expectError(
        t.send('/revoke', { ip: IP, method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form({ token: 'x', client_id: 'calendar-mcp', client_secret: 'wrong' }) }),
        429,
        'rate_limited',
        '10',
      )
      await expectError(t.send('/admin/tasks', { ip: IP, headers: { authorization: 'Bearer not-the-key' } }), 429, 'rate_limited', '10')
      assert.equal(t.hasher.verifications, verifications, 'no argon2 once the budget is spent')
      assert.equal((await t.introspect('notes-mcp', NOTES_SECRET, IP)).status, 200, 'the verified credential passes from the throttled IP')
      await expectError(t.introspect('notes-mcp', 'wrong', '203.0.113.8'), 401, 'invalid_client')
      assert.equal((await t.introspect('calendar-mcp', CALENDAR_SECRET, '203.0.113.8')).status, 200)
      t.clock.advance(9)
      await expectError(t.introspect('calendar-mcp', 'wrong', IP), 429, 'rate_limited', '1')
      t.clock.advance(1)
      const res = await t.send('/admin/tasks', { ip: IP, headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(res.status, 200, 'one failure refilled after 10 s: the admin key verifies')
      assert.equal(await t.rows(), before)
    } finally {
      await t.close()
    }
  })

  it('per client id: failures from any IP spend that id\'s budget; other ids unaffected; unknown ids are budgeted alike; refills with the clock', async () => {
    const t = await throttled({ perIp: false, perClient: { ratePerSecond: 0.5, burst: 2 } })
    try {
      assert.equal((await t.introspect('notes-mcp', NOTES_SECRET)).status, 200)
      const before = await t.rows()
      for (const ip of ['198.51.100.10', '198.51.100.11']) await expectError(t.introspect('notes-mcp', 'wrong', ip), 401, 'invalid_client')
      const verifications = t.hasher.verifications
      await expectError(t.introspect('notes-mcp', 'wrong', '198.51.100.12'), 429, 'rate_limited', '2')
      // The feed authenticates the same way (HTTP Basic) and shares the budget.
      await expectError(t.send('/revocations', { headers: { authorization: basic('notes-mcp', 'wrong') } }), 429, 'rate_limited', '2')
      assert.equal(t.hasher.verifications, verifications)
      assert.equal((await t.introspect('notes-mcp', NOTES_SECRET, '198.51.100.13')).status, 200, 'the verified secret still passes')
      await expectError(t.introspect('calendar-mcp', 'wrong'), 401, 'invalid_client')
      // An id that does not exist answers exactly like one that does: 401 twice, then 429.
      await expectError(t.introspect('ghost', 'wrong'), 401, 'invalid_client')
      await expectError(t.introspect('ghost', 'wrong'), 401, 'invalid_client')
      await expectError(t.introspect('ghost', 'wrong'), 429, 'rate_limited', '2')
      t.clock.advance(2)
      await expectError(t.introspect('notes-mcp', 'wrong'), 401, 'invalid_client')
      await expectError(t.introspect('notes-mcp', 'wrong'), 429, 'rate_limited', '2')
      assert.equal(await t.rows(), before)
    } finally {
      await t.close()
    }
  })

  it('broker-wide: failures from many IPs and client ids together spend one budget, then 503 temporarily_unavailable + Retry-After; verified credentials pass; refills with the clock', async () => {
    const t = await throttled({ perIp: false, perClient: false, perBroker: { ratePerSecond: 0.5, burst: 2 } })
    try {
      assert.equal((await t.introspect('notes-mcp', NOTES_SECRET)).status, 200)
      const before = await t.rows()
      await expectError(t.introspect('ghost-1', 'wrong', '198.51.100.20'), 401, 'invalid_client')
      await expectError(t.introspect('calendar-mcp', 'wrong', '198.51.100.21'), 401, 'invalid_client')
      const verifications = t.hasher.verifications
      await expectError(t.introspect('ghost-2', 'wrong', '198.51.100.22'), 503, 'temporarily_unavailable', '2')
      await expectError(t.send('/admin/tasks', { ip: '198.51.100.23', headers: { authorization: 'Bearer not-the-key' } }), 503, 'temporarily_unavailable', '2')
      assert.equal(t.hasher.verifications, verifications, 'no argon2 once the budget is spent')
      assert.equal((await t.introspect('notes-mcp', NOTES_SECRET, '198.51.100.24')).status, 200, 'the verified credential passes')
      t.clock.advance(2)
      await expectError(t.introspect('ghost-3', 'wrong', '198.51.100.25'), 401, 'invalid_client')
      assert.equal(await t.rows(), before)
    } finally {
      await t.close()
    }
  })

  it('defaults: budgets per IP, per client id and broker-wide, one verification at a time', async () => {
    const config = parseConfig(testConfig(await testKeys()))
    assert.deepEqual(config.authThrottle, { perIp: { ratePerSecond: 1, burst: 20 }, perClient: { ratePerSecond: 1, burst: 10 }, perBroker: { ratePerSecond: 20, burst: 40 }, maxConcurrent: 1, maxKeys: 10_000 })
  })

  it('config names a bad authThrottle field', async () => {
    const base = testConfig(await testKeys())
    assert.throws(() => parseConfig({ ...base, authThrottle: { maxConcurrent: 0, perIp: { ratePerSecond: 0, burst: 1 } } }), /authThrottle\.perIp[\s\S]*authThrottle\.maxConcurrent|authThrottle\.maxConcurrent[\s\S]*authThrottle\.perIp/)
  })
})
