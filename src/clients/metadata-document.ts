/**
 * OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; the MCP
 * authorization spec's default client registration): a public client's `client_id` is an https URL
 * whose document describes it. Fetched with the hardened remote fetch (no redirects, size cap,
 * timeout, no special-use addresses), validated, and cached within our own bounds.
 */
import type { Clock } from '../clock.js'
import type { Config } from '../config.js'

/** A validated client metadata document: what /authorize and the consent page need of it. */
export interface ClientMetadata {
  /** The document's URL, equal to its `client_id`. */
  clientId: string
  /** `client_name` (MCP requires it), for the consent page. */
  clientName: string
  /** Exact redirect URIs (RFC 6749 §3.1.2.2): the request's `redirect_uri` must equal one. */
  redirectUris: string[]
  /** `grant_types` (default `["authorization_code"]`): refresh tokens only for a client listing `refresh_token`. */
  grantTypes: string[]
  /** `client_uri`, `logo_uri` when present (https only), for the consent page. */
  clientUri?: string | undefined
  logoUri?: string | undefined
}

export interface ClientMetadataResolver {
  /**
   * The document of `clientId`, from the cache or fetched. Throws `OAuthError` `invalid_client`
   * (400) for a client id that is not a metadata document URL, a document that cannot be fetched
   * (status, size, time, address) or is not valid.
   */
  resolve(clientId: string): Promise<ClientMetadata>
}

/** Whether `clientId` has the shape of a metadata document URL (https, a path, no userinfo, fragment or dot segments). */
export function isMetadataDocumentUrl(clientId: string): boolean {
  void clientId
  throw new Error('not implemented')
}

export function createClientMetadataResolver(opts: { options: Config['authorization']['clientMetadata']; clock: Clock }): ClientMetadataResolver {
  void opts
  return { resolve: () => Promise.reject(new Error('not implemented')) }
}
