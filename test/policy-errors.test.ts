/**
 * A deny for policies that failed to evaluate (src/policy/cedar.ts `createCedarPolicy`) names the
 * same policy for the same request every time, whatever order Cedar reports the errors in.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseConfig, type WorkloadConfig } from '../src/config.js'
import { compilePolicySet, createCedarPolicy, prepare } from '../src/policy/cedar.js'
import type { PolicyContext } from '../src/policy/decide.js'
import { attestationKinds } from '../src/policy/engine.js'
import { generateGrantPolicies } from '../src/policy/generate.js'
import { NOTES, testConfig, testKeys, USER_ISSUER } from './harness.js'

let slots = 0

describe('a deny names its erroring policy', () => {
  it('the same one every time, though Cedar lists errors in no fixed order', async () => {
    const config = parseConfig(testConfig(await testKeys()))
    const forbids = Array.from({ length: 6 }, (_, i) => `@id("overflow-${i}")\nforbid (principal, action == Taskpass::Action::"exchange", resource) when { context.task.tokens_minted * 4611686018427387904 > ${i} };`).join('\n\n')
    const set = compilePolicySet(generateGrantPolicies(config), [{ name: 'overflow.cedar', text: forbids }], config.resources.map((r) => r.uri))
    const policy = createCedarPolicy(prepare(set, `policy-errors:${++slots}`), attestationKinds(config))
    const resource = config.resources.find((r) => r.uri === NOTES)!
    const context: PolicyContext = { workload: config.workloads[0] as WorkloadConfig, scopes: ['notes:read'], dpopBound: false, now: 1_800_000_000, task: { id: 'task-1', purpose: 'p', resources: [{ resource: NOTES, scopes: ['notes:read'] }], createdAt: 1_799_999_000, expiresAt: 1_800_002_600, tokensMinted: 2, approved: false } }
    const reasons = new Set<string>()
    for (let i = 0; i < 30; i++) {
      const d = policy.decide({ user: 'alice', issuer: USER_ISSUER, sid: `s-${'x'.repeat(i)}` }, 'token.exchange', resource, context)
      assert.equal(d.allow, false)
      reasons.add(d.reason)
    }
    assert.deepEqual([...reasons], ['policy overflow-0 failed to evaluate (counted as a forbid): integer overflow while attempting to multiply the values `2` and `4611686018427387904`'])
  })
})
