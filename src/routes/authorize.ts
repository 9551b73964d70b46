import { timingSafeEqual } from 'node:crypto'
import { Hono, type Context } from 'hono'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import type { Deps } from '../broker.js'
import type { SubjectIssuerConfig } from '../config.js'
import { accessDenied, invalidRequest, OAuthError } from '../errors.js'
import { checkAnswer, clientHost, consentTtls, issueCode, openConsentedTask, secretHash, type BrowserUser } from '../authorize/consent.js'
import { errorRedirect, identifyClient, parseAuthorizationRequest, RedirectableError, type AuthorizationRequest } from '../authorize/request.js'
import { brokerSubject } from '../exchange/subject-token.js'
import type { OidcLoginState } from '../login/oidc.js'
import { isRegisteredClientId } from '../clients/registration.js'
import { noStore } from '../http/middleware.js'
import { checkCsrf, csrfToken, pageResponse } from '../http/pages.js'
import { remoteAddress } from '../http/rate-limit.js'
import { randomSecret, uuidv7 } from '../ids.js'
import { ConsentPage } from '../pages/consent.js'
import { ErrorPage } from '../pages/error.js'
import { LoginPage } from '../pages/login.js'
import { MyTasksPage } from '../pages/my-tasks.js'
import { PendingPage } from '../pages/pending.js'
import type { TaskRowProps } from '../pages/props.js'
import { endTask, taskResources, taskState } from '../tasks/lifecycle.js'

/**
 * The browser side of the authorization-code flow (docs/any-mcp-client.md): /authorize, sign-in
 * (the dev page or an upstream OIDC IdP), the consent page that opens a task, the wait for an
 * approval, and the user's own page. Pages are server-rendered, CSRF-protected and served with a
 * strict CSP; no code or token is ever logged (the access log records route patterns only).
 */

/** Cookie names: `__Host-` (Secure, Path=/, no Domain) whenever the broker is served over https. */
function cookieNames(issuer: string) {
  const secure = issuer.startsWith('https:')
  const name = (n: string) => (secure ? `__Host-taskpass-${n}` : `taskpass-${n}`)
  return { secure, browser: name('browser'), login: name('login'), oidc: name('oidc') }
}

interface LoginPayload {
  iss: string
  sub: string
  sid: string
  claims: Record<string, string>
  auth_time: number
}

/** The wait for an approval: the request itself (not its sealed form, which lapses after requestTtl) and its task. */
interface WaitPayload {
  req: AuthorizationRequest
  task: string
}

/**
 * Longest sealed authorization request: it rides inside the sealed IdP login state, in a cookie
 * browsers keep only up to 4,096 bytes (RFC 6265 §6.1). A larger one would be refused after the
 * user signed in, as expired: better to tell the client at once.
 */
const MAX_SEALED_REQUEST = 2600

/** A page-level refusal: rendered for the user (never redirected to a client). */
function refusal(status: number, message: string): OAuthError {
  return new OAuthError('invalid_request', status, message)
}

