/**
 * Fixtures of the OIDC sign-in tests: a real upstream IdP (oidc-provider on 127.0.0.1, port 0,
 * with PKCE required and its development sign-in and consent pages), plain servers on 127.0.0.1
 * (impostor or silent IdPs), and the user's browser at the IdP, played over HTTP with fetch
 * (forms parsed from the HTML, cookies kept by hand) up to the IdP's redirect back to the relying
 * party, whose URL is returned and never fetched. Nothing is sent anywhere but 127.0.0.1.
 */
import assert from 'node:assert/strict'
import type { EventEmitter } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair } from 'jose'
import Provider from 'oidc-provider'

/** The relying party's origin when none is given (a broker that is never reached). */
export const BROKER = 'https://broker.test.example'
export const CALLBACK = `${BROKER}/authorize/callback`
export const CONFIDENTIAL_SECRET = 'confidential-rp-secret-0123456789'
/** oidc-provider's ID token lifetime here, seconds. */
export const ID_TOKEN_TTL = 3600

export interface Idp {
  issuer: string
  /** Every ID token the IdP's token endpoint issued, oldest first (what the IdP said, seen at the IdP). */
  idTokens: string[]
  close(): Promise<void>
}

/**
 * Starts oidc-provider on 127.0.0.1 port 0 with the relying parties the tests use (`public-rp`,
 * `confidential-rp`, `es256-rp`), all with the redirect URI `callback`. Given a function,
 * `callback` is asked once the IdP's issuer URL is known and before the IdP serves anything: a
 * relying party configured with that issuer can be started first and say where its callback is.
 */
export async function startIdp(opts: { callback?: string | ((issuer: string) => Promise<string>) } = {}): Promise<Idp> {
  const server = createServer()
  await listen(server)
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const callback = typeof opts.callback === 'function' ? await opts.callback(issuer) : (opts.callback ?? CALLBACK)
  const rsa = await generateKeyPair('RS256', { extractable: true })
  const ec = await generateKeyPair('ES256', { extractable: true })
  // The ID token carries `sid` for a client that asks for sessions at back-channel logout.
  const withSid = { backchannel_logout_uri: new URL('/backchannel-logout', callback).href, backchannel_logout_session_required: true }
  const rp = { redirect_uris: [callback], grant_types: ['authorization_code'], response_types: ['code'], require_auth_time: true, ...withSid }
  const provider = new Provider(issuer, {
    clients: [
      { ...rp, client_id: 'public-rp', token_endpoint_auth_method: 'none' },
      { ...rp, client_id: 'confidential-rp', client_secret: CONFIDENTIAL_SECRET, token_endpoint_auth_method: 'client_secret_basic' },
      // Without require_auth_time: its ID tokens carry no auth_time.
      { ...rp, client_id: 'es256-rp', token_endpoint_auth_method: 'none', id_token_signed_response_alg: 'ES256', require_auth_time: false },
    ],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true }, backchannelLogout: { enabled: true } },
    jwks: {
      keys: [
        { ...(await exportJWK(rsa.privateKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
        { ...(await exportJWK(ec.privateKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
      ],
    },
    cookies: { keys: ['oidc-login-test-cookie-key'] },
    // The scope's claims in the ID token itself (not only at userinfo): the broker reads the ID token.
    conformIdTokenClaims: false,
    claims: { openid: ['sub'], profile: ['email', 'department', 'level', 'groups'] },
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, AuthorizationCode: 60, IdToken: ID_TOKEN_TTL },
    findAccount: (_ctx: unknown, id: string) => ({
      accountId: id,
      claims: () => ({ sub: id, email: `${id}@example.com`, department: 'eng', level: 3, groups: ['a', 'b'] }),
    }),
  })
  const idTokens: string[] = []
  // oidc-provider is an EventEmitter (its typings here declare only what the tests call); after a
  // token response, `ctx.body` is the JSON it sent.
  ;(provider as unknown as EventEmitter).on('grant.success', (ctx: { body?: { id_token?: unknown } }) => {
    if (typeof ctx.body?.id_token === 'string') idTokens.push(ctx.body.id_token)
  })
  server.on('request', provider.callback())
  return { issuer, idTokens, close: () => close(server) }
}

function listen(server: Server): Promise<void> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
}

function close(server: Server): Promise<void> {
  server.closeAllConnections()
  return new Promise((resolve) => server.close(() => resolve()))
}

/** A plain server on 127.0.0.1 port 0 (an impostor IdP, a silent one). */
export async function startServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer(handler)
  await listen(server)
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => close(server) }
}

/**
 * The user's browser at the IdP: follows redirects, signs in as `login` on the sign-in form and
 * confirms the consent form (or presses Cancel when `cancel`), until the IdP redirects away from
 * itself — to the relying party's callback. Returns that URL.
 */
export async function signIn(authorizationUrl: string, opts: { login?: string; cancel?: boolean } = {}): Promise<URL> {
  const idpOrigin = new URL(authorizationUrl).origin
  const cookies = new Map<string, string>()
  let url = authorizationUrl
  let method = 'GET'
  let body: string | undefined
  for (let step = 0; step < 12; step++) {
    const res = await fetch(url, {
      method,
      body,
      redirect: 'manual',
      headers: { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; '), ...(body !== undefined && { 'content-type': 'application/x-www-form-urlencoded' }) },
    })
    for (const line of res.headers.getSetCookie()) {
      const pair = line.split(';')[0]!
      const eq = pair.indexOf('=')
      const [name, value] = [pair.slice(0, eq), pair.slice(eq + 1)]
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(line)) cookies.delete(name)
      else cookies.set(name, value)
    }
    method = 'GET'
    body = undefined
    const location = res.headers.get('location')
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel()
      const next = new URL(location, url)
      if (next.origin !== idpOrigin) return next
      url = next.href
      continue
    }
    const html = await res.text()
    assert.equal(res.status, 200, `IdP page ${url}: ${html.slice(0, 300)}`)
    if (opts.cancel) {
      url = new URL(unescapeHtml(/<a href="([^"]+)">\[ Cancel \]<\/a>/.exec(html)![1]!), url).href
      continue
    }
    const action = /<form[^>]* action="([^"]+)"/.exec(html)?.[1]
    assert.ok(action, `no form on the IdP page: ${html.slice(0, 300)}`)
    const form = new URLSearchParams([...html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"\/?>/g)].map((m) => [m[1]!, unescapeHtml(m[2]!)] as [string, string]))
    if (form.get('prompt') === 'login') {
      form.set('login', opts.login ?? 'alice')
      form.set('password', 'any password')
    }
    url = new URL(unescapeHtml(action), url).href
    method = 'POST'
    body = form.toString()
  }
  throw new Error('the IdP never redirected back to the relying party')
}

function unescapeHtml(s: string): string {
  return s.replaceAll('&amp;', '&').replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>')
}
