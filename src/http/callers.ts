import type { Context } from 'hono'
import type { Deps } from '../broker.js'
import { invalidToken, OAuthError } from '../errors.js'
import type { Caller } from '../tasks/lifecycle.js'
import { identify } from './access-log.js'

/** Header carrying the workload's attestation on the /tasks endpoints (the RFC 8693 "actor token"). */
export const ACTOR_TOKEN_HEADER = 'Actor-Token'

function bearer(c: Context): string | undefined {
  const h = c.req.header('authorization')
  if (h === undefined) return undefined
  const m = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/i.exec(h)
  if (!m) throw invalidToken('malformed Authorization header')
  return m[1]
}

async function asInvalidToken<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (e) {
    if (e instanceof OAuthError) throw invalidToken(e.description, `${what}: ${e.detail}`)
    throw e
  }
}

/** The user, from `Authorization: Bearer <session token>`. */
export async function userCaller(deps: Pick<Deps, 'subjectTokens'>, c: Context): Promise<Caller | undefined> {
  const token = bearer(c)
  if (token === undefined) return undefined
  return { kind: 'user', subject: await asInvalidToken('subject', () => deps.subjectTokens.verify(token)) }
}

/** The workload, from the `Actor-Token` header (its attestation JWT; a bad one has one description, see actor-token.ts). */
export async function workloadCaller(deps: Pick<Deps, 'actorTokens'>, c: Context): Promise<Caller | undefined> {
  const token = c.req.header(ACTOR_TOKEN_HEADER)
  if (token === undefined) return undefined
  const actor = await asInvalidToken('actor', () => deps.actorTokens.verify(token.trim()))
  identify(c, `workload:${actor.workload.id}`)
  return { kind: 'workload', actor }
}
