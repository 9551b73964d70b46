/**
 * The user's "yes" is a task: the consent page's answer — the scopes and tools the user kept, the
 * lifetime they chose, the purpose — opens a task for the OAuth client through the same policy as
 * any task (which may refuse, or ask a human's approval first), and only then is a code issued,
 * bound to that task, the client, its redirect URI, its PKCE challenge and (RFC 9449 §10) its key.
 */
import { createHash } from 'node:crypto'
import type { Config, WorkloadConfig } from '../config.js'
import { accessDenied, invalidRequest, invalidScope, OAuthError } from '../errors.js'
import type { Actor } from '../exchange/actor-token.js'
import type { Attestation } from '../exchange/attestation/kinds.js'
import { brokerSubject, type Subject } from '../exchange/subject-token.js'
import { isRegisteredClientId } from '../clients/registration.js'
import { derivedUuid, randomSecret } from '../ids.js'
import type { TaskRow } from '../store/stores.js'
import { planTask, recordOpenedTask, type OpeningDeps, type RequestFacts } from '../tasks/lifecycle.js'
import { RedirectableError, clientRedirect, type AuthorizationRequest } from './request.js'

/** Who is signed in in the browser (the sealed sign-in cookie). */
export interface BrowserUser {
  /** The subject issuer. */
  issuer: string
  user: string
  /** The sign-in's session id: the tasks it consents to are bound to it (revoking it ends them). */
  sid: string
  claims: Record<string, string>
  /** When the user authenticated (policy's `session_age` counts from it). */
  authTime: number
}

/** What the user answered on the consent page. */
export interface ConsentAnswer {
  scopes: string[]
  tools: string[] | undefined
  ttl: number
  purpose: string
}

export type ConsentDeps = OpeningDeps & { config: Pick<Config, 'tasks' | 'resources' | 'subjectIssuers' | 'workloads' | 'authorization' | 'issuer'> }

/** Lifetimes offered on the consent page: common steps up to the longest a task may live. */
export function consentTtls(config: Pick<Config, 'tasks'>): number[] {
  const steps = [900, 3600, 8 * 3600, 86_400].filter((t) => t <= config.tasks.maxTtl)
  return steps.length > 0 ? steps : [config.tasks.maxTtl]
}

/** The attestation of an OAuth client: what policy sees as `context.task.workload` (`attestation_kind` "oauth_client"). */
export function clientAttestation(clientId: string): Attestation {
  // A metadata document vouches for its origin; a dynamically registered client only for itself.
  return { kind: 'oauth_client', issuer: isRegisteredClientId(clientId) ? REGISTERED_CLIENT_ISSUER : new URL(clientId).origin, subject: clientId }
}

/** The attestation issuer of dynamically registered clients (they have no origin of their own). */
export const REGISTERED_CLIENT_ISSUER = 'urn:taskpass:registered-client'

/** How pages name a client: its document's host, or that it registered itself. */
export function clientHost(clientId: string): string {
  return isRegisteredClientId(clientId) ? 'registered itself here (name not verified)' : new URL(clientId).host
}

/** The client acting, as tasks and tokens see it: its workload, proven by the user's consent. */
export function clientActor(workload: WorkloadConfig, clientId: string): Pick<Actor, 'workload' | 'attestation'> {
  return { workload, attestation: clientAttestation(clientId) }
}

/**
 * The consent's answer, checked against the request: the user may only narrow (a scope or tool
 * not asked for means the form was tampered with), a lifetime must be one offered.
 */
export function checkAnswer(config: Pick<Config, 'tasks'>, req: AuthorizationRequest, answer: ConsentAnswer): ConsentAnswer {
  const beyond = answer.scopes.filter((s) => !req.scopes.includes(s))
  if (beyond.length > 0) throw invalidScope('the consent names a scope the client did not ask for')
  if (answer.scopes.length === 0) throw accessDenied('no scope was consented to')
  if (answer.tools !== undefined) {
    if (req.tools === undefined || answer.tools.some((t) => !req.tools!.includes(t))) throw invalidRequest('the consent names a tool the client did not ask for')
    if (answer.tools.length === 0) throw accessDenied('no tool was consented to')
  } else if (req.tools !== undefined) throw accessDenied('no tool was consented to')
  if (!consentTtls(config).includes(answer.ttl)) throw invalidRequest('the lifetime is not one offered')
  const purpose = answer.purpose.trim()
  if (purpose === '' || purpose.length > 200) throw invalidRequest('the purpose must be 1–200 characters')
  return { ...answer, purpose }
}

/** The user's session as the task records it: the consent lives as long as the task it opens. */
function consentSubject(config: Pick<Config, 'subjectIssuers'>, user: BrowserUser, now: number, ttl: number): Subject {
  return { issuer: user.issuer, user: user.user, sub: brokerSubject(config.subjectIssuers, user.issuer, user.user), sid: user.sid, exp: now + ttl, claims: user.claims, startedAt: user.authTime, mayAct: undefined }
}

