/**
 * openapi.yaml is kept true by this test: the routes the real app serves and the operations the
 * document describes must be the same set, every operation documents how it refuses a request,
 * and every error code the document names exists in src/errors.ts.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { parse } from 'yaml'
import { browserFlowConfig, fixedClients } from './authorize-fixtures.js'
import { createTestBroker } from './harness.js'

const root = new URL('../', import.meta.url)
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const

type Json = null | boolean | number | string | Json[] | { [k: string]: Json }
type JsonObject = { [k: string]: Json }

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * An operation whose route takes no input at all (no parameters other than conditional-request
 * headers, no body, no authentication) cannot refuse a request, so it may carry this extension,
 * with the reason as its value, instead of a 4xx response.
 */
const NO_CLIENT_ERROR = 'x-taskpass-no-client-error'

/**
 * A page for a person (tag `browser`: the authorization-code flow's sign-in, consent, wait and
 * account pages) refuses with an HTML page, not JSON. Such a 4xx response has `text/html` content
 * carrying this extension: the `OAuthErrorCode`s the page stands for (checked against src/errors.ts
 * like every other code), `[]` for a page that is no error (the sign-in form answered 401).
 */
const PAGE_ERROR_CODES = 'x-taskpass-error-codes'
const PAGE_TAG = 'browser'

function loadSpec(): JsonObject {
  const doc: unknown = parse(readFileSync(new URL('openapi.yaml', root), 'utf8'))
  assert.ok(isObject(doc), 'openapi.yaml is not a YAML mapping')
  assert.match(String(doc.openapi), /^3\.1\./, 'openapi.yaml must be OpenAPI 3.1')
  assert.ok(isObject(doc.paths), 'openapi.yaml has no paths')
  return doc
}

/** hono's `/tasks/:id` (also `:id{regex}` and `:id?`) as OpenAPI's `/tasks/{id}`. */
function toOpenApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?\??/g, '{$1}')
}

/**
 * The (METHOD path) pairs the app serves. hono lists middleware registered with `.use` as method
 * `ALL`; those are skipped. An `ALL` entry that is not middleware-shaped (no wildcard and no
 * concrete route on the same path) would be an `app.all()` handler, which has no single OpenAPI
 * operation: it is reported rather than silently skipped. The broker is built with the
 * authorization-code flow on (an OAuth client workload and a sign-in configured), the
 * configuration that mounts the most routes: its pages and the /token grants exist only then.
 */
