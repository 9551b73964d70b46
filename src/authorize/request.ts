/**
 * The authorization request (RFC 6749 §4.1.1, OAuth 2.1 §4.1.1) as taskpass accepts it: PKCE with
 * S256 only (RFC 7636), one RFC 8707 `resource`, RFC 9396 `authorization_details` naming tools,
 * RFC 9449 §10 `dpop_jkt`. Checked in two steps, as §4.1.2.1 orders: the client and its redirect
 * URI first — an error there is shown to the user and never redirected (no open redirector) — then
 * everything else, whose errors go back to the client's redirect URI.
 */
import type { Config, WorkloadConfig } from '../config.js'
import { isLoopbackUrl } from '../config.js'
import { compileRule } from '../exchange/attestation/claim-rules.js'
import { invalidRequest, invalidScope, invalidTarget, OAuthError } from '../errors.js'
import { randomSecret } from '../ids.js'
import { allowedScopes } from '../policy/decide.js'
import { parseAuthorizationDetails } from '../tokens/authorization-details.js'
import { MAX_CLIENT_ID, type ClientMetadata, type ClientMetadataResolver } from '../clients/metadata-document.js'
import { isRegisteredClientId, type ClientRegistrations } from '../clients/registration.js'

/** A request whose client and redirect URI are known good: anything wrong from here on is redirected. */
export interface AuthorizationRequest {
  /** Random, per request: the one task a consent to it may open is derived from it (one consent, one task). */
  requestId: string
  clientId: string
  /** The OAuth client workload the client id maps to. */
  workloadId: string
  redirectUri: string
  state: string | undefined
  /** RFC 7636 §4.2 S256 challenge. */
  codeChallenge: string
  resource: string
  /** The scopes asked for (the workload's grant on the resource when the request named none). */
  scopes: string[]
  /** The tools asked for (`mcp_tools` authorization details); undefined: none named. */
  tools: string[] | undefined
  dpopJkt: string | undefined
  /** Whether the client asks for refresh tokens (its metadata lists the grant) and its workload allows them. */
  refresh: boolean
  clientName: string
}

/** An error to send back to the client's redirect URI (RFC 6749 §4.1.2.1), with the request's `state`. */
export class RedirectableError extends Error {
  readonly error: OAuthError
  readonly redirectUri: string
  readonly state: string | undefined
  constructor(error: OAuthError, redirectUri: string, state: string | undefined) {
    super(error.message)
    this.name = 'RedirectableError'
    this.error = error
    this.redirectUri = redirectUri
    this.state = state
  }
}

const MAX_STATE = 1024
const B64URL_43 = /^[A-Za-z0-9_-]{43}$/
const SINGLE = ['client_id', 'redirect_uri', 'response_type', 'state', 'code_challenge', 'code_challenge_method', 'scope', 'resource', 'authorization_details', 'dpop_jkt'] as const

/** `/authorize` while the browser flow is off: the broker issues tokens only at the token endpoint. */
export const browserFlowOff = () =>
  new OAuthError('unsupported_response_type', 400, 'this broker has no OAuth client workload and sign-in configured: it issues tokens only at the token endpoint (token exchange, or an enterprise IdP\'s ID-JAG)')

/** Whether the authorization-code flow is served: some workload is an OAuth client and some subject issuer signs users in. */
export function authorizationCodeFlowEnabled(config: Pick<Config, 'workloads' | 'subjectIssuers'>): boolean {
  return config.workloads.some((w) => w.oauthClient !== undefined) && config.subjectIssuers.some((si) => si.login !== undefined)
}

/** The OAuth client workload a client id belongs to: the first whose `oauthClient.clientId` rule matches. */
export function oauthClientWorkload(config: Pick<Config, 'workloads' | 'authorization'>, clientId: string): WorkloadConfig | undefined {
  if (clientId.length > MAX_CLIENT_ID) return undefined
  // A dynamically registered client belongs to the workload registration is configured for.
  if (isRegisteredClientId(clientId)) {
    const registered = config.authorization.dynamicRegistration
    return registered ? config.workloads.find((w) => w.id === registered.workload) : undefined
  }
  return config.workloads.find((w) => clientRule(w)(clientId))
}

