import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createFixedClock } from '../src/clock.js'
import { derivedUuid, randomSecret, uuidv7 } from '../src/ids.js'

describe('ids', () => {
  it('uuidv7: RFC 9562 version and variant, the clock\'s milliseconds first, never twice across many pool refills', () => {
    const clock = createFixedClock(1_800_000_000)
    const ids = Array.from({ length: 5000 }, () => uuidv7(clock))
    assert.equal(new Set(ids).size, ids.length)
    for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    assert.equal(parseInt(ids[0]!.replace(/-/g, '').slice(0, 12), 16), clock.nowMs())
  })

  it('randomSecret: the entropy asked for, never twice, larger than the pool too', () => {
    const secrets = Array.from({ length: 2000 }, () => randomSecret())
    assert.equal(new Set(secrets).size, secrets.length)
    assert.ok(secrets.every((s) => Buffer.from(s, 'base64url').length === 32))
    assert.equal(Buffer.from(randomSecret(10_000), 'base64url').length, 10_000)
    // 16 random bytes (74 random bits in a UUID) do not repeat: a pool handing a byte out twice would.
    const halves = secrets.map((s) => s.slice(0, 11))
    assert.equal(new Set(halves).size, halves.length)
  })

  it('derivedUuid: the same parts give the same id, a version 8 one', () => {
    assert.equal(derivedUuid('a', 'b'), derivedUuid('a', 'b'))
    assert.notEqual(derivedUuid('a', 'b'), derivedUuid('ab'))
    assert.match(derivedUuid('x'), /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
  })
})
