import { Hono } from 'hono'
import type { Deps } from '../broker.js'
import { parseJson } from '../http/form.js'
import { noStore } from '../http/middleware.js'

/** POST /register — RFC 7591 dynamic client registration (stateless), when configured. */
export function registrationRoutes(deps: Deps) {
  return new Hono().post('/register', noStore(), async (c) => {
    const body = await parseJson(c)
    // RFC 7591 §3.2.1: 201 with the client information.
    return c.json(await deps.registrations.register(body, deps.clock.now()), 201)
  })
}
