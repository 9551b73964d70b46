/**
 * Client ID Metadata Documents: the resolver against real HTTPS servers on 127.0.0.1 (a
 * self-signed certificate trusted through `caFile`), a fixed clock for the cache, and injected
 * name resolution for the address checks. Every refusal asserts the exact error and that the
 * fault is the reason (the same request without the fault passes).
 */
import assert from 'node:assert/strict'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { mkdtempSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, beforeEach, describe, it } from 'node:test'
import { generate } from 'selfsigned'
import {
  cacheLifetime,
  createClientMetadataResolver,
  isMetadataDocumentUrl,
  type ClientMetadataOptions,
  type ClientMetadataResolver,
} from '../src/clients/metadata-document.js'
import { createFixedClock, type FixedClock } from '../src/clock.js'
import { OAuthError } from '../src/errors.js'
import { classifyAddress } from '../src/lib/special-use-addresses.js'
import { safeFetch, SafeFetchError, type ResolveHost } from '../src/lib/safe-fetch.js'

const HOST = 'cimd.test'
const T0 = 1_800_000_000

type Handler = (req: IncomingMessage, res: ServerResponse) => void

let server: Server
let port: number
let caFile: string
/** Paths requested of the server, in order. */
let hits: string[]
/** Handlers by path; any other path serves a good document whose `client_id` is the URL requested. */
let routes: Map<string, Handler>
let clock: FixedClock

const base = () => `https://${HOST}:${port}`
const toLoopback: ResolveHost = async () => [{ address: '127.0.0.1', family: 4 }]

function goodDoc(clientId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { client_id: clientId, client_name: 'Example MCP Client', redirect_uris: ['http://127.0.0.1:33418/callback', 'https://app.example/cb'], ...extra }
}

function json(body: unknown, headers: Record<string, string> = {}): Handler {
  return (_req, res) => {
    const text = typeof body === 'string' ? body : JSON.stringify(body)
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers })
    res.end(text)
  }
}

/** Serves `doc(clientId)` at `path`; returns the client id. */
function serve(path: string, doc: (clientId: string) => unknown, headers: Record<string, string> = {}): string {
  const clientId = `${base()}${path}`
  routes.set(path, json(doc(clientId), headers))
  return clientId
}

/** A resolver with the defaults, loopback allowed (the test server), `cimd.test` resolving to 127.0.0.1 unless told otherwise. */
function resolver(options: Partial<ClientMetadataOptions> = {}, resolveHost: ResolveHost = toLoopback): ClientMetadataResolver {
  return createClientMetadataResolver({
    options: { timeout: 15_000, maxBytes: 5120, maxCacheAge: 3600, cacheSize: 1000, allowLoopback: true, caFile, ...options },
    clock,
    resolveHost,
  })
}

/** Asserts `p` rejects with 400 `invalid_client`, the given public description, and a private detail matching `detail`. */
async function refused(p: Promise<unknown>, description: string | RegExp, detail?: RegExp): Promise<OAuthError> {
  const e = await p.then(
    () => assert.fail('expected a refusal'),
    (err: unknown) => err,
  )
  assert.ok(e instanceof OAuthError, `not an OAuthError: ${String(e)}`)
  assert.equal(e.code, 'invalid_client')
  assert.equal(e.status, 400)
  if (typeof description === 'string') assert.equal(e.description, description)
  else assert.match(e.description, description)
  if (detail) assert.match(e.detail, detail)
  return e
}

const NOT_FETCHED = 'the client metadata document could not be fetched'
const invalid = (problem: string | RegExp) => (typeof problem === 'string' ? `the client metadata document is invalid: ${problem}` : problem)

before(async () => {
  const pems = await generate([{ name: 'commonName', value: HOST }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: HOST }, { type: 7, ip: '127.0.0.1' }] }],
  })
  const dir = mkdtempSync(join(tmpdir(), 'taskpass-cimd-'))
  caFile = join(dir, 'ca.pem')
  writeFileSync(caFile, pems.cert)
  server = createServer({ key: pems.private, cert: pems.cert }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!
    hits.push(req.url ?? '')
    const handler = routes.get(path) ?? json(goodDoc(`https://${req.headers.host}${req.url}`))
    handler(req, res)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  port = (server.address() as AddressInfo).port
})

