import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { ConfigError, type Config } from '../config.js'
import { OAUTH_CLIENT_ISSUER, type AttestationKind } from '../exchange/attestation/kinds.js'
import { compilePolicySet, createCedarPolicy, prepare, type PolicySet, type PolicySource } from './cedar.js'
import type { Policy } from './decide.js'
import { generateGrantPolicies } from './generate.js'
import { createGrantPolicy } from './grants.js'

/**
 * The policy set in force, and how it changes (docs/policy.md "Loading policies"). A set has up to
 * three parts: the policies generated from the grants (unless `policies.replaceDefaults`), the
 * policy file's, and the admin policies (loaded through the admin API, kept in the database). A
 * new set is validated whole before anything changes; a refused one leaves the running set in
 * force. Decisions are synchronous, so a swap takes effect exactly at the next decision.
 */
export interface PolicyEngine extends Policy {
  /** The set in force. */
  readonly set: PolicySet
  /** The admin policies in force (Cedar text; empty when there are none). */
  readonly adminText: string
  /** Validates the set with `adminText` as the admin policies (file and generated as in force); throws ConfigError. */
  compileWith(parts: { adminText?: string; fileText?: string }): PolicySet
  /** Puts a set built by {@link compileWith} in force. */
  install(set: PolicySet, parts: { adminText?: string; fileText?: string }): void
  /** Re-reads the policy file, takes `adminText` as the admin policies, and puts the resulting set in force; throws ConfigError (nothing changes). */
  reload(parts: { adminText: string }): PolicySet
  /** A policy over a candidate set, for a dry run: prepared aside, never in force. */
  candidate(set: PolicySet): Policy
}

let engines = 0

type Inputs = Pick<Config, 'workloads' | 'resources' | 'policies' | 'workloadIssuers'>

/** What `kindOf(issuer)` answers: the kind of the workload issuer a workload's `attestation.issuer` names. */
export function attestationKinds(config: Pick<Config, 'workloadIssuers'>): (issuer: string) => AttestationKind {
  const kinds = new Map<string, AttestationKind>(config.workloadIssuers.map((wi) => [wi.kind === 'spiffe' ? `spiffe://${wi.trustDomain}` : wi.issuer, wi.kind]))
  return (issuer) => kinds.get(issuer) ?? (issuer === OAUTH_CLIENT_ISSUER ? 'oauth_client' : issuer.startsWith('spiffe://') ? 'spiffe' : 'oidc')
}

/**
 * Builds the engine for a configuration, with the admin policies stored in the database
 * (`adminText`): generates, validates and prepares the set. Throws {@link ConfigError} naming
 * every bad policy. With neither a file nor admin policies the set is only the generated grants,
 * decided natively by {@link createGrantPolicy} (the same decisions, proven by test); otherwise
 * every decision is Cedar's.
 */
export function createPolicyEngine(
  config: Inputs,
  opts: {
    adminText?: string
    readFile?: (path: string) => string
    observe?: (evaluator: 'native' | 'cedar', action: string, seconds: number) => void
    /**
     * The name of this engine's slots in the wasm instance, which frees nothing it preparsed: an
     * engine replacing another (a catalog change) reuses the slots of one no longer in force.
     * Default: slots of its own.
     */
    slots?: string
  } = {},
): PolicyEngine {
  const readFile = opts.readFile ?? ((p: string) => readFileSync(p, 'utf8'))
  const serial = opts.slots ?? String(++engines)
  const kindOf = attestationKinds(config)
  const generated = config.policies.replaceDefaults ? [] : generateGrantPolicies(config)
  const uris = config.resources.map((r) => r.uri)
  const filePath = config.policies.file

  function compile(fileText: string | undefined, adminText: string): PolicySet {
    const sources: PolicySource[] = []
    if (filePath !== undefined && fileText !== undefined) sources.push({ name: filePath, text: fileText, label: 'policies.file' })
    if (adminText.trim() !== '') sources.push({ name: 'admin', text: adminText, label: 'policies (admin)' })
    return compilePolicySet(generated, sources, uris)
  }

  let fileText = readFileOrConfigError()
  let adminText = opts.adminText ?? ''
  let slot = 0
  let set = compile(fileText, adminText)
  let current = policyFor(set, `${serial}:${slot}`)
  let evaluator: 'native' | 'cedar' = set.generatedOnly ? 'native' : 'cedar'

  function readFileOrConfigError(): string | undefined {
    if (filePath === undefined) return undefined
    try {
      return readFile(filePath)
    } catch (e) {
      throw new ConfigError([`policies.file: cannot read ${filePath}: ${(e as Error).message}`])
    }
  }

  function policyFor(s: PolicySet, slotName: string): Policy {
    const prepared = prepare(s, slotName)
    return s.generatedOnly ? createGrantPolicy(s.version) : createCedarPolicy(prepared, kindOf)
  }

  function install(s: PolicySet, parts: { adminText?: string; fileText?: string }): void {
    // Prepare into the slot not in use, then switch: a failure leaves the running set untouched.
    const next = slot === 0 ? 1 : 0
    const policy = policyFor(s, `${serial}:${next}`)
    slot = next
    set = s
    current = policy
    evaluator = s.generatedOnly ? 'native' : 'cedar'
    if (parts.adminText !== undefined) adminText = parts.adminText
    if (parts.fileText !== undefined) fileText = parts.fileText
  }

  return {
    get version() {
      return current.version
    },
    readsTaskCount: (resource) => current.readsTaskCount?.(resource) === true,
    get set() {
      return set
    },
    get adminText() {
      return adminText
    },
    decide(principal, action, resource, context) {
      const observe = opts.observe
      if (observe === undefined) return current.decide(principal, action, resource, context)
      const start = performance.now()
      try {
        return current.decide(principal, action, resource, context)
      } finally {
        observe(evaluator, action, (performance.now() - start) / 1000)
      }
    },
    compileWith: (parts) => compile(parts.fileText ?? fileText, parts.adminText ?? adminText),
    install,
    reload(parts) {
      const text = readFileOrConfigError()
      const s = compile(text, parts.adminText)
      install(s, { adminText: parts.adminText, ...(text !== undefined ? { fileText: text } : {}) })
      return s
    },
    candidate: (s) => policyFor(s, `${serial}:candidate`),
  }
}
