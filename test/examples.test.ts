/**
 * The README's code samples are the files in examples/: each block on the page is a file there
 * verbatim, and each file runs here against a real broker on loopback — the SDK v1 and v2 MCP
 * servers answer a tool call made with a task token by the official SDK client, the DPoP client
 * gets DPoP-bound tokens.
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { after, describe, it } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { ConfigInput } from '../src/config.js'
import { exchangeParams, NOTES, NOTES_SECRET, startTestServer, freePort } from './harness.js'

const root = new URL('..', import.meta.url)
const readme = readFileSync(new URL('README.md', root), 'utf8')
const file = (name: string) => readFileSync(new URL(`examples/${name}`, root), 'utf8')


/** Runs an example with tsx; resolves with its process once a stdout line matches `ready` (bounded). */
function run(name: string, env: Record<string, string>, ready: RegExp): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', `examples/${name}`], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not get ready: ${out}${err}`)), 30_000)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      if (ready.test(out)) {
        clearTimeout(timer)
        resolve({ child, out: () => out })
      }
    })
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (!ready.test(out)) reject(new Error(`${name} exited ${code}: ${out}${err}`))
    })
  })
}

/** The README's blocks of a language that are not in any example file: must be none for `ts`. */
function blocks(lang: string): string[] {
  return [...readme.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!)
}

describe('README samples are the example files', () => {
  it('every TypeScript block in the README is one of examples/ verbatim', () => {
    const files = ['mcp-server-sdk-v1.ts', 'mcp-server-sdk-v2.ts', 'dpop-client.ts'].map(file)
    const ts = blocks('ts')
    assert.ok(ts.length >= 3)
    for (const block of ts) assert.ok(files.includes(block), `a README block that is no example file:\n${block.slice(0, 200)}`)
  })

  it('docs/enterprise-idp.md shows examples/id-jag-client.ts verbatim (test/id-jag.test.ts runs it with the SDK v2 client)', () => {
    const page = readFileSync(new URL('docs/enterprise-idp.md', root), 'utf8')
    assert.ok(page.includes('```ts\n' + file('id-jag-client.ts') + '```'))
  })
})

describe('the examples run against a broker', () => {
  const children: ChildProcess[] = []
  after(() => {
    for (const c of children) c.kill()
  })

  for (const name of ['mcp-server-sdk-v1.ts', 'mcp-server-sdk-v2.ts']) {
    it(`${name}: the official SDK client calls read_note with a task token`, async () => {
      const port = await freePort()
      const mcpUrl = `http://127.0.0.1:${port}/mcp`
      const local = (c: ConfigInput) => JSON.parse(JSON.stringify(c).replaceAll(NOTES, mcpUrl)) as ConfigInput
      const broker = await startTestServer({ config: local })
      try {
        const { child } = await run(name, { TASKPASS_ISSUER: broker.url, NOTES_MCP_URL: mcpUrl, NOTES_MCP_SECRET: NOTES_SECRET }, /notes MCP server/)
        children.push(child)
        const res = await broker.post('/token', (await exchangeParams(broker, { resource: mcpUrl })) as Record<string, string>)
        assert.equal(res.status, 200, await res.clone().text())
        const { access_token } = (await res.json()) as { access_token: string }
        const client = new Client({ name: 'examples-test', version: '1.0.0' })
        await client.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { requestInit: { headers: { Authorization: `Bearer ${access_token}` } } }))
        const answer = (await client.callTool({ name: 'read_note', arguments: { name: 'todo' } })) as { content: { text: string }[] }
        assert.match(answer.content[0]!.text, /^note todo for alice/)
        await client.close()
        child.kill()
      } finally {
        await broker.stop()
      }
    })
  }

  it('dpop-client.ts: DPoP-bound tokens, and a task bound to the key', async () => {
    const broker = await startTestServer()
    try {
      const { child, out } = await run('dpop-client.ts', { TASKPASS_ISSUER: broker.url, NOTES_MCP_URL: NOTES, WORKLOAD_ID: 'agent-a', SUBJECT_TOKEN: await broker.session(), ACTOR_TOKEN: await broker.svid('a') }, /bound to .*token_type=dpop/)
      children.push(child)
      assert.match(out(), /^exchanged: token_type=dpop$/m)
    } finally {
      await broker.stop()
    }
  })
})
