/**
 * The slice of node-oidc-provider v9 (untyped JavaScript) that bench/servers/peer.ts uses.
 */
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http'

  export interface OidcClient {
    readonly clientId: string
  }

  export interface ResourceServerInfo {
    scope: string
    audience?: string
    accessTokenTTL?: number
    accessTokenFormat?: 'jwt' | 'opaque'
    jwt?: { sign?: { alg: string; kid?: string } }
  }

  export interface ResourceServer extends ResourceServerInfo {
    readonly identifier: string
  }

  export interface ClientCredentialsToken {
    resourceServer: ResourceServer | undefined
    scope: string | undefined
    extra: Record<string, unknown> | undefined
    readonly expiration: number
    readonly tokenType: string
    /** Persists (opaque) or signs (jwt) the token; returns its value. */
    save(): Promise<string>
  }

  export interface KoaContextWithOIDC {
    oidc: {
      params: Record<string, string | string[] | undefined>
      client: OidcClient | undefined
      entity(name: string, value: unknown): void
    }
    body: unknown
  }

  export type GrantTypeHandler = (ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void>

  export class Provider {
    constructor(issuer: string, configuration?: Record<string, unknown>)
    callback(): (req: IncomingMessage, res: ServerResponse) => void
    registerGrantType(name: string, handler: GrantTypeHandler, params?: string | string[] | Set<string>, dupes?: string | string[] | Set<string>): void
    on(event: string, listener: (...args: unknown[]) => void): this
    readonly ClientCredentials: new (properties: { client: OidcClient; scope?: string | undefined }) => ClientCredentialsToken
    readonly ResourceServer: new (identifier: string, info: ResourceServerInfo) => ResourceServer
  }

  export const errors: {
    InvalidGrant: new (detail?: string) => Error
    InvalidRequest: new (description?: string) => Error
    InvalidTarget: new (description?: string) => Error
  }

  export default Provider
}
