/**
 * Signing the user in at an upstream OpenID Connect IdP (a subject issuer with `login.kind: oidc`)
 * for the authorization-code flow: the broker is the relying party (openid-client), with PKCE (S256),
 * `state` and `nonce`. The identity it returns is the user's session, as a session token would be.
 */
import type { Clock } from '../clock.js'
import type { SubjectIssuerConfig } from '../config.js'

/** Who signed in, and for how long their sign-in counts. */
export interface LoginIdentity {
  /** The subject issuer (its `issuer`). */
  issuer: string
  /** The user at that issuer (its `userClaim`). */
  user: string
  /** The IdP's session id (its `sessionClaim`), when the ID token has one. */
  sid?: string | undefined
  /** The `policyClaims` of the ID token, as strings. */
  claims: Record<string, string>
  /** `auth_time`, else `iat`. */
  authTime: number
  /** The ID token's `exp`. */
  exp: number
}

/** What the browser must bring back from the IdP; the caller keeps it sealed in a cookie. */
export interface OidcLoginState {
  issuer: string
  codeVerifier: string
  state: string
  nonce: string
}

export interface OidcLogin {
  /** The IdP's authorization URL for this issuer, and the state to keep until the callback. */
  begin(issuer: SubjectIssuerConfig, redirectUri: string): Promise<{ url: string; state: OidcLoginState }>
  /**
   * Completes sign-in at the callback (`callbackUrl`: the full URL the IdP redirected to): code
   * exchange with PKCE, ID token validated (signature, `iss`, `aud`, `nonce`, `exp`). Throws
   * `OAuthError` `access_denied` (the IdP's error) or `invalid_request` otherwise.
   */
  complete(issuer: SubjectIssuerConfig, redirectUri: string, state: OidcLoginState, callbackUrl: URL): Promise<LoginIdentity>
}

export function createOidcLogin(opts: { clock: Clock; timeout: number }): OidcLogin {
  void opts
  return { begin: () => Promise.reject(new Error('not implemented')), complete: () => Promise.reject(new Error('not implemented')) }
}
