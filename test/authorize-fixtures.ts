/**
 * Fixtures of the authorization-code flow tests: a configuration with an OAuth client workload and
 * the dev sign-in, a resolver serving fixed metadata documents (for tests not about fetching them),
 * PKCE, and a minimal browser — a cookie jar and form submission over `app.request()` — that plays
 * the user by reading the forms the pages render.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { ClientMetadata, ClientMetadataResolver } from '../src/clients/metadata-document.js'
import type { ConfigInput } from '../src/config.js'
import { OAuthError } from '../src/errors.js'
import { NOTES, USER_ISSUER } from './harness.js'

export const CLIENT_ID = 'https://client.test.example/oauth/client.json'
export const REDIRECT_URI = 'http://127.0.0.1:33418/callback'
export const DEV_PASSWORD = 'dev-password-0123456789abcdef'
export const CLIENT: ClientMetadata = { clientId: CLIENT_ID, clientName: 'Test MCP Client', redirectUris: [REDIRECT_URI], grantTypes: ['authorization_code', 'refresh_token'] }

/** The test configuration plus: alice and bob may sign in on the dev page; clients under client.test.example are the `mcp-clients` workload. */
export function browserFlowConfig(c: ConfigInput): ConfigInput {
  return {
    ...c,
    subjectIssuers: c.subjectIssuers!.map((si) => (si.issuer === USER_ISSUER ? { ...si, login: { kind: 'dev' as const, users: ['alice', 'bob'], passwordSha256: createHash('sha256').update(DEV_PASSWORD).digest('base64url') } } : si)),
    workloads: [...c.workloads!, { id: 'mcp-clients', oauthClient: { clientId: { glob: 'https://client.test.example/**' } }, grants: [{ resource: NOTES, scopes: ['notes:read', 'notes:write'] }] }],
  }
}

/** A resolver of fixed documents; any other client id is refused as the real one refuses an unfetchable document. */
export function fixedClients(docs: ClientMetadata[] = [CLIENT]): ClientMetadataResolver & { calls: string[] } {
  const calls: string[] = []
  return {
    calls,
    resolve(clientId) {
      calls.push(clientId)
      const doc = docs.find((d) => d.clientId === clientId)
      return doc ? Promise.resolve(doc) : Promise.reject(new OAuthError('invalid_client', 400, 'the client metadata document could not be fetched'))
    },
  }
}

export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url')
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') }
}

/** The query of an authorization request for the test client, with overrides (`undefined` drops one). */
export function authorizeQuery(challenge: string, overrides: Record<string, string | undefined> = {}): string {
  const params: Record<string, string | undefined> = { response_type: 'code', client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, code_challenge: challenge, code_challenge_method: 'S256', state: 'st-123', resource: NOTES, scope: 'notes:read notes:write', ...overrides }
  return new URLSearchParams(Object.entries(params).filter((e): e is [string, string] => e[1] !== undefined)).toString()
}

const ENTITIES: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'", '&#x27;': "'" }
const unescape = (s: string) => s.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (m) => ENTITIES[m]!)

/** The forms of a page: action and its hidden, text and checked checkbox fields (our own markup, read plainly). */
export function formsOf(html: string): { action: string; fields: [string, string][] }[] {
  const forms: { action: string; fields: [string, string][] }[] = []
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/g)) {
    const action = unescape(/action="([^"]*)"/.exec(m[1]!)?.[1] ?? '')
    const fields: [string, string][] = []
    for (const input of m[2]!.matchAll(/<input\b([^>]*)>/g)) {
      const attrs = input[1]!
      const name = /name="([^"]*)"/.exec(attrs)?.[1]
      if (!name) continue
      const type = /type="([^"]*)"/.exec(attrs)?.[1] ?? 'text'
      if (type === 'checkbox' && !/\bchecked\b/.test(attrs)) continue
      if (type === 'submit') continue
      fields.push([unescape(name), unescape(/value="([^"]*)"/.exec(attrs)?.[1] ?? '')])
    }
    for (const select of m[2]!.matchAll(/<select\b[^>]*name="([^"]*)"[^>]*>([\s\S]*?)<\/select>/g)) {
      const selected = /<option\b[^>]*value="([^"]*)"[^>]*selected/.exec(select[2]!) ?? /<option\b[^>]*value="([^"]*)"/.exec(select[2]!)
      if (selected) fields.push([unescape(select[1]!), unescape(selected[1]!)])
    }
    forms.push({ action, fields })
  }
  return forms
}

type Fetch = (path: string, init: RequestInit) => Response | Promise<Response>

/** A browser with a cookie jar over an app (or any fetch): it never follows redirects by itself. */
export class TestBrowser {
  readonly cookies = new Map<string, string>()
  private readonly fetch: Fetch
  constructor(fetch: Fetch) {
    this.fetch = fetch
  }

  private remember(res: Response): Response {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';')
      const eq = pair!.indexOf('=')
      const name = pair!.slice(0, eq).trim()
      const value = pair!.slice(eq + 1).trim()
      if (value === '' || attrs.some((a) => /max-age=0/i.test(a.trim()))) this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
    return res
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
    return { ...(cookie ? { cookie } : {}), ...extra }
  }

  async get(path: string): Promise<Response> {
    return this.remember(await this.fetch(path, { headers: this.headers(), redirect: 'manual' }))
  }

  async post(path: string, fields: [string, string][]): Promise<Response> {
    return this.remember(await this.fetch(path, { method: 'POST', headers: this.headers({ 'content-type': 'application/x-www-form-urlencoded' }), body: new URLSearchParams(fields).toString(), redirect: 'manual' }))
  }

  /** Submits the page's form whose action is `action`, with its fields changed by `edit`. */
  async submit(html: string, action: string, edit: (fields: [string, string][]) => [string, string][] = (f) => f): Promise<Response> {
    const found = formsOf(html).find((f) => f.action === action)
    if (!found) throw new Error(`no form posting to ${action} on the page`)
    return this.post(action, edit(found.fields))
  }
}

/** Sets a field (replacing every value of it). */
export const setField = (name: string, ...values: string[]) => (fields: [string, string][]) => [...fields.filter(([k]) => k !== name), ...values.map((v) => [name, v] as [string, string])]

/** The dev sign-in form's answer: alice (or `user`) with the dev password. */
export const devSignIn = (user = 'alice') => (fields: [string, string][]) => setField('password', DEV_PASSWORD)(setField('username', user)(fields))

/**
 * An https server on 127.0.0.1 (a self-signed certificate for that address, written to a temp
 * file for the broker's `clientMetadata.caFile`) that serves `routes` by path as JSON.
 */
export async function httpsJsonServer(routes: Record<string, (origin: string) => unknown>): Promise<{ origin: string; caFile: string; requests: string[]; close(): Promise<void> }> {
  const { generate } = await import('selfsigned')
  const { createServer } = await import('node:https')
  const { mkdtempSync, writeFileSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const pems = await generate([{ name: 'commonName', value: '127.0.0.1' }], { keyType: 'ec', algorithm: 'sha256', extensions: [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] }] })
  const caFile = join(mkdtempSync(join(tmpdir(), 'taskpass-ca-')), 'ca.pem')
  writeFileSync(caFile, pems.cert)
  const requests: string[] = []
  let origin = ''
  const server = createServer({ key: pems.private, cert: pems.cert }, (req, res) => {
    requests.push(req.url ?? '')
    const route = routes[req.url ?? '']
    if (!route) return void res.writeHead(404).end()
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(route(origin)))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  origin = `https://127.0.0.1:${(server.address() as { port: number }).port}`
  return { origin, caFile, requests, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()) }) }
}
