import { z } from 'zod'
import { describeZodError } from '../http/form.js'
import { invalidRequest } from '../errors.js'

/**
 * The OpenID AuthZEN Authorization API 1.0 request model ("Information Model", "Access Evaluation API", "Access Evaluations API"), parsed once at the edge:
 * Subject and Resource are `{type, id, properties?}`, Action is `{name, properties?}`, Context is
 * any object. Unknown members are ignored (the HTTPS binding: "ignore unknown fields"); a missing required
 * member is a 400 (the HTTPS binding's errors). Every string and the tool arguments are bounded, so a request costs
 * the PDP no more than its (already size-limited) body.
 *
 * This module owns the wire shapes only; what the members mean is in `evaluate.ts`.
 */

/** The longest subject id accepted: a task token (the verifier kit refuses longer ones too). */
export const MAX_SUBJECT_ID = 8192
/** How deep `context.arguments` may nest (it is accepted and bounded, never evaluated). */
export const MAX_ARGUMENT_DEPTH = 32
/** Longest `context.arguments`, serialized, characters. */
export const MAX_ARGUMENTS_LENGTH = 8192
/** Most items one Access Evaluations request may carry. */
export const MAX_EVALUATIONS = 32

const properties = z.record(z.string(), z.unknown()).nullish()
const subject = z.object({ type: z.string().min(1).max(128), id: z.string().min(1).max(MAX_SUBJECT_ID), properties })
const resource = z.object({ type: z.string().min(1).max(128), id: z.string().min(1).max(1024), properties })
const action = z.object({ name: z.string().min(1).max(128), properties })
const context = z.record(z.string(), z.unknown())

export type Subject = z.infer<typeof subject>
export type Resource = z.infer<typeof resource>
export type Action = z.infer<typeof action>

/** One complete Access Evaluation request: every required member present. */
export interface EvaluationRequest {
  subject: Subject
  action: Action
  resource: Resource
  context: Record<string, unknown>
}

export type EvaluationsSemantic = 'execute_all' | 'deny_on_first_deny' | 'permit_on_first_permit'

/** An Access Evaluations request with the defaults merged into each item. */
export interface EvaluationsRequest {
  /** Undefined when `evaluations` was missing or empty: then the request is one Access Evaluation (backwards compatible). */
  items: EvaluationRequest[] | undefined
  single: EvaluationRequest | undefined
  semantic: EvaluationsSemantic
}

const partial = z.object({ subject: subject.optional(), action: action.optional(), resource: resource.optional(), context: context.nullish() })
const single = z.object({ subject, action, resource, context: context.nullish() })
const batch = partial.extend({
  evaluations: z.array(partial).max(MAX_EVALUATIONS).nullish(),
  options: z.object({ evaluations_semantic: z.enum(['execute_all', 'deny_on_first_deny', 'permit_on_first_permit']).optional() }).nullish(),
})


/**
 * Depth of a JSON value, without recursion (a hostile nesting cannot exhaust the stack);
 * stops counting at `limit + 1`.
 */
function depthExceeds(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 1]]
  while (stack.length > 0) {
    const [v, d] = stack.pop()!
    if (typeof v !== 'object' || v === null) continue
    if (d > limit) return true
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, d + 1])
  }
  return false
}

/**
 * `context.arguments` (the tool call's arguments, as the COAZ-MCP binding passes them) is
 * accepted and bounded in size and depth, and never evaluated: no policy may grant on what the
 * PEP merely reports (the binding's "untrusted attributes").
 */
function checkContext(ctx: Record<string, unknown> | null | undefined, where: string): Record<string, unknown> {
  const value = ctx ?? {}
  if ('arguments' in value) {
    const args = value.arguments
    if (typeof args !== 'object' || args === null || Array.isArray(args)) throw invalidRequest(`"${where}context.arguments" must be an object`)
    if (depthExceeds(args, MAX_ARGUMENT_DEPTH)) throw invalidRequest(`"${where}context.arguments" nests deeper than ${MAX_ARGUMENT_DEPTH}`)
    if (JSON.stringify(args).length > MAX_ARGUMENTS_LENGTH) throw invalidRequest(`"${where}context.arguments" is longer than ${MAX_ARGUMENTS_LENGTH} characters`)
  }
  return value
}

/** An Access Evaluation request. Throws `invalid_request` (400) naming the first bad member. */
export function parseEvaluation(body: unknown): EvaluationRequest {
  const parsed = single.safeParse(body)
  if (!parsed.success) throw invalidRequest(describeZodError(parsed.error))
  const { subject: s, action: a, resource: r, context: c } = parsed.data
  return { subject: s, action: a, resource: r, context: checkContext(c, '') }
}

/**
 * An Access Evaluations request. The top-level `subject`, `action`, `resource` and
 * `context` are defaults each item may override; every item must end up with all three
 * required members (else 400, naming the item). At most {@link MAX_EVALUATIONS} items.
 */
export function parseEvaluations(body: unknown): EvaluationsRequest {
  if (typeof body === 'object' && body !== null && Array.isArray((body as { evaluations?: unknown }).evaluations) && (body as { evaluations: unknown[] }).evaluations.length > MAX_EVALUATIONS) {
    throw invalidRequest(`"evaluations": at most ${MAX_EVALUATIONS} items`)
  }
  const parsed = batch.safeParse(body)
  if (!parsed.success) throw invalidRequest(describeZodError(parsed.error))
  const top = parsed.data
  const semantic = top.options?.evaluations_semantic ?? 'execute_all'
  const list = top.evaluations ?? []
  if (list.length === 0) return { items: undefined, single: parseEvaluation(top), semantic }
  const items = list.map((item, i) => {
    const s = item.subject ?? top.subject
    const a = item.action ?? top.action
    const r = item.resource ?? top.resource
    const missing = [s ? undefined : 'subject', a ? undefined : 'action', r ? undefined : 'resource'].filter(Boolean)
    if (missing.length > 0 || !s || !a || !r) throw invalidRequest(`"evaluations.${i}": ${missing.join(', ')} missing (neither in the item nor at the top level)`)
    // A context given in the item replaces the default one (item members override the defaults).
    return { subject: s, action: a, resource: r, context: checkContext(item.context ?? top.context, `evaluations.${i}.`) }
  })
  return { items, single: undefined, semantic }
}
