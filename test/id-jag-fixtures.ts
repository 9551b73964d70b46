/**
 * What the ID-JAG tests share: an enterprise configuration (the subject issuer is also the IdP,
 * agent-a and agent-b have registered keys), ID-JAGs as the IdP mints them, private_key_jwt client
 * assertions, the redemption request and its answers. Call {@link createClientKeys} in `before`.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import type { ConfigInput } from '../src/config.js'
import { form, mint, NOTES, USER_ISSUER, type TestBroker } from './harness.js'

export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
export const CLIENT_JWT = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
export const CLIENT_SPIFFE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe'
export const ID_JAG_TYP = 'oauth-id-jag+jwt'

export type Params = Record<string, string | string[] | undefined>

export interface ClientKey {
  kid: string
  privateKey: CryptoKey
  publicJwk: JWK
  privateJwk: JWK
}
export let agentA: ClientKey
export let agentB: ClientKey

export async function clientKey(kid: string): Promise<ClientKey> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true })
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }, privateJwk: { ...(await exportJWK(privateKey)), kid, alg: 'ES256' } }
}

/** The registered keys of agent-a and agent-b (once per test file). */
export async function createClientKeys(): Promise<void> {
  agentA = await clientKey('agent-a-key-1')
  agentB = await clientKey('agent-b-key-1')
}

/** The subject issuer is also the enterprise IdP (`idJag`); agent-a and agent-b have registered keys. */
export function enterprise(c: ConfigInput): ConfigInput {
  return {
    ...c,
    subjectIssuers: c.subjectIssuers!.map((si) => ({ ...si, idJag: {} })),
    workloads: c.workloads!.map((w) => (w.id === 'agent-a' ? { ...w, jwks: { keys: [agentA.publicJwk as Record<string, unknown>] } } : w.id === 'agent-b' ? { ...w, jwks: { keys: [agentB.publicJwk as Record<string, unknown>] } } : w)),
  }
}

/** An ID-JAG as the IdP mints it after its RFC 8693 exchange; `null` removes a claim. */
export function idJag(b: TestBroker, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, key = b.keys.user): Promise<string> {
  const now = b.clock.now()
  return mint(key, { iss: USER_ISSUER, sub: 'alice', aud: b.deps.config.issuer, client_id: 'agent-a', jti: randomUUID(), iat: now, exp: now + 300, resource: NOTES, scope: 'notes:read notes:write', ...claims }, { typ: ID_JAG_TYP, ...header })
}

/** A private_key_jwt client assertion (RFC 7523 §2.2) of `client`. */
export function clientAssertion(b: TestBroker, client = 'agent-a', key = agentA): Promise<string> {
  const now = b.clock.now()
  return new SignJWT({ iss: client, sub: client, aud: b.deps.config.issuer, iat: now, exp: now + 60, jti: randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'client-authentication+jwt' }).sign(key.privateKey)
}

export async function redeem(b: TestBroker, params: Params = {}, headers: Record<string, string> = {}): Promise<Response> {
  const body: Params = { grant_type: JWT_BEARER, assertion: await idJag(b), client_assertion_type: CLIENT_JWT, client_assertion: await clientAssertion(b), ...params }
  return b.post('/token', form(body), headers)
}

export async function ok(res: Response): Promise<{ access_token: string; task_id: string; scope: string; token_type: string; expires_in: number; issued_token_type: string }> {
  const text = await res.text()
  assert.equal(res.status, 200, text)
  return JSON.parse(text)
}

export async function expectError(res: Response, status: number, error: string): Promise<void> {
  const text = await res.text()
  assert.equal(res.status, status, text)
  assert.equal((JSON.parse(text) as { error: string }).error, error)
  assert.equal(res.headers.get('cache-control'), 'no-store')
}
