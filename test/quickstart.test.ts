/**
 * The README's quick start, run as a newcomer would paste it: the dev-mode broker (`npm start`)
 * and, in a second shell, the block of curl commands. The one change made to the block is the
 * port — tests never take the fixed 8787 — which dev mode also advertises as its issuer.
 */
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'

import { freePort } from './harness.js'

const root = new URL('..', import.meta.url)


async function hasCurl(): Promise<boolean> {
  try {
    await promisify(execFile)('curl', ['--version'])
    return true
  } catch {
    return false
  }
}

describe('README quick start', () => {
  it('the second-terminal block runs against npm start: a task, a token, the completion, a refused exchange', async (t) => {
    if (!(await hasCurl())) return t.skip('curl is not installed')
    const readme = readFileSync(new URL('README.md', root), 'utf8')
    const block = /In a second terminal:\n\n```sh\n([\s\S]*?)```/.exec(readme)?.[1]
    assert.ok(block, 'the block is in the README')
    const port = await freePort()
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-quickstart-'))
    const env = { ...process.env, TASKPASS_DATA_DIR: dir, TASKPASS_PORT: String(port), TASKPASS_CONFIG: '' }
    const broker = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    try {
      // Ready when /healthz answers (bounded).
      const deadline = Date.now() + 30_000
      for (;;) {
        const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)
        if (ok) break
        if (Date.now() > deadline) throw new Error('the broker did not start')
        await new Promise((r) => setTimeout(r, 100))
      }
      const script = `set -eu\ncd ${JSON.stringify(root.pathname)}\n` + block.replaceAll('127.0.0.1:8787', `127.0.0.1:${port}`).replaceAll('/tmp/dev.sh', join(dir, 'dev.sh'))
      const { stdout } = await promisify(execFile)('bash', ['-c', script], { env, timeout: 60_000 })
      assert.match(stdout, /"task_id":"[0-9a-f-]{36}","status":"active"/)
      // expires_in: 300, or seconds less when the clock ticked between `dev-tokens` minting the
      // 5-minute SVID and this exchange (a token never outlives the attestation it came from).
      assert.match(stdout, /"access_token":"eyJ[^"]+","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":(?:300|2[0-9]{2}),"scope":"notes:read"/)
      assert.match(stdout, /"status":"completed".*"tokens_revoked":1/)
    } finally {
      broker.kill()
    }
  })

  it('docs/any-mcp-client.md: its dev-mode command starts the example MCP server against npm start, pointing clients at the broker', async () => {
    const page = readFileSync(new URL('docs/any-mcp-client.md', root), 'utf8')
    const block = /## Try it in dev mode[\s\S]*?```sh\n([\s\S]*?)```/.exec(page)?.[1]
    assert.ok(block, 'the block is on the page')
    const [port, mcpPort] = [await freePort(), await freePort()]
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-anyclient-'))
    const env = { ...process.env, TASKPASS_DATA_DIR: join(dir, '.taskpass'), TASKPASS_PORT: String(port), TASKPASS_CONFIG: '' }
    const broker = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let server: ReturnType<typeof spawn> | undefined
    try {
      await ready(`http://127.0.0.1:${port}/healthz`)
      // As written, with this run's ports and data directory (the page's `.taskpass/` is the default one).
      const script = block.replaceAll('127.0.0.1:8787', `127.0.0.1:${port}`).replaceAll('127.0.0.1:8788', `127.0.0.1:${mcpPort}`).replaceAll('.taskpass/', `${join(dir, '.taskpass')}/`)
      // Its own process group: the script's npx and tsx children end with it.
      server = spawn('bash', ['-c', script], { cwd: root, env: process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
      const mcp = `http://127.0.0.1:${mcpPort}`
      await ready(`${mcp}/.well-known/oauth-protected-resource/mcp`)
      const prm = (await (await fetch(`${mcp}/.well-known/oauth-protected-resource/mcp`)).json()) as { resource: string; authorization_servers: string[] }
      assert.equal(prm.resource, `${mcp}/mcp`)
      assert.deepEqual(prm.authorization_servers, [`http://127.0.0.1:${port}`])
      // A client without a token is sent to the broker.
      const refused = await fetch(`${mcp}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' })
      assert.equal(refused.status, 401)
      assert.match(refused.headers.get('www-authenticate') ?? '', /resource_metadata=/)
    } finally {
      broker.kill()
      // The group may be gone already (a server that failed to start).
      if (server?.pid !== undefined) try { process.kill(-server.pid, 'SIGTERM') } catch {}
    }
  })
})

/** Waits (bounded) until `url` answers 2xx. */
async function ready(url: string): Promise<void> {
  const deadline = Date.now() + 30_000
  for (;;) {
    if (await fetch(url).then((r) => r.ok, () => false)) return
    if (Date.now() > deadline) throw new Error(`${url} did not come up`)
    await new Promise((r) => setTimeout(r, 100))
  }
}
