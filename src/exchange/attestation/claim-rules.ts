import type { JWTPayload } from 'jose'

/**
 * Claim rules map a verified attestation to a registered workload (config `workloads[].attestation`).
 *
 * A rule is an exact string, `{glob}`, or a list of these (any one matching suffices). Globs:
 * `*` matches any run of characters within one segment (segments are separated by `/` and `:`),
 * `**` matches any run of characters across segments; every other character is literal (there is
 * no `?`, no classes, no escapes). A plain string is always compared exactly, even if it contains
 * `*`. Matching is case-sensitive and anchored at both ends, in time linear in the value's length
 * for a given glob; a claim value longer than {@link MAX_GLOB_VALUE_LENGTH} never matches a glob.
 *
 * A rule names a top-level claim (`repository`), or, starting with `/`, a JSON Pointer (RFC 6901)
 * into nested claims (`/kubernetes.io/pod/name`). Strings match as they are; numbers and booleans
 * as their JSON text; a missing claim, an object or an array never matches.
 */
export type ClaimPattern = string | { glob: string }
export type ClaimRule = ClaimPattern | ClaimPattern[]
export type ValueMatcher = (value: string | undefined) => boolean

/**
 * Longest claim value a glob is matched against: a longer value never matches a glob. With
 * {@link MAX_GLOB_LENGTH} it bounds the work of one match (see {@link compileGlob}).
 */
export const MAX_GLOB_VALUE_LENGTH = 1024
/** Longest glob accepted in the configuration. */
export const MAX_GLOB_LENGTH = 256

/** A compiled glob. `meter.steps`, when given, counts the state visits of the match (tests bound it). */
export interface Glob {
  test(value: string, meter?: { steps: number }): boolean
}

// One element per glob position: a literal code unit, `*` (any run within a segment) or `**`.
const SEGMENT = -1
const ANY = -2

/**
 * `*` within a segment, `**` across segments; everything else literal.
 *
 * Matched by simulating the glob as a set of positions (a Thompson NFA), one pass over the
 * value: the work is at most len(value) × (len(glob) + 1) state visits, whatever the value and
 * the glob, so `*-*-*-*-prod` against a long run of `-` costs the same as any other match. (A
 * backtracking regex for the same glob takes time exponential in the number of wildcards.)
 */
export function compileGlob(glob: string): Glob {
  const atoms: number[] = []
  for (let i = 0; i < glob.length; i++) {
    if (glob[i] !== '*') atoms.push(glob.charCodeAt(i))
    else if (glob[i + 1] === '*') {
      atoms.push(ANY)
      i++
    } else atoms.push(SEGMENT)
  }
  const n = atoms.length
  const SLASH = 0x2f
  const COLON = 0x3a
  return {
    test(value, meter) {
      if (value.length > MAX_GLOB_VALUE_LENGTH) return false
      // active[i]: the value read so far can be matched by atoms[0..i).
      let active = new Uint8Array(n + 1)
      let next = new Uint8Array(n + 1)
      const close = (set: Uint8Array) => {
        // A wildcard may match nothing: its position also reaches the one after it.
        for (let i = 0; i < n; i++) if (set[i] && atoms[i]! < 0) set[i + 1] = 1
      }
      active[0] = 1
      close(active)
      let steps = 0
      for (let k = 0; k < value.length; k++) {
        const ch = value.charCodeAt(k)
        next.fill(0)
        let any = false
        for (let i = 0; i < n; i++) {
          if (!active[i]) continue
          steps++
          const a = atoms[i]!
          if (a === ANY || (a === SEGMENT && ch !== SLASH && ch !== COLON)) next[i] = 1
          else if (a === ch) next[i + 1] = 1
          else continue
          any = true
        }
        if (!any) {
          if (meter) meter.steps += steps
          return false
        }
        close(next)
        ;[active, next] = [next, active]
      }
      if (meter) meter.steps += steps
      return active[n] === 1
    },
  }
}

export function compileRule(rule: ClaimRule): ValueMatcher {
  const patterns = (Array.isArray(rule) ? rule : [rule]).map((p): ValueMatcher => {
    if (typeof p === 'string') return (v) => v === p
    const glob = compileGlob(p.glob)
    return (v) => v !== undefined && glob.test(v)
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
