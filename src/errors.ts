/**
 * The one error type on the wire: RFC 6749 §5.2 / RFC 8693 §2.2.2 error responses
 * (`{error, error_description}`). `description` is public; `detail` is private — it is
 * logged and written to the audit log, never sent.
 */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'unsupported_response_type'
  | 'access_denied'
  | 'request_not_supported'
  | 'request_uri_not_supported'
  | 'invalid_client_metadata'
  | 'invalid_redirect_uri'
  | 'invalid_scope'
  | 'invalid_target'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'invalid_dpop_proof'
  | 'invalid_authorization_details'
  | 'use_dpop_nonce'
  | 'not_found'
  | 'task_not_active'
  | 'rotation_too_early'
  | 'key_already_revoked'
  | 'invalid_policy'
  | 'conflict'
  | 'rate_limited'
  | 'temporarily_unavailable'
  | 'server_error'

export class OAuthError extends Error {
  readonly code: OAuthErrorCode
  readonly status: number
  readonly description: string
  readonly detail: string
  readonly headers: Record<string, string>
  /** For a refusal by policy: the set version and the deciding policies, for the audit row. */
  decidedBy?: { policyVersion: string; policies: string | null }

  constructor(code: OAuthErrorCode, status: number, description: string, detail?: string, headers: Record<string, string> = {}) {
    super(`${code}: ${description}`)
    this.name = 'OAuthError'
    this.code = code
    this.status = status
    this.description = description
    this.detail = detail ?? description
    this.headers = headers
  }

  toJSON(): { error: OAuthErrorCode; error_description: string } {
    return { error: this.code, error_description: this.description }
  }
}

/**
 * A policy set refused at load (admin API, dry run): 400 `invalid_policy` with every problem,
 * each naming the policy, its line and column and Cedar's message, in `problems`.
 */
export class InvalidPolicy extends OAuthError {
  readonly problems: string[]
  constructor(problems: string[]) {
    super('invalid_policy', 400, `the policy set is invalid: ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? `; and ${problems.length - 3} more` : ''}`)
    this.problems = problems
  }

  override toJSON(): { error: OAuthErrorCode; error_description: string; problems: string[] } {
    return { ...super.toJSON(), problems: this.problems }
  }
}

/**
 * A catalog object refused (admin API, CLI): 400 `invalid_request` with every problem, each
 * naming the field (`grants.0.resource: unknown resource …`), in `problems`.
 */
export class InvalidObject extends OAuthError {
  readonly problems: string[]
  constructor(problems: string[]) {
    super('invalid_request', 400, `invalid: ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? `; and ${problems.length - 3} more` : ''}`)
    this.problems = problems
  }

  override toJSON(): { error: OAuthErrorCode; error_description: string; problems: string[] } {
    return { ...super.toJSON(), problems: this.problems }
  }
}

/** 409: the request is well-formed but the state forbids it (an object the file defines, one that exists). */
export const conflict = (description: string) => new OAuthError('conflict', 409, description)

export const invalidRequest = (description: string, detail?: string, status = 400) =>
  new OAuthError('invalid_request', status, description, detail)
/** A request holding a value the database cannot store (PostgreSQL's text and U+0000): refused, nothing written. */
export const unstorableValue = () => invalidRequest('a value contains a character that cannot be stored (U+0000)')

/**
 * `invalid_client` never says which client or why: the reason goes to `detail` only.
 * RFC 6749 §5.2: 401 with a challenge for endpoints that authenticate clients by HTTP auth;
 * where the client authenticated otherwise (the token endpoint's actor token), a plain 400.
 */
export const invalidClient = (detail: string, challenge: string | null = 'Basic realm="taskpass"') =>
  challenge === null
    ? new OAuthError('invalid_client', 400, 'client authentication failed', detail)
    : new OAuthError('invalid_client', 401, 'client authentication failed', detail, { 'WWW-Authenticate': challenge })

/**
 * A `client_id` that is a Client ID Metadata Document URL whose document cannot be used
 * (draft-ietf-oauth-client-id-metadata-document "Metadata Discovery Errors": `invalid_client`).
 * 400 with no challenge: the client did not authenticate, it named a document. The description
 * says what is wrong with the client's own document; how a fetch failed stays in `detail`.
 */
export const invalidClientMetadata = (description: string, detail?: string) => new OAuthError('invalid_client', 400, description, detail)

export const invalidGrant = (description: string, detail?: string) => new OAuthError('invalid_grant', 400, description, detail)
export const unauthorizedClient = (description: string, detail?: string) => new OAuthError('unauthorized_client', 400, description, detail)
/**
 * RFC 6749 §4.1.2.1 `access_denied`: the resource owner (or the IdP they signed in at, or the
 * approver) refused the request. `detail` carries what was said, privately.
 */
export const accessDenied = (description: string, detail?: string) => new OAuthError('access_denied', 400, description, detail)
export const invalidScope = (description: string, detail?: string) => new OAuthError('invalid_scope', 400, description, detail)
export const invalidTarget = (description: string, detail?: string) => new OAuthError('invalid_target', 400, description, detail)
export const notFound = (description = 'not found') => new OAuthError('not_found', 404, description)

/** Bearer-authenticated endpoints (RFC 6750 §3.1). */
export const invalidToken = (description: string, detail?: string) =>
  new OAuthError('invalid_token', 401, description, detail, { 'WWW-Authenticate': `Bearer error="invalid_token"` })
export const taskNotActive = (description: string) => new OAuthError('task_not_active', 409, description)
export const keyAlreadyRevoked = (description: string) => new OAuthError('key_already_revoked', 409, description)

/** RFC 9449 §5: a missing, malformed or failing DPoP proof at the authorization server is a 400. */
export const invalidDpopProof = (description: string, detail?: string) => new OAuthError('invalid_dpop_proof', 400, description, detail)

/** RFC 9449 §8: the proof lacks a valid server nonce; the one to use rides in the (single) `DPoP-Nonce` header. */
export const useDpopNonce = (nonce: string, detail?: string) =>
  new OAuthError('use_dpop_nonce', 400, 'Authorization server requires nonce in DPoP proof', detail, { 'DPoP-Nonce': nonce })

/**
 * The broker is at a capacity limit it keeps on purpose (e.g. concurrent password-hash
 * verifications): 503 with `Retry-After` (RFC 9110 §15.6.4), the code RFC 6749 §4.1.2.1 names
 * for "temporarily overloaded". Nothing was attempted; the request may be retried as it is.
 */
export const temporarilyUnavailable = (retryAfter: number, detail?: string) =>
  new OAuthError('temporarily_unavailable', 503, 'the server is busy; retry later', detail, { 'Retry-After': String(Math.max(1, retryAfter)) })
