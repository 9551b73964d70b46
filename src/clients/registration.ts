/**
 * OAuth 2.0 Dynamic Client Registration (RFC 7591) for clients that have no metadata document —
 * the MCP spec keeps it as the fallback (deprecated in favour of Client ID Metadata Documents),
 * and most MCP clients on a desktop still use it. Off unless `authorization.dynamicRegistration`
 * names the OAuth client workload such clients belong to.
 *
 * Stateless: the client id *is* the registration, sealed (`tpdc_` + a JWE under a KEK-derived
 * key), so an unauthenticated registration writes nothing and costs one encryption. The consent
 * page says the name is the client's own claim: nobody vouches for it, unlike a document served
 * from the client's own https origin.
 */
import type { Config } from '../config.js'
import { isLoopbackUrl } from '../config.js'
import { OAuthError } from '../errors.js'
import type { Sealer } from '../lib/seal.js'
import { MAX_CLIENT_ID, validateMetadataDocument, type ClientMetadata } from './metadata-document.js'

/** The prefix of a dynamically registered client's id (never `https://`: those are metadata documents). */
export const REGISTERED_CLIENT_PREFIX = 'tpdc_'
/** How long a registration lasts; after that the client registers again (the SDKs do on `invalid_client`). */
export const REGISTRATION_TTL = 30 * 86_400

/** RFC 7591 §3.2.2 error codes. */
const invalidMetadata = (description: string) => new OAuthError('invalid_client_metadata', 400, description)
const invalidRedirectUri = (description: string) => new OAuthError('invalid_redirect_uri', 400, description)

/** What a registration holds (short names: it travels in every request as the client id). */
interface Sealed {
  n: string
  r: string[]
  g: string[]
  cu?: string
  lu?: string
}

/** RFC 7591 §3.2.1 client information response. */
export interface RegistrationResponse {
  client_id: string
  client_id_issued_at: number
  client_name: string
  redirect_uris: string[]
  grant_types: string[]
  response_types: ['code']
  token_endpoint_auth_method: 'none'
  client_uri?: string
  logo_uri?: string
}

export interface ClientRegistrations {
  enabled: boolean
  /** RFC 7591 §3.1: validates the metadata and answers the client's id and what was registered. */
  register(body: unknown, now: number): Promise<RegistrationResponse>
  /** The metadata of a registered client id; `invalid_client` for anything else (expired, forged, another broker's). */
  resolve(clientId: string): Promise<ClientMetadata>
}

export function isRegisteredClientId(clientId: string): boolean {
  return clientId.startsWith(REGISTERED_CLIENT_PREFIX)
}

export function createClientRegistrations(config: Pick<Config, 'authorization'>, sealer: Sealer): ClientRegistrations {
  return {
    enabled: config.authorization.dynamicRegistration !== undefined,
    async register(body, now) {
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalidMetadata('the registration must be a JSON object')
      if ('client_id' in body) throw invalidMetadata('"client_id" is assigned by the server')
      // The same rules as a metadata document (public clients only, MCP's required fields).
      const placeholder = `${REGISTERED_CLIENT_PREFIX}pending`
      let metadata: ClientMetadata
      try {
        metadata = validateMetadataDocument({ ...body, client_id: placeholder }, placeholder)
      } catch (e) {
        if (e instanceof OAuthError) throw invalidMetadata(e.description.replace('the client metadata document is invalid: ', ''))
        throw e
      }
      // RFC 7591 §2: redirect URIs the broker would ever send a browser to (MCP: localhost or https).
      for (const uri of metadata.redirectUris) {
        const u = new URL(uri)
        if (!(u.protocol === 'https:' || (u.protocol === 'http:' && isLoopbackUrl(uri)))) throw invalidRedirectUri(`redirect URI ${uri.slice(0, 200)} must be https, or http on a loopback address`)
      }
      const grantTypes = metadata.grantTypes.filter((g) => g === 'authorization_code' || g === 'refresh_token')
      const sealed: Sealed = { n: metadata.clientName, r: [...metadata.redirectUris], g: grantTypes, ...(metadata.clientUri ? { cu: metadata.clientUri } : {}), ...(metadata.logoUri ? { lu: metadata.logoUri } : {}) }
      const clientId = REGISTERED_CLIENT_PREFIX + (await sealer.seal('client-registration', { ...sealed }, REGISTRATION_TTL))
      // The id is the registration: one too long for /authorize to consider would be a dead registration.
      if (clientId.length > MAX_CLIENT_ID) throw invalidMetadata(`the registration is too large for its client id (at most ${MAX_CLIENT_ID} characters): fewer or shorter redirect URIs, a shorter name or URIs`)
      return {
        client_id: clientId,
        client_id_issued_at: now,
        client_name: metadata.clientName,
        redirect_uris: [...metadata.redirectUris],
        grant_types: grantTypes,
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
        ...(metadata.clientUri ? { client_uri: metadata.clientUri } : {}),
        ...(metadata.logoUri ? { logo_uri: metadata.logoUri } : {}),
      }
    },
    async resolve(clientId) {
      const sealed = await sealer.open<Sealed>('client-registration', clientId.slice(REGISTERED_CLIENT_PREFIX.length))
      if (!sealed || !isRegisteredClientId(clientId)) throw new OAuthError('invalid_client', 400, 'this client registration is not valid here (expired, or made at another server): register again')
      return { clientId, clientName: sealed.n, redirectUris: sealed.r, grantTypes: sealed.g, ...(sealed.cu ? { clientUri: sealed.cu } : {}), ...(sealed.lu ? { logoUri: sealed.lu } : {}) }
    },
  }
}
