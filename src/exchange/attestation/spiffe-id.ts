/**
 * SPIFFE ID parsing, strictly per SPIFFE-ID.md §2: `spiffe://<trust domain><path>`.
 * - scheme exactly `spiffe` (lowercase), then `//`; no userinfo, port, query or fragment;
 * - trust domain: non-empty, ≤ 255 bytes, only `a-z 0-9 . - _` (lowercase; no percent-encoding);
 * - path: segments of `a-z A-Z 0-9 . - _`, none empty, `.` or `..`, no trailing `/`, no percent-encoding;
 * - the whole ID ≤ 2048 bytes (what implementations MUST support; longer is refused).
 * A trust-domain ID (no path) names no workload, so a workload identity needs a path.
 */
export type SpiffeIdResult = { ok: true; id: string; trustDomain: string; path: string } | { ok: false; reason: string }

const MAX_ID_BYTES = 2048
const MAX_TRUST_DOMAIN_BYTES = 255
const TRUST_DOMAIN = /^[a-z0-9._-]+$/
const SEGMENT = /^[A-Za-z0-9._-]+$/

export function looksLikeSpiffeId(s: unknown): s is string {
  return typeof s === 'string' && /^spiffe:/i.test(s)
}

export function parseSpiffeId(id: string): SpiffeIdResult {
  const fail = (reason: string): SpiffeIdResult => ({ ok: false, reason })
  if (Buffer.byteLength(id, 'utf8') > MAX_ID_BYTES) return fail(`longer than ${MAX_ID_BYTES} bytes`)
  if (!id.startsWith('spiffe://')) return fail(/^spiffe:\/\//i.test(id) ? 'scheme must be lowercase "spiffe"' : 'must start with "spiffe://"')
  const rest = id.slice('spiffe://'.length)
  if (rest.includes('%')) return fail('percent-encoding is not allowed')
  if (rest.includes('?')) return fail('a query is not allowed')
  if (rest.includes('#')) return fail('a fragment is not allowed')
  const slash = rest.indexOf('/')
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash)
  const path = slash < 0 ? '' : rest.slice(slash)
  if (trustDomain === '') return fail('the trust domain is empty')
  if (trustDomain.includes('@')) return fail('userinfo is not allowed')
  if (trustDomain.includes(':')) return fail('a port is not allowed')
  if (/[A-Z]/.test(trustDomain)) return fail('the trust domain must be lowercase')
  if (!TRUST_DOMAIN.test(trustDomain)) return fail('the trust domain has a character outside a-z 0-9 . - _')
  if (trustDomain.length > MAX_TRUST_DOMAIN_BYTES) return fail(`the trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`)
  if (path === '') return fail('no path: a trust domain ID names no workload')
  if (path.endsWith('/')) return fail('a trailing "/" is not allowed')
  for (const segment of path.slice(1).split('/')) {
    if (segment === '') return fail('an empty path segment is not allowed')
    if (segment === '.' || segment === '..') return fail(`a "${segment}" path segment is not allowed`)
    if (!SEGMENT.test(segment)) return fail('a path segment has a character outside a-z A-Z 0-9 . - _')
  }
  return { ok: true, id, trustDomain, path }
}
