import { Client, createPrivateKeyJwtAuth, CrossAppAccessProvider, discoverAndRequestJwtAuthGrant, StreamableHTTPClientTransport, type AssertionCallback } from '@modelcontextprotocol/client'

/** The ID-JAG from the enterprise IdP: its RFC 8693 exchange of the user's ID token (call 1). */
export function idJagFromIdp(idp: { url: string; idToken: string; clientId: string; clientSecret: string }): AssertionCallback {
  return async (ctx) =>
    (await discoverAndRequestJwtAuthGrant({ idpUrl: idp.url, audience: ctx.authorizationServerUrl, resource: ctx.resourceUrl, idToken: idp.idToken, clientId: idp.clientId, clientSecret: idp.clientSecret, scope: ctx.scope, fetchFn: ctx.fetchFn })).jwtAuthGrant
}

/**
 * Connects to an MCP server behind the verifier kit: on its 401 the SDK discovers taskpass, redeems
 * the ID-JAG there with the jwt-bearer grant (call 2), and calls the server with the task token (call 3).
 */
export async function connectWithIdJag(opts: { mcpUrl: string; broker: string; workload: string; privateJwk: Record<string, unknown>; assertion: AssertionCallback }): Promise<Client> {
  const provider = new CrossAppAccessProvider({
    assertion: opts.assertion,
    clientId: opts.workload,
    clientSecret: '', // never sent: addClientAuthentication replaces client_secret_basic
    expectedIssuer: opts.broker,
  })
  // taskpass workloads have no secret: they authenticate with private_key_jwt (their registered key).
  Object.assign(provider, { addClientAuthentication: createPrivateKeyJwtAuth({ issuer: opts.workload, subject: opts.workload, privateKey: opts.privateJwk, alg: 'ES256' }) })
  const client = new Client({ name: opts.workload, version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(opts.mcpUrl), { authProvider: provider }))
  return client
}
