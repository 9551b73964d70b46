/**
 * The verifier kit as an MCP server author gets it: `npm pack` of packages/verifier, installed
 * into a fresh project outside this repository. First with nothing else, so the install shows
 * what the kit itself brings (jose) and plain Node imports it; then with the MCP SDK v1 and
 * Express, so `tsc` (NodeNext, strict, `skipLibCheck: false`) checks a consumer server against
 * the published `.d.ts`, and the server it compiles to, run by plain Node, verifies tokens minted
 * by a real broker. npm uses its cache first (`--prefer-offline`); everything listens on loopback.
 */
import assert from 'node:assert/strict'
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { NOTES_SECRET, openTask, startTestServer, testKeys } from './harness.js'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const KIT = join(ROOT, 'packages/verifier')
const requireFromRoot = createRequire(join(ROOT, 'package.json'))
const TSC = requireFromRoot.resolve('typescript/bin/tsc')
/** The versions this repository is tested with, so npm finds them in the cache `npm ci` filled. */
const version = (name: string): string => (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version
const RESOURCE_CLIENT = { clientId: 'packaged-mcp', clientSecret: NOTES_SECRET }

/**
 * npm run from `npm test` inherits `npm_config_*` describing this repository (its prefix, its
 * workspaces); the consumer must not see them. Only where the cache and registry are is kept.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig'])
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_') || keep.has(k.toLowerCase())))
}

async function npm(cwd: string, args: string[], timeoutMs: number): Promise<string> {
  const { stdout } = await run('npm', args, { cwd, env: npmEnv(), timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 })
  return stdout
}

async function install(cwd: string, specs: string[]): Promise<void> {
  await npm(cwd, ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', '--save-exact', ...specs], 300_000)
}

function sizeOf(path: string): number {
  const s = statSync(path)
  if (!s.isDirectory()) return s.size
  return readdirSync(path).reduce((n, entry) => n + sizeOf(join(path, entry)), 0)
}

/** Top-level packages in a node_modules, scoped ones as `@scope/name`. */
function installed(nodeModules: string): string[] {
  return readdirSync(nodeModules)
    .filter((d) => !d.startsWith('.'))
    .flatMap((d) => (d.startsWith('@') ? readdirSync(join(nodeModules, d)).map((s) => `${d}/${s}`) : [d]))
    .sort()
}

/** Plain Node (no tsx, no loader) in the consumer project. */
async function plainNode(cwd: string, source: string): Promise<string> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', source], { cwd, timeout: 30_000 })
  return stdout
}

// The consumer's MCP server: SDK v1 on Express, the SDK's own bearer gate fed by the kit. The
// issuer and the resource's broker credential arrive on stdin once the test's broker is up (the
// broker must know the server's URL, so the server binds its port first and prints it).
const SERVER_TS = `import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { createTaskTokenVerifier, protectedResourceMetadataMiddleware, type TaskAuthInfo } from '@taskpass/verifier'
import { authorizeToolCalls, toMcpSdkV1Verifier } from '@taskpass/verifier/mcp-sdk-v1'

interface Setup { issuer: string; clientId: string; clientSecret: string }

let listener = (_req: IncomingMessage, res: ServerResponse): void => { res.writeHead(503).end() }
const http = createServer((req, res) => listener(req, res))
http.listen(0, '127.0.0.1')
await once(http, 'listening')
const mcpUrl = \`http://127.0.0.1:\${(http.address() as AddressInfo).port}/mcp\`
process.stdout.write(JSON.stringify({ mcpUrl }) + '\\n')

let input = ''
for await (const chunk of process.stdin) {
  input += String(chunk)
  if (input.includes('\\n')) break
}
const setup = JSON.parse(input) as Setup

const verifier = createTaskTokenVerifier({
  issuer: setup.issuer,
  resource: mcpUrl,
  requiredScopes: ['notes:read'],
  dpop: 'allowed',
  revocation: { mode: 'introspection', introspectionUrl: \`\${setup.issuer}/introspect\`, credentials: { clientId: setup.clientId, clientSecret: setup.clientSecret } },
})
await verifier.ready()

const app = createMcpExpressApp({ host: '127.0.0.1' })
app.use(protectedResourceMetadataMiddleware(verifier.metadata({ resourceName: 'Packaged notes' })))
const gate = requireBearerAuth({ verifier: toMcpSdkV1Verifier(verifier), requiredScopes: ['notes:read'], resourceMetadataUrl: verifier.resourceMetadataUrl, expectedResource: new URL(mcpUrl) })
app.all('/mcp', gate, authorizeToolCalls(verifier), async (req, res) => {
  const server = new McpServer({ name: 'packaged-notes', version: '1.0.0' })
  server.registerTool('whoami', {}, async (extra) => {
    const auth = extra.authInfo as TaskAuthInfo | undefined
    return { content: [{ type: 'text', text: auth ? \`task=\${auth.extra.task_id} user=\${auth.extra.sub}\` : 'anonymous' }] }
  })
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
  res.on('close', () => {
    void transport.close()
    void server.close()
  })
  await server.connect(transport)
  await transport.handleRequest(req, res, req.body)
})
listener = app
process.stdout.write(JSON.stringify({ ready: true }) + '\\n')
`

