import { Hono } from 'hono'
import type { Deps } from '../broker.js'
import { invalidRequest } from '../errors.js'
import { parseForm } from '../http/form.js'
import { noStore } from '../http/middleware.js'
import { introspectTokenJson } from '../tokens/introspect.js'
import { revokeToken } from '../tokens/revoke.js'

/** POST /introspect (RFC 7662) and POST /revoke (RFC 7009). */
export function introspectionRoutes(deps: Deps) {
  return new Hono()
    .post('/introspect', noStore(), async (c) => {
      const form = await parseForm(c)
      // RFC 7662 §2.1: the endpoint MUST require authorization — here, a registered resource.
      const client = await deps.clients.authenticate(c, form, ['resource'])
      const token = form.get('token')?.[0]
      if (!token) throw invalidRequest('"token" is required')
      if (client.kind !== 'resource') throw new Error('unreachable')
      // Serialised once per token (src/tokens/introspect.ts); the same body c.json would send.
      return c.body(await introspectTokenJson(deps, client.resource, token), 200, { 'Content-Type': 'application/json' })
    })
    .post('/revoke', noStore(), async (c) => {
      const form = await parseForm(c)
      const client = await deps.clients.authenticate(c, form, ['resource', 'workload'])
      const token = form.get('token')?.[0]
      if (!token) throw invalidRequest('"token" is required')
      // token_type_hint is advisory (RFC 7009 §2.1): an unknown hint is ignored.
      await revokeToken(deps, client, token)
      return c.body(null, 200)
    })
}
