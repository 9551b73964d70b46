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
  let decoded: Iterable<[string, string]>
  try {
    decoded = decodeForm(text)
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

/** In a `u` regex a surrogate pair is one code point: `\p{Cs}` matches only a lone surrogate (linear, no backtracking). */
const LONE_SURROGATE = /\p{Cs}/u

/**
 * The WHATWG `application/x-www-form-urlencoded` parser's answer for `text`, as
 * `URLSearchParams` gives it. The common body — JWTs and plain words, nothing to decode — is split
 * and sliced without it (the platform parser costs several microseconds per request); a
 * component with a percent sequence `decodeURIComponent` refuses (malformed, or not UTF-8, which
 * the WHATWG parser keeps or replaces) sends the whole body to `URLSearchParams`.
 */
export function decodeForm(text: string): [string, string][] {
  // A lone surrogate becomes U+FFFD in the WHATWG parser (its input is a USVString).
  if (LONE_SURROGATE.test(text)) return [...new URLSearchParams(text)]
  const out: [string, string][] = []
  for (const pair of text.split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    const name = decodeComponent(eq < 0 ? pair : pair.slice(0, eq))
    const value = eq < 0 ? '' : decodeComponent(pair.slice(eq + 1))
    if (name === undefined || value === undefined) return [...new URLSearchParams(text)]
    out.push([name, value])
  }
  return out
}

/**
 * Components decoded before, by their text: a client sends the same few percent-encoded values
 * on every request (the grant type and token type URNs, its resource URL, its scopes), and a
 * lookup costs a fraction of `decodeURIComponent`. Bounded whatever the bodies: short components
 * only, and emptied when full.
 */
const decoded = new Map<string, string>()
const DECODED_ENTRIES = 256
const DECODED_LENGTH = 256

function decodeComponent(s: string): string | undefined {
  const spaced = s.includes('+') ? s.replaceAll('+', ' ') : s
  if (!spaced.includes('%')) return spaced
  const known = decoded.get(spaced)
  if (known !== undefined) return known
  let value: string
  try {
    value = decodeURIComponent(spaced)
  } catch {
    return undefined
  }
  if (spaced.length <= DECODED_LENGTH) {
    if (decoded.size >= DECODED_ENTRIES) decoded.clear()
    decoded.set(spaced, value)
  }
  return value
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
