import { readFileSync } from 'node:fs'
import type { Deps } from '../broker.js'
import { createObject, deleteObject, getEntry, listEntries, replaceObject, setEnabled } from '../catalog/catalog.js'
import { CATALOG_KINDS, isCatalogKind, type CatalogKind } from '../catalog/kinds.js'
import { invalidRequest } from '../errors.js'

export { isCatalogKind }

export const CATALOG_USAGE = `  <kind> list                the catalog objects of a kind: ${CATALOG_KINDS.join(', ')}
  <kind> show <key>          one object (a workload id, a resource URI, an issuer, an admin key name)
  <kind> create <json|->     create one from a JSON file ("-": stdin), validated as the config file is
  <kind> update <key> <json|->
                             replace one created through the API (the file's are changed in the file)
  <kind> disable <key>       switch one off (the file's too): its tasks end, their tokens are revoked
  <kind> enable <key>        switch it on again
  <kind> delete <key>        delete one created through the API (its tasks end)
  admin-keys create <name> <role>
                             a new admin key (auditor, operator or admin), printed this once
  admin-keys update <name> <role>
                             give an admin key another role
                             A running broker takes up every change within a second.
`

const print = (v: unknown) => process.stdout.write(JSON.stringify(v, null, 2) + '\n')

function readJson(path: string): unknown {
  const text = readFileSync(path === '-' ? 0 : path, 'utf8')
  try {
    return JSON.parse(text)
  } catch {
    throw invalidRequest(`${path === '-' ? 'stdin' : path} is not valid JSON`)
  }
}

/** `<kind> …` commands, as the admin API's /admin/{kind} routes; returns the exit status (64: bad usage). */
export async function catalogCommand(deps: Deps, kind: CatalogKind, args: string[]): Promise<number> {
  const [sub, a, b] = args
  const by = 'admin:cli'
  switch (sub) {
    case 'list':
      print({ items: await listEntries(deps, kind) })
      return 0
    case 'show':
      if (!a) return 64
      print(await getEntry(deps, kind, a))
      return 0
    case 'create':
      if (!a) return 64
      print(await createObject(deps, kind, kind === 'admin-keys' ? { name: a, role: b } : readJson(a), by))
      return 0
    case 'update':
      if (!a || !b) return 64
      print(await replaceObject(deps, kind, a, kind === 'admin-keys' ? { role: b } : readJson(b), by))
      return 0
    case 'disable':
    case 'enable':
      if (!a) return 64
      print(await setEnabled(deps, kind, a, sub === 'enable', by))
      return 0
    case 'delete':
      if (!a) return 64
      print(await deleteObject(deps, kind, a, by))
      return 0
    default:
      return 64
  }
}
