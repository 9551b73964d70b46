import * as nodeCrypto from 'node:crypto'
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Context } from 'hono'
import { TtlCache } from '@taskpass/verifier/cache'
import type { Clock } from '../clock.js'
import type { ResourceConfig, WorkloadConfig } from '../config.js'
import { invalidClient, invalidRequest, OAuthError } from '../errors.js'
import { attestedSpiffeId, type Actor, type ActorTokenVerifier } from '../exchange/actor-token.js'
import { JWT_BEARER_ASSERTION_TYPE, type ClientAssertionVerifier } from '../exchange/client-assertion.js'
import type { ActingWorkload } from '../exchange/token-exchange.js'
import { identify, resourceCallerId } from './access-log.js'
import type { AuthThrottle } from './auth-throttle.js'
import type { FormParams } from './form.js'
import { remoteAddress } from './rate-limit.js'

/**
 * Client authentication for /introspect and /revoke:
 * - a resource (MCP server) with its credential: HTTP Basic (RFC 6749 §2.3.1) or
 *   client_secret_post; the secret is argon2id-hashed at rest and a verified pair is cached,
 *   so argon2 does not run per request, and every argon2 run goes through the {@link AuthThrottle}
 *   (failure budgets per client IP, per client id and broker-wide, a cap on concurrent verifications);
 * - a workload with `private_key_jwt` (RFC 7523 §2.2, `…:client-assertion-type:jwt-bearer`,
 *   signed by a key registered for it);
 * - a workload with its attestation as a client assertion
 *   (`urn:ietf:params:oauth:client-assertion-type:jwt-spiffe`, draft-ietf-oauth-spiffe-client-auth),
 *   unless the workload requires `private_key_jwt`.
 * And, for /token, {@link ClientAuthenticator.authenticateExchange}.
 */
export type AuthenticatedClient =
  | { kind: 'resource'; resource: ResourceConfig }
  | { kind: 'workload'; workload: WorkloadConfig; method: 'private_key_jwt' | 'attestation' }

export const SPIFFE_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe'

export interface Hasher {
  hash(secret: string): Promise<string>
  verify(hash: string, secret: string): Promise<boolean>
}

export interface ClientAuthenticator {
  authenticate(c: Context, form: FormParams, allow: ReadonlyArray<AuthenticatedClient['kind']>): Promise<AuthenticatedClient>
  /**
   * Client authentication at the token endpoint, once the actor token has named the workload:
   * a `private_key_jwt` assertion, if sent, must verify and be this workload's; a workload
   * configured with `tokenEndpointAuth: 'private_key_jwt'` must send one. `invalid_client` (400) otherwise.
   */
  authenticateExchange(form: FormParams, workload: WorkloadConfig): Promise<'none' | 'private_key_jwt'>
  /**
   * Client authentication of a workload at the token endpoint for a grant without an actor token
   * (the `jwt-bearer` grant: RFC 7521 §4.2, the ID-JAG draft requires it): `private_key_jwt`
   * (RFC 7523 §2.2) with a key registered for the workload, or its attestation as the client
   * assertion (`…:client-assertion-type:jwt-spiffe`), unless the workload requires `private_key_jwt`.
   * A `client_id`, when sent, names that workload. `invalid_client` (400, no challenge) otherwise;
   * a disabled workload's attestation is `unauthorized_client`, as at the token-exchange grant.
   */
  authenticateWorkload(form: FormParams, authorization: string | undefined): Promise<{ method: 'private_key_jwt' | 'attestation'; actor: ActingWorkload }>
  /**
   * Resource-only authentication from the Authorization header (GET endpoints such as the
   * revocation feed). `ip`, the TCP peer (`remoteAddress(c)`), feeds the per-IP failure budget;
   * without it the per-client and broker-wide budgets and the concurrency cap still apply.
   */
  authenticateResource(header: string | undefined, ip?: string): Promise<ResourceConfig>
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest()
}

// The one-shot `crypto.hash` (Node 20.12+) costs no Hash object per call; `createHash` before it.
const oneShot = (nodeCrypto as { hash?: (algorithm: string, data: string, encoding: 'base64url') => string }).hash
/** SHA-256 of `s`, base64url: a cache key that does not hold the credential it stands for. */
const sha256Key: (s: string) => string = oneShot ? (s) => oneShot('sha256', s, 'base64url') : (s) => createHash('sha256').update(s).digest('base64url')

