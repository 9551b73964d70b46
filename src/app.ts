import { Hono, type Context, type ErrorHandler, type Next } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { Deps } from './broker.js'
import { invalidRequest, notFound, OAuthError, temporarilyUnavailable, unstorableValue } from './errors.js'
import { isDatabaseBusy, isUnstorableText } from './store/db.js'
import { isAbortedRequest } from './http/aborted.js'
import { accessLog, requestIdOf } from './http/access-log.js'
import { bodyLimit } from './http/middleware.js'
import { createLimiter, rateLimitByIp } from './http/rate-limit.js'
import { adminRoutes } from './routes/admin.js'
import { consoleRoutes } from './routes/console.js'
import { authzenRoutes } from './routes/authzen.js'
import { authorizeRoutes } from './routes/authorize.js'
import { pageAssets } from './routes/assets.js'
import { registrationRoutes } from './routes/register.js'
import { authorizationCodeFlowEnabled, browserFlowOff } from './authorize/request.js'
import { healthRoutes, metricsRoutes } from './routes/health.js'
import { introspectionRoutes } from './routes/introspect.js'
import { revocationRoutes } from './routes/revocations.js'
import { taskRoutes } from './routes/tasks.js'
import { tokenRoutes } from './routes/token.js'
import { wellKnownRoutes } from './routes/well-known.js'

/** createApp(deps): mounts the route modules; one body limit, one error handler. */
export function createApp(deps: Deps) {
  const { metrics } = deps
  const app = new Hono()
  app.use(accessLog(deps))
  if (deps.config.rateLimits.perIp) app.use(rateLimitByIp(createLimiter(deps.config.rateLimits.perIp, deps.clock)))
  // Policy sets are larger than any other request: their admin routes get the policy limit.
  const policyLimit = deps.config.policies.maxBodyBytes
  app.use(bodyLimit(deps.config.bodyLimit, { '/admin/policies': policyLimit, '/admin/policy/evaluate': policyLimit }))
  app.route('/', tokenRoutes(deps))
  app.route('/', introspectionRoutes(deps))
  app.route('/', authzenRoutes(deps))
  app.route('/', taskRoutes(deps))
  app.route('/', revocationRoutes(deps))
  // The console before the admin API: its pages sign in with a cookie, not the Bearer key.
  app.route('/', consoleRoutes(deps))
  app.route('/', adminRoutes(deps))
  // The browser flow is on while some OAuth client workload and some sign-in exist, which the
  // catalog may change at run time: it is mounted always and answers only while on.
  const flowOff = (c: Context, next: Next) => {
    if (!authorizationCodeFlowEnabled(deps.config)) throw c.req.path === '/authorize' ? browserFlowOff() : notFound()
    return next()
  }
  for (const path of ['/authorize', '/authorize/*', '/account', '/account/*']) app.use(path, flowOff)
  app.use('/register', (c, next) => (deps.registrations.enabled ? flowOff(c, next) : Promise.reject(notFound())))
  app.route('/', authorizeRoutes(deps))
  app.route('/', registrationRoutes(deps))
  // The pages' stylesheet: the browser flow's pages and the admin console's.
  app.route('/', pageAssets())
  app.route('/', wellKnownRoutes(deps))
  app.route('/', healthRoutes(deps, metrics))

  app.notFound(() => { throw notFound() })
  app.onError(errorHandler(deps))
  return app
}

export type App = ReturnType<typeof createApp>

/**
 * The app on the separate metrics listener (`metrics.listen`): GET /metrics without a
 * credential, nothing else (404), with the same metrics registry and error handling.
 */
export function createMetricsApp(deps: Deps) {
  const app = new Hono()
  app.route('/', metricsRoutes(deps.metrics))
  app.notFound(() => { throw notFound() })
  app.onError(errorHandler(deps))
  return app
}

/** The one place errors become responses: OAuth errors as they are, anything else a fixed 500. */
function errorHandler(deps: Deps): ErrorHandler {
  return function onError(err, c) {
    // The client hung up mid-body: whatever the body read threw, this is neither a refusal worth
    // a log line nor a server error (the metrics count it as `aborted`). The answer goes nowhere.
    if (isAbortedRequest(c)) return c.json(invalidRequest('incomplete request').toJSON(), 400, { 'Cache-Control': 'no-store' })
    if (err instanceof OAuthError) {
      // A refusal at a capacity limit is counted in /metrics, not logged: a flood must not become a log flood.
      if ((err.status >= 500 && err.code !== 'temporarily_unavailable') || err.code === 'invalid_client') deps.logger.warn('request refused', { requestId: requestIdOf(c), code: err.code, detail: err.detail.slice(0, 512), path: c.req.path.slice(0, 256) })
      return c.json(err.toJSON(), err.status as 400, { 'Cache-Control': 'no-store', ...err.headers })
    }
    // Another process held the database's write lock too long: retry, never a 500.
    if (isDatabaseBusy(err)) {
      deps.metrics.databaseBusy.inc()
      return c.json(temporarilyUnavailable(1).toJSON(), 503, { 'Cache-Control': 'no-store', 'Retry-After': '1' })
    }
    if (isUnstorableText(err)) return c.json(unstorableValue().toJSON(), 400, { 'Cache-Control': 'no-store' })
    if (err instanceof HTTPException && err.status < 500) {
      return c.json({ error: 'invalid_request', error_description: err.message || 'bad request' }, err.status, { 'Cache-Control': 'no-store' })
    }
    deps.logger.error('unhandled error', { requestId: requestIdOf(c), path: c.req.path, error: err instanceof Error ? err.message : String(err) })
    return c.json({ error: 'server_error', error_description: 'internal error' }, 500, { 'Cache-Control': 'no-store' })
  }
}