export function authorizeRoutes(deps: Deps) {
  // The catalog (issuers, workloads, resources) may change at run time: read deps.config per request.
  const { sealer } = deps
  const names = cookieNames(deps.config.issuer)
  const csrfKey = sealer.key('csrf')
  const cookieOptions = { path: '/', httpOnly: true, sameSite: 'Lax' as const, secure: names.secure }
  const loginIssuers = () => deps.config.subjectIssuers.filter((si) => si.login !== undefined)

  /** The browser's id (a random cookie), set when missing: every CSRF token is bound to it. */
  function browserId(c: Context): string {
    const existing = getCookie(c, names.browser)
    if (existing && /^[A-Za-z0-9_-]{22,64}$/.test(existing)) return existing
    const id = randomSecret(16)
    setCookie(c, names.browser, id, cookieOptions)
    return id
  }
  const csrfFor = (c: Context) => csrfToken(csrfKey, browserId(c))
  function requireCsrf(c: Context, sent: string | undefined): void {
    const bid = getCookie(c, names.browser)
    if (!bid || !checkCsrf(csrfKey, bid, sent)) throw refusal(403, 'the form has expired or did not come from this site: go back and try again')
  }

  async function signedIn(c: Context): Promise<BrowserUser | undefined> {
    const p = await sealer.open<LoginPayload & { exp: number }>('login', getCookie(c, names.login))
    if (!p) return undefined
    // A sign-in whose session an admin revoked counts no more.
    if (await deps.stores.sessions.isRevoked(p.iss, p.sid)) return undefined
    if (!loginIssuers().some((si) => si.issuer === p.iss)) return undefined
    return { issuer: p.iss, user: p.sub, sid: p.sid, claims: p.claims, authTime: p.auth_time }
  }

  async function signIn(c: Context, user: BrowserUser): Promise<void> {
    const sealed = await sealer.seal('login', { iss: user.issuer, sub: user.user, sid: user.sid, claims: user.claims, auth_time: user.authTime }, deps.config.authorization.loginTtl)
    setCookie(c, names.login, sealed, { ...cookieOptions, maxAge: deps.config.authorization.loginTtl })
  }

  /** The pending request; one that lapsed before the user answered goes back to its client as `access_denied`. */
  const openRequest = async (sealed: string | undefined) => {
    const req = await sealer.open<{ req: AuthorizationRequest }>('authorize-request', sealed)
    // One sealed before requests had an id (a broker upgraded meanwhile) is as good as expired.
    if (req && typeof req.req?.requestId === 'string') return req.req
    const lapsed = await sealer.open<{ req: AuthorizationRequest }>('authorize-request', sealed, { expired: true })
    if (lapsed && typeof lapsed.req?.redirectUri === 'string') throw new RedirectableError(accessDenied('the user did not answer in time'), lapsed.req.redirectUri, lapsed.req.state)
    throw refusal(400, 'this sign-in request has expired: start again from your application')
  }

  function loginPage(c: Context, request: string | undefined, clientName: string | undefined, error?: string, status = 200) {
    const dev = loginIssuers().find((si) => si.login?.kind === 'dev')
    const idps = loginIssuers().filter((si) => si.login?.kind === 'oidc').map((si) => ({ name: (si.login as { name?: string }).name ?? new URL(si.issuer).host, href: `/authorize/idp?${new URLSearchParams({ issuer: si.issuer, ...(request ? { request } : {}) })}` }))
    return pageResponse(c, LoginPage({ action: '/authorize/login', hidden: request ? [{ name: 'request', value: request }] : [], csrf: csrfFor(c), dev: dev ? { issuerName: new URL(dev.issuer).host } : undefined, idps, error, clientName }), { status })
  }

  async function consentPage(c: Context, sealed: string, req: AuthorizationRequest, user: BrowserUser) {
    const redirect = new URL(req.redirectUri)
    const ttls = consentTtls(deps.config)
    return pageResponse(
      c,
      ConsentPage({
        action: '/authorize/consent',
        hidden: [{ name: 'request', value: sealed }],
        csrf: csrfFor(c),
        user: user.user,
        client: { name: req.clientName, id: req.clientId, idHost: clientHost(req.clientId), redirectUri: req.redirectUri, redirectHost: redirect.host, localhostOnly: ['127.0.0.1', 'localhost', '[::1]'].includes(redirect.hostname) },
        resource: req.resource,
        scopes: req.scopes,
        tools: req.tools ?? [],
        ttls,
        purpose: `Use ${req.resource} with ${req.clientName}`.slice(0, 200),
      }),
      // Chrome applies form-action to the redirect that answers the form: the client's origin.
      { formActions: [redirect.origin] },
    )
  }

  /** Renders a refusal for the user, or sends it back to the client when its redirect URI is known good. */
  function answerError(c: Context, e: unknown) {
    if (e instanceof RedirectableError) return c.redirect(errorRedirect(e, deps.config.issuer), 303)
    if (e instanceof OAuthError) {
      if (e.status >= 500 || e.code === 'invalid_client') deps.logger.info('authorization request refused', { code: e.code, detail: e.detail.slice(0, 512) })
      return pageResponse(c, ErrorPage({ status: e.status, title: e.code === 'invalid_client' || e.code === 'unauthorized_client' ? 'This application cannot sign in here' : 'This request cannot go on', message: e.description }), { status: e.status })
    }
    throw e
  }

  async function form(c: Context): Promise<URLSearchParams> {
    if (c.req.header('content-type')?.split(';')[0]?.trim().toLowerCase() !== 'application/x-www-form-urlencoded') throw refusal(400, 'unexpected form encoding')
    return new URLSearchParams(await c.req.text())
  }

  /** After sign-in: where the browser goes next (back to the consent, or the user's page). */
  const afterSignIn = (request: string | undefined) => (request ? `/authorize/consent?${new URLSearchParams({ request })}` : '/account')

  /** Issues the code of an active task, or answers how the wait for its approval stands. */
  async function answerTask(c: Context, req: AuthorizationRequest, taskId: string) {
    const task = await deps.stores.tasks.get(taskId)
    const state = task ? taskState(task, deps.clock.now()) : 'revoked'
    if (task && state === 'active') {
      // One code per consent: a wait page reloaded after the approval does not mint a second, nor
      // does it once the first code, spent, has expired and been pruned (its task then minted).
      if (await deps.stores.authorizationCodes.countOfTask(taskId) > 0 || task.tokensMinted > 0) throw refusal(409, 'this consent has already been answered: go back to your application')
      return c.redirect(await issueCode(deps, req, task), 303)
    }
    if (task && state === 'pending_approval') {
      // The wait lasts as long as the approval may take, and a while after: long enough to collect the code.
      const exp = Math.min(task.expiresAt, (task.approvalExpiresAt ?? task.expiresAt) + deps.config.authorization.requestTtl)
      const wait = await sealer.seal('approval-wait', { req, task: taskId, exp }, deps.config.authorization.requestTtl)
      return pageResponse(c, PendingPage({ clientName: req.clientName, purpose: task.purpose, refreshUrl: `/authorize/pending?${new URLSearchParams({ wait })}`, expiresAt: task.approvalExpiresAt ?? task.expiresAt, now: deps.clock.now() }))
    }
    throw new RedirectableError(accessDenied(state === 'denied' ? 'the request was not approved' : 'the request was not approved in time', `task ${taskId} is ${state}`), req.redirectUri, req.state)
  }

  // Every answer here may carry a code, a CSRF token or who is signed in: none is stored by a
  // cache (RFC 6749 §5.1's rule for credentials; pages set it too, redirects need it as well).
  return new Hono()
    .get('/authorize', noStore(), async (c) => {
      try {
        const params = new URL(c.req.url).searchParams
        const identified = await identifyClient(deps, params)
        const req = parseAuthorizationRequest(deps.config, identified, params)
        const sealed = await sealer.seal('authorize-request', { req }, deps.config.authorization.requestTtl)
        if (sealed.length > MAX_SEALED_REQUEST) throw new RedirectableError(invalidRequest('the authorization request is too large (a long state, many tools or a long client id)', `sealed request of ${sealed.length} characters`), req.redirectUri, req.state)
        const user = await signedIn(c)
        return user ? await consentPage(c, sealed, req, user) : loginPage(c, sealed, req.clientName)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .get('/authorize/consent', noStore(), async (c) => {
      try {
        const sealed = c.req.query('request')
        const req = await openRequest(sealed)
        const user = await signedIn(c)
        return user ? await consentPage(c, sealed!, req, user) : loginPage(c, sealed, req.clientName)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .post('/authorize/login', noStore(), async (c) => {
      try {
        const f = await form(c)
        requireCsrf(c, f.get('csrf') ?? undefined)
        const request = f.get('request') || undefined
        const clientName = request ? (await openRequest(request)).clientName : undefined
        const dev = loginIssuers().find((si) => si.login?.kind === 'dev')
        if (!dev || dev.login?.kind !== 'dev') throw refusal(404, 'there is no password sign-in here')
        const user = f.get('username') ?? ''
        const password = f.get('password') ?? ''
        const good = dev.login.users.includes(user) && password.length <= 256 && timingSafeEqual(Buffer.from(secretHash(password)), Buffer.from(dev.login.passwordSha256))
        if (!good) return loginPage(c, request, clientName, 'Wrong user or password.', 401)
        await signIn(c, { issuer: dev.issuer, user, sid: uuidv7(deps.clock), claims: {}, authTime: deps.clock.now() })
        return c.redirect(afterSignIn(request), 303)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .get('/authorize/idp', noStore(), async (c) => {
      try {
        const issuer = loginIssuers().find((si) => si.issuer === c.req.query('issuer') && si.login?.kind === 'oidc')
        if (!issuer) throw refusal(404, 'unknown sign-in provider')
        const request = c.req.query('request') || undefined
        if (request) await openRequest(request)
        const { url, state } = await deps.oidcLogin.begin(issuer, `${deps.config.issuer}/authorize/callback`)
        const sealed = await sealer.seal('oidc-state', { state, request }, deps.config.authorization.requestTtl)
        setCookie(c, names.oidc, sealed, { ...cookieOptions, maxAge: deps.config.authorization.requestTtl })
        return c.redirect(url, 302)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .get('/authorize/callback', noStore(), async (c) => {
      try {
        const kept = await sealer.open<{ state: OidcLoginState; request?: string }>('oidc-state', getCookie(c, names.oidc))
        if (!kept) throw refusal(400, 'this sign-in has expired: start again from your application')
        deleteCookie(c, names.oidc, cookieOptions)
        const issuer = loginIssuers().find((si) => si.issuer === kept.state.issuer && si.login?.kind === 'oidc') as SubjectIssuerConfig | undefined
        if (!issuer) throw refusal(400, 'unknown sign-in provider')
        let identity
        try {
          identity = await deps.oidcLogin.complete(issuer, `${deps.config.issuer}/authorize/callback`, kept.state, new URL(c.req.url))
        } catch (e) {
          // RFC 6749 §4.1.2.1: the user said no at the IdP (its answer matched our state), so the
          // client waiting on this request learns access_denied; its redirect URI was checked at
          // /authorize. Any other failure may not be the user's doing and stays a page.
          if (e instanceof OAuthError && e.code === 'access_denied' && kept.request) {
            const req = await openRequest(kept.request)
            throw new RedirectableError(e, req.redirectUri, req.state)
          }
          throw e
        }
        await signIn(c, { issuer: identity.issuer, user: identity.user, sid: identity.sid ?? uuidv7(deps.clock), claims: identity.claims, authTime: identity.authTime })
        return c.redirect(afterSignIn(kept.request), 303)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .post('/authorize/consent', noStore(), async (c) => {
      try {
        const f = await form(c)
        requireCsrf(c, f.get('csrf') ?? undefined)
        const sealed = f.get('request') ?? undefined
        const req = await openRequest(sealed)
        const user = await signedIn(c)
        if (!user) return loginPage(c, sealed, req.clientName, 'Your sign-in has expired: sign in again.', 401)
        if (f.get('decision') !== 'allow') throw new RedirectableError(accessDenied('the user declined'), req.redirectUri, req.state)
        const ttl = Number(f.get('ttl'))
        let answer
        try {
          answer = checkAnswer(deps.config, req, { scopes: f.getAll('scope'), tools: req.tools === undefined ? undefined : f.getAll('tool'), ttl, purpose: f.get('purpose') ?? '' })
        } catch (e) {
          if (e instanceof OAuthError && e.code === 'access_denied') throw new RedirectableError(e, req.redirectUri, req.state)
          throw e
        }
        const task = await openConsentedTask(deps, req, user, answer, { callerAddress: remoteAddress(c) })
        return await answerTask(c, req, task.id)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .get('/authorize/pending', noStore(), async (c) => {
      try {
        const wait = await sealer.open<WaitPayload & { exp: number }>('approval-wait', c.req.query('wait'))
        if (!wait || typeof wait.req?.requestId !== 'string') throw refusal(400, 'this wait has expired: start again from your application')
        const req = wait.req
        const user = await signedIn(c)
        const task = await deps.stores.tasks.get(wait.task)
        // Only the user who consented follows their task's approval.
        if (!user || !task || task.subjectIssuer !== user.issuer || task.userSub !== user.user) throw refusal(403, 'sign in as the user who asked')
        return await answerTask(c, req, wait.task)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .get('/account', noStore(), async (c) => {
      try {
        const user = await signedIn(c)
        if (!user) return loginPage(c, undefined, undefined)
        const now = deps.clock.now()
        const rows = await deps.stores.tasks.listByUser(user.issuer, user.user, 100)
        const names = await Promise.all(rows.map(async (t) => (t.clientId !== null && isRegisteredClientId(t.clientId) ? deps.registrations.resolve(t.clientId).then((m) => `${m.clientName} (self-registered)`, () => 'a self-registered client') : undefined)))
        const tasks: TaskRowProps[] = rows.map((t, i) => {
          const state = taskState(t, now)
          return {
            taskId: t.id,
            who: names[i] ?? (t.clientId !== null ? clientHost(t.clientId) : t.workloadId),
            purpose: t.purpose,
            resources: taskResources(t),
            status: state,
            expiresAt: t.expiresAt,
            tokensMinted: t.tokensMinted,
            maxTokens: t.maxTokens ?? undefined,
            endable: state === 'active' || state === 'pending_approval',
          }
        })
        const notice = c.req.query('ended') ? 'The task has ended: its tokens no longer work.' : undefined
        return pageResponse(c, MyTasksPage({ user: user.user, csrf: csrfFor(c), endAction: '/account/tasks', signOutAction: '/account/sign-out', tasks, now, notice }))
      } catch (e) {
        return answerError(c, e)
      }
    })
    .post('/account/tasks/:id/end', noStore(), async (c) => {
      try {
        const f = await form(c)
        requireCsrf(c, f.get('csrf') ?? undefined)
        const user = await signedIn(c)
        if (!user) return loginPage(c, undefined, undefined, 'Your sign-in has expired: sign in again.', 401)
        const subject = { issuer: user.issuer, user: user.user, sub: brokerSubject(deps.config.subjectIssuers, user.issuer, user.user), sid: user.sid, exp: 0, claims: {}, startedAt: user.authTime, mayAct: undefined }
        await endTask(deps, c.req.param('id'), 'revoked', { kind: 'user', subject })
        return c.redirect('/account?ended=1', 303)
      } catch (e) {
        return answerError(c, e)
      }
    })
    .post('/account/sign-out', noStore(), async (c) => {
      try {
        const f = await form(c)
        requireCsrf(c, f.get('csrf') ?? undefined)
        deleteCookie(c, names.login, cookieOptions)
        return c.redirect('/account', 303)
      } catch (e) {
        return answerError(c, e)
      }
    })
}

