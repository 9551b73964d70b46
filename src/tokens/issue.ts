import type { SubjectId } from '@taskpass/verifier'
import type { KeySet } from '../keys/keyset.js'
import type { McpToolsDetail } from './authorization-details.js'
import { signOwnJwt } from './sign.js'

/** RFC 9068 §2.1 media type of a JWT access token, as the `typ` header. */
export const ACCESS_TOKEN_TYP = 'at+jwt'

/** Claims of a task token (RFC 9068 §2.2 + RFC 8693 §4 + `task_id`). */
export interface TaskTokenClaims {
  iss: string
  /** The user, unique in this broker's context (RFC 7519 §4.1.2): see `userSubject` in src/exchange/subject-token.ts. */
  sub: string
  /** RFC 9493 §3.2.5: the user as the pair (subject issuer, subject at that issuer). */
  sub_id: SubjectId
  aud: string
  client_id: string
  act: Record<string, unknown>
  scope: string
  task_id: string
  /** A sub-task's parent task. */
  parent_task_id?: string
  jti: string
  iat: number
  nbf: number
  exp: number
  sid?: string
  cnf?: { jkt: string }
  /** RFC 9396: the MCP tools the token may call (`mcp_tools`); absent: scope-only. */
  authorization_details?: McpToolsDetail[]
}

/**
 * Signs a task token with the current key and says which key signed it (stored with the token, so
 * revoking a compromised key revokes its tokens). Times are the claims' own: nothing here reads the clock.
 */
export async function signTaskToken(keys: KeySet, claims: TaskTokenClaims): Promise<{ token: string; kid: string }> {
  const key = await keys.current()
  return { token: await signOwnJwt(key, ACCESS_TOKEN_TYP, claims), kid: key.kid }
}