async function appOperations(opts: Parameters<typeof createTestBroker>[0] = { config: (c) => ({ ...browserFlowConfig(c), authorization: { dynamicRegistration: { workload: 'mcp-clients' } } }), clientMetadata: fixedClients() }): Promise<Set<string>> {
  const b = await createTestBroker(opts)
  try {
    const routes = b.app.routes.map((r) => ({ method: r.method.toUpperCase(), path: r.path }))
    const concretePaths = new Set(routes.filter((r) => r.method !== 'ALL').map((r) => r.path))
    const unmappable = routes.filter((r) => r.method === 'ALL' && !r.path.includes('*') && !concretePaths.has(r.path))
    assert.deepEqual(unmappable, [], 'app.all() routes cannot be described as OpenAPI operations: register one handler per method')
    return new Set(routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${toOpenApiPath(r.path)}`))
  } finally {
    await b.close()
  }
}

interface Operation {
  key: string
  path: string
  pathItem: JsonObject
  op: JsonObject
}

function specOperations(spec: JsonObject): Operation[] {
  const out: Operation[] = []
  for (const [path, item] of Object.entries(spec.paths as JsonObject)) {
    assert.ok(isObject(item), `paths["${path}"] is not a mapping`)
    for (const method of HTTP_METHODS) {
      const op = item[method]
      if (op === undefined) continue
      assert.ok(isObject(op), `${method.toUpperCase()} ${path} is not a mapping`)
      out.push({ key: `${method.toUpperCase()} ${path}`, path, pathItem: item, op })
    }
  }
  return out
}

/** Follows a local `$ref` (`#/components/...`). */
function deref(spec: JsonObject, node: Json | undefined): Json | undefined {
  let cur = node
  for (let hops = 0; isObject(cur) && typeof cur.$ref === 'string'; hops++) {
    assert.ok(hops < 16, `$ref loop at ${cur.$ref}`)
    const ref = cur.$ref
    assert.ok(ref.startsWith('#/'), `only local $refs are supported: ${ref}`)
    let target: Json | undefined = spec
    for (const seg of ref.slice(2).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))) {
      target = isObject(target) ? target[seg] : undefined
    }
    assert.ok(target !== undefined, `unresolved $ref ${ref}`)
    cur = target
  }
  return cur
}

/** Whether `schema` is, or is composed from, components/schemas/OAuthError. */
function usesOAuthError(spec: JsonObject, schema: Json | undefined, seen = new Set<string>()): boolean {
  if (!isObject(schema)) return false
  if (schema.$ref === '#/components/schemas/OAuthError') return true
  if (typeof schema.$ref === 'string') {
    if (seen.has(schema.$ref)) return false
    seen.add(schema.$ref)
    return usesOAuthError(spec, deref(spec, schema), seen)
  }
  return ['allOf', 'oneOf', 'anyOf'].some((k) => Array.isArray(schema[k]) && (schema[k] as Json[]).some((s) => usesOAuthError(spec, s, seen)))
}

/**
 * Every `error` code the document names: `enum`/`const` of any schema property called `error`,
 * `error` members of examples, and the codes HTML error pages stand for (`x-taskpass-error-codes`). Returned with where each was found, for the failure message.
 */
function documentedErrorCodes(spec: JsonObject): Map<string, string> {
  const found = new Map<string, string>()
  const add = (code: Json | undefined, where: string) => {
    if (typeof code === 'string' && !found.has(code)) found.set(code, where)
  }
  const walk = (node: Json, where: string, inExample: boolean) => {
    if (Array.isArray(node)) {
      node.forEach((n, i) => walk(n, `${where}/${i}`, inExample))
      return
    }
    if (!isObject(node)) return
    if (isObject(node.properties) && isObject(node.properties.error)) {
      const err = node.properties.error
      if (Array.isArray(err.enum)) for (const c of err.enum) add(c, `${where}/properties/error`)
      add(err.const, `${where}/properties/error`)
    }
    if (inExample) add(node.error, `${where}/error`)
    if (Array.isArray(node[PAGE_ERROR_CODES])) for (const c of node[PAGE_ERROR_CODES] as Json[]) add(c, `${where}/${PAGE_ERROR_CODES}`)
    for (const [k, v] of Object.entries(node)) {
      walk(v, `${where}/${k}`, inExample || k === 'example' || k === 'examples')
    }
  }
  walk(spec, '#', false)
  const codeSchema = deref(spec, { $ref: '#/components/schemas/OAuthErrorCode' })
  if (isObject(codeSchema) && Array.isArray(codeSchema.enum)) for (const c of codeSchema.enum) add(c, '#/components/schemas/OAuthErrorCode')
  return found
}

/** The members of `export type OAuthErrorCode = | 'a' | 'b' …` in src/errors.ts. */
function oauthErrorCodes(): Set<string> {
  const text = readFileSync(new URL('src/errors.ts', root), 'utf8')
  const m = /export type OAuthErrorCode\s*=([\s\S]*?)(?:\n\s*\n|\nexport )/.exec(text)
  assert.ok(m, 'src/errors.ts: `export type OAuthErrorCode =` not found')
  const codes = new Set([...m[1]!.matchAll(/'([^']+)'/g)].map((x) => x[1]!))
  assert.ok(codes.size > 0, 'OAuthErrorCode union parsed empty')
  return codes
}

/** A readable two-sided diff of two sets of (METHOD path) pairs. */
function diffOperations(app: ReadonlySet<string>, spec: ReadonlySet<string>): string[] {
  const missing = [...app].filter((k) => !spec.has(k)).sort()
  const stale = [...spec].filter((k) => !app.has(k)).sort()
  const lines: string[] = []
  if (missing.length) lines.push('served by the app but not in openapi.yaml:', ...missing.map((k) => `  + ${k}`))
  if (stale.length) lines.push('in openapi.yaml but not served by the app:', ...stale.map((k) => `  - ${k}`))
  return lines
}

/**
 * How each operation refuses a request: at least one 4xx response (or the no-input exemption),
 * each an application/json OAuthError — or, on a page for a person, a text/html page naming its
 * error codes. Returns the problems found.
 */
function clientErrorProblems(spec: JsonObject, operations: Operation[]): string[] {
  const problems: string[] = []
  for (const { key, op } of operations) {
    const responses = op.responses
    if (!isObject(responses) || Object.keys(responses).length === 0) {
      problems.push(`${key}: no responses`)
      continue
    }
    const clientErrors = Object.keys(responses).filter((s) => /^4(\d\d|XX)$/.test(s))
    if (clientErrors.length === 0) {
      // The exemption is only for operations that take no input at all.
      const reason = op[NO_CLIENT_ERROR]
      const inputs = ((op.parameters as Json[] | undefined) ?? []).map((p) => deref(spec, p)).filter((p) => !(isObject(p) && p.in === 'header' && /^If-/i.test(String(p.name))))
      const open = Array.isArray(op.security) && op.security.every((s) => isObject(s) && Object.keys(s).length === 0)
      if (typeof reason !== 'string' || reason.trim() === '') problems.push(`${key}: no 4xx response (add one, or ${NO_CLIENT_ERROR}: <reason> if it cannot refuse a request)`)
      else if (inputs.length > 0 || op.requestBody !== undefined || !open) problems.push(`${key}: ${NO_CLIENT_ERROR} is only for operations without parameters, body or authentication`)
      continue
    }
    if (op[NO_CLIENT_ERROR] !== undefined) problems.push(`${key}: has 4xx responses and ${NO_CLIENT_ERROR}`)
    for (const status of clientErrors) {
      const response = deref(spec, responses[status])
      const content = isObject(response) && isObject(response.content) ? response.content : {}
      const json = content['application/json']
      if (usesOAuthError(spec, isObject(json) ? json.schema : undefined)) continue
      const html = content['text/html']
      const page = Array.isArray(op.tags) && op.tags.includes(PAGE_TAG)
      if (page && isObject(html) && Array.isArray(html[PAGE_ERROR_CODES])) continue
      problems.push(page ? `${key} ${status}: neither an application/json OAuthError nor a text/html page with ${PAGE_ERROR_CODES}` : `${key} ${status}: not an application/json OAuthError`)
    }
  }
  return problems
}

describe('openapi.yaml contract', () => {
  const spec = loadSpec()
  const operations = specOperations(spec)

  it('documents exactly the routes the app serves (both directions)', async () => {
    const app = await appOperations()
    const documented = new Set(operations.map((o) => o.key))
    assert.ok(app.size > 0, 'the app lists no routes')
    const diff = diffOperations(app, documented)
    assert.equal(diff.length, 0, `openapi.yaml and the app disagree:\n${diff.join('\n')}`)
  })

  it('documents every route of the default configuration (no authorization-code flow) too', async () => {
    const app = await appOperations({})
    const documented = new Set(operations.map((o) => o.key))
    assert.deepEqual([...app].filter((k) => !documented.has(k)).sort(), [], 'served without the browser flow but not in openapi.yaml')
  })

  it('the route comparison fails when either side has an extra operation', () => {
    const both = new Set(['GET /healthz', 'POST /tasks/{id}/complete'])
    assert.deepEqual(diffOperations(new Set([...both, 'GET /undocumented']), both), ['served by the app but not in openapi.yaml:', '  + GET /undocumented'])
    assert.deepEqual(diffOperations(both, new Set([...both, 'DELETE /gone'])), ['in openapi.yaml but not served by the app:', '  - DELETE /gone'])
    assert.equal(toOpenApiPath('/admin/tasks/:id/approve'), '/admin/tasks/{id}/approve')
    assert.equal(toOpenApiPath('/x/:a{[0-9]+}/:b?'), '/x/{a}/{b}')
  })

  it('declares every path template parameter as an `in: path` parameter', () => {
    const problems: string[] = []
    for (const { key, path, pathItem, op } of operations) {
      const declared = new Set(
        [...((pathItem.parameters as Json[] | undefined) ?? []), ...((op.parameters as Json[] | undefined) ?? [])]
          .map((p) => deref(spec, p))
          .filter((p): p is JsonObject => isObject(p) && p.in === 'path')
          .map((p) => String(p.name)),
      )
      const templated = new Set([...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!))
      for (const name of templated) if (!declared.has(name)) problems.push(`${key}: {${name}} not declared`)
      for (const name of declared) if (!templated.has(name)) problems.push(`${key}: path parameter "${name}" not in the path`)
    }
    assert.deepEqual(problems, [])
  })

  it('every operation documents at least one 4xx response, as OAuthError JSON (or, on a page, an HTML error page)', () => {
    assert.deepEqual(clientErrorProblems(spec, operations), [])
  })

  it('the 4xx check refuses an HTML error on an API route and one naming no error codes', () => {
    const op = (tags: string[], html: JsonObject): Operation => ({ key: 'GET /x', path: '/x', pathItem: {}, op: { tags, responses: { '400': { description: 'd', content: { 'text/html': { schema: { type: 'string' }, ...html } } } } } })
    const empty: JsonObject = { paths: {} }
    assert.deepEqual(clientErrorProblems(empty, [op([PAGE_TAG], { [PAGE_ERROR_CODES]: ['invalid_request'] })]), [])
    assert.deepEqual(clientErrorProblems(empty, [op([PAGE_TAG], {})]), [`GET /x 400: neither an application/json OAuthError nor a text/html page with ${PAGE_ERROR_CODES}`])
    assert.deepEqual(clientErrorProblems(empty, [op(['oauth'], { [PAGE_ERROR_CODES]: ['invalid_request'] })]), ['GET /x 400: not an application/json OAuthError'])
    assert.deepEqual([...documentedErrorCodes({ paths: { '/x': { get: op([PAGE_TAG], { [PAGE_ERROR_CODES]: ['no_such_code'] }).op } }, components: { schemas: { OAuthErrorCode: { enum: [] } } } }).keys()], ['no_such_code'])
  })

  it('every `error` code in openapi.yaml exists in src/errors.ts OAuthErrorCode', () => {
    const known = oauthErrorCodes()
    const documented = documentedErrorCodes(spec)
    assert.ok(documented.size > 0, 'no error codes found in openapi.yaml: the check would be vacuous')
    const unknown = [...documented].filter(([code]) => !known.has(code)).map(([code, where]) => `${code} (at ${where})`)
    assert.deepEqual(unknown, [], `error codes not in OAuthErrorCode (src/errors.ts): ${unknown.join(', ')}`)
  })

  it('components/schemas/OAuthErrorCode lists the OAuthErrorCode union exactly', () => {
    const schema = deref(spec, { $ref: '#/components/schemas/OAuthErrorCode' })
    assert.ok(isObject(schema) && Array.isArray(schema.enum), 'components/schemas/OAuthErrorCode has no enum')
    assert.deepEqual(new Set(schema.enum), oauthErrorCodes())
  })
})