after(() => {
  server.closeAllConnections()
  server.close()
})

beforeEach(() => {
  hits = []
  routes = new Map()
  clock = createFixedClock(T0)
})

afterEach(() => {
  // Slow handlers leave responses open: end them so the next test starts clean.
  server.closeAllConnections()
})

describe('client id URL rules', () => {
  const good = 'https://client.example/oauth/client.json'
  const cases: Array<[string, string, string]> = [
    ['http scheme', 'http://client.example/oauth/client.json', 'not an https URL'],
    ['no path', 'https://client.example', 'has no path (the root path is not a document)'],
    ['root path', 'https://client.example/', 'has no path (the root path is not a document)'],
    ['userinfo', 'https://user@client.example/oauth/client.json', 'has userinfo'],
    ['user and password', 'https://user:pw@client.example/oauth/client.json', 'has userinfo'],
    ['empty userinfo', 'https://@client.example/oauth/client.json', 'has userinfo'],
    ['fragment', 'https://client.example/oauth/client.json#x', 'has a fragment'],
    ['empty fragment', 'https://client.example/oauth/client.json#', 'has a fragment'],
    ['dot segment', 'https://client.example/oauth/./client.json', 'has a dot segment'],
    ['double-dot segment', 'https://client.example/other/../oauth/client.json', 'has a dot segment'],
    ['encoded double-dot segment', 'https://client.example/other/%2E%2e/oauth/client.json', 'has a dot segment'],
    ['trailing dot segment', 'https://client.example/oauth/..', 'has a dot segment'],
    ['query', 'https://client.example/oauth/client.json?v=1', 'has a query'],
    ['empty query', 'https://client.example/oauth/client.json?', 'has a query'],
    ['too long', `https://client.example/${'a'.repeat(2048)}`, 'longer than 2048 characters'],
    ['whitespace', 'https://client.example/oauth/client .json', 'not a URL of printable ASCII characters'],
    ['backslash', 'https://client.example\\oauth/client.json', 'not a URL of printable ASCII characters'],
    ['no host', 'https:///oauth/client.json', 'has no host'],
  ]

  it('control: an https URL with a path, and one with a port, are metadata document URLs', () => {
    assert.equal(isMetadataDocumentUrl(good), true)
    assert.equal(isMetadataDocumentUrl('https://client.example:8443/oauth/client.json'), true)
    assert.equal(isMetadataDocumentUrl(`https://client.example/${'a'.repeat(2048 - 'https://client.example/'.length)}`), true)
  })

  for (const [name, url, problem] of cases) {
    it(`refuses a client id with ${name}, before any request`, async () => {
      assert.equal(isMetadataDocumentUrl(url), false)
      // Against our server: the same fault on a URL that would otherwise serve a matching document.
      const local = url.replace('https://client.example', `https://${HOST}:${port}`).replace('http://client.example', `http://${HOST}:${port}`)
      await refused(resolver().resolve(local), `client_id is not a client metadata document URL: it ${problem}`)
      assert.deepEqual(hits, [])
    })
  }

  it('control: the server serves a matching document at such URLs without the fault', async () => {
    const m = await resolver().resolve(`${base()}/oauth/client.json`)
    assert.equal(m.clientId, `${base()}/oauth/client.json`)
  })
})

