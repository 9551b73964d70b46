/**
 * The configuration examples in docs/ are real configurations: each one parses; so does each
 * configuration fragment the README shows, merged into a working configuration.
 */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { parseConfig, type ConfigInput } from '../src/config.js'
import { testConfig, testKeys } from './harness.js'

const examples = new URL('../docs/examples/', import.meta.url)

describe('docs/examples', () => {
  const files = readdirSync(examples).filter((f) => f.endsWith('.json'))
  it('has examples', () => assert.ok(files.length > 0))
  for (const file of files) {
    it(`${file} is a valid configuration`, () => {
      assert.doesNotThrow(() => parseConfig(JSON.parse(readFileSync(new URL(file, examples), 'utf8'))))
    })
  }
})

describe('docs/security-teams.md', () => {
  it('every test it cites exists: each quoted name is a test or suite name in the file the bullet names', () => {
    const page = readFileSync(new URL('../docs/security-teams.md', import.meta.url), 'utf8')
    // Bullets of the form: - `test/<file>` — "name", "name", suite "name".
    const bullets = page.split(/\n\s*- /).filter((b) => /^`test\/[\w.-]+\.test\.ts`/.test(b))
    assert.ok(bullets.length >= 10, 'the page cites tests')
    let checked = 0
    for (const bullet of bullets) {
      const file = /^`(test\/[\w.-]+\.test\.ts)`/.exec(bullet)![1]!
      const source = readFileSync(new URL(`../${file}`, import.meta.url), 'utf8')
      for (const [, quoted] of bullet.replace(/\s+/g, ' ').matchAll(/"([^"]+)"/g)) {
        const name = quoted!
        if (name === '…') continue
        // The cookbook's suites are named after their rule files.
        const rule = /^cookbook: ([\w-]+\.cedar)$/.exec(name)?.[1]
        if (rule) assert.ok(readdirSync(new URL('../docs/examples/cookbook/', import.meta.url)).includes(rule), `${file}: ${name}`)
        // Table-driven tests are named `<case name> → <status> <error>`: the case name is in the file.
        else assert.ok(source.includes(name) || source.includes(name.split(' → ')[0]!), `${file} has a test named "${name}"`)
        checked++
      }
    }
    assert.ok(checked >= 20, `checked ${checked} names`)
  })
})

/** A fragment merged into a base: objects member by member; lists by entry, an entry of the fragment replacing the base's entry of the same id. */
function merge(base: Record<string, unknown>, fragment: Record<string, unknown>): Record<string, unknown> {
  const idOf = (x: unknown) => {
    const o = x as Record<string, unknown>
    return o.uri ?? o.id ?? o.trustDomain ?? o.issuer ?? o.kind
  }
  const out: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(fragment)) {
    const was = base[k]
    if (Array.isArray(v) && Array.isArray(was)) out[k] = [...was.filter((x) => !v.some((y) => idOf(y) === idOf(x))), ...v]
    else if (typeof v === 'object' && v !== null && !Array.isArray(v) && typeof was === 'object' && was !== null) out[k] = { ...was, ...v }
    else out[k] = v
  }
  return out
}

describe('README configuration fragments', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const fragments = [...readme.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]!)
  it('every JSON block is a fragment of a valid configuration', async () => {
    assert.ok(fragments.length >= 4)
    const base = testConfig(await testKeys()) as Record<string, unknown>
    // The resource the fragments grant.
    base.resources = [...(base.resources as unknown[]), { uri: 'https://notes.example.com/mcp', scopes: ['notes:read'] }]
    for (const text of fragments) {
      const fragment = JSON.parse(text) as Record<string, unknown>
      assert.doesNotThrow(() => parseConfig(merge(base, fragment) as ConfigInput), text.slice(0, 80))
    }
  })
})

describe('docs/any-mcp-client.md', () => {
  it('shows docs/examples/any-mcp-client.json verbatim (a valid configuration, checked above)', () => {
    const page = readFileSync(new URL('../docs/any-mcp-client.md', import.meta.url), 'utf8')
    const file = readFileSync(new URL('any-mcp-client.json', examples), 'utf8')
    assert.ok(page.includes('```json\n' + file + '```'), 'the page\'s configuration block is the example file')
  })
})
