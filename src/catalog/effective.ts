import { ConfigError, parseConfig, type Config } from '../config.js'
import type { CatalogRow } from '../store/stores.js'
import { CATALOG_KINDS, KINDS, type CatalogKind } from './kinds.js'

type AnyObject = Record<string, unknown>

/**
 * The configuration the broker runs with: the file's (`base`, validated at start) with the
 * catalog objects stored through the admin API added, and the objects switched off removed
 * (docs/admin-api.md "The file and the API"):
 *
 * - an object the file defines is the file's: stored rows may only switch it off;
 * - an object created through the API lives in the database; the file may not define it too
 *   (the broker refuses to start, naming it, rather than pick one silently);
 * - a workload switched off stays listed with `enabled: false` (as in the file); any other object
 *   switched off is left out, and so are the grants to a resource switched off.
 *
 * The result is validated whole by the configuration's own schema, so every rule of the file
 * (unknown resources, duplicate ids, prefixes, GitHub pinning…) holds for API objects too. A
 * {@link ConfigError} names objects by kind and key (`workloads[w1].grants.0.resource`).
 */
export function effectiveConfig(base: Config, rows: readonly CatalogRow[]): Config {
  if (rows.length === 0) return base
  let merged: AnyObject = base as unknown as AnyObject
  const labels: [string, string][] = []
  const problems: string[] = []
  const off = new Map<CatalogKind, Set<string>>()
  for (const kind of CATALOG_KINDS) {
    const spec = KINDS[kind]
    const mine = rows.filter((r) => r.kind === kind)
    const fileKeys = new Set(spec.list(merged).map((o) => spec.keyOf(o)))
    const disabled = new Set(mine.filter((r) => !r.enabled).map((r) => r.key))
    off.set(kind, disabled)
    // Each object with its key: a stored object's is its row's, since the object as given may
    // leave its key to a default (a GitHub issuer's `issuer`).
    const stored: [string | undefined, AnyObject][] = []
    for (const r of mine) {
      if (r.body === null) continue
      if (fileKeys.has(r.key)) {
        problems.push(`${spec.path}: ${spec.noun} ${r.key} is defined both in the configuration file and through the admin API (remove it from one)`)
        continue
      }
      stored.push([r.key, JSON.parse(r.body) as AnyObject])
    }
    let items: [string | undefined, AnyObject][] = [...spec.list(merged).map((o): [string | undefined, AnyObject] => [spec.keyOf(o), o]), ...stored]
    if (kind === 'workloads') items = items.map(([k, w]) => [k, disabled.has(k ?? '') ? { ...w, enabled: false } : w])
    else items = items.filter(([k]) => !disabled.has(k ?? ''))
    items.forEach(([k], i) => labels.push([`${spec.path}.${i}`, `${spec.path}[${k ?? i}]`]))
    merged = spec.withList(merged, items.map(([, o]) => o))
  }
  if (problems.length > 0) throw new ConfigError(problems)
  // A grant to a resource switched off grants nothing until it is switched on again.
  const offResources = off.get('resources')!
  if (offResources.size > 0) {
    merged = KINDS.workloads.withList(merged, KINDS.workloads.list(merged).map((w) => ({ ...w, grants: (w.grants as { resource: string }[] | undefined)?.filter((g) => !offResources.has(g.resource)) })))
  }
  try {
    return parseConfig(merged)
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    throw new ConfigError(e.issues.map((issue) => relabel(issue, labels)))
  }
}

/** `workloads.3.grants.0: …` → `workloads[w1].grants.0: …`: an index means nothing to an API caller. */
function relabel(issue: string, labels: readonly [string, string][]): string {
  for (const [prefix, label] of labels) {
    if (issue.startsWith(`${prefix}.`) || issue.startsWith(`${prefix}:`)) return label + issue.slice(prefix.length)
  }
  return issue
}
