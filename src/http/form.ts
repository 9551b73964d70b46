import type { Context } from 'hono'
import type { z } from 'zod'
import { invalidRequest, OAuthError } from '../errors.js'

/** Form parameters by name; a name maps to all its values in order. */
export type FormParams = ReadonlyMap<string, readonly string[]>

const FORM = 'application/x-www-form-urlencoded'

/** The media type of a Content-Type header, lowercased, without parameters. */
export function mediaType(header: string | undefined): string | undefined {
  return header?.split(';')[0]?.trim().toLowerCase()
}

/**
 * Reads an `application/x-www-form-urlencoded` body (RFC 6749 §3.2: the only content type of the
 * token endpoint). Parameters "MUST NOT be included more than once" (RFC 6749 §3.1/§3.2), except
 * the ones listed in `multi`, which the caller validates itself.
 */
export async function parseForm(c: Context, multi: ReadonlySet<string> = new Set()): Promise<FormParams> {
  if (mediaType(c.req.header('content-type')) !== FORM) throw invalidRequest(`content type must be ${FORM}`)
  const text = await c.req.text()
  const params = new Map<string, string[]>()
  let decoded: URLSearchParams
  try {
    decoded = new URLSearchParams(text)
  } catch {
    throw invalidRequest('malformed form body')
  }
  for (const [k, v] of decoded) {
    const list = params.get(k)
    if (list) {
      if (!multi.has(k)) throw invalidRequest(`"${k}" must not be repeated`)
      list.push(v)
    } else params.set(k, [v])
  }
  return params
}

/** Reads a JSON object body; only `application/json` is accepted. */
export async function parseJson(c: Context): Promise<unknown> {
  if (mediaType(c.req.header('content-type')) !== 'application/json') throw invalidRequest('content type must be application/json')
  try {
    return await c.req.json()
  } catch {
    throw invalidRequest('malformed JSON body')
  }
}

export const payloadTooLarge = () => new OAuthError('invalid_request', 413, 'request body too large')

/** The first problem in a zod error, naming the field (`"resources.0.scopes": …`): the description of a 400 for a bad body. */
export function describeZodError(error: z.ZodError): string {
  const issue = error.issues[0]!
  return `"${issue.path.join('.') || 'body'}": ${issue.message}`
}
