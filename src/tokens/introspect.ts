import type { Clock } from '../clock.js'
import type { ResourceConfig } from '../config.js'
import type { Stores } from '../store/stores.js'
import type { OwnTokenVerifier } from './own-token.js'

/** RFC 7662 §2.2: an inactive token gets `{active:false}` and nothing else — not even why. */
export type IntrospectionResponse = { active: false } | ({ active: true } & Record<string, unknown>)

const INACTIVE: IntrospectionResponse = { active: false }

/**
 * RFC 7662 introspection for an authenticated resource. A resource learns only about tokens
 * issued for it: another audience, revoked, expired, unknown or malformed are all `{active:false}`.
 */
export async function introspectToken(
  deps: { clock: Clock; stores: Stores; ownTokens: OwnTokenVerifier },
  caller: ResourceConfig,
  token: string,
): Promise<IntrospectionResponse> {
  const claims = await deps.ownTokens.verify(token)
  if (!claims) return INACTIVE
  const now = deps.clock.now()
  const row = await deps.stores.tokens.get(claims.jti)
  if (!row || row.status !== 'active' || row.exp <= now || claims.aud !== caller.uri) return INACTIVE
  return {
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
  }
}
