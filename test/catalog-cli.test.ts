/**
 * The catalog from the CLI: the commands docs/admin-api.md shows, run as written against a
 * dev-mode database, then the refusals (exit status, the API's error line on stderr).
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { devCli as cli } from './harness.js'

/** The `npm run cli -- …` lines of the page's shell block, as argument lists. */
function documentedCommands(): string[][] {
  const page = readFileSync(new URL('../docs/admin-api.md', import.meta.url), 'utf8')
  const block = /## The CLI[\s\S]*?```sh\n([\s\S]*?)```/.exec(page)![1]!
  return block.trim().split('\n').map((line) => {
    assert.match(line, /^npm run cli -- /)
    return line.replace(/^npm run cli -- /, '').split(' ')
  })
}

describe('catalog CLI', () => {
  it('the commands of docs/admin-api.md run as written, each answer in the API\'s fields, each change audited', () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-catalog-cli-'))
    const commands = documentedCommands()
    assert.ok(commands.length >= 8)
    const answers = commands.map((args) => {
      const out = cli(dir, [...args, '--json'])
      assert.equal(out.status, 0, `${args.join(' ')}: ${out.stderr}`)
      return JSON.parse(out.stdout) as Record<string, unknown>
    })
    const answerOf = (kind: string, sub: string) => answers[commands.findIndex((c) => c[0] === kind && c[1] === sub)]!
    // Both issuer kinds: the file's subject issuer switched off and on, a workload issuer created and deleted.
    const kinds = new Set(commands.map((c) => c[0]))
    for (const kind of ['subject-issuers', 'workload-issuers', 'workloads', 'resources', 'admin-keys']) assert.ok(kinds.has(kind), `the page shows ${kind}`)
    assert.deepEqual((answerOf('subject-issuers', 'list') as { items: { key: string; managed_by: string }[] }).items.map((e) => `${e.key}:${e.managed_by}`), ['https://users.dev.taskpass.local:file'])
    assert.equal((answerOf('subject-issuers', 'disable') as { entry: { enabled: boolean } }).entry.enabled, false)
    assert.equal((answerOf('subject-issuers', 'enable') as { entry: { enabled: boolean } }).entry.enabled, true)
    assert.deepEqual(Object.entries(answerOf('workload-issuers', 'show')!).filter(([k]) => k === 'managed_by' || k === 'key'), [['key', 'https://k8s.example.com'], ['managed_by', 'api']])
    assert.equal((answerOf('workloads', 'show') as { managed_by: string }).managed_by, 'api')
    assert.equal((answerOf('workloads', 'disable') as { entry: { enabled: boolean } }).entry.enabled, false)
    const listed = answerOf('workloads', 'list') as { items: { key: string; managed_by: string }[] }
    assert.deepEqual(listed.items.map((e) => `${e.key}:${e.managed_by}`), ['demo-agent:file', 'demo-helper:file', 'mcp-clients:file', 'report-agent:api'])
    const key = answerOf('admin-keys', 'create') as { admin_key: string; entry: { object: { hash: string } } }
    assert.match(key.admin_key, /^tpak_/)
    assert.equal(key.entry.object.hash, '[redacted]')
    const audit = cli(dir, ['audit']).stdout.trim().split('\n').map((l) => JSON.parse(l) as { action: string; reason: string })
    assert.deepEqual(audit.filter((e) => e.action.startsWith('catalog.')).map((e) => e.action), ['catalog.disable', 'catalog.enable', 'catalog.create', 'catalog.create', 'catalog.create', 'catalog.disable', 'catalog.enable', 'catalog.create', 'catalog.replace', 'catalog.delete', 'catalog.delete', 'catalog.delete'])
    assert.ok(audit.every((e) => !e.action.startsWith('catalog.') || / by admin:cli$/.test(e.reason)))
    assert.equal((JSON.parse(cli(dir, ['audit', 'verify']).stdout) as { ok: boolean }).ok, true)
    assert.deepEqual((JSON.parse(cli(dir, ['workloads', 'list']).stdout) as { items: { key: string }[] }).items.map((e) => e.key), ['demo-agent', 'demo-helper', 'mcp-clients'])
    assert.deepEqual((JSON.parse(cli(dir, ['workload-issuers', 'list']).stdout) as { items: { key: string }[] }).items.map((e) => e.key), ['spiffe://dev.taskpass.local'])
  })

  it('refusals: exit 1 with the API error line (problems naming the field), 64 for bad usage, and nothing stored', () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-catalog-cli-'))
    const bad = cli(dir, ['workloads', 'create', '-'], JSON.stringify({ id: 'x', attestation: { issuer: 'spiffe://dev.taskpass.local', subject: 'spiffe://dev.taskpass.local/agent/x' }, grants: [{ resource: 'https://nowhere.example/mcp', scopes: ['a'] }] }))
    assert.equal(bad.status, 1)
    const line = JSON.parse(bad.stderr.trim()) as { error: string; problems: string[] }
    assert.equal(line.error, 'invalid_request')
    assert.deepEqual(line.problems, ['workloads[x].grants.0.resource: unknown resource https://nowhere.example/mcp'])
    const notJson = cli(dir, ['workloads', 'create', '-'], '{')
    assert.equal(notJson.status, 1)
    assert.equal((JSON.parse(notJson.stderr.trim()) as { error: string }).error, 'invalid_request')
    const fileOwned = cli(dir, ['workloads', 'delete', 'demo-agent'])
    assert.equal(fileOwned.status, 1)
    assert.equal((JSON.parse(fileOwned.stderr.trim()) as { error: string }).error, 'conflict')
    assert.equal(cli(dir, ['workloads', 'frobnicate']).status, 64)
    assert.equal(cli(dir, ['workloads', 'show']).status, 64)
    const audit = cli(dir, ['audit']).stdout.trim()
    assert.ok(!audit.includes('catalog.'), 'nothing audited: nothing changed')
  })
})