/** Decodes `Basic base64(urlencode(id):urlencode(secret))`. */
function parseBasic(header: string): { id: string; secret: string } | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header.trim())
  if (!m) return undefined
  const text = Buffer.from(m[1]!, 'base64').toString('utf8')
  const i = text.indexOf(':')
  if (i < 0) return undefined
  try {
    return { id: decodeURIComponent(text.slice(0, i).replace(/\+/g, ' ')), secret: decodeURIComponent(text.slice(i + 1).replace(/\+/g, ' ')) }
  } catch {
    return undefined
  }
}

export function createClientAuthenticator(opts: {
  resources: ResourceConfig[]
  hasher: Hasher
  actorTokens: ActorTokenVerifier
  clientAssertions: ClientAssertionVerifier
  clock: Clock
  throttle: AuthThrottle
}): ClientAuthenticator {
  const byClientId = new Map(opts.resources.filter((r) => r.credential).map((r) => [r.credential!.clientId, r]))
  // sha256(id NUL secret) → digest of a pair argon2 already accepted. Compared in constant time.
  const verified = new TtlCache<Buffer>(10_000)
  const CACHE_FOREVER = Number.MAX_SAFE_INTEGER
  // Verifications in flight by pair digest; bounded by the throttle's concurrency cap.
  const inflight = new Map<string, Promise<boolean>>()

  let decoy: Promise<string> | undefined
  const decoyHash = () => (decoy ??= opts.hasher.hash(randomBytes(32).toString('base64url')))

  async function checkSecret(id: string, secret: string, ip: string | undefined): Promise<ResourceConfig> {
    const resource = byClientId.get(id)
    // The verified pair comes first and costs no argon2 and no throttle budget: a legitimate
    // caller is served at full speed however many wrong secrets arrive at the same time.
    const digest = sha256(`${id}\0${secret}`)
    const known = resource ? verified.get(id, 0) : undefined
    if (resource && known && timingSafeEqual(known, digest)) return resource
    // An unknown id spends the same throttled argon2 verify (against a decoy hash), so neither
    // timing nor the throttle's answers tell which client ids exist.
    const hash = resource ? resource.credential!.secretHash : await decoyHash()
    // The same pair arriving several times at once (a verifier opening its stream and its poll
    // together after a restart) shares one throttled verification instead of competing for it.
    const key = digest.toString('base64url')
    let pending = inflight.get(key)
    if (!pending) {
      pending = opts.throttle.verify({ ip, clientId: id }, () => opts.hasher.verify(hash, secret)).finally(() => inflight.delete(key))
      inflight.set(key, pending)
    }
    const ok = await pending
    if (!resource) throw invalidClient(`unknown client_id ${id}`)
    if (!ok) throw invalidClient(`bad secret for ${id}`)
    verified.set(id, digest, CACHE_FOREVER)
    return resource
  }

  // sha256(the whole Authorization header) → the resource it authenticated: a header seen before
  // costs one hash and one lookup — no decoding, no pair digest. Only a header whose pair argon2
  // accepted is entered; bounded (oldest out first); rebuilt empty with the catalog, like `verified`,
  // so a credential the catalog replaces or removes stops working at once.
  const verifiedHeaders = new TtlCache<ResourceConfig>(10_000)

  async function authenticateResource(header: string | undefined, ip?: string): Promise<ResourceConfig> {
    const key = header ? sha256Key(header) : undefined
    const known = key === undefined ? undefined : verifiedHeaders.get(key, 0)
    if (known) return known
    const basic = header ? parseBasic(header) : undefined
    if (!basic) throw invalidClient('missing or malformed Basic credentials')
    const resource = await checkSecret(basic.id, basic.secret, ip)
    verifiedHeaders.set(key!, resource, CACHE_FOREVER)
    return resource
  }

  return {
    authenticateResource,
    async authenticateExchange(form, workload) {
      const type = form.get('client_assertion_type')?.[0]
      const assertion = form.get('client_assertion')?.[0]
      if (type === undefined && assertion === undefined) {
        if (workload.tokenEndpointAuth === 'private_key_jwt') throw invalidClient(`workload ${workload.id} requires private_key_jwt`, null)
        return 'none'
      }
      if (type !== JWT_BEARER_ASSERTION_TYPE) throw invalidClient(`unsupported client_assertion_type ${String(type)} at the token endpoint`, null)
      if (!assertion) throw invalidClient('client_assertion missing', null)
      await opts.clientAssertions.verify(assertion, workload.id)
      return 'private_key_jwt'
    },
    async authenticateWorkload(form, authorization) {
      const one = (name: string) => form.get(name)?.[0]
      // Workloads have no shared secrets (DESIGN, roles): a key or an attestation, nothing else.
      if (authorization !== undefined) throw invalidClient('HTTP authentication is not a workload authentication method', null)
      if (form.has('client_secret')) throw invalidClient('client_secret is not a workload authentication method', null)
      const type = one('client_assertion_type')
      const assertion = one('client_assertion')
      const clientId = one('client_id')
      if (type === undefined) throw invalidClient('no client authentication (private_key_jwt or an attestation is required)', null)
      if (!assertion) throw invalidClient('client_assertion missing', null)
      if (type === JWT_BEARER_ASSERTION_TYPE) {
        const workload = await opts.clientAssertions.verify(assertion, clientId)
        return { method: 'private_key_jwt', actor: { workload, attestation: undefined, exp: undefined, act: undefined } }
      }
      if (type !== SPIFFE_ASSERTION_TYPE) throw invalidClient(`unsupported client_assertion_type ${type.slice(0, 128)}`, null)
      let actor: Actor
      try {
        actor = await opts.actorTokens.verify(assertion)
      } catch (e) {
        if (e instanceof OAuthError && e.code === 'invalid_request') throw invalidClient(`client assertion rejected: ${e.detail}`, null)
        throw e
      }
      if (clientId !== undefined && clientId !== actor.workload.id && clientId !== attestedSpiffeId(actor)) throw invalidClient(`client_id ${clientId.slice(0, 256)} does not match workload ${actor.workload.id}`, null)
      if (actor.workload.tokenEndpointAuth === 'private_key_jwt') throw invalidClient(`workload ${actor.workload.id} requires private_key_jwt`, null)
      return { method: 'attestation', actor }
    },
    async authenticate(c, form, allow) {
      const header = c.req.header('authorization')
      const assertionType = form.get('client_assertion_type')?.[0]
      const postedSecret = form.get('client_secret')?.[0]
      const methods = [header !== undefined, assertionType !== undefined, postedSecret !== undefined].filter(Boolean).length
      // RFC 6749 §2.3: a client MUST NOT use more than one authentication method per request.
      if (methods > 1) throw invalidRequest('more than one client authentication method')
      let client: AuthenticatedClient
      const ip = remoteAddress(c)
      if (header !== undefined) {
        client = { kind: 'resource', resource: await authenticateResource(header, ip) }
      } else if (postedSecret !== undefined) {
        const id = form.get('client_id')?.[0]
        if (!id) throw invalidClient('client_secret without client_id')
        client = { kind: 'resource', resource: await checkSecret(id, postedSecret, ip) }
      } else if (assertionType === JWT_BEARER_ASSERTION_TYPE) {
        const assertion = form.get('client_assertion')?.[0]
        if (!assertion) throw invalidClient('client_assertion missing')
        let workload: WorkloadConfig
        try {
          workload = await opts.clientAssertions.verify(assertion, form.get('client_id')?.[0])
        } catch (e) {
          // Same refusal as elsewhere on this endpoint: 401 with the challenge.
          throw invalidClient(e instanceof OAuthError ? e.detail : String(e))
        }
        client = { kind: 'workload', workload, method: 'private_key_jwt' }
      } else if (assertionType !== undefined) {
        if (assertionType !== SPIFFE_ASSERTION_TYPE) throw invalidClient(`unsupported client_assertion_type ${assertionType}`)
        const assertion = form.get('client_assertion')?.[0]
        if (!assertion) throw invalidClient('client_assertion missing')
        let actor: Actor
        try {
          actor = await opts.actorTokens.verify(assertion)
        } catch (e) {
          throw invalidClient(`client assertion rejected: ${e instanceof OAuthError ? e.detail : String(e)}`)
        }
        const id = form.get('client_id')?.[0]
        // As at /token: a client_id is the workload id or the SPIFFE ID the workload attested with.
        if (id !== undefined && id !== actor.workload.id && id !== attestedSpiffeId(actor)) throw invalidClient(`client_id ${id} does not match workload ${actor.workload.id}`)
        if (actor.workload.tokenEndpointAuth === 'private_key_jwt') throw invalidClient(`workload ${actor.workload.id} requires private_key_jwt`)
        client = { kind: 'workload', workload: actor.workload, method: 'attestation' }
      } else {
        throw invalidClient('no client authentication')
      }
      identify(c, client.kind === 'resource' ? resourceCallerId(client.resource) : `workload:${client.workload.id}`)
      if (!allow.includes(client.kind)) throw invalidClient(`${client.kind} may not use this endpoint`)
      return client
    },
  }
}
