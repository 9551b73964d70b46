/**
 * OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; the MCP
 * authorization spec's default client registration): a public client's `client_id` is an https URL
 * whose document describes it. Fetched with the hardened remote fetch (no redirects, size cap,
 * timeout, no special-use addresses), validated, and cached within our own bounds.
 *
 * Owns: the client id URL rules, the document's validation, the cache. Imports only `lib/`
 * (the fetch), the clock, the config type and the errors; never a route.
 */
import { readFileSync } from 'node:fs'
import { rootCertificates } from 'node:tls'
import type { IncomingHttpHeaders } from 'node:http'
import type { Clock } from '../clock.js'
import type { Config } from '../config.js'
import { invalidClientMetadata, OAuthError } from '../errors.js'
import { safeFetch, SafeFetchError, type ResolveHost } from '../lib/safe-fetch.js'

/** A validated client metadata document: what /authorize and the consent page need of it. */
export interface ClientMetadata {
  /** The document's URL, equal to its `client_id`. */
  clientId: string
  /** `client_name` (MCP requires it), for the consent page. */
  clientName: string
  /** Exact redirect URIs (RFC 6749 §3.1.2.2): the request's `redirect_uri` must equal one. */
  redirectUris: string[]
  /** `grant_types` (default `["authorization_code"]`): refresh tokens only for a client listing `refresh_token`. */
  grantTypes: string[]
  /** `client_uri`, `logo_uri` when present (https only), for the consent page. */
  clientUri?: string | undefined
  logoUri?: string | undefined
}

export interface ClientMetadataResolver {
  /**
   * The document of `clientId`, from the cache or fetched. Throws `OAuthError` `invalid_client`
   * (400) for a client id that is not a metadata document URL, a document that cannot be fetched
   * (status, size, time, address) or is not valid.
   */
  resolve(clientId: string): Promise<ClientMetadata>
}

export type ClientMetadataOptions = Config['authorization']['clientMetadata']

/**
 * Longest client id an authorization request may name (characters): client id rules (globs) match
 * values up to this length, and a dynamic registration's sealed id must fit in it.
 */
export const MAX_CLIENT_ID = 1024

/** Longest client id URL, and longest redirect URI, in a document (characters). */
const MAX_URL_LENGTH = 2048
const MAX_CLIENT_NAME = 200
const MAX_REDIRECT_URIS = 20
/** A cached document is kept at least this long whatever its `max-age` says: a client cannot make us fetch on every request. */
const MIN_CACHE_AGE = 60

/**
 * Why `clientId` is not a metadata document URL, or `undefined` when it is one.
 * draft-ietf-oauth-client-id-metadata-document "Client Identifier URL": https, a path, no
 * single- or double-dot path segments, no fragment, no username or password; a query SHOULD NOT
 * be present (we refuse it); a port is allowed. Checked on the raw string, since URL parsing
 * normalizes dot segments and drops an empty `?`, `#` or `@` away.
 */
