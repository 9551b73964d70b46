import { Hono, type MiddlewareHandler } from 'hono'
import type { Deps } from '../broker.js'
import { authzenConfiguration, authzenConfigurationPath, evaluateToolCall, evaluateToolCalls } from '../authzen/evaluate.js'
import { parseEvaluation, parseEvaluations } from '../authzen/request.js'
import { parseJson } from '../http/form.js'
import { noStore } from '../http/middleware.js'
import { identify, resourceCallerId } from '../http/access-log.js'
import { remoteAddress } from '../http/rate-limit.js'

/**
 * OpenID AuthZEN Authorization API 1.0 (docs/authzen.md): `POST /access/v1/evaluation`,
 * `POST /access/v1/evaluations` and the PDP metadata. The PEP is a registered resource
 * authenticated with its credential by HTTP Basic — the authenticator and throttle of /introspect.
 */
export function authzenRoutes(deps: Deps) {
  // The HTTPS binding: a PEP's X-Request-ID comes back on the response, errors included.
  const echoRequestId: MiddlewareHandler = async function echoRequestId(c, next) {
    const id = c.req.header('x-request-id')
    await next()
    if (id !== undefined) c.res.headers.set('X-Request-ID', id)
  }
  const authenticate = async (c: Parameters<typeof remoteAddress>[0]) => {
    const resource = await deps.clients.authenticateResource(c.req.header('authorization'), remoteAddress(c))
    identify(c, resourceCallerId(resource))
    return resource
  }
  return new Hono()
    .use('/access/v1/*', echoRequestId, noStore())
    .post('/access/v1/evaluation', async (c) => {
      // Authenticated before the body is read: an unknown caller costs one throttled check.
      const caller = await authenticate(c)
      return c.json(await evaluateToolCall(deps, caller, parseEvaluation(await parseJson(c))))
    })
    .post('/access/v1/evaluations', async (c) => {
      const caller = await authenticate(c)
      return c.json(await evaluateToolCalls(deps, caller, parseEvaluations(await parseJson(c))))
    })
    .get(authzenConfigurationPath(deps.config.issuer), (c) => {
      c.header('Cache-Control', 'public, max-age=300')
      return c.json(authzenConfiguration(deps.config.issuer))
    })
}