// Compiled once per workload object: a catalog change makes new objects, so a changed rule is compiled anew.
const clientRules = new WeakMap<WorkloadConfig, (value: string) => boolean>()
const NO_CLIENT = () => false
function clientRule(w: WorkloadConfig): (value: string) => boolean {
  let rule = clientRules.get(w)
  if (!rule) clientRules.set(w, (rule = w.oauthClient ? compileRule(w.oauthClient.clientId) : NO_CLIENT))
  return rule
}

/**
 * RFC 3986 §6.2.2.1 / the MCP spec: scheme and host compare case-insensitively, so a resource
 * sent as `HTTPS://Notes.Example/mcp` is the registered `https://notes.example/mcp`.
 */
export function canonicalResource(uri: string): string | undefined {
  try {
    const u = new URL(uri)
    if (u.hash !== '' || uri.includes('#')) return undefined
    const rest = uri.slice(uri.indexOf('//') + 2)
    const authorityEnd = rest.search(/[/?]/)
    const path = authorityEnd === -1 ? '' : rest.slice(authorityEnd)
    return `${u.protocol}//${u.host}${path}`
  } catch {
    return undefined
  }
}

/** A redirect URI the browser may be sent to: https, or http on a loopback host (RFC 8252 §7.3; MCP: "localhost or HTTPS"). */
function usableRedirect(uri: string): boolean {
  try {
    const u = new URL(uri)
    return u.hash === '' && (u.protocol === 'https:' || (u.protocol === 'http:' && isLoopbackUrl(uri)))
  } catch {
    return false
  }
}

/**
 * Step one: the client (its id matches an OAuth client workload — checked before any fetch, so a
 * stranger's URL is never fetched — and its metadata document resolves) and the exact redirect URI.
 * Throws `OAuthError` (shown to the user, never redirected).
 */
export async function identifyClient(deps: { config: Pick<Config, 'workloads' | 'authorization'>; clientMetadata: ClientMetadataResolver; registrations: Pick<ClientRegistrations, 'resolve'> }, params: URLSearchParams): Promise<{ client: ClientMetadata; workload: WorkloadConfig; redirectUri: string }> {
  for (const name of ['client_id', 'redirect_uri']) if (params.getAll(name).length > 1) throw invalidRequest(`"${name}" must not be repeated`)
  const clientId = params.get('client_id')
  if (!clientId) throw invalidRequest('"client_id" is required')
  const workload = oauthClientWorkload(deps.config, clientId)
  if (!workload) throw new OAuthError('unauthorized_client', 400, 'this client may not ask for access here', `no OAuth client workload matches ${clientId.slice(0, 256)}`)
  if (!workload.enabled) throw new OAuthError('unauthorized_client', 400, 'this client may not ask for access here', `workload ${workload.id} is disabled`)
  const client = isRegisteredClientId(clientId) ? await deps.registrations.resolve(clientId) : await deps.clientMetadata.resolve(clientId)
  const redirectUri = params.get('redirect_uri')
  // OAuth 2.1 §4.1.1: required here (clients may register several); compared as strings (§2.3.1).
  if (!redirectUri) throw invalidRequest('"redirect_uri" is required')
  if (!client.redirectUris.includes(redirectUri)) throw invalidRequest('"redirect_uri" is not one of the client\'s redirect URIs', `redirect_uri ${redirectUri.slice(0, 256)} not in the metadata of ${clientId.slice(0, 256)}`)
  if (!usableRedirect(redirectUri)) throw invalidRequest('"redirect_uri" must be https, or http on a loopback address')
  return { client, workload, redirectUri }
}

