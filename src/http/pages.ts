/**
 * Serving the server-rendered pages (src/pages/) and protecting their forms: the security headers
 * every page gets, and the CSRF token each form carries back.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Context } from 'hono'
import type { JSX } from 'hono/jsx/jsx-runtime'
import type { ContentfulStatusCode } from 'hono/utils/http-status'

export interface PageResponseOptions {
  /** HTTP status; 200 unless told. */
  status?: number | undefined
  /**
   * Where the page's forms may lead besides 'self' — URLs or origins. The consent page passes the
   * client's redirect URI: Chrome applies `form-action` to the redirect that answers a form POST
   * (CSP3 §6.3.1, "navigation response"), so without it the 303 back to the client is blocked.
   */
  formActions?: readonly string[] | undefined
  /**
   * The page loads the broker's own scripts (`script-src 'self'`) and they may connect back to it
   * (`connect-src 'self'`, an EventSource): only the console's live page does. Every other page
   * has no script at all.
   */
  scripts?: boolean | undefined
}

/**
 * A `form-action` source for a URL: its origin for http(s) (paths do not matter to the redirect
 * check, and an origin has no character that could end the directive), its scheme for a native
 * client's private-use URI scheme (RFC 8252 §7.1, `com.example.app:/callback`).
 */
export function formActionSource(url: string): string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new TypeError(`form action ${JSON.stringify(url)} is not an absolute URL`)
  }
  if (parsed.protocol === 'http:' || parsed.protocol === 'https:') return parsed.origin
  // URL's scheme grammar is [a-z][a-z0-9+.-]*: nothing that could inject another directive.
  return parsed.protocol
}

/**
 * The Content-Security-Policy of every page: nothing but the stylesheet loads, no script at all
 * (unless `scripts`: then the broker's own, same-origin, and their connections back to it),
 * forms post to 'self' (and `formActions`), the page cannot be framed (clickjacking of the
 * consent button; MCP security best practices) and cannot rebase its relative URLs.
 */
export function pageCsp(formActions: readonly string[] = [], scripts = false): string {
  const sources = ["'self'", ...new Set(formActions.map(formActionSource))]
  return [
    "default-src 'none'",
    ...(scripts ? ["script-src 'self'", "connect-src 'self'"] : []),
    "style-src 'self'",
    "img-src 'self'",
    `form-action ${sources.join(' ')}`,
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ].join('; ')
}

/**
 * Renders a page (a hono/jsx element) as an HTML response with the page security headers:
 * the CSP above, `X-Frame-Options: DENY` for browsers without `frame-ancestors`, no referrer (the
 * URL may carry an authorization request), `no-store` (pages show CSRF tokens and who is signed in).
 */
export async function pageResponse(c: Context, page: JSX.Element, options: PageResponseOptions = {}): Promise<Response> {
  const csp = pageCsp(options.formActions, options.scripts)
  // A JSX node renders when stringified; an async component makes that a promise, hence the awaits.
  const node = await page
  const html = await (node as { toString(): string | Promise<string> }).toString()
  return c.body(`<!DOCTYPE html>${html}`, (options.status ?? 200) as ContentfulStatusCode, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Security-Policy': csp,
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
  })
}

const MIN_CSRF_KEY_BYTES = 32

function csrfMac(key: Uint8Array, binding: string): Buffer {
  if (key.byteLength < MIN_CSRF_KEY_BYTES) throw new TypeError(`CSRF key must be at least ${MIN_CSRF_KEY_BYTES} bytes`)
  return createHmac('sha256', key).update(binding, 'utf8').digest()
}

/**
 * A CSRF token for a form: HMAC-SHA-256 of `binding` (what the form belongs to, e.g. the sign-in
 * session and the authorization request) under a server key, base64url. Stateless: the server
 * recomputes it on the POST (OWASP's HMAC-based synchronizer token).
 */
export function csrfToken(key: Uint8Array, binding: string): string {
  return csrfMac(key, binding).toString('base64url')
}

/** Whether `sent` is the CSRF token of `binding`; compared in constant time. Missing or malformed → false. */
export function checkCsrf(key: Uint8Array, binding: string, sent: string | undefined): boolean {
  const expected = csrfMac(key, binding)
  if (typeof sent !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(sent)) return false
  const given = Buffer.from(sent, 'base64url')
  // 43 base64url characters carry 258 bits: the two spare ones must be zero, or two spellings would pass.
  if (given.length !== expected.length || given.toString('base64url') !== sent) return false
  return timingSafeEqual(given, expected)
}
