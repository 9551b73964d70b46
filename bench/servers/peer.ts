/**
 * The peer: node-oidc-provider v9 (default in-memory adapter, nothing persisted for JWT access
 * tokens) with one confidential client (client_secret_basic) that may use
 * - `client_credentials`, issuing an ES256 JWT access token for a resource indicator
 *   (features.resourceIndicators, accessTokenFormat "jwt");
 * - a token-exchange grant registered with `provider.registerGrantType` that does the checks the
 *   broker does on a cold exchange — two ES256 verifies (subject and actor token: signature,
 *   issuer, audience, expiry), the acting workload's identity, the one target and its scopes —
 *   then issues the same kind of JWT access token, carrying `act`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify } from 'jose'
import { errors, Provider, type KoaContextWithOIDC, type ResourceServerInfo } from 'oidc-provider'
import { ACCESS_TOKEN_TYPE, AGENT_SPIFFE_ID, JWT_TOKEN_TYPE, RESOURCE, RESOURCE_SCOPES, TOKEN_EXCHANGE_GRANT, WORKLOAD_ID, type PublicKeys } from '../lib/fixtures.js'
import { announceReady, exitWithParent, HOST, listenOn, readServerConfig } from '../lib/server-child.js'

export interface PeerServerConfig {
  clientId: string
  clientSecret: string
  /** Audience the exchanged subject and actor tokens carry (the broker's issuer string). */
  audience: string
  userIssuer: string
  keys: PublicKeys
}

const c = readServerConfig<PeerServerConfig>()
const userKeys = createLocalJWKSet({ keys: [c.keys.user] })
const svidKeys = createLocalJWKSet({ keys: [c.keys.spiffe] })

const resourceServer: ResourceServerInfo = {
  scope: RESOURCE_SCOPES.join(' '),
  accessTokenFormat: 'jwt',
  accessTokenTTL: 300,
  jwt: { sign: { alg: 'ES256' } },
}

function single(ctx: KoaContextWithOIDC, name: string): string {
  const v = ctx.oidc.params[name]
  if (typeof v !== 'string' || v === '') throw new errors.InvalidRequest(`"${name}" is required`)
  return v
}

function tokenExchangeGrant(provider: Provider) {
  return async (ctx: KoaContextWithOIDC): Promise<void> => {
    const subjectToken = single(ctx, 'subject_token')
    if (single(ctx, 'subject_token_type') !== JWT_TOKEN_TYPE) throw new errors.InvalidRequest('unsupported subject_token_type')
    const actorToken = single(ctx, 'actor_token')
    if (single(ctx, 'actor_token_type') !== JWT_TOKEN_TYPE) throw new errors.InvalidRequest('unsupported actor_token_type')
    const resource = ctx.oidc.params.resource
    if (resource !== RESOURCE) throw new errors.InvalidTarget('exactly one registered resource is required')

    let user: string
    try {
      const subject = await jwtVerify(subjectToken, userKeys, { issuer: c.userIssuer, audience: c.audience, algorithms: ['ES256'], requiredClaims: ['exp', 'sub'] })
      user = subject.payload.sub!
    } catch (e) {
      throw new errors.InvalidRequest(`subject_token is invalid: ${(e as Error).message}`)
    }
    try {
      const actor = await jwtVerify(actorToken, svidKeys, { audience: c.audience, algorithms: ['ES256'], requiredClaims: ['exp', 'sub', 'aud'] })
      if (actor.payload.sub !== AGENT_SPIFFE_ID) throw new Error('unknown workload')
    } catch (e) {
      throw new errors.InvalidRequest(`actor_token is invalid: ${(e as Error).message}`)
    }

    const requested = typeof ctx.oidc.params.scope === 'string' ? ctx.oidc.params.scope.split(' ').filter(Boolean) : RESOURCE_SCOPES
    if (requested.some((s) => !RESOURCE_SCOPES.includes(s))) throw new errors.InvalidGrant('scope exceeds the resource')

    const token = new provider.ClientCredentials({ client: ctx.oidc.client!, scope: requested.join(' ') })
    token.resourceServer = new provider.ResourceServer(resource, resourceServer)
    token.extra = { act: { sub: WORKLOAD_ID }, on_behalf_of: user }
    const accessToken = await token.save()
    ctx.body = { access_token: accessToken, issued_token_type: ACCESS_TOKEN_TYPE, token_type: token.tokenType, expires_in: token.expiration, scope: token.scope }
  }
}

const { privateKey } = await generateKeyPair('ES256', { extractable: true })
const signingJwk = { ...(await exportJWK(privateKey)), kid: 'peer-1', alg: 'ES256', use: 'sig' }

let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
const server = createServer((req, res) => handler!(req, res))
exitWithParent(() => server.close())
const port = await listenOn(server, 0)

const provider = new Provider(`http://${HOST}:${port}`, {
  clients: [
    {
      client_id: c.clientId,
      client_secret: c.clientSecret,
      grant_types: ['client_credentials', TOKEN_EXCHANGE_GRANT],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [signingJwk] },
  // The only key is ES256, so it is the default for everything the provider signs.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  ttl: { ClientCredentials: 300 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      getResourceServerInfo: () => resourceServer,
      useGrantedResource: () => true,
    },
  },
})
provider.registerGrantType(TOKEN_EXCHANGE_GRANT, tokenExchangeGrant(provider), ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'resource', 'scope', 'task_id'])
provider.on('server_error', (_ctx, err) => process.stderr.write(`oidc-provider server_error: ${String(err)}\n`))
handler = provider.callback()
announceReady(port)
