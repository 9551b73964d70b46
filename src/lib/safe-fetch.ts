/**
 * A GET of a URL that someone else chose (a client's metadata document): https only, no
 * redirects, only a 200 counts, a body cap enforced while reading, one timeout for the whole
 * request (name resolution, connect, TLS, headers and body), and never a connection to a
 * special-use address (SSRF; draft-ietf-oauth-client-id-metadata-document "Server Side Request
 * Forgery (SSRF) Attacks"). Built on `node:https` rather than `fetch` because the address must be
 * checked after resolution and the connection made to exactly that address: the host is resolved
 * once, every address is checked, and the socket's `lookup` answers only those checked addresses,
 * so a second DNS answer (rebinding) can never be the one connected to.
 *
 * Failures are {@link SafeFetchError}s with a stable `reason`; callers map them to their own errors.
 */
import { lookup as dnsLookup } from 'node:dns/promises'
import type { LookupAddress } from 'node:dns'
import { request, type RequestOptions } from 'node:https'
import type { IncomingMessage } from 'node:http'
import { isIP, type LookupFunction } from 'node:net'
import { classifyAddress } from './special-use-addresses.js'

/** Why a fetch failed. */
export type SafeFetchFailure = 'url' | 'dns' | 'address' | 'redirect' | 'status' | 'too_large' | 'timeout' | 'network'

export class SafeFetchError extends Error {
  readonly reason: SafeFetchFailure
  constructor(reason: SafeFetchFailure, message: string) {
    super(message)
    this.name = 'SafeFetchError'
    this.reason = reason
  }
}

/** Resolves a host name to all its addresses (the shape of `dns.promises.lookup(host, { all: true })`). */
export type ResolveHost = (hostname: string) => Promise<LookupAddress[]>

export interface SafeFetchOptions {
  /** Milliseconds for the whole request: resolution, connect, TLS, headers and body. */
  timeout: number
  /** Largest body accepted, bytes; enforced on the bytes read, not only on `Content-Length`. */
  maxBytes: number
  /** Allow loopback addresses (127/8, ::1): dev mode and tests only. Other special-use addresses never. */
  allowLoopback: boolean
  /** Trusted CA certificates (PEM) replacing the default store; pass `tls.rootCertificates` plus extras to add to it. */
  ca?: string[] | undefined
  /** The `Accept` header. */
  accept: string
  /** Name resolution; the system resolver by default. Tests inject answers here. */
  resolve?: ResolveHost | undefined
}

/** A 200 response: its headers and its whole body. */
export interface SafeResponse {
  headers: IncomingMessage['headers']
  body: Buffer
}

const systemResolve: ResolveHost = (hostname) => dnsLookup(hostname, { all: true, verbatim: true })

/**
 * The addresses `host` may be connected to, all checked: a host with any special-use address is
 * refused whole (a public host has no reason to publish one, and a mixed answer is a rebinding
 * attempt's signature).
 */
async function checkedAddresses(host: string, opts: SafeFetchOptions): Promise<LookupAddress[]> {
  const family = isIP(host)
  let addresses: LookupAddress[]
  if (family !== 0) {
    addresses = [{ address: host, family }]
  } else {
    try {
      addresses = await (opts.resolve ?? systemResolve)(host)
    } catch (e) {
      throw new SafeFetchError('dns', `resolving ${host} failed: ${(e as Error).message}`)
    }
    if (addresses.length === 0) throw new SafeFetchError('dns', `${host} has no address`)
  }
  for (const { address } of addresses) {
    const c = classifyAddress(address)
    if (c.kind === 'special') throw new SafeFetchError('address', `${host} resolves to ${address}, a special-use address: ${c.range}`)
    if (c.kind === 'loopback' && !opts.allowLoopback) throw new SafeFetchError('address', `${host} resolves to ${address}, a loopback address (allowed only with allowLoopback)`)
  }
  return addresses
}

