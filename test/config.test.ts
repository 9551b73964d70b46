import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { applyEnv, ConfigError, envVariables, parseConfig } from '../src/config.js'
import { silentLogger } from '../src/logger.js'
import { loadRuntime } from '../src/runtime.js'

describe('configuration', () => {
  it('applies defaults: 5-minute tokens, 15-minute ceiling', () => {
    const c = parseConfig({ issuer: 'https://broker.example' })
    assert.equal(c.tokens.defaultTtl, 300)
    assert.equal(c.tokens.maxTtl, 900)
    assert.equal(c.listen.port, 8787)
  })

  it('names every bad field in one error', () => {
    try {
      parseConfig({
        issuer: 'https://broker.example/',
        tokens: { defaultTtl: -1 },
        subjectIssuers: [{ issuer: 'https://idp.example', algorithms: ['HS256'] }],
        workloads: [{ id: 'a b', attestation: { issuer: 'x', subject: 'y' }, grants: [{ resource: 'https://nope.example/mcp', scopes: ['s'] }] }],
        resources: [{ uri: 'https://r.example/mcp#frag', scopes: ['s'] }],
      })
      assert.fail('expected ConfigError')
    } catch (e) {
      assert.ok(e instanceof ConfigError)
      const text = e.issues.join('\n')
      for (const field of ['issuer', 'tokens.defaultTtl', 'subjectIssuers.0.algorithms.0', 'subjectIssuers.0', 'workloads.0.id', 'resources.0.uri']) {
        assert.ok(e.issues.some((i) => i.startsWith(`${field}:`)), `missing ${field} in:\n${text}`)
      }
    }
  })

  it('refuses a superset workload grant for an unknown resource', () => {
    assert.throws(
      () => parseConfig({ issuer: 'https://b.example', workloads: [{ id: 'w', attestation: { issuer: 'i', subject: 's' }, grants: [{ resource: 'https://x.example/mcp', scopes: ['a'] }] }] }),
      (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.startsWith('workloads.0.grants.0.resource: unknown resource')),
    )
  })

  it('environment overrides the file', () => {
    const c = parseConfig(applyEnv({ issuer: 'https://a.example', listen: { port: 1 } }, { TASKPASS_ISSUER: 'https://b.example', TASKPASS_PORT: '9000' }))
    assert.equal(c.issuer, 'https://b.example')
    assert.equal(c.listen.port, 9000)
  })

  it('every variable of docs/configuration.md sets its setting, and the table is exactly the schema\'s scalars', () => {
    const page = readFileSync('docs/configuration.md', 'utf8')
    const rows = [...page.matchAll(/^\| `(TASKPASS_[A-Z_]+)` \| `([A-Za-z.]+)` \| (string|number|boolean) \|$/gm)].map((m) => [m[1], m[2], m[3]])
    assert.deepEqual(rows, envVariables().map((v) => [v.name, v.path.join('.'), v.kind]))
    for (const v of envVariables()) {
      const raw = v.kind === 'number' ? '42' : v.kind === 'boolean' ? 'true' : 'x-value'
      let at: unknown = applyEnv({ issuer: 'https://a.example' }, { [v.name]: raw })
      for (const key of v.path) at = (at as Record<string, unknown>)[key]
      assert.equal(at, v.kind === 'number' ? 42 : v.kind === 'boolean' ? true : 'x-value', v.name)
    }
  })

  it('environment values are typed by the setting; one that does not parse is named by validation; an empty one is unset', () => {
    const c = parseConfig(applyEnv({ issuer: 'https://a.example', tokens: { defaultTtl: 60 } }, { TASKPASS_TOKENS_DEFAULT_TTL: '120', TASKPASS_DPOP_NONCE: 'true', TASKPASS_KEYS_ALG: 'EdDSA', TASKPASS_TASKS_MAX_DEPTH: '' }))
    assert.equal(c.tokens.defaultTtl, 120)
    assert.equal(c.dpop.nonce, true)
    assert.equal(c.keys.alg, 'EdDSA')
    assert.equal(c.tasks.maxDepth, 3)
    assert.throws(() => parseConfig(applyEnv({ issuer: 'https://a.example' }, { TASKPASS_DPOP_NONCE: 'yes' })), (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.startsWith('dpop.nonce:')))
    assert.throws(() => parseConfig(applyEnv({ issuer: 'https://a.example' }, { TASKPASS_PORT: 'eighty' })), (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.startsWith('listen.port:')))
  })

  it('the broker refuses to start on a bad config file, naming the fields', () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-config-'))
    const file = join(dir, 'bad.json')
    writeFileSync(file, JSON.stringify({ issuer: 'not a url', tokens: { maxTtl: 0 } }))
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', '--config', file], { encoding: 'utf8', timeout: 20_000 })
    assert.equal(run.status, 2)
    assert.match(run.stderr, /issuer:/)
    assert.match(run.stderr, /tokens\.maxTtl:/)
  })
})

describe('dev mode follows where it listens', () => {
  it('TASKPASS_PORT / TASKPASS_HOST set the advertised issuer too; TASKPASS_ISSUER still wins', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-devport-'))
    const quiet = silentLogger
    const at = async (env: Record<string, string>) => (await loadRuntime([], { TASKPASS_DATA_DIR: dir, ...env }, quiet)).config
    const plain = await at({})
    assert.deepEqual([plain.issuer, plain.listen.port], ['http://127.0.0.1:8787', 8787])
    const moved = await at({ TASKPASS_PORT: '8798' })
    assert.deepEqual([moved.issuer, moved.listen.port], ['http://127.0.0.1:8798', 8798])
    const wildcard = await at({ TASKPASS_HOST: '0.0.0.0', TASKPASS_PORT: '9001' })
    assert.deepEqual([wildcard.issuer, wildcard.listen.host], ['http://127.0.0.1:9001', '0.0.0.0'])
    assert.equal((await at({ TASKPASS_PORT: '8798', TASKPASS_ISSUER: 'http://localhost:8798' })).issuer, 'http://localhost:8798')
  })
})

describe('unknown configuration keys', () => {
  it('are refused, at the top and nested, each named with its path (a typo never silently falls back to a default)', () => {
    const refused = (input: Record<string, unknown>, path: RegExp) =>
      assert.throws(() => parseConfig({ issuer: 'https://broker.example', ...input }), (e: unknown) => e instanceof ConfigError && path.test(e.message))
    refused({ tokenz: { maxTtl: 60 } }, /tokenz/)
    refused({ tokens: { maxTTL: 60 } }, /tokens.*maxTTL/)
    refused({ resources: [{ uri: 'https://r.example/mcp', scopes: [], requireDPoP: true }] }, /resources\.0.*requireDPoP/)
  })
})
