import type { Clock } from '../clock.js'
import type { ResourceConfig } from '../config.js'
import type { Stores } from '../store/stores.js'
import type { OwnTokenClaims, OwnTokenVerifier } from './own-token.js'

/** RFC 7662 §2.2: an inactive token gets `{active:false}` and nothing else — not even why. */
export type IntrospectionResponse = { active: false } | ({ active: true } & Record<string, unknown>)

export interface IntrospectionDeps {
  clock: Clock
  stores: Pick<Stores, 'introspection'>
  ownTokens: OwnTokenVerifier
}

const INACTIVE: IntrospectionResponse = Object.freeze({ active: false })
const INACTIVE_JSON = JSON.stringify(INACTIVE)

/**
 * The active answer of each verified token, built and serialised once: keyed by the claims
 * object the verifier caches (until `exp`), so it lives exactly as long as that cache entry.
 */
const answers = new WeakMap<OwnTokenClaims, { body: IntrospectionResponse; json: string }>()

function activeAnswer(claims: OwnTokenClaims): { body: IntrospectionResponse; json: string } {
  let answer = answers.get(claims)
  if (!answer) {
    const body: IntrospectionResponse = Object.freeze({
      active: true,
      iss: claims.iss,
      sub: claims.sub,
      sub_id: claims.sub_id,
      aud: claims.aud,
      client_id: claims.client_id,
      scope: claims.scope,
      token_type: claims.cnf ? 'DPoP' : 'Bearer',
      exp: claims.exp,
      iat: claims.iat,
      nbf: claims.nbf,
      jti: claims.jti,
      act: claims.act,
      task_id: claims.task_id,
      ...(claims.sid ? { sid: claims.sid } : {}),
      ...(claims.cnf ? { cnf: claims.cnf } : {}),
      // RFC 9396 §9.1: introspection returns the token's authorization details.
      ...(claims.authorization_details !== undefined ? { authorization_details: claims.authorization_details } : {}),
    })
    answer = { body, json: JSON.stringify(body) }
    answers.set(claims, answer)
  }
  return answer
}

/**
 * The claims of `token` if it is active for `caller`. Per request: the verified-token cache (the
 * signature is checked once per distinct token) and one read of the token's row — its status,
 * `exp`, and the key that signed it — which every revocation (token, task, session, key) writes
 * in its own transaction, so a revocation by this process or another is seen at the next call.
 */
async function activeClaims(deps: IntrospectionDeps, caller: ResourceConfig, token: string): Promise<OwnTokenClaims | undefined> {
  const verified = await deps.ownTokens.verifyRecorded(token)
  if (!verified) return undefined
  const { kid, claims } = verified
  if (claims.aud !== caller.uri) return undefined
  const row = await deps.stores.introspection.tokenState(claims.jti)
  if (!row || row.status !== 'active' || row.exp <= deps.clock.now()) return undefined
  if (row.kid === kid) return claims
  // A row without its key recorded (issued before rows carried it): the keyset answers for the key.
  if (row.kid === null && (await deps.ownTokens.verify(token))) return claims
  return undefined
}

/**
 * RFC 7662 introspection for an authenticated resource. A resource learns only about tokens
 * issued for it: another audience, revoked, expired, unknown or malformed are all `{active:false}`.
 */
export async function introspectToken(deps: IntrospectionDeps, caller: ResourceConfig, token: string): Promise<IntrospectionResponse> {
  const claims = await activeClaims(deps, caller, token)
  return claims ? activeAnswer(claims).body : INACTIVE
}

/** {@link introspectToken}, as the JSON text of the response body (serialised once per token). */
export async function introspectTokenJson(deps: IntrospectionDeps, caller: ResourceConfig, token: string): Promise<string> {
  const claims = await activeClaims(deps, caller, token)
  return claims ? activeAnswer(claims).json : INACTIVE_JSON
}