/** A socket `lookup` that answers only the addresses already checked, whatever it is asked. */
function pinnedLookup(addresses: LookupAddress[]): LookupFunction {
  return (_hostname, options, callback) => {
    const wanted = options.family === 4 || options.family === 6 ? addresses.filter((a) => a.family === options.family) : addresses
    if (wanted.length === 0) {
      callback(Object.assign(new Error('no checked address of the requested family'), { code: 'ENOTFOUND' }), '', 0)
      return
    }
    // `all` is set by the happy-eyeballs connect (autoSelectFamily); the callback then takes the list.
    if (options.all) (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, wanted)
    else callback(null, wanted[0]!.address, wanted[0]!.family)
  }
}

/**
 * GETs `url` under the rules above and returns a 200's headers and body. Throws
 * {@link SafeFetchError}: `url` (not https), `dns`, `address` (special-use, before any connection
 * is made), `redirect` (any 3xx: never followed), `status` (anything but 200), `too_large`,
 * `timeout`, `network` (connect, TLS, a reset).
 */
export async function safeFetch(url: URL, opts: SafeFetchOptions): Promise<SafeResponse> {
  if (url.protocol !== 'https:') throw new SafeFetchError('url', `${url.protocol} is not https`)
  // One deadline for everything, resolution included: a slow resolver or a slow-drip body must not hold us longer.
  // A duration on the real timer, not the injected clock: it bounds a real network wait.
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), opts.timeout)
  const timedOut = () => new SafeFetchError('timeout', `no complete response within ${opts.timeout} ms`)
  try {
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
    const aborted = new Promise<never>((_, reject) => controller.signal.addEventListener('abort', () => reject(timedOut()), { once: true }))
    // Raced below; this only keeps an abort that lands between two awaits from counting as unhandled.
    aborted.catch(() => {})
    const addresses = await Promise.race([checkedAddresses(host, opts), aborted])
    return await Promise.race([get(url, host, addresses, opts, controller.signal, timedOut), aborted])
  } finally {
    clearTimeout(timer)
  }
}

function get(url: URL, host: string, addresses: LookupAddress[], opts: SafeFetchOptions, signal: AbortSignal, timedOut: () => SafeFetchError): Promise<SafeResponse> {
  return new Promise((resolve, reject) => {
    const options: RequestOptions = {
      host,
      port: url.port === '' ? 443 : Number(url.port),
      path: `${url.pathname}${url.search}`,
      method: 'GET',
      headers: { accept: opts.accept, 'accept-encoding': 'identity', 'user-agent': 'taskpass' },
      // SNI and certificate name check against the URL's host, the connection to the checked address.
      servername: isIP(host) === 0 ? host : '',
      lookup: pinnedLookup(addresses),
      // No pooled socket: each request connects through its own checked lookup.
      agent: false,
      signal,
    }
    if (opts.ca !== undefined) options.ca = opts.ca
    const req = request(options, (res) => {
      const status = res.statusCode ?? 0
      if (status >= 300 && status < 400) return fail(new SafeFetchError('redirect', `HTTP ${status} redirect to ${res.headers.location ?? '(no location)'} not followed`))
      if (status !== 200) return fail(new SafeFetchError('status', `HTTP ${status}`))
      const declared = Number(res.headers['content-length'] ?? NaN)
      if (Number.isFinite(declared) && declared > opts.maxBytes) return fail(new SafeFetchError('too_large', `declared ${declared} bytes, more than ${opts.maxBytes}`))
      const chunks: Buffer[] = []
      let total = 0
      res.on('data', (chunk: Buffer) => {
        total += chunk.length
        if (total > opts.maxBytes) return fail(new SafeFetchError('too_large', `body exceeds ${opts.maxBytes} bytes`))
        chunks.push(chunk)
      })
      res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', (e) => fail(mapError(e, signal, timedOut)))
    })
    req.on('error', (e) => fail(mapError(e, signal, timedOut)))
    req.end()

    function fail(e: SafeFetchError): void {
      reject(e)
      req.destroy()
    }
  })
}

function mapError(e: Error, signal: AbortSignal, timedOut: () => SafeFetchError): SafeFetchError {
  if (e instanceof SafeFetchError) return e
  if (signal.aborted) return timedOut()
  const code = (e as NodeJS.ErrnoException).code
  return new SafeFetchError('network', `${code ?? e.name}: ${e.message}`)
}