/** Step two: everything else. Throws {@link RedirectableError}. */
export function parseAuthorizationRequest(config: Pick<Config, 'resources'>, identified: { client: ClientMetadata; workload: WorkloadConfig; redirectUri: string }, params: URLSearchParams): AuthorizationRequest {
  const { client, workload, redirectUri } = identified
  const rawState = params.getAll('state')
  const state = rawState.length === 1 && rawState[0]!.length <= MAX_STATE ? rawState[0] : undefined
  const fail = (e: OAuthError): never => {
    throw new RedirectableError(e, redirectUri, state)
  }
  if (rawState.length === 1 && state === undefined) fail(invalidRequest(`"state" is longer than ${MAX_STATE} characters`))
  for (const name of SINGLE) if (params.getAll(name).length > 1) fail(invalidRequest(`"${name}" must not be repeated`))
  // Request objects (RFC 9101) are not supported: say so rather than ignore them.
  if (params.has('request')) fail(new OAuthError('request_not_supported', 400, 'request objects are not supported'))
  if (params.has('request_uri')) fail(new OAuthError('request_uri_not_supported', 400, 'request_uri is not supported'))
  if (params.get('response_type') !== 'code') fail(new OAuthError('unsupported_response_type', 400, 'only response_type=code is supported'))
  // OAuth 2.1 §4.1.1 / MCP: PKCE is required, and only S256 (plain would show the verifier).
  const challenge = params.get('code_challenge')
  if (!challenge) fail(invalidRequest('"code_challenge" is required (PKCE)'))
  if (params.get('code_challenge_method') !== 'S256') fail(invalidRequest('"code_challenge_method" must be S256'))
  if (!B64URL_43.test(challenge!)) fail(invalidRequest('"code_challenge" must be the base64url SHA-256 of the verifier (43 characters)'))
  const dpopJkt = params.get('dpop_jkt') ?? undefined
  if (dpopJkt !== undefined && !B64URL_43.test(dpopJkt)) fail(invalidRequest('"dpop_jkt" must be a base64url SHA-256 JWK thumbprint'))

  // RFC 8707: the resource, or — the MCP conformance check sends none — the workload's only one.
  const granted = workload.grants.map((g) => g.resource)
  const asked = params.get('resource')
  let resourceUri: string
  if (asked === null) {
    const distinct = [...new Set(granted)]
    if (distinct.length !== 1) fail(invalidTarget('"resource" is required', `${workload.id} has ${distinct.length} resources`))
    resourceUri = distinct[0]!
  } else {
    const wanted = canonicalResource(asked)
    const match = wanted === undefined ? undefined : config.resources.find((r) => canonicalResource(r.uri) === wanted)
    if (!match) fail(invalidTarget('resource is not registered', `unknown resource ${asked.slice(0, 256)}`))
    resourceUri = match!.uri
  }
  const resource = config.resources.find((r) => r.uri === resourceUri)
  if (!resource || !granted.includes(resourceUri)) fail(invalidTarget('resource is not permitted for this client', `${workload.id} has no grant for ${resourceUri}`))

  const scopeText = params.get('scope')
  const scopes = scopeText === null || scopeText.trim() === '' ? allowedScopes(workload, resource!) : [...new Set(scopeText.split(' ').filter(Boolean))]
  const unknown = scopes.filter((s) => !resource!.scopes.includes(s))
  if (unknown.length > 0) fail(invalidScope('requested scope is not known to the resource', `unknown scopes ${unknown.join(' ').slice(0, 256)} for ${resourceUri}`))
  if (scopes.length === 0) fail(invalidScope('no scope would be granted', `${workload.id} holds no scope on ${resourceUri}`))

  let tools: string[] | undefined
  const details = params.get('authorization_details')
  if (details !== null) {
    try {
      tools = parseAuthorizationDetails(details, resourceUri)
    } catch (e) {
      if (e instanceof OAuthError) fail(e)
      throw e
    }
  }
  return {
    requestId: randomSecret(16),
    clientId: client.clientId,
    workloadId: workload.id,
    redirectUri,
    state,
    codeChallenge: challenge!,
    resource: resourceUri,
    scopes,
    tools,
    dpopJkt,
    refresh: (workload.oauthClient?.refreshTokens ?? false) && client.grantTypes.includes('refresh_token'),
    clientName: client.clientName,
  }
}

/**
 * The redirect back to the client (RFC 6749 §4.1.2 / §4.1.2.1): its parameters added to the
 * redirect URI's own query, with `state` when the request had one and, RFC 9207, our `iss`.
 */
export function clientRedirect(redirectUri: string, issuer: string, params: Record<string, string | undefined>): string {
  const u = new URL(redirectUri)
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v)
  u.searchParams.set('iss', issuer)
  return u.href
}

/** The error redirect for a refused request. */
export function errorRedirect(e: RedirectableError, issuer: string): string {
  return clientRedirect(e.redirectUri, issuer, { error: e.error.code, error_description: e.error.description, state: e.state })
}
