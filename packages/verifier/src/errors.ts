/**
 * The verifier's one error type. Each rejection carries a stable `code` (RFC 6750 §3.1 and
 * RFC 9449 §7.1 error codes, a string-literal union so `switch (err.code)` narrows), the HTTP
 * status it maps to, a public `description` (safe to send; never contains `"` or `\`, because
 * the MCP SDK v1 gate copies it into a quoted challenge without escaping) and a private
 * `detail` for logs.
 */
export type VerifierErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope' | 'invalid_dpop_proof'

/** The authentication scheme a request used, or would have to use. */
export type AuthScheme = 'Bearer' | 'DPoP'

const STATUS: Record<VerifierErrorCode, 400 | 401 | 403> = {
  invalid_request: 400,
  invalid_token: 401,
  insufficient_scope: 403,
  invalid_dpop_proof: 401,
}

export class VerifierError extends Error {
  readonly code: VerifierErrorCode
  readonly status: 400 | 401 | 403
  readonly description: string
  readonly detail: string
  /**
   * RFC 6750 §3.1: a request with no credentials at all is answered 401 with a challenge that
   * carries no `error` attribute.
   */
  readonly credentialsMissing: boolean
  /** The scheme the request used, so the challenge answers in kind. */
  readonly scheme: AuthScheme | undefined
  /** For `insufficient_scope`: the scopes the request needs (the challenge's `scope`). */
  readonly requiredScopes: readonly string[] | undefined

  constructor(
    code: VerifierErrorCode,
    description: string,
    opts: { detail?: string; scheme?: AuthScheme | undefined; requiredScopes?: readonly string[]; credentialsMissing?: boolean } = {},
  ) {
    const safe = description.replace(/["\\]/g, "'")
    super(safe)
    this.name = 'VerifierError'
    this.code = code
    this.status = STATUS[code]
    this.description = safe
    this.detail = opts.detail ?? safe
    this.scheme = opts.scheme
    this.requiredScopes = opts.requiredScopes
    this.credentialsMissing = opts.credentialsMissing ?? false
  }

  /** RFC 6749 §5.2-style body: `{error, error_description}`. */
  toJSON(): { error: VerifierErrorCode; error_description: string } {
    return { error: this.code, error_description: this.description }
  }
}

export interface ChallengeOptions {
  /** RFC 9728 §5.1: where the client finds this resource's protected-resource metadata. */
  resourceMetadataUrl?: string
  /** Which schemes the resource accepts (from the verifier's `dpop` mode). */
  dpop: 'required' | 'allowed' | 'off'
  /** RFC 9449 §7.1 `algs`: the proof algorithms accepted. */
  dpopAlgorithms?: readonly string[]
  /** Scopes to advertise when the error does not name its own (RFC 6750 §3 `scope`). */
  scopes?: readonly string[]
}

/** RFC 7230 quoted-string: escape `\` and `"`. */
function quote(value: string): string {
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`
}

function challenge(scheme: AuthScheme, params: [string, string][]): string {
  return params.length === 0 ? scheme : `${scheme} ${params.map(([k, v]) => `${k}=${quote(v)}`).join(', ')}`
}

/**
 * Builds the `WWW-Authenticate` value for a rejection (RFC 6750 §3, RFC 9449 §7.1, RFC 9728
 * §5.1). The error goes into the challenge of the scheme the request used; when the resource
 * accepts both schemes, both challenges are listed so a client can pick.
 */
export function buildWwwAuthenticate(err: VerifierError | undefined, opts: ChallengeOptions): string {
  const schemes: AuthScheme[] = opts.dpop === 'required' ? ['DPoP'] : opts.dpop === 'off' ? ['Bearer'] : ['Bearer', 'DPoP']
  const errorScheme: AuthScheme = err?.scheme && schemes.includes(err.scheme) ? err.scheme : schemes[0]!
  return schemes
    .map((scheme) => {
      const params: [string, string][] = []
      if (err && !err.credentialsMissing && scheme === errorScheme) {
        params.push(['error', err.code], ['error_description', err.description])
      }
      const scopes = err?.requiredScopes ?? opts.scopes
      if (scopes && scopes.length > 0) params.push(['scope', scopes.join(' ')])
      if (opts.resourceMetadataUrl) params.push(['resource_metadata', opts.resourceMetadataUrl])
      if (scheme === 'DPoP' && opts.dpopAlgorithms && opts.dpopAlgorithms.length > 0) params.push(['algs', opts.dpopAlgorithms.join(' ')])
      return challenge(scheme, params)
    })
    .join(', ')
}