describe('a good document', () => {
  it('resolves to its validated metadata, with defaults', async () => {
    const clientId = serve('/client.json', (id) => goodDoc(id, { client_uri: 'https://app.example', logo_uri: 'https://app.example/logo.png', scope: 'notes.read' }))
    const m = await resolver().resolve(clientId)
    assert.deepEqual({ ...m }, {
      clientId,
      clientName: 'Example MCP Client',
      redirectUris: ['http://127.0.0.1:33418/callback', 'https://app.example/cb'],
      grantTypes: ['authorization_code'],
      clientUri: 'https://app.example',
      logoUri: 'https://app.example/logo.png',
    })
    assert.deepEqual(hits, ['/client.json'])
  })

  it('keeps grant_types, response_types ["code"] and token_endpoint_auth_method "none"', async () => {
    const clientId = serve('/client.json', (id) => goodDoc(id, { grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' }))
    const m = await resolver().resolve(clientId)
    assert.deepEqual(m.grantTypes, ['authorization_code', 'refresh_token'])
  })

  it('drops client_uri and logo_uri that are not https URLs (and never fetches them)', async () => {
    const clientId = serve('/client.json', (id) => goodDoc(id, { client_uri: 'http://app.example', logo_uri: `${base()}/logo.png`.replace('https:', 'javascript:') }))
    const m = await resolver().resolve(clientId)
    assert.equal(m.clientUri, undefined)
    assert.equal(m.logoUri, undefined)
    const withLogo = serve('/logo-client.json', (id) => goodDoc(id, { logo_uri: `${base()}/logo.png` }))
    assert.equal((await resolver().resolve(withLogo)).logoUri, `${base()}/logo.png`)
    assert.deepEqual(hits, ['/client.json', '/logo-client.json'])
  })

  it('sends Accept: application/json', async () => {
    let accept: string | undefined
    routes.set('/client.json', (req, res) => {
      accept = req.headers.accept
      json(goodDoc(`${base()}/client.json`))(req, res)
    })
    await resolver().resolve(`${base()}/client.json`)
    assert.equal(accept, 'application/json')
  })

  it('is fetched from an IP-literal host when loopback is allowed (no name resolution)', async () => {
    const clientId = `https://127.0.0.1:${port}/client.json`
    routes.set('/client.json', json(goodDoc(clientId)))
    const m = await resolver({}, async () => assert.fail('an IP literal is not resolved')).resolve(clientId)
    assert.equal(m.clientId, clientId)
  })

  it('is refused when the server certificate is not trusted (no caFile)', async () => {
    const clientId = serve('/client.json', (id) => goodDoc(id))
    await refused(resolver({ caFile: undefined }).resolve(clientId), NOT_FETCHED, /^.+: network: /)
  })
})

describe('cache', () => {
  it('a second resolve makes no request; after maxCacheAge the document is fetched again', async () => {
    const clientId = serve('/client.json', (id) => goodDoc(id))
    const r = resolver({ maxCacheAge: 600 })
    await r.resolve(clientId)
    await r.resolve(clientId)
    assert.equal(hits.length, 1)
    clock.advance(599)
    await r.resolve(clientId)
    assert.equal(hits.length, 1)
    clock.advance(1)
    await r.resolve(clientId)
    assert.equal(hits.length, 2)
  })

  it('Cache-Control no-store and no-cache: fetched on every resolve', async () => {
    for (const cc of ['no-store', 'no-cache', 'private, no-store', 'max-age=600, no-cache']) {
      hits = []
      const clientId = serve('/client.json', (id) => goodDoc(id), { 'cache-control': cc })
      const r = resolver()
      await r.resolve(clientId)
      await r.resolve(clientId)
      assert.equal(hits.length, 2, cc)
    }
  })

  it('max-age is honoured, clamped to [60 s, maxCacheAge], less the Age already spent', async () => {
    const cases: Array<[Record<string, string>, number]> = [
      [{ 'cache-control': 'max-age=120' }, 120],
      [{ 'cache-control': 'max-age=5' }, 60],
      [{ 'cache-control': 'public, max-age=100000' }, 600],
      [{ 'cache-control': 'max-age=300', age: '100' }, 200],
      [{}, 600],
    ]
    for (const [headers, lifetime] of cases) {
      hits = []
      const clientId = serve('/client.json', (id) => goodDoc(id), headers)
      const r = resolver({ maxCacheAge: 600 })
      await r.resolve(clientId)
      clock.advance(lifetime - 1)
      await r.resolve(clientId)
      assert.equal(hits.length, 1, `${JSON.stringify(headers)} still fresh at ${lifetime - 1} s`)
      clock.advance(1)
      await r.resolve(clientId)
      assert.equal(hits.length, 2, `${JSON.stringify(headers)} stale at ${lifetime} s`)
    }
  })

  it('cacheLifetime reads the directives case-insensitively and treats a bad max-age as our floor', () => {
    assert.equal(cacheLifetime({ 'cache-control': 'No-Store' }, 3600), 0)
    assert.equal(cacheLifetime({ 'cache-control': 'max-age="900"' }, 3600), 900)
    assert.equal(cacheLifetime({ 'cache-control': 'max-age=abc' }, 3600), 60)
    assert.equal(cacheLifetime({}, 3600), 3600)
  })

  it('a failed fetch is not cached: the next resolve fetches again and succeeds', async () => {
    const clientId = `${base()}/client.json`
    routes.set('/client.json', (_req, res) => { res.writeHead(500).end() })
    const r = resolver()
    await refused(r.resolve(clientId), NOT_FETCHED, /status: HTTP 500/)
    routes.set('/client.json', json(goodDoc(clientId)))
    assert.equal((await r.resolve(clientId)).clientId, clientId)
    assert.equal(hits.length, 2)
  })

  it('an invalid document is not cached: once fixed, it resolves', async () => {
    const clientId = serve('/client.json', (id) => goodDoc(id, { client_name: '' }))
    const r = resolver()
    await refused(r.resolve(clientId), invalid('"client_name" is required (a non-empty string)'))
    serve('/client.json', (id) => goodDoc(id))
    assert.equal((await r.resolve(clientId)).clientName, 'Example MCP Client')
    assert.equal(hits.length, 2)
  })

  it('concurrent resolves of one URL share one request, failures included', async () => {
    const clientId = serve('/client.json', (id) => goodDoc(id))
    const r = resolver()
    const all = await Promise.all([r.resolve(clientId), r.resolve(clientId), r.resolve(clientId)])
    assert.equal(hits.length, 1)
    assert.equal(all[0], all[2])
    hits = []
    routes.set('/bad.json', (_req, res) => { res.writeHead(404).end() })
    const bad = `${base()}/bad.json`
    const outcomes = await Promise.allSettled([r.resolve(bad), r.resolve(bad)])
    assert.deepEqual(outcomes.map((o) => o.status), ['rejected', 'rejected'])
    assert.equal(hits.length, 1)
    // Not cached: a later resolve fetches again.
    await refused(r.resolve(bad), NOT_FETCHED)
    assert.equal(hits.length, 2)
  })

  it('holds at most cacheSize documents, evicting the least recently used', async () => {
    const [a, b, c] = ['/a.json', '/b.json', '/c.json'].map((p) => serve(p, (id) => goodDoc(id))) as [string, string, string]
    const r = resolver({ cacheSize: 2 })
    await r.resolve(a)
    await r.resolve(b)
    await r.resolve(a) // a is now the most recently used
    await r.resolve(c) // evicts b
    assert.deepEqual(hits, ['/a.json', '/b.json', '/c.json'])
    await r.resolve(a)
    await r.resolve(c)
    assert.deepEqual(hits, ['/a.json', '/b.json', '/c.json'])
    await r.resolve(b)
    assert.deepEqual(hits, ['/a.json', '/b.json', '/c.json', '/b.json'])
  })
})

describe('fetch refusals', () => {
  it('a redirect is not followed', async () => {
    const clientId = `${base()}/client.json`
    routes.set('/client.json', (_req, res) => { res.writeHead(302, { location: `${base()}/elsewhere.json` }).end() })
    await refused(resolver().resolve(clientId), NOT_FETCHED, /redirect: HTTP 302/)
    assert.deepEqual(hits, ['/client.json'])
  })

  for (const status of [404, 500, 201, 204]) {
    it(`HTTP ${status} is refused (only 200 counts)`, async () => {
      const clientId = `${base()}/client.json`
      routes.set('/client.json', (_req, res) => {
        res.writeHead(status, { 'content-type': 'application/json' })
        res.end(status === 204 ? undefined : JSON.stringify(goodDoc(clientId)))
      })
      await refused(resolver().resolve(clientId), NOT_FETCHED, new RegExp(`status: HTTP ${status}`))
    })
  }

  /** A good document padded (with an ignored member) to exactly `bytes` bytes. */
  function padded(clientId: string, bytes: number): string {
    const empty = JSON.stringify(goodDoc(clientId, { pad: '' }))
    return JSON.stringify(goodDoc(clientId, { pad: 'x'.repeat(bytes - empty.length) }))
  }

  it('control: a document of exactly maxBytes resolves, declared or chunked', async () => {
    const clientId = `${base()}/client.json`
    const body = padded(clientId, 5120)
    assert.equal(Buffer.byteLength(body), 5120)
    routes.set('/client.json', json(body))
    await resolver().resolve(clientId)
    routes.set('/client.json', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      for (let i = 0; i < body.length; i += 1000) res.write(body.slice(i, i + 1000))
      res.end()
    })
    await resolver().resolve(clientId)
  })

  it('a body larger than maxBytes with a Content-Length is refused', async () => {
    const clientId = `${base()}/client.json`
    routes.set('/client.json', json(padded(clientId, 5121)))
    await refused(resolver().resolve(clientId), NOT_FETCHED, /too_large: declared 5121 bytes/)
  })

  it('a body larger than maxBytes without a Content-Length (chunked) is refused while reading', async () => {
    const clientId = `${base()}/client.json`
    const body = padded(clientId, 5121)
    routes.set('/client.json', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      for (let i = 0; i < body.length; i += 1000) res.write(body.slice(i, i + 1000))
      res.end()
    })
    await refused(resolver().resolve(clientId), NOT_FETCHED, /too_large: body exceeds 5120 bytes/)
  })

  it('a server that never answers times out within the timeout', { timeout: 10_000 }, async () => {
    const clientId = `${base()}/client.json`
    routes.set('/client.json', () => {}) // headers never come
    const started = performance.now()
    await refused(resolver({ timeout: 300 }).resolve(clientId), NOT_FETCHED, /timeout: no complete response within 300 ms/)
    const elapsed = performance.now() - started
    assert.ok(elapsed >= 250 && elapsed < 2000, `took ${elapsed} ms`)
  })

  it('a slow-drip body times out within the timeout (the timeout covers the body)', { timeout: 10_000 }, async () => {
    const clientId = `${base()}/client.json`
    routes.set('/client.json', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{')
      const drip = setInterval(() => res.write(' '), 50)
      res.on('close', () => clearInterval(drip))
    })
    const started = performance.now()
    await refused(resolver({ timeout: 300 }).resolve(clientId), NOT_FETCHED, /timeout: /)
    const elapsed = performance.now() - started
    assert.ok(elapsed >= 250 && elapsed < 2000, `took ${elapsed} ms`)
  })

  it('name resolution that never answers times out too', { timeout: 10_000 }, async () => {
    const r = resolver({ timeout: 300 }, () => new Promise(() => {}))
    await refused(r.resolve(`${base()}/client.json`), NOT_FETCHED, /timeout: /)
    assert.deepEqual(hits, [])
  })

  it('safeFetch itself refuses a URL that is not https, before resolving it', async () => {
    const e = await safeFetch(new URL(`http://${HOST}:${port}/client.json`), { timeout: 300, maxBytes: 5120, allowLoopback: true, accept: 'application/json', resolve: async () => assert.fail('not resolved') }).catch((err: unknown) => err)
    assert.ok(e instanceof SafeFetchError)
    assert.equal(e.reason, 'url')
    assert.deepEqual(hits, [])
  })

  it('a resolver that throws is an invalid_client, never a 500', async () => {
    const r = resolver({}, async () => { throw new Error('SERVFAIL') })
    await refused(r.resolve(`${base()}/client.json`), NOT_FETCHED, /dns: resolving cimd\.test failed: SERVFAIL/)
  })

  it('a connection reset is an invalid_client', async () => {
    routes.set('/client.json', (req) => { req.socket.destroy() })
    await refused(resolver().resolve(`${base()}/client.json`), NOT_FETCHED, /network: /)
  })
})

describe('document refusals', () => {
  it('a body that is not JSON', async () => {
    routes.set('/client.json', json('<html>hello</html>'))
    await refused(resolver().resolve(`${base()}/client.json`), 'the client metadata document is not JSON')
  })

  it('a body that is not UTF-8 (a JSON document but for one byte in client_name)', async () => {
    const clientId = `${base()}/client.json`
    const [before, after] = JSON.stringify(goodDoc(clientId, { client_name: 'Bad|Byte' })).split('|') as [string, string]
    routes.set('/client.json', (_req, res) => { res.writeHead(200).end(Buffer.concat([Buffer.from(before), Buffer.from([0xff]), Buffer.from(after)])) })
    await refused(resolver().resolve(clientId), 'the client metadata document is not JSON', /not UTF-8 JSON/)
    // Control: the same document with the byte as valid UTF-8 resolves.
    routes.set('/client.json', json(goodDoc(clientId, { client_name: 'Bad\u00ffByte' })))
    assert.equal((await resolver().resolve(clientId)).clientName, 'Bad\u00ffByte')
  })

  const cases: Array<[string, (doc: Record<string, unknown>) => unknown, string]> = [
    ['a JSON array', (d) => [d], 'it is not a JSON object'],
    ['JSON null', () => null, 'it is not a JSON object'],
    ['a client_id that differs from the URL', (d) => ({ ...d, client_id: `${d.client_id as string}x` }), '"client_id" does not equal the document\'s URL'],
    ['a client_id differing only in the case of its host (compared as plain strings)', (d) => ({ ...d, client_id: (d.client_id as string).replace(HOST, HOST.toUpperCase()) }), '"client_id" does not equal the document\'s URL'],
    ['no client_id', (d) => ({ ...d, client_id: undefined }), '"client_id" does not equal the document\'s URL'],
    ['no client_name', (d) => ({ ...d, client_name: undefined }), '"client_name" is required (a non-empty string)'],
    ['an empty client_name', (d) => ({ ...d, client_name: '  ' }), '"client_name" is required (a non-empty string)'],
    ['a client_name that is not a string', (d) => ({ ...d, client_name: ['x'] }), '"client_name" is required (a non-empty string)'],
    ['a client_name over 200 characters', (d) => ({ ...d, client_name: 'n'.repeat(201) }), '"client_name" is longer than 200 characters'],
    ['a client_name with control characters', (d) => ({ ...d, client_name: 'Good\u202e\u0007' }), '"client_name" contains control characters'],
    ['no redirect_uris', (d) => ({ ...d, redirect_uris: undefined }), '"redirect_uris" is required (a non-empty array of strings)'],
    ['empty redirect_uris', (d) => ({ ...d, redirect_uris: [] }), '"redirect_uris" is required (a non-empty array of strings)'],
    ['redirect_uris as a string', (d) => ({ ...d, redirect_uris: 'https://app.example/cb' }), '"redirect_uris" is required (a non-empty array of strings)'],
    ['more than 20 redirect_uris', (d) => ({ ...d, redirect_uris: Array.from({ length: 21 }, (_, i) => `https://app.example/cb${i}`) }), '"redirect_uris" has more than 20 entries'],
    ['a relative redirect URI', (d) => ({ ...d, redirect_uris: ['/callback'] }), 'a redirect URI is not an absolute URI'],
    ['a redirect URI with a fragment', (d) => ({ ...d, redirect_uris: ['https://app.example/cb#frag'] }), 'a redirect URI has a fragment'],
    ['a redirect URI over 2048 characters', (d) => ({ ...d, redirect_uris: [`https://app.example/${'c'.repeat(2048)}`] }), 'a redirect URI is longer than 2048 characters'],
    ['a client_secret', (d) => ({ ...d, client_secret: 's3cret' }), 'it contains a client secret ("client_secret" must not appear in a metadata document)'],
    ['a client_secret_expires_at', (d) => ({ ...d, client_secret_expires_at: 0 }), 'it contains a client secret ("client_secret" must not appear in a metadata document)'],
    ['token_endpoint_auth_method client_secret_basic', (d) => ({ ...d, token_endpoint_auth_method: 'client_secret_basic' }), '"token_endpoint_auth_method" "client_secret_basic" is not supported: only public clients ("none") are supported, neither shared secrets nor private_key_jwt'],
    ['token_endpoint_auth_method private_key_jwt', (d) => ({ ...d, token_endpoint_auth_method: 'private_key_jwt' }), '"token_endpoint_auth_method" "private_key_jwt" is not supported: only public clients ("none") are supported, neither shared secrets nor private_key_jwt'],
    ['jwks', (d) => ({ ...d, jwks: { keys: [] } }), '"jwks" and "jwks_uri" are not supported: only public clients (token_endpoint_auth_method "none") are supported'],
    ['jwks_uri', (d) => ({ ...d, jwks_uri: 'https://app.example/jwks' }), '"jwks" and "jwks_uri" are not supported: only public clients (token_endpoint_auth_method "none") are supported'],
    ['grant_types without authorization_code', (d) => ({ ...d, grant_types: ['refresh_token'] }), '"grant_types" must include "authorization_code"'],
    ['grant_types that is not an array', (d) => ({ ...d, grant_types: 'authorization_code' }), '"grant_types" must include "authorization_code"'],
    ['response_types token', (d) => ({ ...d, response_types: ['token'] }), '"response_types" must be ["code"]'],
    ['response_types code and token', (d) => ({ ...d, response_types: ['code', 'token'] }), '"response_types" must be ["code"]'],
  ]

  it('control: the unaltered document resolves', async () => {
    const clientId = serve('/client.json', (id) => goodDoc(id))
    await resolver().resolve(clientId)
  })

  for (const [name, alter, problem] of cases) {
    it(`refuses ${name}`, async () => {
      const clientId = serve('/client.json', (id) => alter(goodDoc(id)))
      await refused(resolver().resolve(clientId), invalid(problem))
    })
  }
})

describe('addresses (SSRF)', () => {
  /** HTTP client requests started (the channel fires before the socket connects): a refused address starts none. */
  let requestsStarted = 0
  const onRequest = () => { requestsStarted++ }
  before(() => subscribe('http.client.request.start', onRequest))
  after(() => unsubscribe('http.client.request.start', onRequest))
  beforeEach(() => { requestsStarted = 0 })

  const answering = (...addresses: string[]): ResolveHost => async () => addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))

  it('control: a host resolving to loopback is fetched when allowLoopback is on (one request started)', async () => {
    await resolver({ allowLoopback: true }, answering('127.0.0.1')).resolve(`${base()}/client.json`)
    assert.deepEqual(hits, ['/client.json'])
    assert.equal(requestsStarted, 1)
  })

  it('rebinding: the host is resolved once, and the connection goes to the address that was checked', async () => {
    const answers = ['127.0.0.1', '10.0.0.1']
    let calls = 0
    const rebinding: ResolveHost = async () => [{ address: answers[Math.min(calls++, 1)]!, family: 4 }]
    const m = await resolver({ allowLoopback: true }, rebinding).resolve(`${base()}/client.json`)
    assert.equal(m.clientName, 'Example MCP Client')
    assert.equal(calls, 1)
    assert.deepEqual(hits, ['/client.json'])
  })

  it('loopback is refused without allowLoopback, resolved or literal', async () => {
    await refused(resolver({ allowLoopback: false }, answering('127.0.0.1')).resolve(`${base()}/client.json`), NOT_FETCHED, /address: cimd\.test resolves to 127\.0\.0\.1, a loopback address/)
    await refused(resolver({ allowLoopback: false }).resolve(`https://127.0.0.1:${port}/client.json`), NOT_FETCHED, /address: 127\.0\.0\.1 resolves to 127\.0\.0\.1, a loopback address/)
    await refused(resolver({ allowLoopback: false }, answering('::1')).resolve(`${base()}/client.json`), NOT_FETCHED, /address: .* ::1, a loopback address/)
    assert.deepEqual(hits, [])
    assert.equal(requestsStarted, 0)
  })

  // 0.0.0.0 and :: reach the local host on Linux: without the check these would hit our server.
  const special: Array<[string[], RegExp]> = [
    [['10.0.0.1'], /private-use/],
    [['192.168.1.1'], /private-use/],
    [['172.16.5.4'], /private-use/],
    [['169.254.169.254'], /link-local/],
    [['100.64.0.1'], /CGNAT/],
    [['::ffff:10.0.0.1'], /private-use/],
    [['fd00::1'], /unique-local/],
    [['fe80::1'], /link-local/],
    [['0.0.0.0'], /"this network"/],
    [['::'], /unspecified/],
    [['64:ff9b::a9fe:a9fe'], /NAT64 .* of 169\.254\.169\.254/],
    [['224.0.0.1'], /multicast/],
    [['255.255.255.255'], /broadcast/],
    [['198.51.100.7'], /documentation/],
    [['127.0.0.1', '10.0.0.1'], /private-use/],
  ]
  for (const [addresses, range] of special) {
    it(`a host resolving to ${addresses.join(', ')} is refused even with allowLoopback; no connection is attempted`, async () => {
      await refused(resolver({ allowLoopback: true }, answering(...addresses)).resolve(`${base()}/client.json`), NOT_FETCHED, new RegExp(`address: cimd\\.test resolves to [^,]+, a special-use address: .*${range.source}`))
      assert.deepEqual(hits, [])
      assert.equal(requestsStarted, 0)
    })
  }

  it('an IP-literal special-use host is refused without a connection', async () => {
    await refused(resolver({ allowLoopback: true }).resolve(`https://[::ffff:a9fe:a9fe]:${port}/client.json`), NOT_FETCHED, /address: .*special-use address: link-local/)
    await refused(resolver({ allowLoopback: true }).resolve(`https://0.0.0.0:${port}/client.json`), NOT_FETCHED, /address: .*"this network"/)
    assert.deepEqual(hits, [])
    assert.equal(requestsStarted, 0)
  })

  it('classifies addresses by the IANA special-purpose registries', () => {
    const table: Array<[string, string]> = [
      ['93.184.215.14', 'public'], ['2606:4700::1111', 'public'], ['::ffff:8.8.8.8', 'public'], ['64:ff9b::808:808', 'public'],
      ['127.0.0.1', 'loopback'], ['127.255.0.9', 'loopback'], ['::1', 'loopback'], ['::ffff:127.0.0.1', 'loopback'],
      ['10.1.2.3', 'special'], ['172.31.255.255', 'special'], ['192.168.0.1', 'special'], ['169.254.0.1', 'special'],
      ['100.127.255.255', 'special'], ['0.1.2.3', 'special'], ['192.0.2.1', 'special'], ['203.0.113.9', 'special'],
      ['198.18.0.1', 'special'], ['240.0.0.1', 'special'], ['239.1.1.1', 'special'],
      ['fc00::1', 'special'], ['fe80::1%eth0', 'special'], ['ff02::1', 'special'], ['2001:db8::1', 'special'],
      ['64:ff9b::7f00:1', 'special'], ['64:ff9b:1::1', 'special'], ['2002:a00:1::1', 'special'], ['100::1', 'special'],
      ['::ffff:192.168.1.1', 'special'], ['not-an-ip', 'special'],
      // Outside 2000::/3 and in no named range: refused as not global unicast.
      ['4000::1', 'special'], ['::ffff:0:a00:1', 'special'], ['1::', 'special'],
    ]
    for (const [address, kind] of table) assert.equal(classifyAddress(address).kind, kind, address)
  })
})
