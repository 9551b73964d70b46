import type { Clock } from '../clock.js'
import { tokenRevokedEvent } from '../revocations/events.js'
import type { AuthenticatedClient } from '../http/client-auth.js'
import type { Stores } from '../store/stores.js'
import type { OwnTokenVerifier } from './own-token.js'

/**
 * RFC 7009 revocation of one token, by the workload it was issued to or the resource it is for.
 * "invalid tokens do not cause an error response" (§2.2): unknown, malformed or someone else's
 * tokens return normally and change nothing. A revocation is durable before this returns.
 */
export async function revokeToken(
  deps: { clock: Clock; stores: Stores; ownTokens: OwnTokenVerifier },
  client: AuthenticatedClient,
  token: string,
): Promise<void> {
  const claims = await deps.ownTokens.verify(token)
  if (!claims) return
  const row = await deps.stores.tokens.get(claims.jti)
  if (!row) return
  const who = client.kind === 'workload' ? `workload:${client.workload.id}` : `resource:${client.resource.uri}`
  const entitled = client.kind === 'workload' ? row.workloadId === client.workload.id : row.aud === client.resource.uri
  const now = deps.clock.now()
  if (!entitled) {
    await deps.stores.audit.insert({ at: now, action: 'token.revoke', decision: 'deny', reason: `${who} is not entitled to revoke this token`, taskId: row.taskId, jti: row.jti, workloadId: row.workloadId, userSub: row.sub })
    return
  }
  await deps.stores.durably(async (tx) => {
    if (!await tx.tokens.revoke(row.jti, now)) return
    await tx.revocations.insert(await tokenRevokedEvent(tx, row, now))
    await tx.audit.insert({ at: now, action: 'token.revoke', decision: 'allow', reason: `revoked by ${who}`, taskId: row.taskId, jti: row.jti, workloadId: row.workloadId, userSub: row.sub })
  })
}
