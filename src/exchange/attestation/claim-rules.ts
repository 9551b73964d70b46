import type { JWTPayload } from 'jose'

/**
 * Claim rules map a verified attestation to a registered workload (config `workloads[].attestation`).
 *
 * A rule is an exact string, `{glob}`, or a list of these (any one matching suffices). Globs:
 * `*` matches any run of characters within one segment (segments are separated by `/` and `:`),
 * `**` matches any run of characters across segments; every other character is literal (there is
 * no `?`, no classes, no escapes). A plain string is always compared exactly, even if it contains
 * `*`. Matching is case-sensitive and anchored at both ends.
 *
 * A rule names a top-level claim (`repository`), or, starting with `/`, a JSON Pointer (RFC 6901)
 * into nested claims (`/kubernetes.io/pod/name`). Strings match as they are; numbers and booleans
 * as their JSON text; a missing claim, an object or an array never matches.
 */
export type ClaimPattern = string | { glob: string }
export type ClaimRule = ClaimPattern | ClaimPattern[]
export type ValueMatcher = (value: string | undefined) => boolean

/** `*` within a segment, `**` across segments; everything else literal. */
export function globToRegExp(glob: string): RegExp {
  let out = ''
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!
    if (ch === '*') {
      if (glob[i + 1] === '*') {
        out += '.*'
        i++
      } else out += '[^/:]*'
    } else out += ch.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')
  }
  return new RegExp(`^${out}$`, 'su')
}

export function compileRule(rule: ClaimRule): ValueMatcher {
  const patterns = (Array.isArray(rule) ? rule : [rule]).map((p): ValueMatcher => {
    if (typeof p === 'string') return (v) => v === p
    const re = globToRegExp(p.glob)
    return (v) => v !== undefined && re.test(v)
  })
  return (v) => v !== undefined && patterns.some((m) => m(v))
}

/** Whether a rule key is a valid claim name or RFC 6901 JSON Pointer. */
export function isClaimPath(key: string): boolean {
  return key !== '' && (!key.startsWith('/') || /^(\/([^~/]|~[01])*)+$/.test(key))
}

/** The claim a rule key names, as the string rules match, or `undefined`. */
export function claimValue(payload: JWTPayload, key: string): string | undefined {
  let node: unknown = payload
  const path = key.startsWith('/') ? key.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~')) : [key]
  for (const seg of path) {
    if (typeof node !== 'object' || node === null || Array.isArray(node) || !Object.hasOwn(node, seg)) return undefined
    node = (node as Record<string, unknown>)[seg]
  }
  if (typeof node === 'string') return node
  if ((typeof node === 'number' && Number.isFinite(node)) || typeof node === 'boolean') return JSON.stringify(node)
  return undefined
}

/** Compiles a workload's `attestation` rules once; the result says whether a payload matches all of them. */
export function compileAttestationRules(attestation: { subject?: ClaimRule | undefined; claims: Record<string, ClaimRule> }): (payload: JWTPayload) => boolean {
  const rules: [string, ValueMatcher][] = Object.entries(attestation.claims).map(([k, r]) => [k, compileRule(r)])
  if (attestation.subject !== undefined) rules.unshift(['sub', compileRule(attestation.subject)])
  return (payload) => rules.every(([k, m]) => m(claimValue(payload, k)))
}
