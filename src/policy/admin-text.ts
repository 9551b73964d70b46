import { ConfigError } from '../config.js'
import { parsePolicyText } from './cedar.js'
import type { LoadedPolicy } from './generate.js'

/**
 * The admin policies' Cedar text as one policy at a time (docs/policy.md "One policy at a time").
 * The text is the one stored: its policies in force, and its **disabled** policies, each kept as a
 * marked comment block — so Cedar reads it as a comment, and a disabled policy survives restarts
 * and other processes with the text, the store's shape unchanged:
 *
 * ```
 * // taskpass:disabled-begin <id>
 * // <the policy's text, each line behind "// ">
 * // taskpass:disabled-end <id>
 * ```
 *
 * This module only reads and edits that text; validating a set is `compilePolicySet`'s.
 */

const MARK = '// taskpass:disabled-'
const BLOCK = /^\/\/ taskpass:disabled-begin (\S+)[ \t]*\n((?:\/\/.*\n)*?)\/\/ taskpass:disabled-end \1[ \t]*$/gm

/** One admin policy and where the text holds it (`start`/`end`, character offsets). */
export interface AdminEntry {
  id: string
  /** The policy's Cedar text (a disabled one's, out of its comment block). */
  text: string
  disabled: boolean
  /** Whether the policy names its own `@id` (otherwise its id is its position, `admin#<n>`). */
  named: boolean
  policy: LoadedPolicy
  start: number
  end: number
}

/** A disabled policy's comment block. */
export function disabledBlock(id: string, text: string): string {
  const lines = text.split('\n').map((l) => (l === '' ? '//' : `// ${l}`))
  return [`${MARK}begin ${id}`, ...lines, `${MARK}end ${id}`].join('\n')
}

function unwrap(body: string): string {
  return body
    .replace(/\n$/, '')
    .split('\n')
    .map((l) => l.replace(/^\/\/ ?/, ''))
    .join('\n')
}

/** One policy's text, parsed alone (throws ConfigError); `undefined` unless it holds exactly one. */
export function singlePolicy(text: string, label = 'policy'): LoadedPolicy | undefined {
  const parsed = parsePolicyText(text, 'admin', label)
  return parsed.length === 1 ? parsed[0]!.policy : undefined
}

interface Block {
  id: string
  text: string
  start: number
  end: number
}

function blocksOf(adminText: string): Block[] {
  return [...adminText.matchAll(BLOCK)].map((m) => ({ id: m[1]!, text: unwrap(m[2]!), start: m.index, end: m.index + m[0].length }))
}

/** The text with the disabled blocks blanked (same length, same lines): what Cedar's positions are found in. */
function masked(adminText: string, blocks: readonly Block[]): string {
  let out = adminText
  for (const b of blocks) out = out.slice(0, b.start) + out.slice(b.start, b.end).replace(/[^\n]/g, ' ') + out.slice(b.end)
  return out
}

/**
 * Every admin policy of a stored text, in force first in their order, then the disabled ones. A
 * marked block that does not hold exactly one policy with its id is a comment like any other
 * (a load refuses one: {@link adminTextProblems}). Throws ConfigError when the text does not parse.
 */
export function adminEntries(adminText: string): AdminEntry[] {
  const blocks = blocksOf(adminText)
  const plain = masked(adminText, blocks)
  const enabled = parsePolicyText(plain, 'admin', 'policies (admin)').map(({ policy, start }): AdminEntry => ({
    id: policy.id,
    text: policy.text,
    disabled: false,
    named: policy.annotations.id !== undefined,
    policy,
    start,
    end: start + policy.text.length,
  }))
  const disabled = blocks.flatMap((b): AdminEntry[] => {
    try {
      const policy = singlePolicy(b.text)
      return policy?.annotations.id === b.id ? [{ id: b.id, text: b.text, disabled: true, named: true, policy, start: b.start, end: b.end }] : []
    } catch (e) {
      if (e instanceof ConfigError) return []
      throw e
    }
  })
  return [...enabled, ...disabled]
}

/**
 * What keeps a text from being stored as the admin policies, beyond Cedar's own checks of the
 * policies in force: a marker line outside a well-formed block, a block that does not hold
 * exactly one policy with the block's id, a disabled id given twice or also in force (`inForce`:
 * every id of the set it would make).
 */
export function adminTextProblems(adminText: string, inForce: ReadonlySet<string>): string[] {
  const blocks = blocksOf(adminText)
  const problems: string[] = []
  const seen = new Set<string>()
  for (const b of blocks) {
    let policy: LoadedPolicy | undefined
    try {
      policy = singlePolicy(b.text, `policies (admin, disabled ${b.id})`)
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e
      problems.push(...e.issues)
      continue
    }
    if (policy?.annotations.id !== b.id) problems.push(`disabled policy ${b.id}: its block must hold exactly one Cedar policy with @id(${JSON.stringify(b.id)})`)
    else if (seen.has(b.id) || inForce.has(b.id)) problems.push(`disabled policy ${b.id}: duplicate policy id`)
    seen.add(b.id)
  }
  // A marker line no block took: a block cut or edited by hand would otherwise silently be a comment.
  const rest = masked(adminText, blocks)
  rest.split('\n').forEach((line, i) => {
    if (line.trimStart().startsWith(MARK)) problems.push(`policies (admin): admin:${i + 1}:1: "${line.trim().slice(0, 80)}" is not part of a well-formed disabled block`)
  })
  return problems
}

/** `text` with `[start, end)` replaced by `by` (removed when `by` is empty, with one newline after it). */
export function splice(text: string, start: number, end: number, by: string): string {
  const after = by === '' && text[end] === '\n' ? end + 1 : end
  return text.slice(0, start) + by + text.slice(after)
}

/** `text` with one more policy at its end. */
export function appended(text: string, policy: string): string {
  const head = text.trimEnd()
  return `${head}${head === '' ? '' : '\n\n'}${policy}\n`
}
