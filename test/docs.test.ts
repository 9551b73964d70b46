/**
 * The configuration examples in docs/ are real configurations: each one parses.
 */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { parseConfig } from '../src/config.js'

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