export function metadataDocumentUrlProblem(clientId: string): string | undefined {
  if (clientId.length > MAX_URL_LENGTH) return `longer than ${MAX_URL_LENGTH} characters`
  // Printable ASCII only: URL parsing would silently drop tabs and newlines and read "\" as "/".
  if (!/^[\x21-\x7e]+$/.test(clientId) || clientId.includes('\\')) return 'not a URL of printable ASCII characters'
  if (!/^https:\/\//i.test(clientId)) return 'not an https URL'
  const rest = clientId.slice('https://'.length)
  const slash = rest.indexOf('/')
  const authority = slash === -1 ? rest.split(/[?#]/)[0]! : rest.slice(0, slash)
  if (authority.includes('@')) return 'has userinfo'
  if (authority === '') return 'has no host'
  if (clientId.includes('#')) return 'has a fragment'
  if (clientId.includes('?')) return 'has a query'
  if (slash === -1 || rest.slice(slash) === '/') return 'has no path (the root path is not a document)'
  const segments = rest.slice(slash + 1).split('/').map((s) => s.replace(/%2e/gi, '.'))
  if (segments.some((s) => s === '.' || s === '..')) return 'has a dot segment'
  if (!URL.canParse(clientId)) return 'not a URL'
  return undefined
}

/** Whether `clientId` has the shape of a metadata document URL (https, a path, no userinfo, fragment, query or dot segments). */
export function isMetadataDocumentUrl(clientId: string): boolean {
  return metadataDocumentUrlProblem(clientId) === undefined
}

/**
 * Seconds a fetched document may be used, from its response headers (RFC 9111 §5.2.2, §4.2.1,
 * within our bounds): `no-store` or `no-cache` → 0 (not cached, fetched on every use); `max-age`
 * less the `Age` already spent, clamped to [60, maxCacheAge]; without `max-age`, maxCacheAge.
 */
export function cacheLifetime(headers: IncomingHttpHeaders, maxCacheAge: number): number {
  const directives = new Map<string, string | undefined>()
  for (const part of (headers['cache-control'] ?? '').split(',')) {
    const [name, value] = part.split('=', 2) as [string, string | undefined]
    const key = name.trim().toLowerCase()
    if (key !== '') directives.set(key, value?.trim().replace(/^"(.*)"$/, '$1'))
  }
  if (directives.has('no-store') || directives.has('no-cache')) return 0
  const clamp = (s: number) => Math.min(maxCacheAge, Math.max(MIN_CACHE_AGE, s))
  if (!directives.has('max-age')) return maxCacheAge
  const maxAge = directives.get('max-age')
  // RFC 9111 §4.2.1: an invalid max-age is best taken as stale, here our floor.
  if (maxAge === undefined || !/^\d+$/.test(maxAge)) return clamp(0)
  const age = /^\d+$/.test(String(headers.age ?? '')) ? Number(headers.age) : 0
  return clamp(Number(maxAge) - age)
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string')

function httpsUrlOrUndefined(v: unknown): string | undefined {
  if (typeof v !== 'string' || v.length > MAX_URL_LENGTH) return undefined
  return URL.canParse(v) && new URL(v).protocol === 'https:' ? v : undefined
}

/**
 * Checks a fetched document against its URL and our support, and returns what we keep of it.
 * draft-ietf-oauth-client-id-metadata-document "Client ID Metadata Document": `client_id` MUST
 * equal the URL (plain string comparison); `client_secret` and `client_secret_expires_at` MUST
 * NOT appear, nor a shared-secret auth method. We support public clients only
 * (`token_endpoint_auth_method` `none`, the default), so `private_key_jwt`, `jwks` and `jwks_uri`
 * are refused too. MCP requires `client_name` and `redirect_uris`. No URL inside is fetched.
 */
export function validateMetadataDocument(doc: unknown, clientId: string): ClientMetadata {
  const bad = (problem: string) => invalidClientMetadata(`the client metadata document is invalid: ${problem}`, `${clientId}: ${problem}`)
  if (!isRecord(doc)) throw bad('it is not a JSON object')
  if (doc.client_id !== clientId) throw bad('"client_id" does not equal the document\'s URL')
  const name = doc.client_name
  if (typeof name !== 'string' || name.trim() === '') throw bad('"client_name" is required (a non-empty string)')
  if (name.length > MAX_CLIENT_NAME) throw bad(`"client_name" is longer than ${MAX_CLIENT_NAME} characters`)
  // The consent page shows it: no control characters (C0, DEL, C1) to reorder or hide text.
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) throw bad('"client_name" contains control characters')

  const uris = doc.redirect_uris
  if (!isStringArray(uris) || uris.length === 0) throw bad('"redirect_uris" is required (a non-empty array of strings)')
  if (uris.length > MAX_REDIRECT_URIS) throw bad(`"redirect_uris" has more than ${MAX_REDIRECT_URIS} entries`)
  for (const uri of uris) {
    // RFC 6749 §3.1.2: an absolute URI without a fragment component.
    if (uri.length > MAX_URL_LENGTH) throw bad(`a redirect URI is longer than ${MAX_URL_LENGTH} characters`)
    if (uri.includes('#')) throw bad('a redirect URI has a fragment')
    if (!/^[a-z][a-z0-9+.-]*:/i.test(uri) || !URL.canParse(uri) || /[\u0000-\u0020\u007f]/.test(uri)) throw bad('a redirect URI is not an absolute URI')
  }

  if ('client_secret' in doc || 'client_secret_expires_at' in doc) throw bad('it contains a client secret ("client_secret" must not appear in a metadata document)')
  const method = doc.token_endpoint_auth_method
  if (method !== undefined && method !== 'none') {
    throw bad(`"token_endpoint_auth_method" ${JSON.stringify(method)} is not supported: only public clients ("none") are supported, neither shared secrets nor private_key_jwt`)
  }
  if ('jwks' in doc || 'jwks_uri' in doc) throw bad('"jwks" and "jwks_uri" are not supported: only public clients (token_endpoint_auth_method "none") are supported')

  const grantTypes = doc.grant_types ?? ['authorization_code']
  if (!isStringArray(grantTypes) || !grantTypes.includes('authorization_code')) throw bad('"grant_types" must include "authorization_code"')
  const responseTypes = doc.response_types
  if (responseTypes !== undefined && !(isStringArray(responseTypes) && responseTypes.length === 1 && responseTypes[0] === 'code')) {
    throw bad('"response_types" must be ["code"]')
  }

  const metadata: ClientMetadata = { clientId, clientName: name, redirectUris: [...uris], grantTypes: [...new Set(grantTypes)] }
  const clientUri = httpsUrlOrUndefined(doc.client_uri)
  const logoUri = httpsUrlOrUndefined(doc.logo_uri)
  if (clientUri !== undefined) metadata.clientUri = clientUri
  if (logoUri !== undefined) metadata.logoUri = logoUri
  Object.freeze(metadata.redirectUris)
  Object.freeze(metadata.grantTypes)
  return Object.freeze(metadata)
}

interface CacheEntry {
  metadata: ClientMetadata
  /** Epoch seconds after which the document is fetched again. */
  expiresAt: number
}

/**
 * The resolver: client id URL check, cache lookup, one in-flight fetch per URL, validation.
 * `resolveHost` replaces the system resolver (tests answer chosen addresses through it).
 * draft-ietf-oauth-client-id-metadata-document "Metadata Caching": per the HTTP caching rules,
 * within our own bounds (at most `maxCacheAge`, at most `cacheSize` documents, least recently used
 * evicted); errors and invalid documents are never cached, so a fixed document works at once.
 */
export function createClientMetadataResolver(opts: { options: ClientMetadataOptions; clock: Clock; resolveHost?: ResolveHost; observeCache?: (hit: boolean) => void }): ClientMetadataResolver {
  const { options, clock } = opts
  // Passing `ca` replaces the default store: keep the system's roots and add the file's.
  const ca = options.caFile === undefined ? undefined : [...rootCertificates, readFileSync(options.caFile, 'utf8')]
  const cache = new Map<string, CacheEntry>()
  const inFlight = new Map<string, Promise<ClientMetadata>>()

  function cached(clientId: string): ClientMetadata | undefined {
    const entry = cache.get(clientId)
    if (entry === undefined) return undefined
    cache.delete(clientId)
    if (clock.now() >= entry.expiresAt) return undefined
    cache.set(clientId, entry) // most recently used last
    return entry.metadata
  }

  function remember(clientId: string, metadata: ClientMetadata, lifetime: number): void {
    if (lifetime <= 0) return
    cache.delete(clientId)
    cache.set(clientId, { metadata, expiresAt: clock.now() + lifetime })
    while (cache.size > options.cacheSize) cache.delete(cache.keys().next().value as string)
  }

  async function fetchAndValidate(clientId: string): Promise<ClientMetadata> {
    let response
    try {
      response = await safeFetch(new URL(clientId), {
        timeout: options.timeout,
        maxBytes: options.maxBytes,
        allowLoopback: options.allowLoopback,
        ca,
        accept: 'application/json',
        resolve: opts.resolveHost,
      })
    } catch (e) {
      // How it failed stays private: the reason would tell a caller about our network (which names resolve, to what).
      const detail = e instanceof SafeFetchError ? `${e.reason}: ${e.message}` : `unexpected: ${(e as Error)?.message ?? String(e)}`
      throw invalidClientMetadata('the client metadata document could not be fetched', `${clientId}: ${detail}`)
    }
    let doc: unknown
    try {
      doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(response.body))
    } catch {
      throw invalidClientMetadata('the client metadata document is not JSON', `${clientId}: the body is not UTF-8 JSON`)
    }
    const metadata = validateMetadataDocument(doc, clientId)
    remember(clientId, metadata, cacheLifetime(response.headers, options.maxCacheAge))
    return metadata
  }

  return {
    async resolve(clientId) {
      const problem = metadataDocumentUrlProblem(clientId)
      if (problem !== undefined) throw invalidClientMetadata(`client_id is not a client metadata document URL: it ${problem}`, `client_id ${JSON.stringify(clientId.slice(0, 200))}: ${problem}`)
      const hit = cached(clientId)
      opts.observeCache?.(hit !== undefined)
      if (hit !== undefined) return hit
      // Concurrent requests for one client share a single fetch; its outcome, good or bad, is theirs alike.
      let pending = inFlight.get(clientId)
      if (pending === undefined) {
        pending = fetchAndValidate(clientId).finally(() => inFlight.delete(clientId))
        inFlight.set(clientId, pending)
      }
      try {
        return await pending
      } catch (e) {
        if (e instanceof OAuthError) throw e
        throw invalidClientMetadata('the client metadata document could not be used', `${clientId}: unexpected: ${(e as Error)?.message ?? String(e)}`)
      }
    },
  }
}
