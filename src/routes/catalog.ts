import { Hono, type Context } from 'hono'
import type { Deps } from '../broker.js'
import { createObject, deleteObject, getEntry, listEntries, replaceObject, setEnabled } from '../catalog/catalog.js'
import { CATALOG_KINDS, type CatalogKind } from '../catalog/kinds.js'
import { requireRole, type AdminEnv } from '../http/admin-auth.js'
import { parseJson } from '../http/form.js'

/** hono's pattern for the kinds (`/admin/workloads`, `/admin/resources`, …); a key is one path segment, percent-encoded. */
const KIND = `:kind{(?:${CATALOG_KINDS.join('|')})}`

const kindOf = (c: Context<AdminEnv>) => c.req.param('kind') as CatalogKind
const keyOf = (c: Context<AdminEnv>) => c.req.param('key')!
const by = (c: Context<AdminEnv>) => `admin:${c.get('adminId')}`

/**
 * /admin/{kind}: the catalog (docs/admin-api.md) — subject issuers, workload issuers, workloads,
 * resources and admin keys. Any admin key reads; changes are the admin role's. Mounted inside the
 * admin API, behind its key check.
 */
export function catalogRoutes(deps: Deps) {
  const admin = requireRole(deps, 'admin')
  return new Hono<AdminEnv>()
    .get(`/admin/${KIND}`, async (c) => c.json({ items: await listEntries(deps, kindOf(c)) }))
    .post(`/admin/${KIND}`, admin, async (c) => c.json(await createObject(deps, kindOf(c), await parseJson(c), by(c)), 201))
    .get(`/admin/${KIND}/:key`, async (c) => c.json(await getEntry(deps, kindOf(c), keyOf(c))))
    .put(`/admin/${KIND}/:key`, admin, async (c) => c.json(await replaceObject(deps, kindOf(c), keyOf(c), await parseJson(c), by(c))))
    .delete(`/admin/${KIND}/:key`, admin, async (c) => c.json(await deleteObject(deps, kindOf(c), keyOf(c), by(c))))
    .post(`/admin/${KIND}/:key/disable`, admin, async (c) => c.json(await setEnabled(deps, kindOf(c), keyOf(c), false, by(c))))
    .post(`/admin/${KIND}/:key/enable`, admin, async (c) => c.json(await setEnabled(deps, kindOf(c), keyOf(c), true, by(c))))
}
