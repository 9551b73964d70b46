/**
 * Keeps `npm run bench` from rotting without running it (CI never runs the benchmark): the policy
 * part's files are valid Cedar for the bench broker and leave its exchange to the grant permit;
 * its verdicts and the merging of load rounds compute what they say; a bad `--only` is refused.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { generateBenchKeys, publicKeys, RESOURCE, WORKLOAD_ID } from '../bench/lib/fixtures.js'
import type { LoadResult } from '../bench/lib/load.js'
import { combineLoads } from '../bench/lib/load.js'
import { benchPolicyText, otherResources, unscopedCount } from '../bench/lib/policies.js'
import { policyTargets, type PolicyRun } from '../bench/lib/policy-report.js'
import { benchExchangeDecision, brokerConfig } from '../bench/lib/taskpass-config.js'
import { parseConfig } from '../src/config.js'
import { compilePolicySet } from '../src/policy/cedar.js'
import { createPolicyEngine } from '../src/policy/engine.js'
import { grantPolicyId } from '../src/policy/generate.js'

const dir = mkdtempSync(join(tmpdir(), 'taskpass-bench-test-'))
const extra = otherResources()
const uris = [RESOURCE, ...extra.map((r) => r.uri)]

/** The bench broker's configuration, with the other resources and (optionally) a policy file. */
async function benchConfig(policyFile?: string) {
  const keys = publicKeys(await generateBenchKeys())
  return parseConfig(await brokerConfig({ port: 0, issuer: 'http://127.0.0.1:1', database: ':memory:', keys, extraResources: extra, ...(policyFile ? { policyFile } : {}) }))
}

describe('bench policy files (bench/lib/policies.ts)', () => {
  // 1,000 policies hold every one of the ten shapes for each of the 100 other resources; 10,000
  // repeat them with other ids and team names (validated by the bench itself at each run).
  for (const size of [1, 100, 1000]) {
    it(`${size} policies: valid Cedar for the bench broker's resources, none naming the bench resource, a handful naming none`, () => {
      const set = compilePolicySet([], [{ name: `policies-${size}.cedar`, text: benchPolicyText(size, extra) }], uris)
      assert.equal(set.policies.size, size)
      const unscoped = [...set.policies.values()].filter((p) => p.resource === undefined)
      assert.equal(unscoped.length, unscopedCount(size))
      assert.ok(unscoped.length >= 1 && unscoped.length <= 4)
      assert.equal(set.byResource.get(RESOURCE)!.length, unscoped.length, "the bench resource's bucket holds the policies naming no resource only")
      assert.equal(Math.max(...[...set.byResource.values()].map((b) => b.length)), Math.ceil((size - unscoped.length) / extra.length) + unscoped.length)
      if (size === 1000) {
        const shapes = new Set([...set.policies.keys()].filter((id) => id.startsWith(extra[0]!.uri)).map((id) => id.slice(id.lastIndexOf('/') + 1)))
        assert.equal(shapes.size, 10, 'every shape is written for a resource')
      }
    })
  }

  it('a file must hold at least one policy', () => {
    assert.throws(() => benchPolicyText(0), /at least one policy/)
  })

  it('the exchange the bench measures is an allow by the generated grant permit alone, with 1,000 policies in force and with none', async () => {
    const file = join(dir, 'policies-1000.cedar')
    writeFileSync(file, benchPolicyText(1000, extra))
    for (const config of [await benchConfig(file), await benchConfig()]) {
      const { principal, resource, context } = benchExchangeDecision(config)
      const decision = createPolicyEngine(config).decide(principal, 'token.exchange', resource, context)
      assert.equal(decision.allow, true, decision.reason)
      assert.deepEqual(decision.policies, [grantPolicyId(WORKLOAD_ID, RESOURCE)])
    }
  })
})

const load = (ok: number, seconds: number, latencies: number[], extra: Partial<LoadResult> = {}): LoadResult => ({
  responses: ok,
  ok,
  statusCodes: { 200: ok },
  non2xx: 0,
  errors: 0,
  timeouts: 0,
  seconds,
  rps: ok / seconds,
  p50: Number.NaN,
  p99: Number.NaN,
  max: Number.NaN,
  warmup: { responses: 0, ok: 0, statusCodes: {} },
  latencies: Float64Array.from(latencies).sort(),
  ...extra,
})

describe('bench policy report', () => {
  it('rounds combine into one run: counts and seconds summed, percentiles over every latency', () => {
    const a = load(4, 1, [1, 2, 3, 4])
    const b = load(2, 1, [10, 20], { responses: 3, non2xx: 1, statusCodes: { 200: 2, 500: 1 } })
    const c = combineLoads([a, b])
    assert.equal(c.ok, 6)
    assert.equal(c.responses, 7)
    assert.equal(c.non2xx, 1)
    assert.deepEqual(c.statusCodes, { 200: 6, 500: 1 })
    assert.equal(c.rps, 3)
    assert.equal(c.p50, 3)
    assert.equal(c.p99, 20)
    assert.equal(c.latencies, undefined)
    assert.throws(() => combineLoads([{ ...a, latencies: undefined }]), /keepLatencies/)
  })

  it('each larger file passes at ≥ 0.8× the req/s of one policy and fails below', () => {
    const run = (size: number | undefined, rps: number): PolicyRun => ({ id: size === undefined ? 'no policy file' : `${size} policies`, size, description: '', notes: [], rounds: [], result: { ...load(rps, 1, [1]), p50: 1, p99: 2 } })
    const verdicts = policyTargets([run(undefined, 2000), run(1, 1000), run(100, 800), run(10_000, 799)])
    assert.deepEqual(
      verdicts.filter((v) => v.verdict === 'PASS' || v.verdict === 'FAIL').map((v) => [v.target.split(':')[0], v.verdict]),
      [['100 policies', 'PASS'], ['10000 policies', 'FAIL'], ['no policy file', 'PASS'], ['1 policies', 'PASS'], ['100 policies', 'PASS'], ['10000 policies', 'PASS']],
    )
    assert.equal(policyTargets([run(1, 1000), { ...run(10_000, 0), result: undefined }]).find((v) => v.target.startsWith('10000'))?.verdict, 'n/a')
  })
})

describe('npm run bench arguments', () => {
  it('an unknown part is refused with exit code 2 and the list of parts, before anything runs', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--only', 'everything'], { cwd: new URL('..', import.meta.url), encoding: 'utf8', timeout: 60_000 })
    assert.equal(run.status, 2, run.stderr)
    assert.match(run.stderr, /--only takes "http", "verifier", "flood", "policy", got "everything"/)
    assert.equal(run.stdout, '')
  })
})
