import { exportJWK, SignJWT } from 'jose'
import * as oauth from 'oauth4webapi'

const broker = process.env.TASKPASS_ISSUER ?? 'http://127.0.0.1:8787'
const mcpUrl = process.env.NOTES_MCP_URL ?? 'http://127.0.0.1:8788/mcp'

const issuer = new URL(broker)
const http = { [oauth.allowInsecureRequests]: true } // loopback dev broker only
const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...http }))
const client: oauth.Client = { client_id: process.env.WORKLOAD_ID ?? 'demo-agent' }
const keyPair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
const DPoP = oauth.DPoP(client, keyPair)
const params = {
  subject_token: process.env.SUBJECT_TOKEN!, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
  actor_token: process.env.ACTOR_TOKEN!, actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
  resource: mcpUrl, scope: 'notes:read',
}
const exchange = async (extra: Record<string, string> = {}) => oauth.processGenericTokenEndpointResponse(as, client,
  await oauth.genericTokenEndpointRequest(as, client, oauth.None(), 'urn:ietf:params:oauth:grant-type:token-exchange', { ...params, ...extra }, { DPoP, ...http }))
const tokens = await exchange().catch((e) => (oauth.isDPoPNonceError(e) ? exchange() : Promise.reject(e)))
// tokens.token_type === 'dpop'; the JWT's cnf.jkt === await DPoP.calculateThumbprint()
// call the MCP server with `Authorization: DPoP <token>` and a new proof (htm, htu of the MCP URL, ath)
console.log(`exchanged: token_type=${tokens.token_type}`)

const proof = await new SignJWT({ jti: crypto.randomUUID(), htm: 'POST', htu: `${broker}/tasks`, iat: Math.floor(Date.now() / 1000) })
  .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: await exportJWK(keyPair.publicKey) })
  .sign(keyPair.privateKey)
const opened = await fetch(`${broker}/tasks`, {
  method: 'POST',
  headers: { authorization: `Bearer ${process.env.SUBJECT_TOKEN}`, 'actor-token': process.env.ACTOR_TOKEN!, dpop: proof, 'content-type': 'application/json' },
  body: JSON.stringify({ purpose: 'tidy notes', resources: [{ resource: mcpUrl, scopes: ['notes:read'] }] }),
}) // → 201 {"task_id":"…","dpop_jkt":"<thumbprint>",…}; pass task_id to /token with the same DPoP handle
const task = (await opened.json()) as { task_id: string; dpop_jkt: string }
const bound = await exchange({ task_id: task.task_id })
console.log(`task ${task.task_id} bound to ${task.dpop_jkt}: token_type=${bound.token_type}`)