/**
 * The id of the one task a user's consent to a request may open: a UUIDv8 (RFC 9562 §5.8) derived
 * from the request's random id and the user, so answering the same request twice finds the task
 * the first answer opened instead of opening another (and another user's answer is their own).
 */
export function consentTaskId(req: Pick<AuthorizationRequest, 'requestId'>, user: Pick<BrowserUser, 'issuer' | 'user'>): string {
  return derivedUuid('consent', req.requestId, user.issuer, user.user)
}

/**
 * Opens the task the user consented to (or finds the one an earlier answer to the same request opened). A policy refusal is audited and sent back to the client
 * as its error (RFC 6749 §4.1.2.1); a task that needs approval is recorded pending. Returns the task.
 */
export async function openConsentedTask(deps: ConsentDeps, req: AuthorizationRequest, user: BrowserUser, answer: ConsentAnswer, request: RequestFacts = {}): Promise<TaskRow> {
  // A form answered twice (a resubmit, a replayed POST) is the same consent: it opened its task already.
  const id = consentTaskId(req, user)
  const opened = await deps.stores.tasks.get(id)
  if (opened) return opened
  const workload = deps.config.workloads.find((w) => w.id === req.workloadId)
  if (!workload || !workload.enabled) throw new RedirectableError(new OAuthError('unauthorized_client', 400, 'this client may not ask for access here'), req.redirectUri, req.state)
  const now = deps.clock.now()
  const subject = consentSubject(deps.config, user, now, answer.ttl)
  const actor = clientActor(workload, req.clientId)
  let planned: ReturnType<typeof planTask>
  try {
    const resources = [{ resource: req.resource, scopes: answer.scopes, ...(answer.tools !== undefined ? { tools: answer.tools } : {}) }]
    planned = planTask(deps, subject, actor, { id, purpose: answer.purpose, resources, ttl: answer.ttl, clientId: req.clientId }, req.dpopJkt, request)
  } catch (e) {
    if (!(e instanceof OAuthError)) throw e
    await deps.stores.audit.insert({ at: now, action: 'task.open', decision: 'deny', reason: `${e.detail}; consented in the browser for ${req.clientId.slice(0, 256)}`, error: e.code, userSub: subject.sub, workloadId: workload.id, ...e.decidedBy })
    throw new RedirectableError(e, req.redirectUri, req.state)
  }
  try {
    await recordOpenedTask(deps, planned, subject, `; consented in the browser for ${req.clientId.slice(0, 256)}`)
  } catch (e) {
    // Another process recorded this consent's task since we looked (the id is the consent's): it answered first.
    const raced = await deps.stores.tasks.get(id)
    if (raced) return raced
    throw e
  }
  return planned.row
}

/** SHA-256 of a code or refresh token, base64url: what is stored in its place. */
export function secretHash(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url')
}

/** Prefix of authorization codes (never another credential's prefix). */
const CODE_PREFIX = 'tpc_'

/**
 * Issues the authorization code of an active consented task; returns the redirect that carries it
 * (RFC 6749 §4.1.2, RFC 9207 `iss`). One code per consent: counted and written in one transaction
 * under the task's lock, so two answers at once (a wait page reloaded at two instances) cannot
 * both find none; the second is refused 409, as once the first code, spent, has been pruned.
 */
export async function issueCode(deps: Pick<ConsentDeps, 'stores' | 'clock' | 'config'>, req: AuthorizationRequest, task: TaskRow): Promise<string> {
  const now = deps.clock.now()
  const code = `${CODE_PREFIX}${randomSecret(32)}`
  const declared = (JSON.parse(task.resources) as { resource: string; scopes: string[]; tools?: string[] }[])[0]!
  await deps.stores.transaction(async (tx) => {
    await tx.locks.task(task.id)
    if ((await tx.authorizationCodes.countOfTask(task.id)) > 0 || ((await tx.tasks.get(task.id))?.tokensMinted ?? 0) > 0) throw new OAuthError('invalid_request', 409, 'this consent has already been answered: go back to your application')
    await tx.authorizationCodes.insert({
      codeHash: secretHash(code),
      taskId: task.id,
      clientId: req.clientId,
      redirectUri: req.redirectUri,
      codeChallenge: req.codeChallenge,
      resource: req.resource,
      scope: declared.scopes.join(' '),
      tools: declared.tools !== undefined ? JSON.stringify(declared.tools) : null,
      dpopJkt: req.dpopJkt ?? null,
      refresh: req.refresh,
      createdAt: now,
      expiresAt: Math.min(now + deps.config.authorization.codeTtl, task.expiresAt),
      usedAt: null,
    })
  })
  return clientRedirect(req.redirectUri, deps.config.issuer, { code, state: req.state })
}