// A consumer that uses the kit alone, on Node's types only: no DOM lib. (The SDK v1's own
// declarations need the DOM lib's fetch types, so the server's project has it.)
const CORE_TS = `import { createTaskTokenVerifier, toolsInToken, VerifierError, type Clock, type RevocationEvent, type TaskAuthInfo, type TaskTokenVerifier } from '@taskpass/verifier'
import { createReplayCache, TtlCache } from '@taskpass/verifier/cache'
import { createFixedClock } from '@taskpass/verifier/clock'
import { DpopError, verifyDpopProof, type DpopProof } from '@taskpass/verifier/dpop'

const clock: Clock = createFixedClock(1_800_000_000)
const verifier: TaskTokenVerifier = createTaskTokenVerifier({
  issuer: 'https://taskpass.example.com',
  resource: 'https://notes.example.com/mcp',
  requiredScopes: ['notes:read'],
  dpop: 'required',
  revocation: { mode: 'none' },
  clock,
})
export async function check(authorization: string, dpop: string | undefined): Promise<TaskAuthInfo | number> {
  try {
    return await verifier.verifyRequest({ method: 'POST', url: 'https://notes.example.com/mcp', authorization, dpop })
  } catch (e) {
    return e instanceof VerifierError ? e.status : 500
  }
}
export async function proof(header: string): Promise<DpopProof | DpopError> {
  return verifyDpopProof(header, { htm: 'POST', htu: 'https://notes.example.com/mcp', now: clock.now(), iatWindow: 60, replay: createReplayCache(100) }).catch((e: DpopError) => e)
}
export const seen = new TtlCache<RevocationEvent>(10)
export const tools = toolsInToken(undefined, 'https://notes.example.com/mcp')
`

const compilerOptions = { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false, types: ['node'], outDir: 'out' }
const TSCONFIG_CORE = { compilerOptions: { ...compilerOptions, lib: ['ES2022'], noEmit: true }, files: ['core.ts', 'readme.ts'] }
/** The package README's sample, type-checked as a consumer would write it. */
const README_TS = /```ts\n([\s\S]*?)```/.exec(readFileSync(new URL('../packages/verifier/README.md', import.meta.url), 'utf8'))![1]!
const TSCONFIG = { compilerOptions: { ...compilerOptions, lib: ['ES2022', 'DOM'] }, files: ['server.ts'] }

/** Reads the child's stdout line by line until `want` matches one, with a bounded wait. */
function nextLine<T>(child: ChildProcessWithoutNullStreams, want: (v: Record<string, unknown>) => T | undefined, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    let buffer = ''
    let stderr = ''
    const timer = setTimeout(() => done(new Error(`no answer from the consumer server in ${timeoutMs} ms: ${stderr}`)), timeoutMs)
    const onErr = (c: Buffer) => { stderr += String(c) }
    const onExit = (code: number | null) => done(new Error(`the consumer server exited (${code}): ${stderr}`))
    const onData = (c: Buffer) => {
      buffer += String(c)
      let nl: number
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl)
        buffer = buffer.slice(nl + 1)
        const hit = want(JSON.parse(line) as Record<string, unknown>)
        if (hit !== undefined) return done(undefined, hit)
      }
    }
    function done(e: Error | undefined, v?: T) {
      clearTimeout(timer)
      child.stdout.off('data', onData)
      child.stderr.off('data', onErr)
      child.off('exit', onExit)
      if (e) reject(e)
      else resolve(v as T)
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onErr)
    child.on('exit', onExit)
  })
}

describe('the verifier kit, packed and installed into a fresh project', { timeout: 600_000 }, () => {
  let dir: string
  let consumer: string
  let tarball: string
  let packed: { size: number; unpackedSize: number; files: { path: string }[] }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'taskpass-kit-'))
    consumer = join(dir, 'consumer')
    // `npm pack` runs the kit's prepack (its tsc build), as publishing would.
    const out = await npm(KIT, ['pack', '--json', '--pack-destination', dir], 180_000)
    const [info] = JSON.parse(out.slice(out.indexOf('['))) as (typeof packed & { filename: string })[]
    assert.ok(info)
    packed = info
    tarball = join(dir, info.filename)
    rmSync(consumer, { recursive: true, force: true })
    await import('node:fs/promises').then((fs) => fs.mkdir(consumer))
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'kit-consumer', private: true, type: 'module' }, null, 2))
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('packs only the build, with jose its one dependency and the SDKs and hono optional peers', () => {
    const paths = packed.files.map((f) => f.path).sort()
    assert.ok(paths.includes('dist/index.js') && paths.includes('dist/index.d.ts'), paths.join(' '))
    for (const p of paths) assert.ok(p.startsWith('dist/') || p === 'package.json' || p === 'README.md' || p === 'LICENSE', `unexpected file in the package: ${p}`)
    assert.ok(paths.includes('LICENSE'), 'the license travels with the package')
    for (const entry of ['index', 'mcp-sdk-v1', 'mcp-sdk-v2', 'hono', 'dpop', 'cache', 'clock']) {
      assert.ok(paths.includes(`dist/${entry}.js`) && paths.includes(`dist/${entry}.d.ts`), entry)
    }
    const manifest = JSON.parse(readFileSync(join(KIT, 'package.json'), 'utf8')) as Record<string, Record<string, unknown>>
    assert.deepEqual(Object.keys(manifest.dependencies!), ['jose'])
    assert.deepEqual(Object.keys(manifest.peerDependencies!).sort(), ['@modelcontextprotocol/sdk', '@modelcontextprotocol/server', 'hono'])
    for (const peer of Object.keys(manifest.peerDependencies!)) assert.deepEqual(manifest.peerDependenciesMeta![peer], { optional: true })
    console.log(`packed tarball: ${packed.size} bytes (${packed.unpackedSize} unpacked, ${paths.length} files)`)
  })

  it('is resolved in this repository through exactly its entry points: each tsconfig path is one export, on its source', async () => {
    const ts = (await import(requireFromRoot.resolve('typescript'))) as { default: typeof import('typescript') }
    const config = ts.default.parseConfigFileTextToJson('tsconfig.json', readFileSync(join(ROOT, 'tsconfig.json'), 'utf8')).config as { compilerOptions: { paths: Record<string, string[]> } }
    const manifest = JSON.parse(readFileSync(join(KIT, 'package.json'), 'utf8')) as { exports: Record<string, string | { types: string; import: string }> }
    const fromExports = Object.entries(manifest.exports)
      .filter(([key]) => key !== './package.json')
      .map(([key, target]) => {
        assert.ok(typeof target === 'object', key)
        const name = target.import.replace(/^\.\/dist\//, '').replace(/\.js$/, '')
        assert.equal(target.types, `./dist/${name}.d.ts`, key)
        return [`@taskpass/verifier${key.slice(1)}`, [`./packages/verifier/src/${name}.ts`]] as const
      })
    assert.deepEqual(Object.fromEntries(fromExports), config.compilerOptions.paths)
  })

  it('reaches nothing outside itself: the build imports only its own files, node:, jose and its optional peers', () => {
    const allowed = /^(\.\/[\w.-]+\.js|node:[\w/]+|jose|@modelcontextprotocol\/sdk\/[\w/.-]+\.js|@modelcontextprotocol\/server|hono)$/
    for (const file of readdirSync(join(KIT, 'dist')).filter((f) => f.endsWith('.js') || f.endsWith('.d.ts'))) {
      const text = readFileSync(join(KIT, 'dist', file), 'utf8')
      for (const [, spec] of text.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)) assert.match(spec!, allowed, `${file} imports ${spec}`)
    }
  })

  it('installs with nothing but jose, and plain Node imports its entry points (the SDK adapter only with the SDK)', async () => {
    await install(consumer, [tarball])
    assert.deepEqual(installed(join(consumer, 'node_modules')), ['@taskpass/verifier', 'jose'])
    console.log(`consumer node_modules with the kit alone: ${sizeOf(join(consumer, 'node_modules'))} bytes`)
    const out = await plainNode(
      consumer,
      `const kit = await import('@taskpass/verifier')
       const dpop = await import('@taskpass/verifier/dpop')
       const cache = await import('@taskpass/verifier/cache')
       const clock = await import('@taskpass/verifier/clock')
       console.log(JSON.stringify([typeof kit.createTaskTokenVerifier, typeof kit.toolsInToken, typeof dpop.verifyDpopProof, typeof cache.TtlCache, typeof clock.systemClock.now, kit.MAX_LEEWAY_SECONDS]))`,
    )
    assert.deepEqual(JSON.parse(out), ['function', 'function', 'function', 'function', 'function', 60])
    // The adapter's peer is optional: absent, its entry point says so instead of loading half-way.
    await assert.rejects(plainNode(consumer, `await import('@taskpass/verifier/mcp-sdk-v1')`), /ERR_MODULE_NOT_FOUND[\s\S]*@modelcontextprotocol\/sdk|Cannot find package '@modelcontextprotocol\/sdk'/)
  })

  it('type-checks a consumer server with tsc (NodeNext, strict, skipLibCheck false), whose build plain Node runs against a real broker', async (t) => {
    await install(consumer, [`@modelcontextprotocol/sdk@${version('@modelcontextprotocol/sdk')}`, `express@${version('express')}`, `@types/node@${version('@types/node')}`, `@types/express@${version('@types/express')}`])
    console.log(`consumer node_modules with the SDK, Express and their types: ${sizeOf(join(consumer, 'node_modules'))} bytes`)
    writeFileSync(join(consumer, 'server.ts'), SERVER_TS)
    writeFileSync(join(consumer, 'core.ts'), CORE_TS)
    writeFileSync(join(consumer, 'readme.ts'), README_TS)
    writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify(TSCONFIG, null, 2))
    writeFileSync(join(consumer, 'tsconfig.core.json'), JSON.stringify(TSCONFIG_CORE, null, 2))
    for (const project of ['tsconfig.core.json', 'tsconfig.json']) {
      await run(process.execPath, [TSC, '-p', project], { cwd: consumer, timeout: 120_000 }).catch((e: { stdout?: string }) => assert.fail(`tsc refused the consumer (${project}):\n${e.stdout}`))
    }

    const child = spawn(process.execPath, ['out/server.js'], { cwd: consumer, stdio: ['pipe', 'pipe', 'pipe'] })
    t.after(() => { child.kill() })
    const mcpUrl = await nextLine(child, (v) => (typeof v.mcpUrl === 'string' ? v.mcpUrl : undefined), 30_000)

    const keys = await testKeys()
    const broker = await startTestServer({
      config: (c) => ({
        ...c,
        resources: [...(c.resources ?? []), { uri: mcpUrl, scopes: ['notes:read'], credential: { clientId: RESOURCE_CLIENT.clientId, secretHash: keys.hashes.notes } }],
        workloads: (c.workloads ?? []).map((w) => (w.id === 'agent-a' ? { ...w, grants: [...(w.grants ?? []), { resource: mcpUrl, scopes: ['notes:read'] }] } : w)),
      }),
    })
    t.after(() => broker.stop())
    child.stdin.write(JSON.stringify({ issuer: broker.url, ...RESOURCE_CLIENT }) + '\n')
    await nextLine(child, (v) => (v.ready === true ? true : undefined), 30_000)

    const opened = await openTask(broker, { purpose: 'packaged kit: who am I', resources: [{ resource: mcpUrl, scopes: ['notes:read'] }] })
    assert.equal(opened.status, 201, await opened.clone().text())
    const taskId = ((await opened.json()) as { task_id: string }).task_id
    const exchanged = await broker.exchange({ resource: mcpUrl, scope: 'notes:read', task_id: taskId })
    assert.equal(exchanged.status, 200, await exchanged.clone().text())
    const token = ((await exchanged.json()) as { access_token: string }).access_token

    // Without a token: the SDK gate's 401 with the kit's resource metadata in the challenge.
    const bare = await fetch(mcpUrl, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' })
    assert.equal(bare.status, 401)
    assert.match(bare.headers.get('www-authenticate') ?? '', /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/)
    // A token whose signature is not the broker's: refused by the kit.
    const forged = `${token.slice(0, token.lastIndexOf('.') + 1)}${'A'.repeat(86)}`
    const refused = await fetch(mcpUrl, { method: 'POST', headers: { authorization: `Bearer ${forged}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' })
    assert.equal(refused.status, 401)
    assert.match(refused.headers.get('www-authenticate') ?? '', /error="invalid_token"/)

    const client = new Client({ name: 'packaged-agent', version: '1.0.0' })
    await client.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }))
    try {
      const result = (await client.callTool({ name: 'whoami', arguments: {} })) as { content: { type: string; text: string }[] }
      assert.match(result.content[0]!.text, new RegExp(`^task=${taskId} user=`))
    } finally {
      await client.close()
    }
  })
})
